"""The RabbitMQ transport: a transactional outbox in the database, durable queues on the broker.

Writing (``enqueue``, ``retry``, ``dead_letter``) happens inside the caller's database transaction:
the message becomes a row of the ``outbox`` table and the transaction notifies ``outbox``. An
:class:`~service_runtime.relay.OutboxRelay` (started by :meth:`RabbitMqTransport.start` unless
``run_relay=False``) publishes the rows with publisher confirms and persistent delivery, then
deletes them: a message reaches the broker if and only if its transaction committed, at least once.

Reading (``claim``) is ``basic.get`` without auto-ack, up to ``limit`` messages. Settling happens
after the consumer's transaction committed (``tx.after_commit``): ``ack`` acks; ``retry`` and
``dead_letter`` commit a copy to the outbox and ack the original. A crash in between re-delivers
the original; the consumer's inbox (keyed by message id) drops the copy.

Queues
    Named exactly like the SQL transport's queues (``<queue>``, ``<queue>.dlq``), durable, of type
    ``quorum`` (default) or ``classic``. Every declaration of a name uses the same arguments, so
    all processes must agree on ``queue_type``.

Leases
    The broker itself has no lease: it holds an unacknowledged message for its consumer until the
    consumer's channel or connection goes away, then re-delivers it at once. A crashed process is
    that case (its TCP connection closes with it), so after a crash its messages come back without
    waiting for any lease. A lease here is the process's own timer: an unsettled claim is given
    back (``basic.reject`` with requeue) when it runs out, so a live consumer that stopped
    renewing (``extend``, its heartbeat) does not hold messages forever. Both count as a delivery
    attempt. Settling or renewing a delivery whose lease already ran out does nothing, like the
    SQL transport's lease token: the broker delivers it again. The broker's own
    ``consumer_timeout`` (30 minutes by default) closes the channel of a delivery held longer,
    so a handler must finish within it.

Attempts
    ``attempt = x-fluxo-attempt + redeliveries``. The ``x-fluxo-attempt`` header is written by the
    publisher: absent (1) for a new message, ``attempt + 1`` on the copy that ``retry`` writes, and
    absent again on a dead-letter copy (its first delivery from ``<queue>.dlq`` is attempt 1, as
    in SQL). Redeliveries are the broker's own count: on quorum queues the exact
    ``x-delivery-count`` header; classic queues only flag a redelivery, so there it counts as 1
    however often it happened (a lower bound).

Delays (``OutgoingMessage.delay_s``, ``retry(delay_s=...)``)
    A delayed message waits in the outbox until it is due; the relay publishes it then (see
    :mod:`service_runtime.relay`). No plugin, no TTL queues: the delay is never early, late by
    the relay's wake-up only, and as durable as the database. (Broker-side TTL "wait" queues
    were tried and dropped: on RabbitMQ 3.10 quorum queues, at-least-once dead-lettering keeps
    messages whose target queue was deleted forever and then re-publishes other messages of the
    same wait queue, while at-most-once dead-lettering may lose them.)

Depth and wake-ups
    ``depth`` is the broker's count of READY messages: leased ones, delayed ones and those still
    in the outbox are not counted (the SQL transport counts every row). ``wait`` returns when a
    queue has a ready message, when this process's relay published to it (a local
    ``q:<queue>`` wake-up), or after ``timeout``; it looks at the broker with a backoff from
    20 ms up to ``max_poll_interval_s``.

Errors
    aio-pika/aiormq errors are mapped to :class:`~fluxo_core.errors.TransportError` ``from exc``:
    retryable for connection, channel and publish failures; not retryable for refused credentials
    and for a queue that exists with other arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aio_pika
import aio_pika.abc
import aiormq.exceptions
from aio_pika import exceptions as amqp_exc

from fluxo_core.errors import TransportError
from fluxo_core.storage import Database, NewOutboxMessage, OutboxMessage, Transaction
from service_runtime.relay import OutboxRelay
from service_runtime.transports.base import (
    Delivery,
    OutgoingMessage,
    TransportCapabilities,
    dead_letter_queue,
)
from service_runtime.transports.sql import queue_channel

__all__ = ["RabbitMqTransport"]

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-fluxo-attempt"
MAX_ATTEMPTS_HEADER = "x-fluxo-max-attempts"
ERROR_HEADER = "x-fluxo-error"

# Headers a Delivery does not show: ours (reserved prefix) and those the broker adds.
_RESERVED_PREFIXES = ("x-fluxo-", "x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_MAX_ERROR_HEADER = 1000
_FIRST_PUBLISH_TRIES = 5


@dataclass(eq=False)
class _Receipt:
    """The broker handle of a claimed message (``Delivery.receipt``)."""

    message: aio_pika.abc.AbstractIncomingMessage
    timer: asyncio.TimerHandle | None = None
    settled: bool = False  # acked, or given back to the broker when its lease ran out


class _Link:
    """One connection with one channel, (re)opened on first use after a loss."""

    def __init__(self, url: str, name: str, *, confirms: bool, timeout_s: float) -> None:
        self._url = url
        self._name = name
        self._confirms = confirms
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._conn: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        # Per connection: queues declared, and queues that confirmed a publish (the latter only
        # on the publishing link; see _publish_in_order).
        self.declared: set[str] = set()
        self.warm: set[str] = set()
        # Per channel: declared queue objects, bound to the channel.
        self.queues: dict[str, aio_pika.abc.AbstractQueue] = {}

    async def channel(self) -> aio_pika.abc.AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.is_closed:
                    await self._connect()
                assert self._conn is not None
                if self._channel is None or self._channel.is_closed:
                    try:
                        self._channel = await self._conn.channel(
                            publisher_confirms=self._confirms, on_return_raises=self._confirms
                        )
                    except RuntimeError:
                        # aiormq says "closed" here when the broker closed the connection
                        # (e.g. INTERNAL_ERROR "noproc") before aio_pika marked it closed:
                        # open a new connection, once.
                        if attempt == 2:
                            raise
                        self._conn = None
                        continue
                    self.queues.clear()
                break
            assert self._channel is not None
            return self._channel

    async def _connect(self) -> None:
        self._conn = await aio_pika.connect(
            self._url,
            timeout=self._timeout_s,
            client_properties={"connection_name": self._name},
        )
        self.declared.clear()
        self.warm.clear()

    @property
    def broken(self) -> bool:
        """Whether the connection or channel was opened and has since been closed."""
        return (self._conn is not None and self._conn.is_closed) or (
            self._channel is not None and self._channel.is_closed
        )

    async def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        self.declared.clear()
        self.warm.clear()
        self.queues.clear()
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(*_SETTLE_ERRORS):
                await conn.close()


class RabbitMqTransport:
    """Queues on a RabbitMQ broker, written through the database's outbox.

    Args:
        db: the database holding the outbox (the producers' state lives there too).
        amqp_url: ``amqp://user:password@host:port/vhost``.
        queue_type: ``quorum`` (replicated; exact redelivery counts) or ``classic`` (durable).
        run_relay: start an :class:`OutboxRelay` in :meth:`start`. Run one relay per database;
            turn it off in processes that only consume when a dedicated relay runs elsewhere.
        relay_batch_size: outbox rows published per relay pass.
        max_poll_interval_s: the longest pause between two looks at the broker in :meth:`wait`.
        operation_timeout_s: timeout of one broker operation (connect, declare, get, confirm).
    """

    name = "rabbitmq"
    capabilities = TransportCapabilities(
        transactional_enqueue=False, delayed_delivery=True, dead_letter=True, lease_expiry=True
    )

    def __init__(
        self,
        db: Database,
        amqp_url: str,
        *,
        queue_type: Literal["quorum", "classic"] = "quorum",
        run_relay: bool = True,
        relay_batch_size: int = 500,
        max_poll_interval_s: float = 1.0,
        operation_timeout_s: float = 10.0,
    ) -> None:
        self.db = db
        self.queue_type = queue_type
        self.run_relay = run_relay
        self.max_poll_interval_s = max_poll_interval_s
        self.operation_timeout_s = operation_timeout_s
        self.relay = OutboxRelay(db, self, batch_size=relay_batch_size)
        self._publisher = _Link(
            amqp_url, "fluxo-publisher", confirms=True, timeout_s=operation_timeout_s
        )
        self._consumer = _Link(
            amqp_url, "fluxo-consumer", confirms=False, timeout_s=operation_timeout_s
        )
        self._unsettled: set[_Receipt] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._relay_stop: asyncio.Event | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._rotation = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker and, unless ``run_relay=False``, start the outbox relay."""
        with _map_errors("connect to RabbitMQ"):
            await self._publisher.channel()
            await self._consumer.channel()
        if self.run_relay and self._relay_task is None:
            self._relay_stop = asyncio.Event()
            self._relay_task = asyncio.create_task(
                self.relay.run(self._relay_stop), name="fluxo-outbox-relay"
            )
            self._relay_task.add_done_callback(_log_relay_end)

    async def ping(self) -> None:
        with _map_errors("reach RabbitMQ"):
            channel = await self._publisher.channel()
            # A passive declare of a built-in exchange: a round trip to the broker that changes
            # nothing (an open channel alone says nothing about a broker that stopped answering).
            await channel.declare_exchange("amq.direct", passive=True)

    async def close(self) -> None:
        """Stop the relay and disconnect; the broker re-delivers every unsettled claim."""
        task, self._relay_task = self._relay_task, None
        if task is not None and self._relay_stop is not None:
            self._relay_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except TimeoutError:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for receipt in self._unsettled:
            if receipt.timer is not None:
                receipt.timer.cancel()
        self._unsettled.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._consumer.close()
        await self._publisher.close()

    # -- writing, inside the caller's transaction ---------------------------------------------

    def enqueue(self, tx: Transaction, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now = time.time()
        self.relay.outbox.write(tx, [_outbox_message(m, now) for m in messages])

    def ack(self, tx: Transaction, deliveries: Sequence[Delivery]) -> None:
        receipts = [_receipt_of(d) for d in deliveries]
        if receipts:
            tx.after_commit(functools.partial(self._ack_all, receipts))

    def retry(self, tx: Transaction, delivery: Delivery, *, delay_s: float, error: str) -> None:
        receipt = _receipt_of(delivery)
        if receipt.settled:
            return  # its lease ran out: the broker delivers it again already
        headers = {
            **delivery.headers,
            ATTEMPT_HEADER: str(delivery.attempt + 1),
            ERROR_HEADER: error[:_MAX_ERROR_HEADER],
        }
        self._write_copy(tx, delivery, delivery.queue, headers, max(delay_s, 0.0))
        tx.after_commit(functools.partial(self._ack_all, [receipt]))

    def dead_letter(self, tx: Transaction, delivery: Delivery, *, error: str) -> None:
        receipt = _receipt_of(delivery)
        if receipt.settled:
            return
        headers = {**delivery.headers, ERROR_HEADER: error[:_MAX_ERROR_HEADER]}
        self._write_copy(tx, delivery, dead_letter_queue(delivery.queue), headers, 0.0)
        tx.after_commit(functools.partial(self._ack_all, [receipt]))

    def _write_copy(
        self,
        tx: Transaction,
        delivery: Delivery,
        queue: str,
        headers: dict[str, str],
        delay_s: float,
    ) -> None:
        copy = NewOutboxMessage(
            queue=queue,
            message_id=delivery.message_id,
            body=delivery.body,
            headers=headers,
            max_attempts=delivery.max_attempts,
            delay_s=delay_s,
            created_at=time.time(),
        )
        self.relay.outbox.write(tx, [copy])

    # -- publishing (called by the relay) -----------------------------------------------------

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish persistent messages and return once the broker confirmed every one."""
        if not messages:
            return
        with _map_errors(f"publish {len(messages)} message(s)"):
            channel = await self._publisher.channel()
            planned: list[tuple[str, aio_pika.Message]] = []
            for m in messages:
                await self._declare(channel, m.queue)
                headers: dict[str, Any] = {**m.headers, MAX_ATTEMPTS_HEADER: str(m.max_attempts)}
                body = aio_pika.Message(
                    m.body,
                    headers=headers,
                    message_id=m.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                planned.append((m.queue, body))
            await self._publish_in_order(channel, planned)
        # Waiters of this process (``wait``, the worker loop) need not wait for their next look.
        self.db.notify_local(*{queue_channel(m.queue) for m in messages})

    async def _publish_in_order(
        self, channel: aio_pika.abc.AbstractChannel, planned: list[tuple[str, aio_pika.Message]]
    ) -> None:
        """Publish in the given order; wait for every confirm, raise the first failure.

        Publishes are pipelined on one channel, so the broker receives them in outbox (id) order.
        The first message to a queue this connection has not published to yet goes alone and is
        tried again if the broker nacks it: RabbitMQ may nack the first publish to a quorum queue
        that another connection (a consumer) is declaring at the same moment, and a pipelined
        batch would then land out of order.
        """
        link = self._publisher
        inflight: list[asyncio.Future[Any]] = []
        failure: Exception | None = None
        try:
            for queue, message in planned:
                if queue in link.warm:
                    inflight.append(asyncio.ensure_future(self._publish(channel, queue, message)))
                else:
                    await self._publish_first(channel, queue, message)
                    link.warm.add(queue)
        except Exception as exc:
            failure = exc  # still collect the confirms of what is in flight, below
        except BaseException:
            for future in inflight:
                future.cancel()
            raise
        results = await asyncio.gather(*inflight, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if failure is not None or errors:
            # Declarations may be gone (a deleted queue): declare again on the next pass.
            link.declared.clear()
            link.warm.clear()
            raise failure or errors[0]

    async def _publish_first(
        self, channel: aio_pika.abc.AbstractChannel, queue: str, message: aio_pika.Message
    ) -> None:
        for attempt in range(_FIRST_PUBLISH_TRIES):
            try:
                await self._publish(channel, queue, message)
                return
            except amqp_exc.PublishError:
                raise  # returned as unroutable: not a nack
            except amqp_exc.DeliveryError:
                if attempt == _FIRST_PUBLISH_TRIES - 1:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)

    async def _publish(
        self, channel: aio_pika.abc.AbstractChannel, queue: str, message: aio_pika.Message
    ) -> None:
        await channel.default_exchange.publish(
            message, queue, mandatory=True, timeout=self.operation_timeout_s
        )

    async def _declare(self, channel: aio_pika.abc.AbstractChannel, name: str) -> None:
        if name in self._publisher.declared:
            return
        await channel.declare_queue(
            name, durable=True, arguments=self._queue_arguments(), timeout=self.operation_timeout_s
        )
        self._publisher.declared.add(name)

    def _queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"} if self.queue_type == "quorum" else {}

    # -- reading ------------------------------------------------------------------------------

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        start = self._rotation % len(queues)  # rotate so no queue starves the others
        self._rotation += 1
        order = [*queues[start:], *queues[:start]]
        try:
            return await self._claim_once(order, limit, lease_s)
        except TransportError as exc:
            if not (exc.retryable and self._consumer.broken):
                raise
            # The broker closed the connection under us. Known cause: a basic.get on a quorum
            # queue that another connection is creating at this moment ("noproc"). Nothing was
            # handed out, so one more try on a fresh connection is safe.
            log.info("claim lost its connection (%s); trying once more", exc.message)
            await asyncio.sleep(0.05)
        return await self._claim_once(order, limit, lease_s)

    async def _claim_once(
        self, queues: Sequence[str], limit: int, lease_s: float
    ) -> list[Delivery]:
        got: list[Delivery] = []
        try:
            with _map_errors(f"claim from {', '.join(queues)}"):
                for name in queues:
                    queue = await self._consumer_queue(name)
                    while len(got) < limit:
                        message = await queue.get(
                            no_ack=False, fail=False, timeout=self.operation_timeout_s
                        )
                        if message is None:
                            break
                        got.append(self._lease(name, message, lease_s))
        except BaseException:
            for delivery in got:  # give back what this failed claim took, now
                self._expire(delivery.receipt)
            raise
        return got

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        step = 0.02
        with await self.db.subscribe([queue_channel(q) for q in queues]) as sub:
            while True:
                for name in queues:
                    if await self.depth(name) > 0:
                        return
                remaining = deadline - loop.time()
                if remaining <= 0 or await sub.wait(min(step, remaining)):
                    return
                step = min(step * 2, self.max_poll_interval_s)

    async def depth(self, queue: str) -> int:
        with _map_errors(f"read the depth of queue {queue!r}"):
            declared = await (await self._consumer_queue(queue)).declare(
                timeout=self.operation_timeout_s
            )
        return int(declared.message_count or 0)

    async def _consumer_queue(self, name: str) -> aio_pika.abc.AbstractQueue:
        channel = await self._consumer.channel()
        queue = self._consumer.queues.get(name)
        if queue is None:
            queue = await channel.declare_queue(
                name,
                durable=True,
                arguments=self._queue_arguments(),
                timeout=self.operation_timeout_s,
            )
            self._consumer.queues[name] = queue
        return queue

    def _lease(
        self, queue: str, message: aio_pika.abc.AbstractIncomingMessage, lease_s: float
    ) -> Delivery:
        receipt = _Receipt(message)
        receipt.timer = asyncio.get_running_loop().call_later(lease_s, self._expire, receipt)
        self._unsettled.add(receipt)
        headers: Mapping[str, Any] = message.headers or {}
        if self.queue_type == "quorum":
            redeliveries = _as_int(headers.get("x-delivery-count"), 0)
        else:
            redeliveries = 1 if message.redelivered else 0
        return Delivery(
            queue=queue,
            message_id=message.message_id or _content_id(message.body),
            body=message.body,
            headers=_public(headers),
            attempt=_as_int(headers.get(ATTEMPT_HEADER), 1) + redeliveries,
            max_attempts=_as_int(headers.get(MAX_ATTEMPTS_HEADER), 5),
            receipt=receipt,
        )

    async def extend(self, deliveries: Sequence[Delivery], *, lease_s: float) -> None:
        """Restart the lease timers of unsettled deliveries (nothing to tell the broker)."""
        loop = asyncio.get_running_loop()
        for delivery in deliveries:
            receipt = _receipt_of(delivery)
            if receipt.settled:
                continue  # settled, or given back when its lease ran out: not ours any more
            if receipt.timer is not None:
                receipt.timer.cancel()
            receipt.timer = loop.call_later(lease_s, self._expire, receipt)

    # -- settling -----------------------------------------------------------------------------

    def _expire(self, receipt: Any) -> None:
        """Give an unsettled message back to the broker (its lease ran out)."""
        if not isinstance(receipt, _Receipt) or receipt.settled:
            return
        task = asyncio.get_running_loop().create_task(self._settle(receipt, ack=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ack_all(self, receipts: list[_Receipt]) -> None:
        for receipt in receipts:
            await self._settle(receipt, ack=True)

    async def _settle(self, receipt: _Receipt, *, ack: bool) -> None:
        if receipt.settled:
            return
        receipt.settled = True
        if receipt.timer is not None:
            receipt.timer.cancel()
        self._unsettled.discard(receipt)
        try:
            if ack:
                await receipt.message.ack()
            else:
                await receipt.message.reject(requeue=True)
        except _SETTLE_ERRORS as exc:
            # The channel is gone, so the broker has put the message back and will deliver it
            # again; the consumer's inbox recognises it. Nothing is lost, nothing to raise.
            log.info(
                "could not %s message %s (%s); the broker will deliver it again",
                "ack" if ack else "requeue",
                receipt.message.message_id,
                type(exc).__name__,
            )


_SETTLE_ERRORS: tuple[type[BaseException], ...] = (
    amqp_exc.AMQPError,
    amqp_exc.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def _outbox_message(m: OutgoingMessage, now: float) -> NewOutboxMessage:
    return NewOutboxMessage(
        queue=m.queue,
        message_id=m.message_id,
        body=m.body,
        headers=_public(m.headers),  # x-fluxo-* are ours
        max_attempts=m.max_attempts,
        delay_s=max(m.delay_s, 0.0),
        created_at=now,
    )


def _receipt_of(delivery: Delivery) -> _Receipt:
    receipt = delivery.receipt
    if not isinstance(receipt, _Receipt):
        raise TransportError(
            f"message {delivery.message_id} was not claimed through the RabbitMQ transport; "
            "settle a delivery with the transport that claimed it",
            queue=delivery.queue,
        )
    return receipt


def _public(headers: Mapping[str, Any]) -> dict[str, str]:
    """The headers a consumer sees: text values, without Fluxo's and the broker's own."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        if key.startswith(_RESERVED_PREFIXES):
            continue
        if isinstance(value, bytes | bytearray):
            out[key] = bytes(value).decode("utf-8", "replace")
        else:
            out[key] = value if isinstance(value, str) else str(value)
    return out


def _as_int(value: Any, default: int) -> int:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode()
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _content_id(body: bytes) -> str:
    # A message published by someone else without an id: the same body is the same message.
    return "sha256:" + hashlib.sha256(body).hexdigest()[:40]


def _log_relay_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the outbox relay stopped", exc_info=task.exception())


@contextlib.contextmanager
def _map_errors(action: str) -> Iterator[None]:
    """Map aio-pika/aiormq errors to :class:`TransportError` at the transport boundary."""
    try:
        yield
    except TransportError:
        raise
    except (
        amqp_exc.AuthenticationError,
        amqp_exc.ProbableAuthenticationError,
        amqp_exc.IncompatibleProtocolError,
    ) as exc:
        raise TransportError(
            f"cannot {action}: RabbitMQ refused the connection ({type(exc).__name__}); check the "
            "user, password and virtual host of the AMQP URL",
            retryable=False,
            transport="rabbitmq",
        ) from exc
    except (amqp_exc.ChannelPreconditionFailed, aiormq.exceptions.ChannelAccessRefused) as exc:
        raise TransportError(
            f"cannot {action}: RabbitMQ refused it ({str(exc)[:300]}); a queue may exist with "
            "other arguments (another queue_type): delete it or configure the same queue_type",
            retryable=False,
            transport="rabbitmq",
        ) from exc
    except (
        amqp_exc.AMQPError,
        amqp_exc.ChannelInvalidStateError,
        ConnectionError,
        OSError,
        TimeoutError,
    ) as exc:
        raise TransportError(
            f"cannot {action}: RabbitMQ unavailable or refused the operation "
            f"({type(exc).__name__}: {str(exc)[:300]})",
            retryable=True,
            transport="rabbitmq",
        ) from exc
