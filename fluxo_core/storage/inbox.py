"""The inbox: which messages each consumer has applied, the exactly-once guard.

A consumer writes a message's inbox row in the transaction that applies it; a row that already
exists means the message was applied before (delivered twice, or again after a crash between
commit and ack), so its outcome is dropped. The key is (consumer, message id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

import sqlalchemy as sa

from fluxo_core.storage.bulk import bulk_insert, one_of
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import inbox

__all__ = ["InboxKey", "InboxStore"]


InboxKey: TypeAlias = tuple[str, str]
"""One applied message: (consumer, message id). A plain tuple, not a named one: the worker makes
one per message, and a named tuple's constructor costs three times a tuple's."""


class InboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._seen = sa.select(inbox.c.consumer, inbox.c.message_id).where(
            one_of(inbox.c.message_id, "ids", sqlite=db.is_sqlite),
            one_of(inbox.c.consumer, "consumers", sqlite=db.is_sqlite),
        )
        self._forget = sa.delete(inbox).where(
            inbox.c.consumer == sa.bindparam("consumer"),
            one_of(inbox.c.message_id, "ids", sqlite=db.is_sqlite),
        )
        # Bounded chunks: a large backlog never holds a long write lock.
        processed_before = (
            sa.select(inbox.c.consumer, inbox.c.message_id)
            .where(inbox.c.processed_at < sa.bindparam("before"))
            .limit(sa.bindparam("lim", type_=sa.Integer))
        )
        self._expire = sa.delete(inbox).where(
            sa.tuple_(inbox.c.consumer, inbox.c.message_id).in_(processed_before)
        )

    async def seen(self, consumers: Sequence[str], message_ids: Sequence[str]) -> set[InboxKey]:
        """Which of these messages some of ``consumers`` applied already (one query)."""
        if not consumers or not message_ids:
            return set()
        params = {"ids": list(message_ids), "consumers": list(consumers)}
        rows = await self.db.read(lambda conn: conn.execute(self._seen, params).all())
        return {(r.consumer, r.message_id) for r in rows}

    def claim(self, tx: Transaction, keys: Sequence[InboxKey], now: float) -> set[InboxKey]:
        """Record ``keys`` as applied at ``now``; returns the ones that were new (only those
        may be applied in this transaction)."""
        if not keys:
            return set()
        # Dicts, built in C, cost less per row than any row type (this runs per message).
        rows = [{"consumer": c, "message_id": m, "processed_at": now} for c, m in keys]
        inserted = bulk_insert(
            tx, inbox, rows, skip_conflicts=True, returning=["consumer", "message_id"]
        )
        return {(r.consumer, r.message_id) for r in inserted}

    def forget(self, tx: Transaction, consumer: str, message_ids: Iterable[str]) -> None:
        """Drop these messages' rows, so they are applied again (a dead-letter replay)."""
        ids = sorted(set(message_ids))
        if ids:
            tx.execute(self._forget, {"consumer": consumer, "ids": ids})

    def expire(self, tx: Transaction, processed_before: float, limit: int) -> int:
        """Delete up to ``limit`` rows applied before ``processed_before``; returns how many."""
        result = tx.execute(self._expire, {"before": processed_before, "lim": limit})
        return int(result.rowcount or 0)
