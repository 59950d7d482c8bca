"""Child jobs and the calls they answer: the storage of deferred workflow-service calls.

A call of a workflow service starts a child job (``jobs.parent_call_id`` names the call) and
stays open until the child ends; then the call is completed, once
(:meth:`~fluxo_core.storage.calls.CallStore.complete_open`), by the transaction that ends the
child or, if the process that ended it does not complete calls, by a later sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fluxo_core.storage.bulk import one_of
from fluxo_core.storage.calls import _COLUMNS, CallRow
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import calls, deferred_calls, jobs

__all__ = ["ChildJob", "ChildJobStore"]

_CALL_DONE = ("succeeded", "failed")
_JOB_ENDED = ("succeeded", "failed", "cancelled", "blocked")
_JOB_OPEN = ("queued", "running")


@dataclass(frozen=True, slots=True)
class ChildJob:
    """A child job with the call it answers (``call``: that call as stored)."""

    id: str
    account_id: str
    status: str
    result: bytes | None
    error: str | None
    created_at: float
    call: CallRow


_CHILD_COLUMNS = [
    jobs.c.id.label("child_id"),
    jobs.c.account_id.label("child_account"),
    jobs.c.status.label("child_status"),
    jobs.c.result.label("child_result"),
    jobs.c.error.label("child_error"),
    jobs.c.created_at.label("child_created_at"),
]


def _child(row: sa.Row[Any]) -> ChildJob:
    values = tuple(row)
    child_id, account_id, status, result, error, created_at = values[: len(_CHILD_COLUMNS)]
    return ChildJob(
        child_id,
        account_id,
        status,
        result,
        error,
        created_at,
        CallRow.of_row(values[len(_CHILD_COLUMNS) :]),
    )


class ChildJobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        joined = jobs.join(calls, calls.c.id == jobs.c.parent_call_id)
        self._select = sa.select(*_CHILD_COLUMNS, *_COLUMNS).select_from(joined)
        # Driven by the few open deferred calls, never by a scan of the calls or jobs.
        self._deferred = (
            sa.select(*_CHILD_COLUMNS, *_COLUMNS)
            .select_from(deferred_calls)
            .join(calls, calls.c.id == deferred_calls.c.call_id)
            .join(jobs, jobs.c.parent_call_id == deferred_calls.c.call_id)
        )
        self._of_jobs = self._select.where(
            one_of(jobs.c.id, "ids", sqlite=db.is_sqlite),
            jobs.c.status.in_(_JOB_ENDED),
            calls.c.status.not_in(_CALL_DONE),
        )

    def ended_with_open_calls(self, tx: Transaction, job_ids: Iterable[str]) -> list[ChildJob]:
        """Those of ``job_ids`` that are child jobs, ended, whose call is still open."""
        ids = sorted(set(job_ids))
        if not ids:
            return []
        return [_child(r) for r in tx.execute(self._of_jobs, {"ids": ids})]

    async def unanswered(self, services: Iterable[str], limit: int = 500) -> list[ChildJob]:
        """Ended child jobs of deferred calls of ``services`` still open: their end was written
        by a process that does not complete calls (or before it could)."""
        return await self._open_calls(services, _JOB_ENDED, limit)

    async def running(self, services: Iterable[str], limit: int = 1000) -> list[ChildJob]:
        """Child jobs still running for open calls of ``services`` (whose callers may have
        been blocked or cancelled meanwhile)."""
        return await self._open_calls(services, _JOB_OPEN, limit)

    async def _open_calls(
        self, services: Iterable[str], job_statuses: Iterable[str], limit: int
    ) -> list[ChildJob]:
        """Child jobs in ``job_statuses`` of the deferred calls of ``services`` not done yet,
        oldest first."""
        names = sorted(set(services))
        if not names:
            return []
        query = (
            self._deferred.where(
                deferred_calls.c.service.in_(names),
                calls.c.status.not_in(_CALL_DONE),
                jobs.c.status.in_(job_statuses),
            )
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_child(r) for r in rows]
