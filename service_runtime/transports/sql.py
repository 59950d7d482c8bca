"""The SQL transport: queues are rows of ``queue_messages`` in the same database as the state.

Because the queue lives in the state's database, enqueueing inside the caller's transaction IS the
transactional outbox: no relay hop is needed. Claims lease a batch in one statement
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL so concurrent workers never block on each other; SQLite
serialises writers with ``BEGIN IMMEDIATE``). Settling happens inside the consumer's transaction.
A consumer that settles in the very transaction that reads its batch may ``take`` it there
instead (no lease, no claim transaction): the step engine, and the worker's inline handlers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from fluxo_core.storage import Database, Transaction, bulk_insert, one_of
from fluxo_core.storage.tables import queue_messages as qm
from service_runtime.transports.base import (
    Delivery,
    OutgoingMessage,
    TransportCapabilities,
    dead_letter_queue,
)

__all__ = ["SqlTransport", "queue_channel"]


def _pg_candidates() -> Any:
    """Ids of the next ``lim`` ready messages of ``queues``, locked (``SKIP LOCKED``).

    One ordered index scan per queue (``LATERAL``), merged: with ``queue = ANY(...)`` the index
    cannot return rows in ``visible_at`` order, so every ready row would be read and sorted. A
    queue table churns (each message inserted, leased as a new row version, deleted within
    seconds): the ordered scan stops after ``lim`` live rows and marks the dead index entries it
    passes, so later scans skip them; a bitmap scan (the planner's pick on stale statistics,
    hence ``keyed``) visits every dead version again on every claim.
    """
    name = sa.column("name", sa.String)
    queues = (
        sa.func.unnest(sa.cast(sa.bindparam("queues"), ARRAY(sa.String)))
        .table_valued(name)
        .render_derived(name="q")
    )
    inner = qm.alias("ready")
    per_queue = (
        sa.select(inner.c.id, inner.c.visible_at)
        .where(inner.c.queue == queues.c.name, inner.c.visible_at <= sa.bindparam("now"))
        .order_by(inner.c.visible_at, inner.c.id)
        .limit(sa.bindparam("lim", type_=sa.Integer))
        .with_for_update(skip_locked=True)
        .lateral("m")
    )
    return (
        sa.select(per_queue.c.id)
        .select_from(queues.join(per_queue, sa.true()))
        .order_by(per_queue.c.visible_at, per_queue.c.id)
        .limit(sa.bindparam("lim", type_=sa.Integer))
    )


def _deliveries(rows: list[Any], token: str | None, *, attempt_offset: int) -> list[Delivery]:
    rows.sort(key=lambda r: r[0])
    # Positional unpacking (the RETURNING order): a Row's attribute lookup by name costs more
    # than the rest of building the delivery.
    return [
        Delivery(
            queue=queue,
            message_id=message_id,
            body=body,
            headers=orjson.loads(headers),
            attempt=attempt + attempt_offset,
            max_attempts=max_attempts,
            receipt=(rid, token),
        )
        for rid, queue, message_id, body, headers, attempt, max_attempts in rows
    ]


def _rows_by_token(deliveries: Iterable[Delivery]) -> dict[str | None, list[int]]:
    """Row ids by lease token (one claim, one token; ``None``: taken in a transaction)."""
    by_token: dict[str | None, list[int]] = {}
    for d in deliveries:
        rid, token = d.receipt
        by_token.setdefault(token, []).append(rid)
    return by_token


def _held_by(token: str | None) -> Any:
    """The row is still this consumer's: its lease token, or (taken in the settling
    transaction itself, ``None``) held by that transaction."""
    return qm.c.lease_token == token if token is not None else sa.true()


def queue_channel(queue: str) -> str:
    return f"q:{queue}"


class SqlTransport:
    """Queues in SQL tables. ``poll_interval_s`` bounds how long a missed wake-up can delay a claim."""

    name = "sql"
    capabilities = TransportCapabilities(
        transactional_enqueue=True, delayed_delivery=True, dead_letter=True, lease_expiry=True
    )

    def __init__(self, db: Database, *, poll_interval_s: float = 1.0) -> None:
        self.db = db
        self.poll_interval_s = poll_interval_s
        returned = (
            qm.c.id,
            qm.c.queue,
            qm.c.message_id,
            qm.c.body,
            qm.c.headers,
            qm.c.attempt,
            qm.c.max_attempts,
        )
        lease = {
            "visible_at": sa.bindparam("until"),
            "attempt": qm.c.attempt + 1,
            "lease_token": sa.bindparam("tok"),
        }
        if db.is_sqlite:
            candidates = (
                sa.select(qm.c.id)
                .where(one_of(qm.c.queue, "queues", sqlite=True))
                .where(qm.c.visible_at <= sa.bindparam("now"))
                .order_by(qm.c.visible_at, qm.c.id)
                .limit(sa.bindparam("lim", type_=sa.Integer))
            )
        else:
            candidates = _pg_candidates()
        self._claim = (
            sa.update(qm)
            .where(qm.c.id.in_(candidates.scalar_subquery()))
            .values(**lease)
            .returning(*returned)
        )
        # PostgreSQL: the candidates are locked (SKIP LOCKED) until the taker's commit.
        self._take = sa.select(*returned).where(qm.c.id.in_(candidates.scalar_subquery()))
        rows_match = one_of(qm.c.id, "rids", sqlite=db.is_sqlite)
        self._ack = sa.delete(qm).where(rows_match, qm.c.lease_token == sa.bindparam("tok"))
        # Taken rows are held by the taker's own transaction (lock), so the id alone is theirs.
        self._ack_taken = sa.delete(qm).where(rows_match)
        # By row id (the primary key) and lease token: a lease that ran out and was claimed
        # again carries another token, so renewing never takes a message back.
        self._extend = (
            sa.update(qm)
            .where(rows_match, qm.c.lease_token == sa.bindparam("tok"))
            .values(visible_at=sa.bindparam("until"))
        )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def enqueue(self, tx: Transaction, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now = time.time()
        bulk_insert(
            tx,
            qm,
            [
                {
                    "queue": m.queue,
                    "message_id": m.message_id,
                    "body": m.body,
                    "headers": orjson.dumps(m.headers).decode(),
                    "attempt": 0,
                    "max_attempts": m.max_attempts,
                    "visible_at": now + m.delay_s,
                    "lease_token": None,
                    "last_error": None,
                    "created_at": now,
                }
                for m in messages
            ],
        )
        tx.notify(*{queue_channel(m.queue) for m in messages if m.delay_s <= 0})

    async def claim(self, queues: Sequence[str], *, limit: int, lease_s: float) -> list[Delivery]:
        token = secrets.token_hex(8)

        def run(tx: Transaction) -> list[Any]:
            now = time.time()
            params = {
                "queues": list(queues),
                "now": now,
                "lim": limit,
                "until": now + lease_s,
                "tok": token,
            }
            return list(tx.execute(self._claim, params).all())

        # A lease lost in a database crash only means the message is delivered again, which the
        # consumer's inbox makes harmless: no need to wait for the WAL flush.
        rows = await self.db.transact(run, durable=False, keyed=True)
        return _deliveries(rows, token, attempt_offset=0)

    def take(self, tx: Transaction, queues: Sequence[str], *, limit: int) -> list[Delivery]:
        """Up to ``limit`` ready messages of ``queues``, for the caller's transaction to settle.

        See :class:`~service_runtime.transports.base.TakesInTransaction`. The transaction
        should be ``keyed`` (the same ordered index scans as a claim).
        """
        params = {"queues": list(queues), "now": time.time(), "lim": limit}
        return _deliveries(list(tx.execute(self._take, params).all()), None, attempt_offset=1)

    async def extend(self, deliveries: Sequence[Delivery], *, lease_s: float) -> None:
        """One UPDATE per claim (its token) renews the leases of all its messages."""
        by_token = _rows_by_token(d for d in deliveries if d.receipt[1] is not None)
        if not by_token:
            return

        def run(tx: Transaction) -> None:
            until = time.time() + lease_s
            for token, rids in by_token.items():
                tx.execute(self._extend, {"rids": rids, "tok": token, "until": until})

        # Like a claim: a renewal lost in a database crash only means an earlier re-delivery.
        await self.db.transact(run, durable=False, keyed=True)

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        await self.db.wait([queue_channel(q) for q in queues], min(timeout, self.poll_interval_s))

    def ack(self, tx: Transaction, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        # Delete by row id AND lease token: a consumer whose lease expired and was re-claimed by
        # another must not delete the newer claim (the inbox already keeps its effects single).
        # One claim is one token: usually one statement.
        for token, rids in _rows_by_token(deliveries).items():
            if token is None:  # taken in this transaction
                tx.execute(self._ack_taken, {"rids": rids})
            else:
                tx.execute(self._ack, {"rids": rids, "tok": token})

    def retry(self, tx: Transaction, delivery: Delivery, *, delay_s: float, error: str) -> None:
        rid, token = delivery.receipt
        values: dict[str, Any] = {
            "visible_at": time.time() + delay_s,
            "lease_token": None,
            "last_error": error[:4000],
        }
        if token is None:  # taken, not claimed: no claim counted this delivery yet
            values["attempt"] = delivery.attempt
        tx.execute(sa.update(qm).where(qm.c.id == rid, _held_by(token)).values(**values))

    def dead_letter(self, tx: Transaction, delivery: Delivery, *, error: str) -> None:
        rid, token = delivery.receipt
        tx.execute(
            sa.update(qm)
            .where(qm.c.id == rid, _held_by(token))
            .values(
                queue=dead_letter_queue(delivery.queue),
                visible_at=time.time(),
                attempt=0,
                lease_token=None,
                last_error=error[:4000],
            )
        )
        tx.notify(queue_channel(dead_letter_queue(delivery.queue)))

    async def ping(self) -> None:
        await self.db.ping()  # the queues are tables of the database

    async def depth(self, queue: str) -> int:
        query = sa.select(sa.func.count()).select_from(qm).where(qm.c.queue == queue)
        count: int | None = await self.db.read(lambda conn: conn.scalar(query))
        return count or 0
