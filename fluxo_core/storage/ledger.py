"""The usage ledger: one record per succeeded call, written with the call's result.

Metering charges a call by writing its :class:`UsageRecord` in the transaction that applies the
call's outcome, so a call is charged exactly when its result is committed; the table's unique
``call_id`` refuses a second charge of the same call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa

from fluxo_core.storage.bulk import bulk_insert
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import usage_records

__all__ = ["UsageLedger", "UsageRecord"]


class UsageRecord(NamedTuple):
    """What one call cost: ``units`` at ``unit_price_micros`` (1e-6 of ``currency``) each."""

    call_id: str
    account_id: str
    user_id: str
    service: str
    version: str
    job_id: str | None
    step_id: str | None
    units: int
    unit_price_micros: int
    amount_micros: int
    currency: str
    created_at: float


# Selected in UsageRecord's field order, so a row maps by position.
_COLUMNS = [usage_records.c[name] for name in UsageRecord._fields]


class UsageLedger:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._of_account = (
            sa.select(*_COLUMNS)
            .where(usage_records.c.account_id == sa.bindparam("acc"))
            .order_by(usage_records.c.id)
        )

    @staticmethod
    def record(tx: Transaction, records: Sequence[UsageRecord]) -> None:
        """Write usage records in the caller's transaction (the one applying their calls).

        Static: a writer needs only the transaction (Metering, an interceptor, holds no
        database)."""
        if records:
            bulk_insert(tx, usage_records, records)

    async def of_account(self, account_id: str) -> list[UsageRecord]:
        """An account's usage records, in the order they were written."""
        params = {"acc": account_id}
        rows = await self.db.read(lambda conn: conn.execute(self._of_account, params).all())
        return [UsageRecord._make(r) for r in rows]

    @staticmethod
    def totals_on(conn: sa.Connection) -> list[tuple[str, str, int, int]]:
        """``(service, currency, units, amount_micros)`` summed over every account and record
        (a metrics scrape: counters that only grow, as the ledger only grows)."""
        query = sa.select(
            usage_records.c.service,
            usage_records.c.currency,
            sa.func.coalesce(sa.func.sum(usage_records.c.units), 0),
            sa.func.coalesce(sa.func.sum(usage_records.c.amount_micros), 0),
        ).group_by(usage_records.c.service, usage_records.c.currency)
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in conn.execute(query)]
