"""The usage ledger: one record per charged call, written with the call's result; credits.

Metering charges a call by writing its :class:`UsageRecord` in the transaction that applies the
call's outcome, so a call is charged exactly when its result is committed; the table's unique
``(call_id, attempt)`` refuses a second charge of the same call (or of the same retried attempt,
when its service bills retries).

The ledger is append-only: nothing is ever updated or deleted. A correction is a credit entry
(:meth:`UsageLedger.credit`): a record of its own with a negative amount, its reason and who
made it, counted in every sum (and so in every invoice) of its period.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from fluxo_core.errors import ValidationError
from fluxo_core.storage.bulk import bulk_insert
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import jobs, usage_records

__all__ = [
    "GROUP_KEYS",
    "UsageFilter",
    "UsageLedger",
    "UsageLine",
    "UsageRecord",
    "UsageSum",
    "month_bounds",
    "new_credit",
]


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
    # What is charged: "succeeded", "failed", "cancelled" (a call's final outcome), "retried"
    # (one attempt that failed and was retried: ``attempt`` is its number) or "credit".
    outcome: str = "succeeded"
    attempt: int = 0
    reason: str | None = None  # a credit's reason
    created_by: str | None = None  # who made a credit


def new_credit(
    account_id: str,
    *,
    amount_micros: int,
    currency: str,
    reason: str,
    created_by: str,
    service: str = "credit",
    created_at: float,
) -> UsageRecord:
    """A credit entry: ``amount_micros`` (above zero) taken off the account's usage.

    Its ``call_id`` is a fresh ``credit-...`` id (credits are no calls); it is stored as a
    negative amount, so every sum of the ledger counts it."""
    return UsageRecord(
        call_id=f"credit-{uuid.uuid4().hex}",
        account_id=account_id,
        user_id=created_by,
        service=service,
        version="",
        job_id=None,
        step_id=None,
        units=0,
        unit_price_micros=0,
        amount_micros=-amount_micros,
        currency=currency,
        created_at=created_at,
        outcome="credit",
        attempt=0,
        reason=reason,
        created_by=created_by,
    )


_STRICT = ("succeeded", "credit")

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
        # Successes strictly (a second one is a bug the inbox should have stopped); the charges
        # of other outcomes may come again for a dead letter replayed after a billed failure:
        # they are charged once, and the replay's own outcome gets its record.
        charged = [r for r in records if r.outcome in _STRICT]
        if charged:
            bulk_insert(tx, usage_records, charged)
        again = [r._asdict() for r in records if r.outcome not in _STRICT]
        if again:
            insert = (
                sqlite_insert(usage_records)
                if tx.conn.dialect.name == "sqlite"
                else postgresql_insert(usage_records)
            )
            tx.execute(insert.on_conflict_do_nothing(), again)

    async def add(self, records: Sequence[UsageRecord]) -> None:
        """Append records (credits) in a transaction of their own."""
        await self.db.transact(lambda tx: self.record(tx, records))

    async def of_account(self, account_id: str) -> list[UsageRecord]:
        """An account's usage records, in the order they were written."""
        params = {"acc": account_id}
        rows = await self.db.read(lambda conn: conn.execute(self._of_account, params).all())
        return [UsageRecord._make(r) for r in rows]

    async def lines(
        self, account_id: str, where: UsageFilter, *, limit: int, cursor: str | None = None
    ) -> tuple[list[UsageLine], str | None]:
        """One account's records matching ``where``, newest first, ``limit`` at a time.

        Returns ``(lines, next_cursor)``; pass ``next_cursor`` back for the next page (``None``
        after the last). Keyset-paginated on ``(created_at, id)``: a page costs the same however
        deep it is, and records written meanwhile never shift the pages already read.
        """
        u = usage_records
        query = sa.select(
            u.c.id,
            u.c.call_id,
            u.c.user_id,
            u.c.service,
            u.c.version,
            jobs.c.workflow,
            u.c.job_id,
            u.c.step_id,
            u.c.units,
            u.c.unit_price_micros,
            u.c.amount_micros,
            u.c.currency,
            u.c.created_at,
            u.c.outcome,
            u.c.attempt,
            u.c.reason,
            u.c.created_by,
        )
        query = _filtered(query.select_from(_with_jobs()), account_id, where)
        if cursor:
            created_at, last_id = _parse_cursor(cursor)
            query = query.where(
                sa.or_(
                    u.c.created_at < created_at,
                    sa.and_(u.c.created_at == created_at, u.c.id < last_id),
                )
            )
        query = query.order_by(u.c.created_at.desc(), u.c.id.desc()).limit(limit + 1)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        page = [UsageLine._make(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = f"{last.created_at!r}_{last.id}"
        return page, next_cursor

    async def sums(
        self, account_id: str, where: UsageFilter, group_by: Sequence[str] = ()
    ) -> list[UsageSum]:
        """The calls, units and amounts of one account's records matching ``where``, summed per
        group of ``group_by`` (names of :data:`GROUP_KEYS`) and per currency, ordered by the
        group's values. No ``group_by``: the totals, one per currency."""
        unknown = [name for name in group_by if name not in GROUP_KEYS]
        if unknown:
            raise ValueError(f"cannot group usage by {unknown}; use {GROUP_KEYS}")
        u = usage_records
        keys = [_group_column(name) for name in group_by]
        query = sa.select(
            *keys,
            u.c.currency,
            # Credits and retried attempts are records, not calls.
            sa.func.sum(_is_call).label("calls"),
            sa.func.sum(u.c.units).label("units"),
            sa.func.sum(u.c.amount_micros).label("amount_micros"),
        )
        query = _filtered(query.select_from(_with_jobs()), account_id, where)
        query = query.group_by(*keys, u.c.currency).order_by(*keys, u.c.currency)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        width = len(keys)
        # PostgreSQL sums BIGINT as NUMERIC (a Decimal here): back to exact integers.
        return [
            UsageSum(
                tuple(r[:width]), r[width], int(r[width + 1]), int(r[width + 2]), int(r[width + 3])
            )
            for r in rows
        ]

    @staticmethod
    def totals_on(conn: sa.Connection) -> list[tuple[str, str, int, int]]:
        """``(service, currency, units, amount_micros)`` summed over every account and record
        (a metrics scrape: counters that only grow, as the ledger only grows)."""
        query = sa.select(
            usage_records.c.service,
            usage_records.c.currency,
            sa.func.coalesce(sa.func.sum(usage_records.c.units), 0),
            sa.func.coalesce(sa.func.sum(usage_records.c.amount_micros), 0),
        )
        # Credits are left out: they would make a counter go down.
        query = query.where(usage_records.c.outcome != "credit").group_by(
            usage_records.c.service, usage_records.c.currency
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in conn.execute(query)]


_Select = TypeVar("_Select", bound=sa.Select[Any])

# Credits and the charges of retried attempts are records, but no calls.
_is_call = sa.case((usage_records.c.outcome.in_(("credit", "retried")), 0), else_=1)


def _with_jobs() -> sa.FromClause:
    """The usage records with their job's row, when they have one (a direct call has none).

    Joined on the account too: a job id of another account never lends its workflow."""
    u = usage_records
    return u.outerjoin(jobs, sa.and_(jobs.c.id == u.c.job_id, jobs.c.account_id == u.c.account_id))


def _filtered(query: _Select, account_id: str, where: UsageFilter) -> _Select:
    u = usage_records
    query = query.where(u.c.account_id == account_id)
    if where.workflow is not None:
        query = query.where(jobs.c.workflow == where.workflow)
    if where.service is not None:
        query = query.where(u.c.service == where.service)
    if where.job_id is not None:
        query = query.where(u.c.job_id == where.job_id)
    if where.since is not None:
        query = query.where(u.c.created_at >= where.since)
    if where.until is not None:
        query = query.where(u.c.created_at < where.until)
    return query


def _group_column(name: str) -> sa.ColumnElement[Any]:
    u = usage_records
    if name == "service":
        return u.c.service.label("service")
    if name == "workflow":
        return jobs.c.workflow.label("workflow")
    if name == "job":
        return u.c.job_id.label("job")
    if name == "day":
        return _UtcDay(u.c.created_at).label("day")
    return _UtcMonth(u.c.created_at).label("month")


def _parse_cursor(cursor: str) -> tuple[float, int]:
    created, _, last_id = cursor.partition("_")
    try:
        return float(created), int(last_id)
    except ValueError:
        raise ValidationError(
            "cursor is not one this API returned; pass next_cursor unchanged",
            problems=[("query.cursor", "malformed: pass next_cursor unchanged")],
        ) from None


# --- reading the ledger: filtered records and grouped sums ---------------------------------------

GROUP_KEYS = ("service", "workflow", "job", "day", "month")
"""What usage can be grouped by: a job's workflow comes from the jobs table; days and months are
calendar days and months in UTC (``2026-11-30``, ``2026-11``)."""


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which usage records of one account to read; ``None`` means any.

    ``since`` and ``until`` are epoch seconds, ``[since, until)``: the end is excluded, so
    consecutive months (see :func:`month_bounds`) never count a record twice.
    """

    workflow: str | None = None
    service: str | None = None
    job_id: str | None = None
    since: float | None = None
    until: float | None = None


class UsageLine(NamedTuple):
    """One usage record as read back, with the workflow of its job (``None``: a direct call)."""

    id: int
    call_id: str
    user_id: str
    service: str
    version: str
    workflow: str | None
    job_id: str | None
    step_id: str | None
    units: int
    unit_price_micros: int
    amount_micros: int
    currency: str
    created_at: float
    outcome: str
    attempt: int
    reason: str | None
    created_by: str | None


class UsageSum(NamedTuple):
    """The sums of one group: ``key`` holds the group's value of each grouped-by name, in the
    order asked (``None`` for a direct call's workflow or job). One sum per currency: amounts
    in different currencies are never added up."""

    key: tuple[str | None, ...]
    currency: str
    calls: int
    units: int
    amount_micros: int


def month_bounds(month: str) -> tuple[float, float]:
    """``"2026-11"`` -> the epoch seconds of its first instant and of the next month's, in UTC.

    Raises ``ValueError`` for anything but ``YYYY-MM`` with a month from 01 to 12.
    """
    digits = month[:4] + month[5:]
    if len(month) != 7 or month[4] != "-" or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{month!r} is not a month YYYY-MM")
    year, number = int(month[:4]), int(month[5:])
    start = datetime(year, number, 1, tzinfo=UTC)  # ValueError for month 00 or 13
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


class _UtcDate(sa.sql.functions.FunctionElement[str]):
    """An epoch-seconds column as its UTC calendar day or month, as text.

    Compiled per dialect: SQLite and PostgreSQL share no date-formatting function. One subclass
    per unit (not an attribute): SQLAlchemy's statement cache keys on the class.
    """

    type = sa.String()
    inherit_cache = True
    sqlite_format = ""
    postgresql_format = ""


class _UtcDay(_UtcDate):
    name = "utc_day"
    inherit_cache = True
    sqlite_format = "%Y-%m-%d"
    postgresql_format = "YYYY-MM-DD"


class _UtcMonth(_UtcDate):
    name = "utc_month"
    inherit_cache = True
    sqlite_format = "%Y-%m"
    postgresql_format = "YYYY-MM"


@compiles(_UtcDate, "sqlite")
def _utc_date_sqlite(element: _UtcDate, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('{element.sqlite_format}', {seconds}, 'unixepoch')"


@compiles(_UtcDate, "postgresql")
def _utc_date_postgresql(element: _UtcDate, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', '{element.postgresql_format}')"
