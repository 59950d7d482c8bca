"""The margin of published workflows: what callers paid for a workflow service (its revenue)
against what the calls inside its child jobs cost its publisher (its cost), in one period.

Both sides are sums of the usage ledger: revenue the entries of the service's own calls (billed
to each caller), cost the entries of the calls made by the jobs the service started
(``jobs.via_service``, in the publisher's account). Read-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fluxo_core.storage.database import Database
from fluxo_core.storage.tables import jobs, usage_records

__all__ = ["MarginLine", "MarginStore"]


@dataclass(frozen=True, slots=True)
class MarginLine:
    """One service's figures in one currency (micro-units); ``calls``: the billed calls."""

    service: str
    currency: str
    revenue_micros: int
    cost_micros: int
    calls: int

    @property
    def margin_micros(self) -> int:
        return self.revenue_micros - self.cost_micros


class MarginStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def lines(
        self, account_id: str, services: Sequence[str], start: float, end: float
    ) -> list[MarginLine]:
        """The margin of each of ``services`` (published by ``account_id``) over the ledger
        entries written in ``[start, end)``, by service and currency."""
        if not services:
            return []
        u = usage_records
        in_period = sa.and_(u.c.created_at >= start, u.c.created_at < end)
        revenue = (
            sa.select(
                u.c.service,
                u.c.currency,
                sa.func.sum(u.c.amount_micros),
                sa.func.count(sa.distinct(u.c.call_id)),
            )
            .where(u.c.service.in_(sorted(services)), in_period)
            .group_by(u.c.service, u.c.currency)
        )
        cost = (
            sa.select(jobs.c.via_service, u.c.currency, sa.func.sum(u.c.amount_micros))
            .select_from(u.join(jobs, jobs.c.id == u.c.job_id))
            .where(
                jobs.c.account_id == account_id,
                jobs.c.via_service.in_(sorted(services)),
                in_period,
            )
            .group_by(jobs.c.via_service, u.c.currency)
        )

        def read(conn: sa.Connection) -> tuple[list[Any], list[Any]]:
            return list(conn.execute(revenue)), list(conn.execute(cost))

        earned, spent = await self.db.read(read)
        figures: dict[tuple[str, str], list[int]] = {}
        for service, currency, amount, calls in earned:
            figures.setdefault((service, currency), [0, 0, 0])
            figures[(service, currency)][0] += int(amount or 0)
            figures[(service, currency)][2] += int(calls or 0)
        for service, currency, amount in spent:
            figures.setdefault((service, currency), [0, 0, 0])[1] += int(amount or 0)
        return [
            MarginLine(service, currency, revenue, cost_, calls)
            for (service, currency), (revenue, cost_, calls) in sorted(figures.items())
        ]
