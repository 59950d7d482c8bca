"""An account at a glance (the console's overview) and what each call of a job cost."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from fluxo.control.jobs import JobSummary, job_summary
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.activity import AccountActivity

__all__ = ["RATE_WINDOW_S", "SUCCESS_WINDOW_S", "Activity", "Overview", "micros"]

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


class Activity:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = AccountActivity(db)
        self.clock = clock

    async def overview(self, who: Principal, *, failures: int = 5) -> Overview:
        account = who.account_id
        now = self.clock.time()
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        month = today.replace(day=1)
        created = await self.store.created_since(account, now - RATE_WINDOW_S)
        counts = await self.store.counts(account, finished_since=now - SUCCESS_WINDOW_S)
        depth, oldest = await self.store.queue(account)
        ended = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        return Overview(
            jobs_per_minute=created / (RATE_WINDOW_S / 60),
            success_rate=counts["succeeded"] / ended if ended else None,
            ended=ended,
            running=counts["running"],
            queued=counts["queued"],
            blocked=counts["blocked"],
            queue_depth=depth,
            queue_age_s=max(0.0, now - oldest) if oldest is not None else None,
            spend_today=_amounts(await self.store.spend(account, today.timestamp())),
            spend_month=_amounts(await self.store.spend(account, month.timestamp())),
            failures=[job_summary(r) for r in await self.store.latest(account, "failed", failures)],
        )

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
