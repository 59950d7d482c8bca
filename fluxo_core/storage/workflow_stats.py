"""How each workflow of an account has been doing: jobs, successes, last run, spend per job.

Read by the console's workflows list: two grouped queries per account (jobs by workflow, on the
``(account_id, workflow, status)`` index; usage of those jobs by workflow and currency), not a
query per workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from fluxo_core.storage.database import Database
from fluxo_core.storage.tables import jobs, usage_records

__all__ = ["WorkflowStats", "WorkflowStatsStore"]

_ENDED = ("succeeded", "failed", "cancelled", "blocked")


@dataclass(frozen=True, slots=True)
class WorkflowStats:
    """One workflow's jobs (all versions).

    Attributes:
        jobs: jobs created.
        ended: jobs that ended (succeeded, failed, cancelled or blocked).
        succeeded: jobs that succeeded.
        last_run_at: when the newest job was created (epoch seconds), None without jobs.
        spend_micros: what the jobs' calls were billed, per currency, in millionths.
    """

    jobs: int = 0
    ended: int = 0
    succeeded: int = 0
    last_run_at: float | None = None
    spend_micros: Mapping[str, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        """Succeeded among the jobs that ended; None before any ended."""
        return self.succeeded / self.ended if self.ended else None

    def cost_per_job(self) -> dict[str, float]:
        """Spend per job, per currency, in currency units."""
        if not self.jobs:
            return {}
        return {c: m / 1_000_000 / self.jobs for c, m in sorted(self.spend_micros.items())}


class WorkflowStatsStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        account: sa.BindParameter[str] = sa.bindparam("account_id")
        self._jobs = (
            sa.select(
                jobs.c.workflow,
                sa.func.count().label("jobs"),
                sa.func.sum(sa.case((jobs.c.status.in_(_ENDED), 1), else_=0)).label("ended"),
                sa.func.sum(sa.case((jobs.c.status == "succeeded", 1), else_=0)).label("ok"),
                sa.func.max(jobs.c.created_at).label("last"),
            )
            .where(jobs.c.account_id == account)
            .group_by(jobs.c.workflow)
        )
        self._spend = (
            sa.select(
                jobs.c.workflow,
                usage_records.c.currency,
                sa.func.sum(usage_records.c.amount_micros).label("amount"),
            )
            .join(jobs, jobs.c.id == usage_records.c.job_id)
            # Both sides scoped: a job id is unique, but the account is the fence.
            .where(usage_records.c.account_id == account, jobs.c.account_id == account)
            .group_by(jobs.c.workflow, usage_records.c.currency)
        )

    async def by_workflow(self, account_id: str) -> dict[str, WorkflowStats]:
        """The stats of every workflow of ``account_id`` that has jobs, by workflow name."""
        params = {"account_id": account_id}

        def read(conn: sa.Connection) -> tuple[Sequence[Any], Sequence[Any]]:
            return (
                conn.execute(self._jobs, params).all(),
                conn.execute(self._spend, params).all(),
            )

        job_rows, spend_rows = await self.db.read(read)
        spend: dict[str, dict[str, int]] = {}
        for row in spend_rows:
            spend.setdefault(row.workflow, {})[row.currency] = int(row.amount or 0)
        return {
            row.workflow: WorkflowStats(
                jobs=int(row.jobs),
                ended=int(row.ended or 0),
                succeeded=int(row.ok or 0),
                last_run_at=float(row.last) if row.last is not None else None,
                spend_micros=spend.get(row.workflow, {}),
            )
            for row in job_rows
        }
