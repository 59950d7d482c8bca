"""The queue transport contract (``service_runtime.transports.base``), run against every backend.

Each case runs on the SQL transport (on SQLite and on PostgreSQL) and on the RabbitMQ transport
(outbox in SQLite or PostgreSQL, relay in the same process). Where backends legitimately differ
(RabbitMQ publishes through a relay, so a message appears shortly AFTER its commit) the cases wait
for the outcome with a deadline instead of assuming it is instant, and say so.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aio_pika
import pytest
import sqlalchemy as sa

from fluxo_core.errors import TransportError
from fluxo_core.storage import Database, Transaction
from fluxo_core.storage.tables import outbox
from service_runtime.relay import OutboxMessage, OutboxRelay
from service_runtime.transports import (
    Delivery,
    OutgoingMessage,
    SqlTransport,
    Transport,
    dead_letter_queue,
)
from service_runtime.transports.rabbitmq import RabbitMqTransport
from tests.conftest import require_server

AMQP_URL = os.environ.get("FLUXO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

pytestmark = pytest.mark.timeout(30)

LONG_LEASE = 30.0
DEADLINE = 5.0  # the longest any "eventually" below may take


class BoomError(Exception):
    """Raised inside a transaction to roll it back."""


_amqp_ok: bool | None = None


async def amqp_reachable() -> bool:
    global _amqp_ok
    if _amqp_ok is None:
        try:
            conn = await aio_pika.connect(AMQP_URL, timeout=3)
            await conn.close()
            _amqp_ok = True
        except Exception:
            _amqp_ok = False
    return _amqp_ok


@dataclass
class Backend:
    """Makes transports of one kind on one database, and cleans up after them."""

    kind: str
    db: Database
    queues: list[str] = field(default_factory=list)
    made: list[Transport] = field(default_factory=list)

    def queue(self, role: str = "work") -> str:
        name = f"conf.{uuid.uuid4().hex[:10]}.{role}"
        self.queues += [name, dead_letter_queue(name)]
        return name

    async def new_transport(self, *, sql_poll_interval_s: float = 1.0) -> Transport:
        """``sql_poll_interval_s``: how often the SQL transport's ``wait`` looks again without
        a wake-up (RabbitMQ's wait watches the broker's queue depth instead)."""
        transport: Transport
        if self.kind == "sql":
            transport = SqlTransport(self.db, poll_interval_s=sql_poll_interval_s)
        else:
            transport = RabbitMqTransport(self.db, AMQP_URL, operation_timeout_s=5.0)
        await transport.start()
        self.made.append(transport)
        return transport

    async def cleanup(self) -> None:
        for transport in self.made:
            await transport.close()
        if self.kind == "rabbitmq" and self.queues:
            conn = await aio_pika.connect(AMQP_URL, timeout=3)
            async with conn:
                channel = await conn.channel()
                for name in self.queues:
                    await channel.queue_delete(name)


@pytest.fixture(params=["sql", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def backend(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[Backend]:
    if request.param == "rabbitmq":
        require_server("RabbitMQ", await amqp_reachable(), f"FLUXO_TEST_AMQP_URL={AMQP_URL}")
    backend = Backend(request.param, db)
    yield backend
    await backend.cleanup()


@pytest.fixture
async def transport(backend: Backend) -> Transport:
    return await backend.new_transport()


@pytest.fixture
def queue(backend: Backend) -> str:
    return backend.queue()


# -- helpers ------------------------------------------------------------------------------------


def msg(
    queue: str,
    n: int = 0,
    *,
    headers: dict[str, str] | None = None,
    max_attempts: int = 5,
    delay_s: float = 0.0,
) -> OutgoingMessage:
    return OutgoingMessage(
        queue=queue,
        message_id=f"m-{n}-{uuid.uuid4().hex[:6]}",
        body=f'{{"n": {n}}}'.encode(),
        headers=headers or {},
        max_attempts=max_attempts,
        delay_s=delay_s,
    )


async def enqueue(db: Database, transport: Transport, *messages: OutgoingMessage) -> None:
    await db.transact(lambda tx: transport.enqueue(tx, messages))


async def settle(db: Database, transport: Transport, deliveries: Sequence[Delivery]) -> None:
    await db.transact(lambda tx: transport.ack(tx, deliveries))


async def claim_n(
    transport: Transport,
    queues: Sequence[str],
    n: int,
    *,
    lease_s: float = LONG_LEASE,
    timeout: float = DEADLINE,
) -> list[Delivery]:
    """Claim until ``n`` messages arrived (a broker transport delivers after its relay ran)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        got += await transport.claim(queues, limit=n - len(got), lease_s=lease_s)
        if len(got) >= n:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"claimed {len(got)} of {n} messages from {list(queues)} in {timeout}s")
        await transport.wait(queues, min(0.1, remaining))
    return got


async def nothing_for(transport: Transport, queues: Sequence[str], seconds: float) -> None:
    """Assert that no message can be claimed during ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        got = await transport.claim(queues, limit=10, lease_s=LONG_LEASE)
        assert got == [], f"unexpected message(s): {[d.message_id for d in got]}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(0.05, remaining))


async def depth_becomes(transport: Transport, queue: str, expected: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while (depth := await transport.depth(queue)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"depth({queue}) is {depth}, expected {expected}")
        await asyncio.sleep(0.02)


# -- the contract -------------------------------------------------------------------------------


async def test_implements_the_protocol(transport: Transport) -> None:
    assert isinstance(transport, Transport)
    assert transport.name in ("sql", "rabbitmq")
    caps = transport.capabilities
    assert caps.delayed_delivery
    assert caps.dead_letter
    assert caps.lease_expiry
    assert caps.transactional_enqueue == (transport.name == "sql")


async def test_a_rolled_back_transaction_enqueues_nothing(
    db: Database, transport: Transport, queue: str
) -> None:
    lost = msg(queue, 1)

    def fail(tx: Transaction) -> None:
        transport.enqueue(tx, [lost])
        raise BoomError

    with pytest.raises(BoomError):
        await db.transact(fail)
    kept = msg(queue, 2)
    await enqueue(db, transport, kept)

    # Once the committed message is there, the rolled-back one (enqueued first) would be too.
    [delivery] = await claim_n(transport, [queue], 1)
    assert delivery.message_id == kept.message_id
    await nothing_for(transport, [queue], 0.2)


async def test_claim_returns_the_message(db: Database, transport: Transport, queue: str) -> None:
    sent = msg(
        queue, 7, headers={"content-type": "application/json", "x-trace": "t1"}, max_attempts=3
    )
    await enqueue(db, transport, sent)

    [d] = await claim_n(transport, [queue], 1)
    assert d.queue == queue
    assert d.message_id == sent.message_id
    assert d.body == sent.body
    assert d.headers == {"content-type": "application/json", "x-trace": "t1"}
    assert d.attempt == 1
    assert d.max_attempts == 3
    # A claimed message is leased: nobody else gets it meanwhile.
    await nothing_for(transport, [queue], 0.1)


async def test_ack_removes_the_message(backend: Backend, db: Database, queue: str) -> None:
    first = await backend.new_transport()
    await enqueue(db, first, msg(queue))
    [d] = await claim_n(first, [queue], 1, lease_s=0.3)
    await settle(db, first, [d])
    # Gone for good: past its lease, and also after the consumer went away (a broker re-delivers
    # whatever a closed connection left unsettled).
    await first.close()
    second = await backend.new_transport()
    await nothing_for(second, [queue], 0.6)
    assert await second.depth(queue) == 0


async def test_an_ack_in_a_rolled_back_transaction_does_not_settle(
    db: Database, transport: Transport, queue: str
) -> None:
    await enqueue(db, transport, msg(queue))
    [d] = await claim_n(transport, [queue], 1, lease_s=0.3)

    def fail(tx: Transaction) -> None:
        transport.ack(tx, [d])
        raise BoomError

    with pytest.raises(BoomError):
        await db.transact(fail)
    [again] = await claim_n(transport, [queue], 1)
    assert again.message_id == d.message_id
    assert again.attempt == 2


async def test_an_expired_lease_redelivers(db: Database, transport: Transport, queue: str) -> None:
    sent = msg(queue, headers={"k": "v"})
    await enqueue(db, transport, sent)
    [first] = await claim_n(transport, [queue], 1, lease_s=0.4)
    started = time.monotonic()
    await nothing_for(transport, [queue], 0.2)

    [second] = await claim_n(transport, [queue], 1, lease_s=0.4)
    assert time.monotonic() - started >= 0.3
    assert (second.message_id, second.body, second.headers) == (
        sent.message_id,
        sent.body,
        {"k": "v"},
    )
    assert (first.attempt, second.attempt) == (1, 2)

    # A late ack of the expired claim settles nothing: the current claim still expires.
    await settle(db, transport, [first])
    [third] = await claim_n(transport, [queue], 1)
    assert (third.message_id, third.attempt) == (sent.message_id, 3)
    await settle(db, transport, [third])
    await nothing_for(transport, [queue], 0.1)


async def test_a_vanished_consumer_gets_its_messages_redelivered(
    backend: Backend, db: Database, queue: str
) -> None:
    # A consumer process that dies holding a claim: another instance gets the message again,
    # once the lease ran out (SQL) or at once when the connection dropped (RabbitMQ).
    first = await backend.new_transport()
    await enqueue(db, first, msg(queue))
    [held] = await claim_n(first, [queue], 1, lease_s=0.5)
    await first.close()

    second = await backend.new_transport()
    [again] = await claim_n(second, [queue], 1)
    assert again.message_id == held.message_id
    assert again.attempt == 2


async def test_extend_keeps_a_claim_past_its_first_lease(
    db: Database, transport: Transport, queue: str
) -> None:
    # Two messages claimed with the same short lease; only the first one's is renewed. Once the
    # second is back (its lease ran out), the first is still held.
    kept, control = msg(queue, 1), msg(queue, 2)
    await enqueue(db, transport, kept, control)
    claimed = await claim_n(transport, [queue], 2, lease_s=0.4)
    held = next(d for d in claimed if d.message_id == kept.message_id)
    await transport.extend([held], lease_s=LONG_LEASE)

    [back] = await claim_n(transport, [queue], 1)
    assert (back.message_id, back.attempt) == (control.message_id, 2)
    await nothing_for(transport, [queue], 0.2)
    # Still the holder's to settle; renewing a settled delivery does nothing.
    await settle(db, transport, [held, back])
    await transport.extend([held, back], lease_s=LONG_LEASE)
    await nothing_for(transport, [queue], 0.2)
    await depth_becomes(transport, queue, 0)


async def test_extend_never_takes_back_a_lease_that_ran_out(
    db: Database, transport: Transport, queue: str
) -> None:
    # A consumer that renews too late (its lease ran out, another consumer has the message)
    # renews nothing: the message comes back when the current holder's lease runs out.
    await enqueue(db, transport, msg(queue))
    [late] = await claim_n(transport, [queue], 1, lease_s=0.3)
    [current] = await claim_n(transport, [queue], 1, lease_s=0.3)
    assert (late.attempt, current.attempt) == (1, 2)
    await transport.extend([late], lease_s=LONG_LEASE)

    [again] = await claim_n(transport, [queue], 1)
    assert (again.message_id, again.attempt) == (late.message_id, 3)


async def test_retry_redelivers_after_the_delay(
    db: Database, transport: Transport, queue: str
) -> None:
    sent = msg(queue, headers={"k": "v"})
    await enqueue(db, transport, sent)
    [d] = await claim_n(transport, [queue], 1)
    started = time.monotonic()
    await db.transact(lambda tx: transport.retry(tx, d, delay_s=0.6, error="boom"))

    await nothing_for(transport, [queue], 0.4)
    [again] = await claim_n(transport, [queue], 1)
    assert time.monotonic() - started >= 0.6 - 0.02  # never early (timer granularity aside)
    assert (again.message_id, again.body, again.headers) == (sent.message_id, sent.body, {"k": "v"})
    assert again.attempt == 2
    await settle(db, transport, [again])
    await nothing_for(transport, [queue], 0.2)


async def test_dead_letter_moves_the_message_to_the_dlq(
    db: Database, transport: Transport, queue: str
) -> None:
    sent = msg(queue, headers={"k": "v"}, max_attempts=2)
    await enqueue(db, transport, sent)
    [d] = await claim_n(transport, [queue], 1, lease_s=0.3)
    await db.transact(lambda tx: transport.dead_letter(tx, d, error="bad input"))

    dlq = dead_letter_queue(queue)
    [dead] = await claim_n(transport, [dlq], 1)
    assert dead.queue == dlq
    assert (dead.message_id, dead.body, dead.headers) == (sent.message_id, sent.body, {"k": "v"})
    assert dead.attempt == 1
    # Gone from the work queue for good, also past the original lease.
    await nothing_for(transport, [queue], 0.5)


async def test_delayed_delivery(db: Database, transport: Transport, queue: str) -> None:
    started = time.monotonic()
    await enqueue(db, transport, msg(queue, 1, delay_s=0.6), msg(queue, 2))

    [now] = await claim_n(transport, [queue], 1)
    assert now.body == b'{"n": 2}'
    # Claimed as soon as it is there: a delivery before its delay fails the last assertion. (No
    # window of "nothing yet": on a loaded machine the first claim alone may outlast it.)
    [later] = await claim_n(transport, [queue], 1)
    assert later.body == b'{"n": 1}'
    assert later.attempt == 1
    assert time.monotonic() - started >= 0.6 - 0.02


async def test_fifo_within_a_queue(db: Database, transport: Transport, queue: str) -> None:
    await enqueue(db, transport, *(msg(queue, n) for n in range(6)))
    await enqueue(db, transport, *(msg(queue, n) for n in range(6, 10)))

    order: list[bytes] = []
    while len(order) < 10:
        batch = await claim_n(transport, [queue], min(3, 10 - len(order)))
        order += [d.body for d in batch]
        await settle(db, transport, batch)
    assert order == [f'{{"n": {n}}}'.encode() for n in range(10)]


async def test_claim_respects_the_limit(db: Database, transport: Transport, queue: str) -> None:
    await enqueue(db, transport, *(msg(queue, n) for n in range(5)))
    await depth_becomes(transport, queue, 5)

    sizes = [len(await transport.claim([queue], limit=2, lease_s=LONG_LEASE)) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]
    assert await transport.claim([queue], limit=0, lease_s=LONG_LEASE) == []


async def test_claim_serves_several_queues(
    backend: Backend, db: Database, transport: Transport, queue: str
) -> None:
    other = backend.queue("other")
    await enqueue(db, transport, msg(queue, 1), msg(other, 2))
    got = await claim_n(transport, [queue, other], 2)
    assert sorted((d.queue, d.body) for d in got) == sorted(
        [(queue, b'{"n": 1}'), (other, b'{"n": 2}')]
    )


async def test_an_enqueue_ends_a_wait(backend: Backend, db: Database, queue: str) -> None:
    # The wait's timeout and the SQL transport's safety poll are an hour away: only the
    # enqueue can end it (the test's timeout catches a wake-up that never comes).
    transport = await backend.new_transport(sql_poll_interval_s=3600)
    await transport.claim([queue], limit=1, lease_s=LONG_LEASE)  # queue exists, empty
    waiter = asyncio.create_task(transport.wait([queue], 3600))
    # A wake-up before the waiter listens is lost by design (consumers claim before they wait),
    # so enqueue until one reaches it: the first one after it started listening.
    sent = 0
    while not waiter.done():
        await enqueue(db, transport, msg(queue, sent))
        sent += 1
        await asyncio.wait([waiter], timeout=0.05)
    await waiter
    assert len(await claim_n(transport, [queue], sent)) == sent


async def test_wait_gives_up_after_its_timeout_not_before(transport: Transport, queue: str) -> None:
    # Nothing comes: the wait ends at its timeout (the test's timeout catches one that never
    # does), and not earlier.
    started = time.monotonic()
    await transport.wait([queue], 0.2)
    assert time.monotonic() - started >= 0.2 - 0.02  # timer granularity aside


async def test_depth_counts_waiting_messages(
    db: Database, transport: Transport, queue: str
) -> None:
    assert await transport.depth(queue) == 0
    await enqueue(db, transport, *(msg(queue, n) for n in range(3)))
    await depth_becomes(transport, queue, 3)
    # Nothing is left to publish (RabbitMQ: the relay emptied the outbox), so the depth is
    # final: 3 and not more (each message counted once).
    assert await outbox_ids(db) == []
    assert await transport.depth(queue) == 3

    got = await claim_n(transport, [queue], 3)
    await settle(db, transport, got)
    await depth_becomes(transport, queue, 0)


# -- beyond the contract: the outbox relay and RabbitMQ error mapping -----------------------------
# (Backend-specific; candidates for tests/integration/ once that layout settles.)


async def test_sql_claim_over_several_queues_takes_the_oldest_within_its_limit(
    db: Database,
) -> None:
    # The SQL transport merges one ordered scan per queue (PostgreSQL: LATERAL, each with the
    # limit): the merged claim must still be the oldest messages overall, and no more of them.
    transport = SqlTransport(db)
    first, second = f"conf.{uuid.uuid4().hex[:10]}.a", f"conf.{uuid.uuid4().hex[:10]}.b"
    for n in range(8):  # one transaction each: visible in this order, alternating queues
        await enqueue(db, transport, msg(first if n % 2 == 0 else second, n))

    got = await transport.claim([first, second], limit=3, lease_s=LONG_LEASE)
    assert [d.body for d in got] == [f'{{"n": {n}}}'.encode() for n in range(3)]
    rest = await transport.claim([second, first], limit=10, lease_s=LONG_LEASE)
    assert sorted(d.body for d in rest) == sorted(f'{{"n": {n}}}'.encode() for n in range(3, 8))
    assert await transport.claim([first, second], limit=10, lease_s=LONG_LEASE) == []


def bodies(deliveries: Sequence[Delivery]) -> list[bytes]:
    return [d.body for d in deliveries]


async def test_sql_take_hands_out_ready_messages_settled_in_the_taking_transaction(
    db: Database,
) -> None:
    transport = SqlTransport(db)
    queue = f"conf.{uuid.uuid4().hex[:10]}.take"
    for n in range(3):
        await enqueue(db, transport, msg(queue, n))
    await enqueue(db, transport, msg(queue, 9, delay_s=LONG_LEASE))  # not ready: not taken

    def take_and_settle_two(tx: Transaction) -> list[Delivery]:
        taken = transport.take(tx, [queue], limit=10)
        transport.ack(tx, taken[:2])
        return taken

    taken = await db.transact(take_and_settle_two, keyed=True)
    assert bodies(taken) == [f'{{"n": {n}}}'.encode() for n in range(3)]
    assert {d.attempt for d in taken} == {1}
    # Only the one left unsettled is there still, never leased (its first claim is attempt 1).
    (left,) = await transport.claim([queue], limit=10, lease_s=LONG_LEASE)
    assert (left.body, left.attempt) == (b'{"n": 2}', 1)


async def test_sql_a_take_in_a_failed_transaction_took_nothing(db: Database) -> None:
    transport = SqlTransport(db)
    queue = f"conf.{uuid.uuid4().hex[:10]}.take"
    await enqueue(db, transport, msg(queue, 1), msg(queue, 2))

    def take_settle_and_fail(tx: Transaction) -> None:
        transport.ack(tx, transport.take(tx, [queue], limit=10))
        raise BoomError

    with pytest.raises(BoomError):
        await db.transact(take_settle_and_fail)
    got = await transport.claim([queue], limit=10, lease_s=LONG_LEASE)
    assert bodies(got) == [b'{"n": 1}', b'{"n": 2}']


async def test_sql_concurrent_takers_never_share_a_message(pg_schema_url: str) -> None:
    # PostgreSQL only: on SQLite two writing transactions never overlap.
    db = Database(pg_schema_url)
    await db.migrate()
    try:
        await _two_takers_at_once(db)
    finally:
        await db.close()


async def _two_takers_at_once(db: Database) -> None:
    transport = SqlTransport(db)
    queue = f"conf.{uuid.uuid4().hex[:10]}.take"
    await enqueue(db, transport, *(msg(queue, n) for n in range(5)))
    first_took = threading.Event()
    second_done = threading.Event()

    def first(tx: Transaction) -> list[Delivery]:
        taken = transport.take(tx, [queue], limit=2)
        first_took.set()
        second_done.wait(DEADLINE)  # hold the taken rows while the second taker runs
        transport.ack(tx, taken)
        return taken

    def second(tx: Transaction) -> list[Delivery]:
        first_took.wait(DEADLINE)
        try:
            return transport.take(tx, [queue], limit=10)
        finally:
            second_done.set()

    one, two = await asyncio.gather(db.transact(first, keyed=True), db.transact(second, keyed=True))
    assert bodies(one) == [b'{"n": 0}', b'{"n": 1}']
    assert bodies(two) == [f'{{"n": {n}}}'.encode() for n in range(2, 5)]


class FlakyPublisher:
    """A publisher that refuses its first ``failures`` batches, then records what it gets."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[str]] = []
        self.times: list[float] = []  # when each batch was published (time.time())

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        if self.failures:
            self.failures -= 1
            raise TransportError("broker away", retryable=True)
        self.batches.append([m.message_id for m in messages])
        self.times.append(time.time())


async def until_published(publisher: FlakyPublisher, batches: int) -> None:
    """Wait until ``publisher`` got ``batches`` batches (the relay runs in the background)."""
    deadline = time.monotonic() + DEADLINE
    while len(publisher.batches) < batches:
        if time.monotonic() > deadline:
            pytest.fail(f"the relay published {publisher.batches}, expected {batches} batches")
        await asyncio.sleep(0.02)


async def outbox_ids(db: Database) -> list[str]:
    query = sa.select(outbox.c.message_id).order_by(outbox.c.id)
    return list(await db.read(lambda conn: conn.scalars(query).all()))


@pytest.fixture
def outbox_writer(db: Database) -> RabbitMqTransport:
    # Only its enqueue is used (writes the outbox); it never connects.
    return RabbitMqTransport(db, "amqp://guest:guest@127.0.0.1:1/", run_relay=False)


async def test_relay_keeps_the_batch_when_publishing_fails(
    db: Database, outbox_writer: RabbitMqTransport
) -> None:
    sent = [msg("q", n) for n in range(3)]
    await enqueue(db, outbox_writer, *sent)
    publisher = FlakyPublisher(failures=1)
    relay = OutboxRelay(db, publisher, batch_size=2)

    with pytest.raises(TransportError):
        await relay.run_once()
    assert await outbox_ids(db) == [m.message_id for m in sent]
    assert await relay.run_once() == 2
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    assert publisher.batches == [[sent[0].message_id, sent[1].message_id], [sent[2].message_id]]
    assert await outbox_ids(db) == []


async def test_relay_holds_delayed_messages_until_due(
    db: Database, outbox_writer: RabbitMqTransport
) -> None:
    later, now = msg("q", 1, delay_s=0.4), msg("q", 2)
    enqueued = time.time()  # the outbox's due times are wall-clock times
    await enqueue(db, outbox_writer, later, now)
    publisher = FlakyPublisher(failures=0)
    relay = OutboxRelay(db, publisher)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        # The message due now goes first, alone; the later one once due, without a commit to
        # wake the relay (it wakes for the due row by itself), and not before its delay.
        await until_published(publisher, 1)
        assert publisher.batches == [[now.message_id]]
        await until_published(publisher, 2)
        assert publisher.batches == [[now.message_id], [later.message_id]]
        assert publisher.times[1] - enqueued >= 0.4 - 0.02
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_rabbitmq_unreachable_is_a_retryable_transport_error(db: Database) -> None:
    transport = RabbitMqTransport(db, "amqp://guest:guest@127.0.0.1:1/", operation_timeout_s=2)
    with pytest.raises(TransportError) as info:
        await transport.start()
    assert info.value.retryable
    assert isinstance(info.value.__cause__, OSError | aio_pika.exceptions.AMQPError)
    await transport.close()


@pytest.mark.rabbitmq
async def test_rabbitmq_refused_credentials_are_not_retryable(db: Database) -> None:
    require_server("RabbitMQ", await amqp_reachable(), f"FLUXO_TEST_AMQP_URL={AMQP_URL}")
    url = AMQP_URL.replace("guest:guest@", "fluxo-nobody:wrong@", 1)
    transport = RabbitMqTransport(db, url, operation_timeout_s=5)
    with pytest.raises(TransportError, match="refused the connection") as info:
        await transport.start()
    assert not info.value.retryable
    assert "wrong" not in info.value.message  # no secret in the message
    await transport.close()
