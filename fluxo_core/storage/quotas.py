"""Quotas and limits: their definitions, their counters per period, and their events.

A :class:`Quota` is a named limit of one account, on the whole account or on one of its workflows
or services (``scope`` and ``target``):

- ``calls``: calls per UTC ``day`` or ``month``;
- ``spend``: amount charged per UTC day or month, in micros of ``currency``;
- ``concurrent_jobs``: jobs queued or running at once (account or workflow scope);
- ``rate``: requests (gateway calls, job creations) per ``second``, ``minute`` or ``hour``.

Counters (``quota_usage``) are changed only inside the transactions that write what they count, by
one atomic statement (:meth:`QuotaStore.add_on`): an upsert that adds only while the sum stays
within the limit, so writers on PostgreSQL, which lock the row, can never count past it together.
Events (``quota_events``) are written once per quota, period and threshold: the table's unique key
makes a second write a no-op, whichever process writes it.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fluxo_core.errors import NotFoundError, ValidationError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import (
    jobs,
    quota_events,
    quota_refusals,
    quota_usage,
    quotas,
)

__all__ = [
    "NAME_PATTERN",
    "QUOTA_KINDS",
    "QUOTA_SCOPES",
    "RATE_PERIODS",
    "USAGE_PERIODS",
    "Quota",
    "QuotaEvent",
    "QuotaKind",
    "QuotaScope",
    "QuotaSpec",
    "QuotaStore",
    "period_key",
]

QuotaKind = Literal["calls", "spend", "concurrent_jobs", "rate"]
QuotaScope = Literal["account", "workflow", "service"]
QUOTA_KINDS: Final = ("calls", "spend", "concurrent_jobs", "rate")
QUOTA_SCOPES: Final = ("account", "workflow", "service")
USAGE_PERIODS: Final = ("day", "month")
RATE_PERIODS: Final = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
NAME_PATTERN: Final = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,98}[a-z0-9])?$")
THRESHOLDS: Final = (80, 100)
MAX_LIMIT: Final = 10**15
RUNNING: Final = ("queued", "running")


def period_key(period: str, now: float) -> str:
    """The UTC period ``now`` (epoch seconds) falls in: ``2026-12-06`` (day) or ``2026-12``."""
    return time.strftime("%Y-%m-%d" if period == "day" else "%Y-%m", time.gmtime(now))


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """What a quota limits (the part a user writes); :meth:`problems` says what is wrong with it.

    ``limit``: calls, jobs or requests; for ``spend``, micros of ``currency``.
    """

    kind: str
    limit: int
    scope: str = "account"
    target: str | None = None
    period: str | None = None
    currency: str | None = None

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if self.kind not in QUOTA_KINDS:
            found.append(("kind", f"one of {', '.join(QUOTA_KINDS)}"))
        if self.scope not in QUOTA_SCOPES:
            found.append(("scope", f"one of {', '.join(QUOTA_SCOPES)}"))
        elif self.scope == "account" and self.target is not None:
            found.append(("target", "an account quota has no target"))
        elif self.scope != "account" and not self.target:
            found.append(("target", f"required: the {self.scope}'s name"))
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            found.append(("limit", "a whole number"))
        elif not 0 <= self.limit <= MAX_LIMIT:
            found.append(("limit", f"from 0 to {MAX_LIMIT}"))
        if self.kind in ("calls", "spend") and self.period not in USAGE_PERIODS:
            found.append(("period", "day or month (UTC)"))
        if self.kind == "rate":
            if self.period not in RATE_PERIODS:
                found.append(("period", f"one of {', '.join(RATE_PERIODS)}"))
            if isinstance(self.limit, int) and self.limit < 1:
                found.append(("limit", "at least 1 request per period"))
        if self.kind == "concurrent_jobs":
            if self.period is not None:
                found.append(("period", "concurrent jobs have no period"))
            if self.scope == "service":
                found.append(("scope", "concurrent jobs are limited per account or workflow"))
        if self.kind == "spend":
            if self.currency is None or not re.fullmatch(r"[A-Z]{3}", self.currency):
                found.append(("currency", "an ISO 4217 code, e.g. EUR"))
        elif self.currency is not None:
            found.append(("currency", "only a spend quota has a currency"))
        return found


@dataclass(frozen=True, slots=True)
class Quota:
    """A stored quota of ``account_id``, named ``name``."""

    account_id: str
    name: str
    spec: QuotaSpec
    created_at: float
    updated_at: float

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def limit(self) -> int:
        return self.spec.limit


@dataclass(frozen=True, slots=True)
class QuotaEvent:
    """A quota reached ``threshold`` percent of its limit in the period ``period_key``."""

    id: int
    account_id: str
    quota: str
    kind: str
    period_key: str
    threshold: int
    used: int
    limit: int
    created_at: float


def _quota(row: sa.Row[tuple[object, ...]]) -> Quota:
    m = row._mapping
    spec = QuotaSpec(
        kind=m["kind"],
        limit=m["limit_value"],
        scope=m["scope"],
        target=m["target"],
        period=m["period"],
        currency=m["currency"],
    )
    return Quota(m["account_id"], m["name"], spec, m["created_at"], m["updated_at"])


def _event(row: sa.Row[tuple[object, ...]]) -> QuotaEvent:
    m = row._mapping
    return QuotaEvent(
        m["id"],
        m["account_id"],
        m["quota"],
        m["kind"],
        m["period_key"],
        m["threshold"],
        m["used"],
        m["limit_value"],
        m["created_at"],
    )


def _insert(tx: Transaction, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if tx.conn.dialect.name == "postgresql" else sqlite.insert)(table)


class QuotaStore:
    """The quotas of every account: set, list, delete; their counters, refusals and events.

    ``set``/``get``/``list``/``delete`` are the whole management API (the HTTP routes, the CLI and
    a declarative ``Quota`` resource all use them); the ``*_on`` methods run inside the caller's
    transaction, on the hot path of admission.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- definitions ---------------------------------------------------------------------------

    async def set(self, account_id: str, name: str, spec: QuotaSpec) -> tuple[Quota, bool]:
        """Create or replace the quota ``name``; returns it and whether it is new.

        Replacing a quota keeps what it used in the current period only if its kind, scope and
        target stay the same (a different thing counted starts from zero).

        Raises:
            ValidationError: a bad name or spec (every problem, located).
        """
        problems = [] if NAME_PATTERN.fullmatch(name) else [("name", _NAME_RULE)]
        problems += [(f"spec.{where}", what) for where, what in spec.problems()]
        if problems:
            raise ValidationError(f"quota {name!r} is not valid", problems=problems)

        def run(tx: Transaction) -> tuple[Quota, bool]:
            now = time.time()
            key = (quotas.c.account_id == account_id) & (quotas.c.name == name)
            old = tx.conn.execute(sa.select(quotas).where(key)).first()
            values = {
                "scope": spec.scope,
                "target": spec.target,
                "kind": spec.kind,
                "limit_value": spec.limit,
                "period": spec.period,
                "currency": spec.currency,
                "updated_at": now,
            }
            if old is None:
                tx.execute(
                    sa.insert(quotas).values(
                        account_id=account_id, name=name, created_at=now, **values
                    )
                )
                return Quota(account_id, name, spec, now, now), True
            before = _quota(old)
            tx.execute(sa.update(quotas).where(key).values(**values))
            same = (before.spec.kind, before.spec.scope, before.spec.target) == (
                spec.kind,
                spec.scope,
                spec.target,
            )
            if not same:
                self._forget_usage(tx, account_id, name)
            return Quota(account_id, name, spec, before.created_at, now), False

        return await self.db.transact(run)

    async def get(self, account_id: str, name: str) -> Quota:
        query = sa.select(quotas).where(quotas.c.account_id == account_id, quotas.c.name == name)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise _not_found(name)
        return _quota(row)

    async def list(self, account_id: str) -> list[Quota]:
        """The account's quotas, by name."""
        return (await self.by_account([account_id])).get(account_id, [])

    async def delete(self, account_id: str, name: str) -> None:
        """Delete the quota ``name`` and its counters (its events stay, as history)."""

        def run(tx: Transaction) -> None:
            deleted = tx.execute(
                sa.delete(quotas).where(quotas.c.account_id == account_id, quotas.c.name == name)
            )
            if deleted.rowcount == 0:
                raise _not_found(name)
            self._forget_usage(tx, account_id, name)

        await self.db.transact(run)

    @staticmethod
    def _forget_usage(tx: Transaction, account_id: str, name: str) -> None:
        tx.execute(
            sa.delete(quota_usage).where(
                quota_usage.c.account_id == account_id, quota_usage.c.name == name
            )
        )

    async def by_account(self, account_ids: Iterable[str]) -> dict[str, builtins.list[Quota]]:
        """The quotas of each account (accounts without any are left out), by name."""
        ids = sorted(set(account_ids))
        return await self.db.read(lambda conn: self.by_account_on(conn, ids)) if ids else {}

    @staticmethod
    def by_account_on(
        conn: sa.Connection, account_ids: Sequence[str]
    ) -> dict[str, builtins.list[Quota]]:
        found: dict[str, list[Quota]] = {}
        for row in conn.execute(_BY_ACCOUNT, {"ids": sorted(set(account_ids))}):
            quota = _quota(row)
            found.setdefault(quota.account_id, []).append(quota)
        return found

    # -- counters ------------------------------------------------------------------------------

    @staticmethod
    def add_on(tx: Transaction, quota: Quota, key: str, amount: int, *, within: bool) -> int | None:
        """Add ``amount`` to what ``quota`` used in period ``key``, in one atomic statement;
        returns the new total. With ``within``, only if the total stays within the limit:
        otherwise nothing changes and the answer is None."""
        if within and amount > quota.limit:
            return None
        used = tx.execute(
            _ADD,
            {
                "account_id": quota.account_id,
                "name": quota.name,
                "period_key": key,
                "amount": amount,
                "limit": quota.limit if within else _UNLIMITED,
            },
        ).scalar()
        return None if used is None else int(used)

    async def used(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
        """What each ``(account_id, quota name, period key)`` used (0 if nothing yet)."""
        if not keys:
            return {}
        return await self.db.read(lambda conn: self.used_on(conn, keys))

    @staticmethod
    def used_on(
        conn: sa.Connection, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], int]:
        wanted = set(keys)
        if not wanted:
            return {}
        query = sa.select(
            quota_usage.c.account_id,
            quota_usage.c.name,
            quota_usage.c.period_key,
            quota_usage.c.used,
        ).where(
            sa.tuple_(quota_usage.c.account_id, quota_usage.c.name, quota_usage.c.period_key).in_(
                sorted(wanted)
            )
        )
        found = {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(query)}
        return {k: found.get(k, 0) for k in wanted}

    # -- concurrent jobs -----------------------------------------------------------------------

    @staticmethod
    def running_jobs_on(tx: Transaction, quota: Quota) -> int:
        """Jobs queued or running in ``quota``'s scope, with ``quota``'s row locked until the
        transaction ends (PostgreSQL), so two creations under one limit count one after the
        other (SQLite's write transactions already do)."""
        if tx.conn.dialect.name == "postgresql":
            tx.execute(
                sa.select(quotas.c.name)
                .where(quotas.c.account_id == quota.account_id, quotas.c.name == quota.name)
                .with_for_update()
            )
        query = (
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.account_id == quota.account_id, jobs.c.status.in_(RUNNING))
        )
        if quota.spec.scope == "workflow":
            query = query.where(jobs.c.workflow == quota.spec.target)
        return int(tx.conn.execute(query).scalar_one())

    # -- calls refused after an engine wrote them ----------------------------------------------

    @staticmethod
    def refuse_calls_on(tx: Transaction, quota: Quota, call_ids: Sequence[str]) -> None:
        """Mark calls an engine wrote past ``quota``: the worker refuses them."""
        if call_ids:
            now = time.time()
            tx.execute(
                _insert(tx, quota_refusals).on_conflict_do_nothing(),
                [
                    {"call_id": c, "account_id": quota.account_id, "quota": quota.name,
                     "created_at": now}
                    for c in call_ids
                ],
            )  # fmt: skip

    async def refused_calls(self, call_ids: Sequence[str]) -> dict[str, str]:
        """Of ``call_ids``, those marked refused: call id -> the quota's name."""
        if not call_ids:
            return {}
        return await self.db.read(lambda conn: self.refused_calls_on(conn, call_ids))

    @staticmethod
    def refused_calls_on(conn: sa.Connection, call_ids: Sequence[str]) -> dict[str, str]:
        if not call_ids:
            return {}
        query = sa.select(quota_refusals.c.call_id, quota_refusals.c.quota).where(
            quota_refusals.c.call_id.in_(sorted(set(call_ids)))
        )
        return {r[0]: r[1] for r in conn.execute(query)}

    @staticmethod
    def expire_refusals(tx: Transaction, created_before: float, limit: int) -> int:
        """Delete up to ``limit`` refusal marks made before ``created_before``; returns how many.

        A mark only has to outlive every redelivery of its call's message (as an inbox row
        does), so the janitor expires them with the inbox's retention."""
        old = (
            sa.select(quota_refusals.c.call_id)
            .where(quota_refusals.c.created_at < created_before)
            .limit(limit)
        )
        result = tx.execute(sa.delete(quota_refusals).where(quota_refusals.c.call_id.in_(old)))
        return int(result.rowcount or 0)

    # -- events --------------------------------------------------------------------------------

    @staticmethod
    def record_events_on(
        tx: Transaction, quota: Quota, key: str, before: int, after: int, now: float
    ) -> builtins.list[int]:
        """Record the thresholds (80, 100 percent) that ``before -> after`` crossed, each once
        per quota and period; returns the thresholds this call recorded (not those already)."""
        # A zero limit has no share to reach: it refuses from the start, without events.
        crossed = [t for t in THRESHOLDS if before * 100 < t * quota.limit <= after * 100]
        recorded = []
        for threshold in crossed:
            statement = (
                _insert(tx, quota_events)
                .values(
                    account_id=quota.account_id,
                    quota=quota.name,
                    kind=quota.kind,
                    period_key=key,
                    threshold=threshold,
                    used=after,
                    limit_value=quota.limit,
                    created_at=now,
                )
                .on_conflict_do_nothing()
            )
            if tx.execute(statement).rowcount:
                recorded.append(threshold)
        return recorded

    async def events(self, account_id: str, *, limit: int = 100) -> builtins.list[QuotaEvent]:
        """The account's quota events, newest first."""
        query = (
            sa.select(quota_events)
            .where(quota_events.c.account_id == account_id)
            .order_by(quota_events.c.created_at.desc(), quota_events.c.id.desc())
            .limit(limit)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_event(r) for r in rows]


# One statement, built once (it runs in every transaction that writes calls under a quota): the
# same text on SQLite and PostgreSQL. A conflicting row is updated only while the sum stays
# within the limit; PostgreSQL re-checks the WHERE on the row it locked, so concurrent writers
# add one after the other.
_ADD = sa.text(
    "INSERT INTO quota_usage (account_id, name, period_key, used) "
    "VALUES (:account_id, :name, :period_key, :amount) "
    "ON CONFLICT (account_id, name, period_key) DO UPDATE "
    "SET used = quota_usage.used + excluded.used "
    "WHERE quota_usage.used + excluded.used <= :limit "
    "RETURNING used"
)
_UNLIMITED = 2**62
_BY_ACCOUNT = (
    sa.select(quotas)
    .where(quotas.c.account_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(quotas.c.account_id, quotas.c.name)
)

_NAME_RULE = "lower-case letters, digits, '.', '_' and '-', at most 100, e.g. daily-calls"


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(
        f"no quota {name!r} in this account; 'fluxo quota list' shows them", quota=name
    )
