"""The whole runtime over RabbitMQ: gateway -> outbox -> relay -> broker -> worker -> ledger."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import pytest
import sqlalchemy as sa

from fluxo_core.ir import Packet
from fluxo_core.storage import Database
from fluxo_core.storage.tables import outbox, usage_records
from service_runtime import Outputs, RetryPolicy, ServiceRuntime, service
from service_runtime.transports.rabbitmq import RabbitMqTransport
from tests.conformance.test_transport import AMQP_URL, amqp_reachable
from tests.conftest import require_server

pytestmark = pytest.mark.rabbitmq
ACTOR = {"user": {"id": "u-1"}, "account": {"id": "acme"}}


async def outbox_rows(db: Database) -> int:
    count = await db.read(lambda c: c.scalar(sa.select(sa.func.count()).select_from(outbox)))
    return int(count or 0)


async def test_calls_run_exactly_once_over_rabbitmq(db: Database) -> None:
    require_server("RabbitMQ", await amqp_reachable(), f"FLUXO_TEST_AMQP_URL={AMQP_URL}")
    suffix = uuid.uuid4().hex[:8]
    attempts: dict[int, int] = {}

    @service(f"split-{suffix}", inline=True)
    def split(payload: dict[str, Any]) -> Outputs:
        return Outputs({"n": n} for n in range(payload["count"]))

    @service(f"flaky-{suffix}", retry=RetryPolicy(max_attempts=3, backoff_base_s=0.05))
    async def flaky(payload: dict[str, Any]) -> dict[str, Any]:
        attempts[payload["n"]] = attempts.get(payload["n"], 0) + 1
        if attempts[payload["n"]] < 2:
            raise RuntimeError("first try fails")
        return {"n": payload["n"]}

    transport = RabbitMqTransport(db, AMQP_URL, max_poll_interval_s=0.2)
    try:
        async with ServiceRuntime(
            db, [split, flaky], transport=transport, workers=2, poll_interval_s=0.2
        ) as rt:
            first = await rt.gateway.call(
                split.name,
                Packet.model_validate({"actor": ACTOR, "payload": {"count": 3}}),
                wait=15,
            )
            second = await rt.gateway.call(
                flaky.name, Packet.model_validate({"actor": ACTOR, "payload": {"n": 1}}), wait=15
            )
            # The last results' output messages may still sit in the outbox: the relay
            # publishes them after their commit. It must drain it.
            deadline = asyncio.get_running_loop().time() + 10
            while await outbox_rows(db) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        assert first.status == "succeeded"
        assert [p.payload for p in first.result or []] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert second.status == "succeeded"
        assert second.attempts == 2
        usage = await db.read(lambda c: c.execute(sa.select(usage_records.c.service)).all())
        assert sorted(u.service for u in usage) == sorted([split.name, flaky.name])
        assert await outbox_rows(db) == 0  # the relay published (and removed) everything
    finally:
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            channel = await conn.channel()
            for svc in (split, flaky):
                for queue in (svc.input_queue, svc.output_queue, svc.input_queue + ".dlq"):
                    await channel.queue_delete(queue)
