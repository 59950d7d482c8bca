"""Housekeeping that keeps the runtime's tables bounded.

* A service's output queue is written for every call (its standard interface), but a direct
  caller reads the result from the call record, so nobody may ever consume it. Messages nobody
  claimed within ``output_retention_s`` are deleted, like a broker queue with a message TTL.
* Inbox rows only need to outlive any possible re-delivery of their message (leases and retries
  are minutes to hours); they are deleted after ``inbox_retention_s``.

Deletes run in bounded chunks so a large backlog never holds a long write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import sqlalchemy as sa

from fluxo_core.errors import FluxoError
from fluxo_core.storage import Database, Transaction
from fluxo_core.storage.tables import inbox, queue_messages

__all__ = ["Janitor"]

log = logging.getLogger(__name__)

_CHUNK = 5000


class Janitor:
    def __init__(
        self,
        db: Database,
        *,
        output_retention_s: float = 86_400.0,
        inbox_retention_s: float = 7 * 86_400.0,
        interval_s: float = 60.0,
    ) -> None:
        self.db = db
        self.output_retention_s = output_retention_s
        self.inbox_retention_s = inbox_retention_s
        self.interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except FluxoError as exc:  # housekeeping must never take the process down
                log.warning("janitor pass failed: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def run_once(self, now: float | None = None) -> tuple[int, int]:
        """One pass; returns ``(output messages deleted, inbox rows deleted)``."""
        now = time.time() if now is None else now
        expired_outputs = (
            sa.select(queue_messages.c.id)
            .where(
                queue_messages.c.queue.like("svc.%.out"),
                queue_messages.c.attempt == 0,
                queue_messages.c.created_at < now - self.output_retention_s,
            )
            .limit(_CHUNK)
            .scalar_subquery()
        )
        old_inbox = (
            sa.select(inbox.c.consumer, inbox.c.message_id)
            .where(inbox.c.processed_at < now - self.inbox_retention_s)
            .limit(_CHUNK)
        )
        outputs = await self._drain(
            sa.delete(queue_messages).where(queue_messages.c.id.in_(expired_outputs))
        )
        inbox_rows = await self._drain(
            sa.delete(inbox).where(sa.tuple_(inbox.c.consumer, inbox.c.message_id).in_(old_inbox))
        )
        if outputs or inbox_rows:
            log.info(
                "janitor: %d unread output messages, %d inbox rows removed", outputs, inbox_rows
            )
        return outputs, inbox_rows

    async def _drain(self, statement: sa.Delete) -> int:
        total = 0
        while True:

            def delete(tx: Transaction) -> int:
                return int(tx.execute(statement).rowcount or 0)

            deleted = await self.db.transact(delete)
            total += deleted
            if deleted < _CHUNK:
                return total
