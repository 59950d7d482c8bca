"""The dead-letter queues: see what failed for good, and send it through again once fixed.

A message lands in ``<queue>.dlq`` when its handler failed without retry or ran out of attempts;
its call is ``failed`` and its inbox row records that outcome. Replaying moves it back to its
queue as a first attempt, re-opens the call and forgets the recorded outcome, all in one
transaction, so the fixed handler runs it exactly once more.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from fluxo_core.errors import UnsupportedFeatureError, ValidationError
from fluxo_core.storage import Database, Transaction
from fluxo_core.storage.tables import calls, inbox
from fluxo_core.storage.tables import queue_messages as qm
from service_runtime.transports import Transport, queue_channel

__all__ = ["DeadLetter", "DeadLetters"]

_SUFFIX = ".dlq"


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # the queue it failed on (without .dlq)
    message_id: str
    error: str | None
    dead_at: float


class DeadLetters:
    def __init__(self, db: Database, transport: Transport) -> None:
        if not transport.capabilities.transactional_enqueue:
            raise UnsupportedFeatureError(
                f"dead-letter replay is done with the broker's own tools for the "
                f"{transport.name!r} transport (e.g. a RabbitMQ shovel); Fluxo replays SQL queues"
            )
        self.db = db

    async def list(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        query = sa.select(qm.c.queue, qm.c.message_id, qm.c.last_error, qm.c.visible_at)
        query = query.where(
            qm.c.queue == queue + _SUFFIX if queue else qm.c.queue.like("%" + _SUFFIX)
        )
        rows = await self.db.read(lambda c: c.execute(query.order_by(qm.c.id).limit(limit)).all())
        return [
            DeadLetter(r.queue[: -len(_SUFFIX)], r.message_id, r.last_error, r.visible_at)
            for r in rows
        ]

    async def replay(self, queue: str, message_ids: Sequence[str] | None = None) -> int:
        """Move dead letters of ``queue`` (all, or these ids) back onto it; returns how many."""
        if queue.endswith(_SUFFIX):
            raise ValidationError(
                f"name the queue the messages failed on, without {_SUFFIX}: "
                f"{queue[: -len(_SUFFIX)]!r}",
                problems=[("queue", "ends with .dlq")],
            )
        dead = qm.c.queue == queue + _SUFFIX
        if message_ids is not None:
            dead = dead & qm.c.message_id.in_(list(message_ids))

        def run(tx: Transaction) -> int:
            ids = [r.message_id for r in tx.execute(sa.select(qm.c.message_id).where(dead))]
            if not ids:
                return 0
            tx.execute(
                sa.delete(inbox).where(inbox.c.consumer == queue, inbox.c.message_id.in_(ids))
            )
            tx.execute(
                sa.update(calls)
                .where(calls.c.id.in_(ids), calls.c.status == "failed")
                .values(status="queued", finished_at=None)
            )
            tx.execute(
                sa.update(qm)
                .where(dead)
                .values(queue=queue, attempt=0, visible_at=time.time(), lease_token=None)
            )
            tx.notify(queue_channel(queue))
            return len(ids)

        return await self.db.transact(run)
