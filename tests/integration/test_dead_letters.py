"""Dead letters can be listed and, once the cause is fixed, replayed exactly once."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fluxo_core.errors import ServiceError
from fluxo_core.ir import Packet
from fluxo_core.storage import Database
from fluxo_core.storage.tables import usage_records
from service_runtime import ServiceRuntime, service
from service_runtime.dead_letters import DeadLetters

ACTOR = {"user": {"id": "u"}, "account": {"id": "acme"}}


async def test_a_fixed_service_gets_its_dead_letters_again(db: Database) -> None:
    healthy = {"ok": False}

    @service("picky", inline=True)
    def picky(payload: dict[str, Any]) -> dict[str, Any]:
        if not healthy["ok"]:
            raise ServiceError("downstream rejects this", retryable=False)
        return {"done": payload["n"]}

    async with ServiceRuntime(db, [picky], workers=1, poll_interval_s=0.1) as rt:
        first = await rt.gateway.call(
            "picky", Packet.model_validate({"actor": ACTOR, "payload": {"n": 1}}), wait=10
        )
        assert first.status == "failed"
        letters = DeadLetters(db, rt.transport)
        (letter,) = await letters.list()
        assert (letter.queue, letter.message_id) == (picky.input_queue, first.id)
        assert "downstream rejects this" in (letter.error or "")

        healthy["ok"] = True
        assert await letters.replay(picky.input_queue) == 1
        again = await rt.gateway.wait(first.id, 10)
        assert again.status == "succeeded"
        assert again.result
        assert again.result[0].payload == {"done": 1}
        assert await letters.list() == []
        assert await letters.replay(picky.input_queue) == 0  # nothing left: no second run
    usage = await db.read(lambda c: c.execute(sa.select(usage_records)).all())
    assert [u.call_id for u in usage] == [first.id]
