"""The outbox relay: publishes messages committed to the ``outbox`` table to a broker.

A broker transport (RabbitMQ) cannot take part in the database transaction, so ``enqueue`` writes
the message to the ``outbox`` table inside the caller's transaction and the relay publishes it
afterwards. One pass (:meth:`OutboxRelay.run_once`) reads a batch of DUE rows in id order, hands
them to the publisher (which returns only once the broker confirmed every message), then deletes
exactly those rows. The relay is at-least-once: a crash between the broker's confirm and the delete
publishes the batch again, and consumers drop the copy through their inbox (keyed by message id).

Delayed messages (``delay_s > 0``: delayed enqueues and retries with backoff) stay in the outbox
until ``created_at + delay_s`` and are published then, so the broker needs no delay plugin and no
TTL/dead-letter queues, a delay is never early, and it is as durable as the database.

:meth:`OutboxRelay.run` sleeps on the ``outbox`` wake-up channel that ``enqueue`` notifies, so a
commit in this process (or, on PostgreSQL, in any process) is relayed at once, without polling,
and otherwise until the next delayed row is due. SQLite has no cross-process wake-up, so an idle
relay there also looks again every second.

Run one relay per database. Several relays are safe (the inbox keeps effects single) but may
publish the same rows twice while they race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Protocol

from fluxo_core.errors import FluxoError
from fluxo_core.storage import OUTBOX_CHANNEL, Database, OutboxMessage, OutboxStore

__all__ = ["OUTBOX_CHANNEL", "OutboxMessage", "OutboxRelay", "Publisher"]

log = logging.getLogger(__name__)

_DUE_SLACK_S = 0.005  # wake just after a row falls due, not just before


class Publisher(Protocol):
    """Publishes a batch to the broker; returns only when the broker confirmed every message.

    Raising (a :class:`~fluxo_core.errors.FluxoError`) keeps the whole batch in the outbox for the
    next pass; messages of a failed batch that did reach the broker are published again.
    """

    async def publish(self, messages: Sequence[OutboxMessage]) -> None: ...


class OutboxRelay:
    """Moves committed outbox rows to the broker through ``publisher``.

    Args:
        db: the database holding the ``outbox`` table.
        publisher: what publishes a batch (``RabbitMqTransport`` is one).
        batch_size: rows read, published and deleted per pass.
        idle_timeout_s: how long an idle relay sleeps before it looks again without a wake-up;
            defaults to 1 s on SQLite (no cross-process wake-ups) and 30 s on PostgreSQL; a
            delayed row that falls due sooner shortens the sleep.
        max_backoff_s: the longest pause after a failed pass (broker or database down).
    """

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        idle_timeout_s: float | None = None,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.batch_size = batch_size
        self.idle_timeout_s = (
            idle_timeout_s if idle_timeout_s is not None else (1.0 if db.is_sqlite else 30.0)
        )
        self.max_backoff_s = max_backoff_s
        self.published = 0
        self.outbox = OutboxStore(db)

    async def run_once(self) -> int:
        """Publish one batch of due messages and delete their rows. Returns how many it published."""
        published, _ = await self._pass()
        return published

    async def _pass(self) -> tuple[int, float | None]:
        """One pass: (messages published, when the next delayed row is due, if any)."""
        messages, next_due = await self.outbox.due(time.time(), self.batch_size)
        if not messages:
            return 0, next_due
        await self.publisher.publish(messages)
        await self.outbox.remove([m.id for m in messages])
        self.published += len(messages)
        return len(messages), next_due

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set: drain what is due, then sleep until a commit or a due row.

        A failed pass (broker or database unavailable, or a broker refusal) is logged and tried
        again after a growing pause; the rows stay in the outbox meanwhile, so nothing is lost.
        """
        stop = stop or asyncio.Event()
        backoff = 0.0
        with await self.db.subscribe([OUTBOX_CHANNEL]) as sub:
            while not stop.is_set():
                # Clear BEFORE reading: a commit that lands during the pass sets it again.
                sub.clear()
                try:
                    done, next_due = await self._pass()
                except FluxoError as exc:
                    backoff = min(max(backoff * 2, 0.1), self.max_backoff_s)
                    level = logging.WARNING if exc.retryable else logging.ERROR
                    log.log(level, "outbox relay pass failed (retry in %.1fs): %s", backoff, exc)
                    await _sleep_unless(stop, backoff)
                    continue
                backoff = 0.0
                if done < self.batch_size:
                    sleep = self.idle_timeout_s
                    if next_due is not None:
                        sleep = min(sleep, max(next_due - time.time(), 0.0) + _DUE_SLACK_S)
                    await _wait_either(stop, sub.wait(sleep))


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_either(stop: asyncio.Event, waiting: Awaitable[bool]) -> None:
    """Wait until ``stop`` is set or ``waiting`` (a wake-up) finishes, whichever comes first."""
    waiter = asyncio.ensure_future(waiting)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
