"""``/v1/services/{name}/dead-letters``: an account lists and replays the dead letters of its own
calls only; a viewer reads but may not replay (the console's service page uses the same
:class:`fluxo.control.dead_letters.AccountDeadLetters`)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.errors import ServiceError
from fluxo_core.ir import Packet
from fluxo_core.storage import Database, Role
from service_runtime import service

pytestmark = pytest.mark.timeout(60)


def _actor(account: str) -> dict[str, Any]:
    return {"user": {"id": "u"}, "account": {"id": account}}


async def test_an_account_replays_its_own_dead_letters_and_never_another_accounts(
    db: Database,
) -> None:
    healthy = {"ok": False}

    @service("picky", inline=True)
    def picky(payload: dict[str, Any]) -> dict[str, Any]:
        if not healthy["ok"]:
            raise ServiceError(f"downstream rejects {payload['who']}", retryable=False)
        return {"done": payload["who"]}

    platform = Platform(db, [picky], workers=1, poll_interval_s=0.1, admission_cache_s=0)
    for account in ("acme", "globex"):
        await platform.accounts.ensure_account(account)
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        failed = {}
        for account in ("acme", "globex"):
            packet = Packet.model_validate({"actor": _actor(account), "payload": {"who": account}})
            record = await platform.runtime.gateway.call("picky", packet, wait=10)
            assert record.status == "failed"
            failed[account] = record.id
        tokens = {
            "acme": await platform.accounts.issue_token("acme", "u"),
            "viewer": await platform.accounts.issue_token("acme", "v", role=Role.VIEWER),
            "globex": await platform.accounts.issue_token("globex", "u"),
        }

        async def send(method: str, path: str, who: str, body: Any = None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {tokens[who]}"}
            async with http.request(method, path, json=body, headers=headers) as answer:
                return answer.status, await answer.json()

        status, listed = await send("GET", "/v1/services/picky/dead-letters", "acme")
        assert status == 200
        assert [(x["message_id"], x["job_id"]) for x in listed["items"]] == [(failed["acme"], None)]
        assert "downstream rejects acme" in listed["items"][0]["error"]

        # Another account's dead letter is as missing as one that does not exist.
        replay = "/v1/services/picky/dead-letters/replay"
        status, _ = await send("POST", replay, "acme", {"message_ids": [failed["globex"]]})
        assert status == 404
        status, refused = await send("POST", replay, "viewer", {"message_ids": [failed["acme"]]})
        assert status == 403
        assert "viewer" in refused["error"]["message"]
        status, refused = await send("POST", replay, "acme", {"ids": [failed["acme"]]})
        assert status == 422

        healthy["ok"] = True
        status, done = await send("POST", replay, "acme", {"message_ids": [failed["acme"]]})
        assert (status, done) == (200, {"replayed": 1, "kept": []})
        again = await platform.runtime.gateway.wait(failed["acme"], 10)
        assert again.status == "succeeded"
        status, listed = await send("GET", "/v1/services/picky/dead-letters", "acme")
        assert listed["items"] == []
        # globex's stays dead until globex replays it.
        status, listed = await send("GET", "/v1/services/picky/dead-letters", "globex")
        assert [x["message_id"] for x in listed["items"]] == [failed["globex"]]
        assert (await platform.runtime.gateway.wait(failed["globex"], 1)).status == "failed"
