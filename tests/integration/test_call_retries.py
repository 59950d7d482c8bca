"""A failed call a job retry superseded (``calls.retry_id``), at the gateway, on SQLite and
PostgreSQL: its packet sent again is the call's next attempt, made once and run once by the
worker; a second retry is followed to the latest attempt; nothing else about repeated packets
changes (a succeeded call is still answered from its result, a reused id is still refused)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fluxo.control.job_control import retry_call_id
from fluxo_core.errors import ConflictError
from fluxo_core.ir import Packet
from fluxo_core.storage import Database
from fluxo_core.storage.tables import calls, usage_records
from service_runtime import ServiceRuntime
from tests.support import services as svc

ACTOR = {"user": {"id": "u-1"}, "account": {"id": "acme"}}


def packet(call_id: str, payload: object) -> Packet:
    return Packet.model_validate({"id": call_id, "actor": ACTOR, "payload": payload})


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.log"
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(path))
    return path


@pytest.fixture
async def runtime(db: Database) -> AsyncIterator[ServiceRuntime]:
    rt = ServiceRuntime(db, svc.SERVICES, workers=2, batch_size=50, poll_interval_s=0.2)
    async with rt:
        yield rt


async def supersede(runtime: ServiceRuntime, call_id: str) -> str:
    retry_id = retry_call_id(call_id)
    done = await runtime.db.transact(
        lambda tx: runtime.gateway.calls.supersede(tx, {call_id: retry_id})
    )
    assert done == 1
    return retry_id


async def test_a_superseded_call_sent_again_is_its_next_attempt_made_once(
    runtime: ServiceRuntime, effects: Path
) -> None:
    gate = packet("job-1:gate:0", {"n": 7})
    failed = await runtime.gateway.call("gated", gate, wait=10)
    assert failed.status == "failed"
    # Unsuperseded, the packet is the same call: its stored failure, no new run.
    assert (await runtime.gateway.call("gated", gate, wait=10)).id == failed.id
    assert effects.read_text().count("gated 7") == 1

    first = await supersede(runtime, failed.id)
    assert first == "job-1:gate:0@r1"
    again = await asyncio.gather(*(runtime.gateway.call("gated", gate, wait=10) for _ in range(3)))
    assert {r.id for r in again} == {first}
    assert {r.status for r in again} == {"failed"}  # the gate is still closed
    assert effects.read_text().count("gated 7") == 2

    second = await supersede(runtime, first)
    assert second == "job-1:gate:0@r2"
    svc.open_gate()
    done = await runtime.gateway.call("gated", gate, wait=10)
    assert (done.id, done.status) == (second, "succeeded")
    assert done.result is not None
    assert done.result[0].payload == {"n": 7, "passed": True}
    assert (await runtime.gateway.call("gated", gate, wait=10)).id == second
    assert effects.read_text().count("gated 7") == 3

    query = sa.select(calls.c.id, calls.c.status, calls.c.retry_id).order_by(calls.c.id)
    rows = await runtime.db.read(lambda c: c.execute(query).all())
    assert [tuple(r) for r in rows] == [
        ("job-1:gate:0", "failed", first),
        (first, "failed", second),
        (second, "succeeded", None),
    ]
    # The superseded calls' records name their next attempt.
    assert (await runtime.gateway.get(failed.id)).retry_id == first
    assert (await runtime.gateway.get(first)).retry_id == second
    billed = sa.select(usage_records.c.call_id)
    assert [r.call_id for r in await runtime.db.read(lambda c: c.execute(billed).all())] == [second]


async def test_only_a_failed_call_is_superseded_once(runtime: ServiceRuntime) -> None:
    ok = await runtime.gateway.call("echo", packet("job-2:echo:0", {"n": 1}), wait=10)
    assert ok.status == "succeeded"
    broken = await runtime.gateway.call("broken", packet("job-2:broken:0", {"n": 1}), wait=10)
    assert broken.status == "failed"
    retries = {ok.id: retry_call_id(ok.id), broken.id: retry_call_id(broken.id)}
    store = runtime.gateway.calls
    assert await runtime.db.transact(lambda tx: store.supersede(tx, retries)) == 1
    # Twice (two retries racing on the same failure): the first one holds.
    assert await runtime.db.transact(lambda tx: store.supersede(tx, {broken.id: "other"})) == 0
    answer = await runtime.gateway.call("echo", packet("job-2:echo:0", {"n": 1}), wait=10)
    assert answer.id == ok.id


async def test_a_superseded_id_is_still_refused_for_another_service(
    runtime: ServiceRuntime,
) -> None:
    broken = await runtime.gateway.call("broken", packet("job-3:b:0", {"n": 1}), wait=10)
    await supersede(runtime, broken.id)
    with pytest.raises(ConflictError, match="already used for another call"):
        await runtime.gateway.call("echo", packet("job-3:b:0", {"n": 1}), wait=10)


def test_retry_ids_count_the_attempts_and_fit_the_id_limit() -> None:
    assert retry_call_id("nr-abc") == "nr-abc@r1"
    assert retry_call_id("nr-abc@r1") == "nr-abc@r2"
    assert retry_call_id("job:enrich.2:0@r9") == "job:enrich.2:0@r10"
    long = "j" * 126
    first = retry_call_id(long)
    assert len(first) <= 128
    assert first.endswith("@r1")
    assert retry_call_id(first) == first.removesuffix("@r1") + "@r2"
    Packet.model_validate({"id": first, "actor": ACTOR, "payload": {}})  # a valid packet id
