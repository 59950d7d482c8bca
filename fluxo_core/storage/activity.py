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

__all__ = ["AccountActivity", "CallCost", "RecentCall", "ServiceCalls", "Snapshot"]

MAX_LATENCY_SAMPLES = 20_000  # the newest calls whose durations make the percentiles

_LIVE = ("queued", "running", "blocked")
_FINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class CallCost:
    """The ledger's charges for one call in one currency (credits excluded)."""

    call_id: str
    currency: str
    amount_micros: int
    records: int


@dataclass(frozen=True, slots=True)
class ServiceCalls:
    """One service's calls by one account in a window: how many, how many failed, durations."""

    service: str
    calls: int
    failed: int
    durations_s: list[float]


@dataclass(frozen=True, slots=True)
class RecentCall:
    """One call of a service by the account: how it went and which job's step made it."""

    call_id: str
    service: str
    version: str
    status: str
    created_at: float
    finished_at: float | None
    job_id: str | None
    step_id: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The overview's figures, read in one go."""

    created: int  # jobs created since ``rate_since``
    counts: dict[str, int]  # live statuses: all; final ones: created since ``success_since``
    queue_depth: int
    queue_oldest: float | None
    spent_today: dict[str, int]
    failures: list[JobSummaryRow]


class AccountActivity:
    def __init__(self, db: Database) -> None:
        self.db = db
        c = calls.c
        self._recent = sa.select(
            c.id, c.service, c.version, c.status, c.created_at, c.finished_at, c.job_id,
            c.step_id, c.error,
        )  # fmt: skip

    async def snapshot(
        self,
        account_id: str,
        *,
        rate_since: float,
        success_since: float,
        today: float,
        failures: int,
    ) -> Snapshot:
        """Every live figure of the overview on one connection (one trip to the database's
        thread, not six)."""
        created = sa.select(sa.func.count()).where(
            jobs.c.account_id == account_id, jobs.c.created_at >= rate_since
        )
        queue = sa.select(sa.func.count(), sa.func.min(calls.c.created_at)).where(
            calls.c.account_id == account_id, calls.c.status == "queued"
        )

        def read(conn: sa.Connection) -> Snapshot:
            depth, oldest = conn.execute(queue).one()
            return Snapshot(
                created=int(conn.execute(created).scalar_one()),
                counts=self._counts_on(conn, account_id, success_since),
                queue_depth=int(depth),
                queue_oldest=oldest,
                spent_today=self._spend_on(conn, account_id, today, None),
                failures=self._latest_on(conn, account_id, "failed", failures),
            )

        return await self.db.read(read)

    @staticmethod
    def _counts_on(conn: sa.Connection, account_id: str, finished_since: float) -> dict[str, int]:
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
        found = {status: 0 for status in _LIVE + _FINAL}
        for status, count in [*conn.execute(live), *conn.execute(final)]:
            found[status] = int(count)
        return found

    @staticmethod
    def _latest_on(
        conn: sa.Connection, account_id: str, status: str, limit: int
    ) -> list[JobSummaryRow]:
        summary = [c for c in jobs.c if c.name not in ("input", "result")]
        query = (
            sa.select(*summary)
            .where(jobs.c.account_id == account_id, jobs.c.status == status)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(limit)
        )
        return [job_summary_row(r._mapping) for r in conn.execute(query)]

    async def spend(
        self, account_id: str, since: float, until: float | None = None
    ) -> dict[str, int]:
        """Micros charged per currency in ``[since, until)`` (credits included: what the
        account owes)."""
        return await self.db.read(lambda conn: self._spend_on(conn, account_id, since, until))

    @staticmethod
    def _spend_on(
        conn: sa.Connection, account_id: str, since: float, until: float | None
    ) -> dict[str, int]:
        u = usage_records.c
        query = sa.select(u.currency, sa.func.coalesce(sa.func.sum(u.amount_micros), 0)).where(
            u.account_id == account_id, u.created_at >= since
        )
        if until is not None:
            query = query.where(u.created_at < until)
        query = query.group_by(u.currency)
        return {currency: int(total) for currency, total in conn.execute(query)}

    async def call_costs(self, account_id: str, call_ids: Iterable[str]) -> Sequence[CallCost]:
        wanted = sorted(set(call_ids))
        if not wanted:
            return []
        u = usage_records.c
        # Only the call ids in the condition, so the ledger's (call_id, ...) key answers it: with
        # the account there too, a planner may prefer the account's index and read its whole
        # ledger. The account is checked on the few rows found instead.
        query = sa.select(u.call_id, u.account_id, u.currency, u.amount_micros, u.outcome).where(
            u.call_id.in_(wanted)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        sums: dict[tuple[str, str], tuple[int, int]] = {}
        for call_id, owner, currency, amount, outcome in rows:
            if owner != account_id or outcome == "credit":
                continue
            total, count = sums.get((call_id, currency), (0, 0))
            sums[(call_id, currency)] = (total + int(amount), count + 1)
        return [CallCost(c, cur, total, n) for (c, cur), (total, n) in sorted(sums.items())]

    async def service_calls(self, account_id: str, since: float) -> dict[str, ServiceCalls]:
        """Per service, the account's calls made since then (the newest
        :data:`MAX_LATENCY_SAMPLES` of them: a bounded read whatever the traffic)."""
        c = calls.c
        query = (
            sa.select(c.service, c.status, c.created_at, c.finished_at)
            .where(c.account_id == account_id, c.created_at >= since)
            .order_by(c.created_at.desc())
            .limit(MAX_LATENCY_SAMPLES)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        found: dict[str, ServiceCalls] = {}
        for service, status, created, finished in rows:
            entry = found.setdefault(service, ServiceCalls(service, 0, 0, []))
            failed = status == "failed"
            found[service] = ServiceCalls(
                service, entry.calls + 1, entry.failed + failed, entry.durations_s
            )
            if finished is not None:
                entry.durations_s.append(max(0.0, finished - created))
        return found

    async def recent_calls(self, account_id: str, service: str, limit: int) -> list[RecentCall]:
        """The account's newest calls of ``service`` (``ix_calls_account_created``)."""
        c = calls.c
        query = (
            self._recent
            .where(c.account_id == account_id, c.service == service)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )  # fmt: skip
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [RecentCall(*row) for row in rows]

    async def refused_calls(
        self, account_id: str, codes: Sequence[str], since: float, limit: int
    ) -> list[RecentCall]:
        """The account's newest calls since then that failed with one of these error codes
        (a quota's refusals), through ``ix_calls_account_status``."""
        c = calls.c
        coded = sa.or_(*(c.error.contains(f'"code":"{code}"') for code in codes))
        query = (
            self._recent
            .where(
                c.account_id == account_id,
                c.status == "failed",
                c.created_at >= since,
                coded,
            )
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )  # fmt: skip
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [RecentCall(*row) for row in rows]
