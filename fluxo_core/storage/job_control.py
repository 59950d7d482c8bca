"""The writes of job control: a job stopped by a block, resumed, retried; queued jobs released.

Kept apart from :mod:`fluxo_core.storage.jobs` (the hot path of every engine): these run once per
control action, never per call.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.storage.bulk import as_dicts
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.jobs import jobs_ended
from fluxo_core.storage.tables import calls, job_steps, jobs

__all__ = ["OPEN_STEP_STATUSES", "JobControlStore"]

# Step executions a stopped job may have left unfinished.
OPEN_STEP_STATUSES = ("running", "retrying", "waiting", "blocked", "failed")


class JobControlStore:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    def block(self, tx: Transaction, job_id: str, error: str) -> bool:
        """A queued or running job stopped by a block: ``blocked``, ``error`` naming it. False
        if it was not queued or running (it ended, or a block stopped it already)."""
        result = tx.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_(("queued", "running")))
            .values(status="blocked", error=error, finished_at=self.clock.time())
        )
        if result.rowcount:
            jobs_ended(self.db, tx, [job_id])
        return bool(result.rowcount)

    def reopen(self, tx: Transaction, job_id: str, was: str, *, status: str = "running") -> bool:
        """A ``was`` (blocked or failed) job runs again: ``status``, its error and end cleared.
        False if it is no longer ``was`` (resumed or retried concurrently)."""
        result = tx.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == was)
            .values(status=status, error=None, finished_at=None)
        )
        return bool(result.rowcount)

    def open_steps(self, tx: Transaction, job_id: str) -> list[dict[str, Any]]:
        """A job's step executions that did not finish well, each with its call's
        ``call_status/result/error`` (None for a step without a call)."""
        query = (
            sa.select(
                job_steps,
                calls.c.status.label("call_status"),
                calls.c.result.label("call_result"),
                calls.c.error.label("call_error"),
            )
            .select_from(job_steps.outerjoin(calls, calls.c.id == job_steps.c.call_id))
            .where(job_steps.c.job_id == job_id, job_steps.c.status.in_(OPEN_STEP_STATUSES))
            .order_by(job_steps.c.started_at, job_steps.c.seq)
        )
        return as_dicts(tx.execute(query))

    def queued_jobs(self, tx: Transaction, account_id: str, workflow: str) -> list[tuple[str, str]]:
        """``(id, engine)`` of the workflow's queued jobs, oldest first."""
        query = (
            sa.select(jobs.c.id, jobs.c.engine)
            .where(
                jobs.c.account_id == account_id,
                jobs.c.workflow == workflow,
                jobs.c.status == "queued",
            )
            .order_by(jobs.c.created_at, jobs.c.id)
        )
        return [(r.id, r.engine) for r in tx.execute(query)]
