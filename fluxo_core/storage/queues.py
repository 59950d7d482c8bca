"""Queue messages outside the SQL transport's hot path: dead letters and housekeeping.

The SQL transport (``service_runtime.transports.sql``) claims, leases and settles messages with
its own statements. What else reads or moves them lives here: listing and replaying dead letters
(with the calls and jobs they belong to) and deleting output messages nobody consumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from fluxo_core.storage.bulk import one_of
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import calls, jobs
from fluxo_core.storage.tables import queue_messages as qm

__all__ = ["DeadLetterRow", "LetterOwner", "QueueStore"]


@dataclass(slots=True, frozen=True)
class DeadLetterRow:
    """A message in a dead-letter queue, with the job of its call (None for a direct call)."""

    queue: str  # the dead-letter queue it is in
    message_id: str
    error: str | None
    dead_at: float
    job_id: str | None


@dataclass(slots=True, frozen=True)
class LetterOwner:
    """Whose a dead letter is: its call's job and that job's status (None: no job's call)."""

    message_id: str
    job_id: str | None
    job_status: str | None


class QueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with_call = qm.outerjoin(calls, calls.c.id == qm.c.message_id)
        self._letters = sa.select(
            qm.c.queue, qm.c.message_id, qm.c.last_error, qm.c.visible_at, calls.c.job_id
        ).select_from(with_call)
        self._owners = sa.select(qm.c.message_id, calls.c.job_id, jobs.c.status).select_from(
            with_call.outerjoin(jobs, jobs.c.id == calls.c.job_id)
        )
        self._requeue = (
            sa.update(qm)
            .where(
                qm.c.queue == sa.bindparam("dead_queue"),
                one_of(qm.c.message_id, "ids", sqlite=db.is_sqlite),
            )
            .values(
                queue=sa.bindparam("to_queue"),
                attempt=0,
                visible_at=sa.bindparam("ready_at"),
                lease_token=None,
            )
        )
        unread = (
            sa.select(qm.c.id)
            .where(
                qm.c.queue.like(sa.bindparam("pattern")),
                qm.c.attempt == 0,
                qm.c.created_at < sa.bindparam("before"),
            )
            .limit(sa.bindparam("lim", type_=sa.Integer))
            .scalar_subquery()
        )
        self._delete_unread = sa.delete(qm).where(qm.c.id.in_(unread))

    async def dead_letters(
        self,
        *,
        queue: str | None = None,
        suffix: str,
        limit: int,
        account_id: str | None = None,
        message_ids: Sequence[str] | None = None,
    ) -> list[DeadLetterRow]:
        """Messages of the dead-letter queue ``queue``, or of every queue named ``*suffix``,
        oldest first; only the calls of ``account_id`` and these ``message_ids`` when given."""
        where = qm.c.queue == queue if queue else qm.c.queue.like("%" + suffix)
        if account_id is not None:
            where = where & (calls.c.account_id == account_id)
        if message_ids is not None:
            where = where & qm.c.message_id.in_(sorted(set(message_ids)))
        query = self._letters.where(where).order_by(qm.c.id).limit(limit)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [
            DeadLetterRow(r.queue, r.message_id, r.last_error, r.visible_at, r.job_id) for r in rows
        ]

    def letter_owners(
        self, tx: Transaction, dead_queue: str, message_ids: Sequence[str] | None = None
    ) -> list[LetterOwner]:
        """The messages in ``dead_queue`` (all, or these ids), each with its call's job."""
        where = qm.c.queue == dead_queue
        if message_ids is not None:
            where = where & qm.c.message_id.in_(list(message_ids))
        rows = tx.execute(self._owners.where(where))
        return [LetterOwner(r.message_id, r.job_id, r.status) for r in rows]

    def requeue(
        self, tx: Transaction, dead_queue: str, queue: str, message_ids: Sequence[str], now: float
    ) -> None:
        """Move these messages from ``dead_queue`` to ``queue`` as first attempts, ready now."""
        if message_ids:
            params = {"dead_queue": dead_queue, "to_queue": queue, "ids": list(message_ids)}
            tx.execute(self._requeue, {**params, "ready_at": now})

    def delete_unread(
        self, tx: Transaction, pattern: str, created_before: float, limit: int
    ) -> int:
        """Delete up to ``limit`` never-claimed messages of queues named like ``pattern`` (SQL
        ``LIKE``) created before ``created_before``; returns how many."""
        params = {"pattern": pattern, "before": created_before, "lim": limit}
        return int(tx.execute(self._delete_unread, params).rowcount or 0)

    @staticmethod
    def depths_on(conn: sa.Connection, now: float) -> list[tuple[str, int, float | None]]:
        """``(queue, messages, created_at of the oldest visible one)`` per queue of the SQL
        transport (leased and delayed messages count in the depth, not in the age)."""
        visible = sa.case((qm.c.visible_at <= sa.bindparam("now"), qm.c.created_at))
        query = sa.select(qm.c.queue, sa.func.count(), sa.func.min(visible)).group_by(qm.c.queue)
        return [(r[0], int(r[1]), r[2]) for r in conn.execute(query, {"now": now})]
