"""Queue triggers against the machine's RabbitMQ (guest/guest) and Mosquitto, on SQLite and
PostgreSQL: a message makes one job that completes on the step engine and is acknowledged after;
the same message three times makes one job; poison messages go to the dead-letter place with
the reason and make no job; MQTT messages published while Fluxo is down are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import aiomqtt
import pytest

from fluxo.control.platform import Platform
from fluxo.control.triggers._mqtt import MqttSession
from fluxo.control.triggers.queue import MqttSource, queue_sources
from fluxo.control.triggers.source import TriggerSink
from fluxo_core.ir.documents import DocumentLimits
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.accounts import AccountStore
from fluxo_core.storage.secrets import SecretKey, SecretStore
from fluxo_core.storage.triggers import TriggerRow
from services.http.policy import HostPolicy
from tests.support import services as svc

pytestmark = pytest.mark.timeout(120)

ACME = Principal(account_id="acme", user_id="ada")
KEY = SecretKey.parse("a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=", "test key")
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
# The brokers are on loopback, which triggers reach only when the operator allows it.
LOOPBACK = HostPolicy(allow=["127.0.0.1"])

ECHO = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "take"},
    "spec": {"engine": "step", "steps": [{"id": "take", "kind": "service", "service": "echo"}]},
}
# A workflow that takes only a message whose body has n: other bodies are refused for good.
STRICT = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "strict"},
    "spec": {
        "engine": "step",
        "input_schema": {
            "type": "object",
            "properties": {"body": {"type": "object", "required": ["n"]}},
        },
        "steps": [{"id": "take", "kind": "service", "service": "echo"}],
    },
}


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def rabbit() -> None:
    from tests.conftest import require_server

    require_server("RabbitMQ", reachable(5672), "guest/guest on 127.0.0.1:5672")


@pytest.fixture
def mosquitto() -> None:
    from tests.conftest import require_server

    require_server("Mosquitto", reachable(1883), "127.0.0.1:1883")


def queue_trigger(name: str, workflow: str = "take", **queue: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"workflow": workflow, "type": "queue", "queue": {"host": "127.0.0.1", **queue}},
    }


def platform_on(db: Database, secrets: SecretStore) -> Platform:
    return Platform(
        db,
        svc.SERVICES,
        workers=2,
        poll_interval_s=0.1,
        admission_cache_s=0,
        secrets=secrets,
        trigger_tick_s=0.2,
        trigger_sources=queue_sources(
            secrets, DocumentLimits(), policy=LOOPBACK, reconnect_min_s=0.2, reconnect_max_s=1.0
        ),
        host_policy=LOOPBACK,
    )


@pytest.fixture
async def secrets(db: Database) -> SecretStore:
    store = SecretStore(db, KEY)
    await AccountStore(db).ensure_account("acme")
    await store.put("acme", "rabbit-password", "guest")
    return store


@pytest.fixture
async def platform(db: Database, secrets: SecretStore) -> AsyncIterator[Platform]:
    running = platform_on(db, secrets)
    async with running:
        await running.jobs.apply(ECHO, ACME)
        await running.jobs.apply(STRICT, ACME)
        yield running


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {value!r}")
        await asyncio.sleep(0.1)


async def trigger_jobs(platform: Platform) -> list[Any]:
    page = await platform.jobs.list(ACME)
    return [j for j in page.items if j.user_id.startswith("trigger:")]


# --- RabbitMQ ------------------------------------------------------------------------------------


@pytest.fixture
async def queue_name(rabbit: None) -> AsyncIterator[str]:
    name = f"fluxo-test-{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (name, f"{name}.dead"):
            await channel.queue_delete(queue)


async def publish(queue: str, body: bytes, message_id: str | None = None) -> None:
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        await channel.default_exchange.publish(
            aio_pika.Message(body=body, message_id=message_id), routing_key=queue
        )


async def waiting(queue: str) -> int:
    """Messages in ``queue`` neither delivered nor unacknowledged... and unacknowledged ones:
    a consumer's are counted once it lets them go, so poll until it settles."""
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def take_all(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(RABBIT_URL)
    taken = []
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


async def applied(platform: Platform, document: dict[str, Any]) -> None:
    result = await platform.resources.apply(ACME, document)
    condition = result.document["status"]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("True", "Watching"), condition


async def until_subscribed(platform: Platform, topic: str, body: bytes) -> None:
    """Publish ``body`` until its job exists: an MQTT message published before the session's
    first subscription has no one to go to. The repeats are the same message: one job."""
    deadline = time.monotonic() + 20
    while not await trigger_jobs(platform):
        assert time.monotonic() < deadline, "the MQTT trigger did not subscribe within 20 s"
        await mqtt_publish(topic, body)
        await asyncio.sleep(0.3)


async def test_a_rabbitmq_message_makes_one_job_and_is_acknowledged_after(
    platform: Platform, queue_name: str
) -> None:
    await applied(
        platform,
        queue_trigger(
            "orders",
            source="rabbitmq",
            queue=queue_name,
            username="guest",
            passwordSecret="rabbit-password",
        ),
    )
    await publish(queue_name, json.dumps({"order": 42}).encode(), message_id="order-42")
    [job] = await eventually(lambda: trigger_jobs(platform))
    done = await platform.jobs.wait(ACME, job.id, 20)
    assert done.status == "succeeded"
    assert done.idempotency_key == "trigger:orders:id:order-42"
    assert done.result == {
        "body": {"order": 42},
        "messageId": "order-42",
        "queue": queue_name,
        "routingKey": queue_name,
    }
    # Acknowledged: once the platform stops, nothing is left in the queue.
    await platform.resources.delete(ACME, "Trigger", "orders")
    await eventually(lambda: _empty(queue_name))


async def _empty(queue: str) -> bool:
    return await waiting(queue) == 0


async def test_the_same_rabbitmq_message_three_times_makes_one_job(
    platform: Platform, queue_name: str
) -> None:
    await applied(platform, queue_trigger("orders", source="rabbitmq", queue=queue_name))
    for _ in range(3):
        await publish(queue_name, b'{"order": 7}', message_id="order-7")
    await eventually(lambda: _jobs_then_quiet(platform, 1))
    jobs = await trigger_jobs(platform)
    assert [j.idempotency_key for j in jobs] == ["trigger:orders:id:order-7"]
    assert (await platform.jobs.wait(ACME, jobs[0].id, 20)).status == "succeeded"
    assert (await platform.triggers.get(ACME, "orders")).jobs_created == 1
    await platform.resources.delete(ACME, "Trigger", "orders")
    await eventually(lambda: _empty(queue_name))  # all three acknowledged


async def _jobs_then_quiet(platform: Platform, count: int) -> bool:
    jobs = await trigger_jobs(platform)
    if len(jobs) != count:
        return False
    await asyncio.sleep(1.0)  # and no more after a while
    return len(await trigger_jobs(platform)) == count


async def test_poison_rabbitmq_messages_go_to_the_dead_letter_queue_with_the_reason(
    platform: Platform, queue_name: str
) -> None:
    await applied(
        platform,
        queue_trigger(
            "orders", workflow="strict", source="rabbitmq", queue=queue_name, maxMessageBytes=64
        ),
    )
    await publish(queue_name, b"{not json", message_id="p-1")
    await publish(queue_name, b"\xff\xfe", message_id="p-2")
    await publish(queue_name, json.dumps({"n": 1, "pad": "x" * 100}).encode(), message_id="p-3")
    await publish(queue_name, b'{"m": 1}', message_id="p-4")  # the workflow needs n
    await publish(queue_name, b'{"n": 1}', message_id="ok-1")
    [job] = await eventually(lambda: trigger_jobs(platform))
    assert (await platform.jobs.wait(ACME, job.id, 20)).result["body"] == {"n": 1}
    dead: list[Any] = []

    async def four_dead() -> bool:
        dead.extend(await take_all(f"{queue_name}.dead"))
        return len(dead) == 4

    await eventually(four_dead)
    reasons = {m.message_id: str((m.headers or {})["x-fluxo-dead-reason"]) for m in dead}
    assert "not a JSON document" in reasons["p-1"]
    assert "not a JSON document" in reasons["p-2"]
    assert "over the limit of 64 bytes" in reasons["p-3"]
    assert "the job was refused" in reasons["p-4"]
    assert {m.body for m in dead if m.message_id == "p-2"} == {b"\xff\xfe"}
    assert all((m.headers or {})["x-fluxo-trigger"] == "orders" for m in dead)
    assert len(await trigger_jobs(platform)) == 1


# --- MQTT ----------------------------------------------------------------------------------------


async def mqtt_publish(topic: str, body: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        await c.publish(topic, body, qos=1)


async def test_mqtt_messages_make_one_job_each_even_while_fluxo_is_down(
    mosquitto: None, db: Database, secrets: SecretStore
) -> None:
    topic = f"fluxo-test/{uuid.uuid4().hex[:10]}/orders"
    document = queue_trigger(
        "sensors", source="mqtt", topic=topic, clientId=f"fluxo-t-{uuid.uuid4().hex[:8]}"
    )
    first = platform_on(db, secrets)
    async with first:
        await first.jobs.apply(ECHO, ACME)
        await applied(first, document)
        await until_subscribed(first, topic, b'{"id": "r-1", "t": 21.5}')
        for _ in range(3):  # the same message three more times: still one job
            await mqtt_publish(topic, b'{"id": "r-1", "t": 21.5}')
        # Without an id, the topic and body's digest: the same reading three times is one too.
        for _ in range(3):
            await mqtt_publish(topic, b'{"t": 30}')
        await eventually(lambda: _jobs_then_quiet(first, 2))
    # Fluxo is down: the broker keeps these for its persistent session.
    await mqtt_publish(topic, b'{"id": "r-2", "t": 22.0}')
    await mqtt_publish(topic, b'{"id": "r-3", "t": 22.5}')
    second = platform_on(db, secrets)
    async with second:
        await eventually(lambda: _jobs_then_quiet(second, 4))
        results = [
            (await second.jobs.wait(ACME, j.id, 20)).result for j in await trigger_jobs(second)
        ]
        assert sorted(str(r["messageId"]) for r in results) == ["None", "r-1", "r-2", "r-3"]
        assert all(r["topic"] == topic for r in results)
        await second.resources.delete(ACME, "Trigger", "sensors")


async def test_poison_mqtt_messages_go_to_the_dead_letter_topic(
    mosquitto: None, platform: Platform
) -> None:
    topic = f"fluxo-test/{uuid.uuid4().hex[:10]}/in"
    dead_topic = f"{topic}/dead"
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"dl-{uuid.uuid4().hex[:8]}") as dl:
        await dl.subscribe(dead_topic, qos=1)
        await applied(
            platform,
            queue_trigger(
                "sensors",
                source="mqtt",
                topic=topic,
                deadLetterTopic=dead_topic,
                clientId=f"fluxo-t-{uuid.uuid4().hex[:8]}",
            ),
        )
        await until_subscribed(platform, topic, b'{"id": "first"}')
        await mqtt_publish(topic, b"\x00\x01 not json")
        message = await asyncio.wait_for(anext(aiter(dl.messages)), 20)
        envelope = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        assert envelope["trigger"] == "sensors"
        assert envelope["topic"] == topic
        assert "not a JSON document" in envelope["reason"]
        assert envelope["body"] == "\x00\x01 not json"
    assert len(await trigger_jobs(platform)) == 1  # the first message's only
    await platform.resources.delete(ACME, "Trigger", "sensors")


class _StopsBeforeCommitting(MqttSource):
    """A Fluxo that stops after a message arrived and before its job was committed."""

    received: asyncio.Event

    async def _handle(self, sink: TriggerSink, session: MqttSession, message: Any) -> None:
        type(self).received.set()
        await asyncio.Event().wait()  # never fires: the process is gone


async def test_an_mqtt_message_whose_job_was_not_committed_comes_back_after_a_restart(
    mosquitto: None, db: Database, secrets: SecretStore
) -> None:
    topic = f"fluxo-test/{uuid.uuid4().hex[:10]}/orders"
    document = queue_trigger(
        "sensors", source="mqtt", topic=topic, clientId=f"fluxo-t-{uuid.uuid4().hex[:8]}"
    )
    _StopsBeforeCommitting.received = asyncio.Event()

    def stopping(row: TriggerRow) -> MqttSource:
        return _StopsBeforeCommitting(row, secrets, DocumentLimits(), policy=LOOPBACK)

    first = Platform(
        db,
        svc.SERVICES,
        workers=1,
        admission_cache_s=0,
        secrets=secrets,
        trigger_tick_s=0.2,
        trigger_sources={"queue": stopping},
        host_policy=LOOPBACK,
    )
    async with first:
        await first.jobs.apply(ECHO, ACME)
        await applied(first, document)
        deadline = time.monotonic() + 20
        while not _StopsBeforeCommitting.received.is_set():  # until the session subscribed
            assert time.monotonic() < deadline, "the MQTT trigger did not subscribe within 20 s"
            await mqtt_publish(topic, b'{"id": "r-9", "t": 19.5}')
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_StopsBeforeCommitting.received.wait(), 0.3)
        assert await trigger_jobs(first) == []
    # Not acknowledged (QoS 1): the broker sends it again to the session, and it makes its job.
    second = platform_on(db, secrets)
    async with second:
        [job] = await eventually(lambda: trigger_jobs(second))
        assert job.idempotency_key == "trigger:sensors:id:r-9"
        done = await second.jobs.wait(ACME, job.id, 20)
        assert done.result["body"] == {"id": "r-9", "t": 19.5}
        await eventually(lambda: _jobs_then_quiet(second, 1))
        await second.resources.delete(ACME, "Trigger", "sensors")
