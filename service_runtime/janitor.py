"""Housekeeping that keeps the runtime's tables bounded.

* A service's output queue is written for every call (its standard interface), but a direct
  caller reads the result from the call record, so nobody may ever consume it. Messages nobody
  claimed within ``output_retention_s`` are deleted, like a broker queue with a message TTL.
* Inbox rows only need to outlive any possible re-delivery of their message (leases and retries
  are minutes to hours); they are deleted after ``inbox_retention_s``. So are the marks of calls
  a quota refused after an engine wrote them (the worker reads them only on such a delivery).

Deletes run in bounded chunks so a large backlog never holds a long write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from fluxo_core.errors import FluxoError
from fluxo_core.storage import Database, InboxStore, QueueStore, Transaction
from fluxo_core.storage.quotas import QuotaStore

__all__ = ["Janitor"]

log = logging.getLogger(__name__)

_CHUNK = 5000
# Output queues of services (``svc.<name>@<version>.out``), as SQL ``LIKE`` sees them.
_OUTPUT_QUEUES = "svc.%.out"


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
        self._queues = QueueStore(db)
        self._inbox = InboxStore(db)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except FluxoError as exc:  # housekeeping must never take the process down
                log.warning("janitor pass failed: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def run_once(self, now: float | None = None) -> tuple[int, int]:
        """One pass; returns ``(output messages deleted, inbox rows and refusal marks deleted)``."""
        now = time.time() if now is None else now
        output_cutoff = now - self.output_retention_s
        inbox_cutoff = now - self.inbox_retention_s
        outputs = await self._drain(
            lambda tx: self._queues.delete_unread(tx, _OUTPUT_QUEUES, output_cutoff, _CHUNK)
        )
        inbox_rows = await self._drain(lambda tx: self._inbox.expire(tx, inbox_cutoff, _CHUNK))
        inbox_rows += await self._drain(
            lambda tx: QuotaStore.expire_refusals(tx, inbox_cutoff, _CHUNK)
        )
        if outputs or inbox_rows:
            log.info(
                "janitor: %d unread output messages, %d inbox rows removed", outputs, inbox_rows
            )
        return outputs, inbox_rows

    async def _drain(self, delete_chunk: Callable[[Transaction], int]) -> int:
        """Run ``delete_chunk`` in transactions of its own until a chunk comes back short."""
        total = 0
        while True:
            deleted = await self.db.transact(delete_chunk)
            total += deleted
            if deleted < _CHUNK:
                return total
