"""The outbox: messages committed with a state change, waiting to be published to a broker.

A broker cannot take part in a database transaction, so a broker transport writes each message it
sends as an outbox row in the caller's transaction (:meth:`OutboxStore.write`, which also wakes
the relay), and the relay publishes due rows afterwards and deletes them
(:meth:`OutboxStore.due`, :meth:`OutboxStore.remove`). Rows are :class:`OutboxMessage` both ways;
headers are stored as JSON, encoded and decoded here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from fluxo_core.storage.bulk import bulk_insert
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import outbox

__all__ = ["OUTBOX_CHANNEL", "NewOutboxMessage", "OutboxMessage", "OutboxStore"]

OUTBOX_CHANNEL = "outbox"
"""The wake-up channel notified by every transaction that writes the outbox."""


@dataclass(slots=True, frozen=True)
class OutboxMessage:
    """One outbox row, as the relay hands it to a publisher.

    The relay hands a message over once ``created_at + delay_s`` has passed; a publisher sends it
    at once.
    """

    id: int
    queue: str
    message_id: str
    body: bytes
    headers: dict[str, str]
    max_attempts: int
    delay_s: float
    created_at: float


class NewOutboxMessage(NamedTuple):
    """A message to write to the outbox (its row id comes from the database)."""

    queue: str
    message_id: str
    body: bytes
    headers: dict[str, str]
    max_attempts: int
    delay_s: float
    created_at: float


class _OutboxRow(NamedTuple):
    """The columns written for a :class:`NewOutboxMessage` (headers as JSON text)."""

    queue: str
    message_id: str
    body: bytes
    headers: str
    max_attempts: int
    delay_s: float
    created_at: float


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        due = outbox.c.created_at + outbox.c.delay_s
        self._due = (
            sa.select(
                outbox.c.id,
                outbox.c.queue,
                outbox.c.message_id,
                outbox.c.body,
                outbox.c.headers,
                outbox.c.max_attempts,
                outbox.c.delay_s,
                outbox.c.created_at,
            )
            .where(due <= sa.bindparam("now"))
            .order_by(outbox.c.id)
            .limit(sa.bindparam("lim", type_=sa.Integer))
        )
        self._next_due = sa.select(sa.func.min(due)).where(due > sa.bindparam("now"))
        self._delete = sa.delete(outbox).where(outbox.c.id.in_(sa.bindparam("ids", expanding=True)))

    def write(self, tx: Transaction, messages: Sequence[NewOutboxMessage]) -> None:
        """Write messages in the caller's transaction; its commit wakes the relay."""
        if not messages:
            return
        rows = [
            _OutboxRow(
                m.queue,
                m.message_id,
                m.body,
                orjson.dumps(m.headers).decode(),
                m.max_attempts,
                m.delay_s,
                m.created_at,
            )
            for m in messages
        ]
        bulk_insert(tx, outbox, rows)
        tx.notify(OUTBOX_CHANNEL)

    async def due(self, now: float, limit: int) -> tuple[list[OutboxMessage], float | None]:
        """Up to ``limit`` messages due at ``now``, oldest first, and when the next delayed one
        falls due (None if none waits, or if ``limit`` rows came back: more may be due)."""

        def read(conn: sa.Connection) -> tuple[Sequence[Any], float | None]:
            rows = conn.execute(self._due, {"now": now, "lim": limit}).all()
            if len(rows) == limit:
                return rows, None  # more is due; the next pass asks again
            return rows, conn.execute(self._next_due, {"now": now}).scalar()

        rows, next_due = await self.db.read(read)
        return [_message_of(r) for r in rows], next_due

    async def remove(self, ids: Sequence[int]) -> None:
        """Delete these rows (the broker confirmed them)."""
        if not ids:
            return
        params = {"ids": list(ids)}

        def delete(tx: Transaction) -> None:
            tx.execute(self._delete, params)

        await self.db.transact(delete)

    async def count(self) -> int:
        """Rows waiting (published or not yet due)."""
        query = sa.select(sa.func.count()).select_from(outbox)
        count: int | None = await self.db.read(lambda conn: conn.scalar(query))
        return count or 0

    @staticmethod
    def lag_on(conn: sa.Connection) -> tuple[int, float | None]:
        """``(rows, oldest created_at)`` of the outbox (None when empty): how far the relay
        is behind."""
        query = sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).select_from(outbox)
        row = conn.execute(query).one()
        return int(row[0]), row[1]


def _message_of(r: Any) -> OutboxMessage:
    """The one mapping from an outbox row to its message."""
    return OutboxMessage(
        id=r.id,
        queue=r.queue,
        message_id=r.message_id,
        body=bytes(r.body),
        headers=orjson.loads(r.headers),
        max_attempts=r.max_attempts,
        delay_s=r.delay_s,
        created_at=r.created_at,
    )
