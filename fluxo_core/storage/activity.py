"""What an account's jobs, calls and spend are doing now: the console's overview and job costs.

Every query is scoped to one account and served by an index: ``ix_jobs_account_created`` (jobs
per minute), ``ix_jobs_account_status`` (counts per status, latest failures),
``ix_calls_account_status`` (queue depth and age), ``ix_usage_records_account_created`` (spend)
and the ledger's ``(call_id, outcome, attempt)`` key (the cost of one job's calls).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from fluxo_core.storage.database import Database
from fluxo_core.storage.jobs import JobSummaryRow, job_summary_row
from fluxo_core.storage.tables import calls, jobs, usage_records

__all__ = ["AccountActivity", "CallCost"]

_LIVE = ("queued", "running", "blocked")
_FINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class CallCost:
    """The ledger's charges for one call in one currency (credits excluded)."""

    call_id: str
    currency: str
    amount_micros: int
    records: int


class AccountActivity:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def created_since(self, account_id: str, since: float) -> int:
        query = sa.select(sa.func.count()).where(
            jobs.c.account_id == account_id, jobs.c.created_at >= since
        )
        return int(await self.db.read(lambda conn: conn.execute(query).scalar_one()))

    async def counts(self, account_id: str, *, finished_since: float) -> dict[str, int]:
        """Jobs per live status (all of them), and per final status created since then."""
        j = jobs.c
        live = (
            sa.select(j.status, sa.func.count())
            .where(j.account_id == account_id, j.status.in_(_LIVE))
            .group_by(j.status)
        )
        final = (
            sa.select(j.status, sa.func.count())
            .where(j.account_id == account_id, j.status.in_(_FINAL), j.created_at >= finished_since)
            .group_by(j.status)
        )

        def read(conn: sa.Connection) -> dict[str, int]:
            found = {status: 0 for status in _LIVE + _FINAL}
            for status, count in [*conn.execute(live), *conn.execute(final)]:
                found[status] = int(count)
            return found

        return await self.db.read(read)

    async def queue(self, account_id: str) -> tuple[int, float | None]:
        """The account's calls waiting for a worker, and when the oldest was made."""
        query = sa.select(sa.func.count(), sa.func.min(calls.c.created_at)).where(
            calls.c.account_id == account_id, calls.c.status == "queued"
        )
        count, oldest = await self.db.read(lambda conn: conn.execute(query).one())
        return int(count), oldest

    async def latest(self, account_id: str, status: str, limit: int) -> list[JobSummaryRow]:
        summary = [c for c in jobs.c if c.name not in ("input", "result")]
        query = (
            sa.select(*summary)
            .where(jobs.c.account_id == account_id, jobs.c.status == status)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(limit)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [job_summary_row(r._mapping) for r in rows]

    async def spend(self, account_id: str, since: float) -> dict[str, int]:
        """Micros charged per currency since then (credits included: what the account owes)."""
        u = usage_records.c
        query = (
            sa.select(u.currency, sa.func.coalesce(sa.func.sum(u.amount_micros), 0))
            .where(u.account_id == account_id, u.created_at >= since)
            .group_by(u.currency)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return {currency: int(total) for currency, total in rows}

    async def call_costs(self, account_id: str, call_ids: Iterable[str]) -> Sequence[CallCost]:
        wanted = sorted(set(call_ids))
        if not wanted:
            return []
        u = usage_records.c
        query = (
            sa.select(u.call_id, u.currency, sa.func.sum(u.amount_micros), sa.func.count())
            .where(u.call_id.in_(wanted), u.account_id == account_id, u.outcome != "credit")
            .group_by(u.call_id, u.currency)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [CallCost(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
