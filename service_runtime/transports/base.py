"""The queue transport interface, shared by every backend (SQL tables, RabbitMQ).

A transport moves opaque messages between named queues with at-least-once delivery. The contract
every backend passes (``tests/conformance/test_transport.py``):

* ``enqueue(tx, ...)`` commits with the caller's database transaction: a message exists if and only
  if the state change that caused it committed (directly in the queue table, or through the outbox);
* ``claim`` leases up to ``limit`` visible messages; a lease that expires makes the message visible
  again (re-delivery after a crashed consumer);
* ``extend`` renews the leases of claimed, unsettled messages (a consumer's heartbeat while its
  handlers run): leases can stay short, so a crashed consumer's messages come back soon, while a
  live one keeps its messages however long its handlers take. A lease that already ran out is
  not taken back: the message may be another consumer's by then;
* ``enqueue``/``ack``/``retry``/``dead_letter`` are plain functions called INSIDE a database
  transaction (``Database.transact``): the SQL backend writes its tables there, a broker backend
  writes the outbox there and settles with the broker in an after-commit callback; a consumer stays
  exactly-once through its inbox;
* ``retry`` delays re-delivery (backoff); ``dead_letter`` moves the message to ``<queue>.dlq``.

A backend whose queues live in the state's database may also offer ``take`` (:class:`TakesInTransaction`):
ready messages read inside the consumer's own write transaction and settled in it, with no lease
at all: if that transaction does not commit, the messages were never taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fluxo_core.storage import Transaction

__all__ = [
    "Delivery",
    "OutgoingMessage",
    "TakesInTransaction",
    "Transport",
    "TransportCapabilities",
    "dead_letter_queue",
]


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to enqueue. ``message_id`` is the idempotency key consumers dedupe on."""

    queue: str
    message_id: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    max_attempts: int = 5
    delay_s: float = 0.0


@dataclass
class Delivery:
    """A claimed message. ``attempt`` counts deliveries, 1 for the first."""

    queue: str
    message_id: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    max_attempts: int
    receipt: Any = None  # backend-specific handle (row id + lease token, broker message)


@dataclass(frozen=True)
class TransportCapabilities:
    """What a backend can do, so callers and tests can adapt instead of guessing."""

    transactional_enqueue: bool  # enqueue is part of the DB transaction itself (no relay hop)
    delayed_delivery: bool
    dead_letter: bool
    lease_expiry: bool  # an unsettled claim becomes visible again after its lease


@runtime_checkable
class Transport(Protocol):
    name: str
    capabilities: TransportCapabilities

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def enqueue(self, tx: Transaction, messages: Sequence[OutgoingMessage]) -> None: ...

    async def claim(
        self, queues: Sequence[str], *, limit: int, lease_s: float
    ) -> list[Delivery]: ...

    async def extend(self, deliveries: Sequence[Delivery], *, lease_s: float) -> None:
        """Renew the leases of ``deliveries`` (claimed, not settled) to ``lease_s`` from now."""
        ...

    async def wait(self, queues: Sequence[str], timeout: float) -> None: ...

    def ack(self, tx: Transaction, deliveries: Sequence[Delivery]) -> None: ...

    def retry(self, tx: Transaction, delivery: Delivery, *, delay_s: float, error: str) -> None: ...

    def dead_letter(self, tx: Transaction, delivery: Delivery, *, error: str) -> None: ...

    async def depth(self, queue: str) -> int:
        """Messages in ``queue``. SQL counts every row (leased and delayed too); a broker
        counts what is ready to deliver."""
        ...

    async def ping(self) -> None:
        """One round trip to the queue store (a readiness check); raises TransportError or
        StorageError when it cannot be reached. The caller bounds the wait."""
        ...


@runtime_checkable
class TakesInTransaction(Protocol):
    """A transport that can hand out messages inside the consumer's write transaction.

    For a consumer that applies a batch and settles it in one transaction anyway (the step
    engine): taking the batch in that transaction saves the claim's own transaction and the
    lease written on every message. ``attempt`` is then the stored count plus one and is not
    written back (nothing of a failed transaction is).
    """

    def take(self, tx: Transaction, queues: Sequence[str], *, limit: int) -> list[Delivery]: ...
