"""An account at a glance (the console's overview) and what each call of a job cost."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from fluxo.control.jobs import JobSummary, job_summary
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import ConcurrencyLimitError, QuotaExceededError, RateLimitedError
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.activity import AccountActivity, RecentCall

__all__ = [
    "RATE_WINDOW_S",
    "SERVICE_WINDOW_S",
    "SUCCESS_WINDOW_S",
    "Activity",
    "Overview",
    "ServiceFigures",
    "micros",
]

MAX_CACHED_ACCOUNTS = 4096
SERVICE_WINDOW_S = 24 * 3600.0  # a service's calls, errors and latency: the last day
REFUSAL_WINDOW_S = 7 * 24 * 3600.0  # the quotas page's refused calls: the last week
REFUSAL_CODES = (
    QuotaExceededError.code,
    RateLimitedError.code,
    ConcurrencyLimitError.code,
)

RATE_WINDOW_S = 15 * 60.0  # jobs per minute: the mean over the last 15 minutes
SUCCESS_WINDOW_S = 24 * 3600.0  # success rate: the jobs created in the last day that ended


def micros(amount: int) -> Decimal:
    """Integer micros as an exact decimal amount."""
    return Decimal(amount).scaleb(-6)


@dataclass(frozen=True)
class Overview:
    jobs_per_minute: float
    success_rate: float | None  # succeeded / ended, of the jobs created in the last day
    ended: int
    running: int
    queued: int
    blocked: int
    queue_depth: int  # calls waiting for a worker
    queue_age_s: float | None  # how long the oldest has waited
    spend_today: dict[str, Decimal]  # per currency, UTC day
    spend_month: dict[str, Decimal]  # per currency, UTC month
    failures: list[JobSummary]


@dataclass(frozen=True)
class ServiceFigures:
    calls: int
    error_rate: float | None
    p50_s: float | None
    p95_s: float | None


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Activity:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = AccountActivity(db)
        self.clock = clock
        # The month's spend before today, per account: the ledger only grows, with records
        # stamped when they are written, so the days that have ended never change; a live
        # overview then sums one day of records, not a month of them.
        self._closed_days: OrderedDict[tuple[str, float], dict[str, int]] = OrderedDict()

    async def _month_before_today(self, account: str, month: float, today: float) -> dict[str, int]:
        key = (account, today)
        if key not in self._closed_days:
            self._closed_days[key] = await self.store.spend(account, month, until=today)
            while len(self._closed_days) > MAX_CACHED_ACCOUNTS:
                self._closed_days.popitem(last=False)
        self._closed_days.move_to_end(key)
        return self._closed_days[key]

    async def overview(self, who: Principal, *, failures: int = 5) -> Overview:
        account = who.account_id
        now = self.clock.time()
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        month = today.replace(day=1)
        snap = await self.store.snapshot(
            account,
            rate_since=now - RATE_WINDOW_S,
            success_since=now - SUCCESS_WINDOW_S,
            today=today.timestamp(),
            failures=failures,
        )
        counts, spent_today = snap.counts, snap.spent_today
        before_today = await self._month_before_today(account, month.timestamp(), today.timestamp())
        ended = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        return Overview(
            jobs_per_minute=snap.created / (RATE_WINDOW_S / 60),
            success_rate=counts["succeeded"] / ended if ended else None,
            ended=ended,
            running=counts["running"],
            queued=counts["queued"],
            blocked=counts["blocked"],
            queue_depth=snap.queue_depth,
            queue_age_s=max(0.0, now - snap.queue_oldest)
            if snap.queue_oldest is not None
            else None,
            spend_today=_amounts(spent_today),
            spend_month=_amounts(
                {
                    c: spent_today.get(c, 0) + before_today.get(c, 0)
                    for c in spent_today.keys() | before_today.keys()
                }
            ),
            failures=[job_summary(r) for r in snap.failures],
        )

    async def service_figures(self, who: Principal) -> dict[str, ServiceFigures]:
        """Per service the account called in the last day: calls, error rate, p50/p95 time."""
        since = self.clock.time() - SERVICE_WINDOW_S
        found = {}
        for name, seen in (await self.store.service_calls(who.account_id, since)).items():
            ordered = sorted(seen.durations_s)
            found[name] = ServiceFigures(
                calls=seen.calls,
                error_rate=seen.failed / seen.calls if seen.calls else None,
                p50_s=_percentile(ordered, 0.5),
                p95_s=_percentile(ordered, 0.95),
            )
        return found

    async def recent_calls(
        self, who: Principal, service: str, *, limit: int = 50
    ) -> list[RecentCall]:
        """The account's newest calls of ``service``, newest first."""
        return await self.store.recent_calls(who.account_id, service, limit)

    async def quota_refusals(self, who: Principal, *, limit: int = 20) -> list[RecentCall]:
        """The account's calls a quota or limit refused in the last week, newest first (jobs
        refused at creation made no call: their callers were told at once)."""
        since = self.clock.time() - REFUSAL_WINDOW_S
        return await self.store.refused_calls(who.account_id, REFUSAL_CODES, since, limit)

    async def call_costs(
        self, who: Principal, call_ids: list[str]
    ) -> dict[str, dict[str, Decimal]]:
        """Per call id, what the ledger charged for it per currency (its retries included)."""
        found: dict[str, dict[str, Decimal]] = defaultdict(dict)
        for cost in await self.store.call_costs(who.account_id, call_ids):
            found[cost.call_id][cost.currency] = micros(cost.amount_micros)
        return dict(found)


def _amounts(per_currency: dict[str, int]) -> dict[str, Decimal]:
    return {currency: micros(total) for currency, total in sorted(per_currency.items())}
