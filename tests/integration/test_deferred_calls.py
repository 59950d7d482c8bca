"""Deferred calls, on SQLite and PostgreSQL: a handler that answers ``DEFERRED`` is settled
without a result, and the call is completed later, once, by a transaction of whoever finished
the work: result, output messages and usage record, as the worker writes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from fluxo_core.errors import ServiceError
from fluxo_core.ir import Packet
from fluxo_core.storage import CallStore, Database
from fluxo_core.storage.tables import deferred_calls, queue_messages, usage_records
from service_runtime import Price, ServiceRuntime, service
from service_runtime.deferred import Completion
from service_runtime.sdk import DEFERRED, Deferred
from service_runtime.worker import CALL_ID_HEADER, OUTPUT_COUNT_HEADER, STATUS_HEADER

pytestmark = pytest.mark.timeout(60)

ACTOR = {"user": {"id": "u-1", "name": "Ada"}, "account": {"id": "acme"}}
started: list[str] = []


@service("later", price=Price(per_call="0.25"), takes="packet")
async def later(packet: Packet) -> Deferred:
    """Starts work elsewhere (here: notes the call) and answers when it ends."""
    started.append(packet.id)
    return DEFERRED


@pytest.fixture
async def runtime(db: Database) -> AsyncIterator[ServiceRuntime]:
    started.clear()
    rt = ServiceRuntime(db, [later], workers=1, poll_interval_s=0.1)
    async with rt:
        yield rt


async def outputs(db: Database, queue: str) -> list[Any]:
    query = sa.select(queue_messages.c.headers).where(queue_messages.c.queue == queue)
    rows = await db.read(lambda c: c.execute(query).all())
    return [orjson.loads(r.headers) if isinstance(r.headers, str) else r.headers for r in rows]


async def charged(db: Database) -> list[tuple[str, int]]:
    query = sa.select(usage_records.c.call_id, usage_records.c.amount_micros)
    return [tuple(r) for r in await db.read(lambda c: c.execute(query).all())]  # type: ignore[misc]


async def still_open(db: Database) -> list[str]:
    query = sa.select(deferred_calls.c.call_id)
    return list(await db.read(lambda c: c.scalars(query).all()))


async def test_a_deferred_call_is_settled_without_a_result_then_completed_once(
    runtime: ServiceRuntime,
) -> None:
    packet = Packet.model_validate({"actor": ACTOR, "payload": {"n": 1}})
    record = await runtime.gateway.call("later", packet, wait=0.0)
    worker = runtime.workers[0]
    while worker.stats.deferred == 0:
        await runtime.gateway.wait(record.id, 0.1)
    assert started == [packet.id]
    # Settled (the input message is gone), but not answered: no output, no charge.
    assert (await runtime.gateway.get(record.id)).status == "queued"
    assert await outputs(runtime.db, later.input_queue) == []
    assert await outputs(runtime.db, later.output_queue) == []
    assert await charged(runtime.db) == []
    assert await still_open(runtime.db) == [record.id]

    row = await CallStore(runtime.db).get(record.id)
    assert row is not None
    done = Completion(row, later, outputs=[{"n": 1, "i": 0}, {"n": 1, "i": 1}])
    assert await runtime.db.transact(lambda tx: runtime.deferred.complete(tx, [done])) == [
        record.id
    ]
    # Completed again (a sweep, another process): nothing more is written.
    assert await runtime.db.transact(lambda tx: runtime.deferred.complete(tx, [done])) == []

    answered = await runtime.gateway.wait(record.id, 5)
    assert answered.status == "succeeded"
    assert answered.result is not None
    assert [p.payload for p in answered.result] == [{"n": 1, "i": 0}, {"n": 1, "i": 1}]
    headers = await outputs(runtime.db, later.output_queue)
    assert [(h[STATUS_HEADER], h[CALL_ID_HEADER], h[OUTPUT_COUNT_HEADER]) for h in headers] == [
        ("succeeded", record.id, "2")
    ] * 2
    assert await charged(runtime.db) == [(record.id, 250_000)]
    assert await still_open(runtime.db) == []


async def test_a_deferred_call_completed_with_an_error_fails_and_costs_nothing(
    runtime: ServiceRuntime,
) -> None:
    packet = Packet.model_validate({"actor": ACTOR, "payload": {"n": 2}})
    record = await runtime.gateway.call("later", packet, wait=0.0)
    while runtime.workers[0].stats.deferred == 0:
        await runtime.gateway.wait(record.id, 0.1)
    row = await CallStore(runtime.db).get(record.id)
    assert row is not None
    error = ServiceError("the work failed at step 'x'", retryable=False, child_step="x")
    await runtime.db.transact(
        lambda tx: runtime.deferred.complete(tx, [Completion(row, later, error=error)])
    )
    failed = await runtime.gateway.wait(record.id, 5)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error["context"]["child_step"] == "x"
    [headers] = await outputs(runtime.db, later.output_queue)
    assert headers[STATUS_HEADER] == "failed"
    assert await charged(runtime.db) == []
