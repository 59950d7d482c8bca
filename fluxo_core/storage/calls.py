"""Call rows: every service call, its request, status, result and error.

The gateway inserts a call as ``queued``; the worker writes its outcome (``succeeded``, ``failed``,
or ``retrying`` between attempts); a dead-letter replay re-opens a failed one; a job retry
supersedes a failed one (:meth:`CallStore.supersede`). Reads return
:class:`CallRow`, mapped from the table in :meth:`CallRow.of_row` and nowhere else.

Statements are built once per store: the gateway and the worker run them thousands of times a
second, and building one costs more than SQLite takes to run it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from fluxo_core.storage.bulk import bulk_insert, bulk_update, one_of
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import calls, deferred_calls

__all__ = ["CallOutcome", "CallOwner", "CallRow", "CallStore", "NewCall"]


class CallRow(NamedTuple):
    """One call as stored. ``result`` is the JSON array of its output packets, ``error`` the
    JSON of its error; times are epoch seconds; ``retry_id``: the call a job retry made this
    failed one's next attempt (see :meth:`CallStore.supersede`)."""

    id: str
    account_id: str
    user_id: str
    service: str
    version: str
    job_id: str | None
    step_id: str | None
    status: str
    request: bytes
    result: bytes | None
    error: str | None
    attempts: int
    reply_to: str | None
    created_at: float
    finished_at: float | None
    retry_id: str | None = None

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> CallRow:
        """The one mapping from a row of :data:`_COLUMNS` (in that order) to a CallRow."""
        return cls._make(row)


# Selected in CallRow's field order, so a row maps by position (no lookup by name per column).
_COLUMNS = [calls.c[name] for name in CallRow._fields]


class NewCall(NamedTuple):
    """A call to insert, queued and not yet attempted (fields are the columns written)."""

    id: str
    account_id: str
    user_id: str
    service: str
    version: str
    job_id: str | None
    step_id: str | None
    request: bytes
    reply_to: str | None
    created_at: float
    status: str = "queued"
    attempts: int = 0


class CallOwner(NamedTuple):
    """Whose call an id is: enough to tell a client's retry from a reused packet id.
    ``retry_id``: the call that answers this id now, if a job retry superseded it."""

    id: str
    account_id: str
    service: str
    retry_id: str | None = None


class CallOutcome(NamedTuple):
    """What an attempt of a call came to, written over its row (``id`` finds it)."""

    id: str
    status: str  # succeeded | failed | retrying
    result: bytes | None
    error: str | None
    attempts: int
    finished_at: float | None


class CallStore:
    """Reads and writes call rows; the plain methods run in the caller's transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._get = sa.select(*_COLUMNS).where(calls.c.id == sa.bindparam("cid"))
        self._get_scoped = self._get.where(calls.c.account_id == sa.bindparam("acc"))
        self._owners = sa.select(
            calls.c.id, calls.c.account_id, calls.c.service, calls.c.retry_id
        ).where(one_of(calls.c.id, "ids", sqlite=db.is_sqlite))
        self._of_job = (
            sa.select(*_COLUMNS)
            .where(calls.c.job_id == sa.bindparam("job"), calls.c.account_id == sa.bindparam("acc"))
            .order_by(calls.c.created_at, calls.c.id)
        )
        self._reopen = (
            sa.update(calls)
            .where(one_of(calls.c.id, "ids", sqlite=db.is_sqlite), calls.c.status == "failed")
            .values(status="queued", finished_at=None)
        )

    async def get(self, call_id: str, *, account_id: str | None = None) -> CallRow | None:
        """The call, or None; ``account_id`` scopes the lookup (another account's call is None)."""
        query = self._get if account_id is None else self._get_scoped
        params = {"cid": call_id, "acc": account_id}
        row = await self.db.read(lambda conn: conn.execute(query, params).first())
        return None if row is None else CallRow.of_row(row)

    async def of_job(self, job_id: str, *, account_id: str) -> list[CallRow]:
        """The calls made for a job, oldest first; only those of the job's own account (a call
        naming the job from another account is never one of its steps)."""
        params = {"job": job_id, "acc": account_id}
        rows = await self.db.read(lambda conn: conn.execute(self._of_job, params).all())
        return [CallRow.of_row(r) for r in rows]

    def insert(self, tx: Transaction, new: Sequence[NewCall]) -> set[str]:
        """Insert calls, skipping ids that exist (a client's retry); returns the ids inserted."""
        inserted = bulk_insert(tx, calls, new, skip_conflicts=True, returning=["id"])
        return {r.id for r in inserted}

    def owners(self, tx: Transaction, call_ids: Iterable[str]) -> dict[str, CallOwner]:
        """Who owns each of these calls, by id (unknown ids are absent)."""
        ids = sorted(set(call_ids))
        if not ids:
            return {}
        rows = tx.execute(self._owners, {"ids": ids})
        return {r.id: CallOwner(r.id, r.account_id, r.service, r.retry_id) for r in rows}

    def record_outcomes(self, tx: Transaction, outcomes: Sequence[CallOutcome]) -> None:
        """Write each call's status, result or error, attempts and end (one statement)."""
        bulk_update(tx, calls, ["id"], outcomes)

    def in_transaction(self, tx: Transaction, call_ids: Iterable[str]) -> dict[str, CallRow]:
        """These calls as stored, read in ``tx``, by id."""
        ids = sorted(set(call_ids))
        if not ids:
            return {}
        query = sa.select(*_COLUMNS).where(one_of(calls.c.id, "ids", sqlite=self.db.is_sqlite))
        return {row.id: CallRow.of_row(row) for row in tx.execute(query, {"ids": ids})}

    def defer(self, tx: Transaction, deferred: Sequence[tuple[str, str]], now: float) -> None:
        """Note calls ``(id, service)`` whose handler answered DEFERRED, those still open (one
        completed meanwhile, by a transaction that ended its work first, is left out)."""
        ids = sorted({call_id for call_id, _ in deferred})
        if not ids:
            return
        open_calls = sa.select(calls.c.id, calls.c.service, sa.literal(now)).where(
            one_of(calls.c.id, "ids", sqlite=self.db.is_sqlite),
            calls.c.status.not_in(("succeeded", "failed")),
        )
        known = sa.select(deferred_calls.c.call_id).where(deferred_calls.c.call_id == calls.c.id)
        tx.execute(
            sa.insert(deferred_calls).from_select(
                ["call_id", "service", "created_at"], open_calls.where(~sa.exists(known))
            ),
            {"ids": ids},
        )

    def undefer(self, tx: Transaction, call_ids: Iterable[str]) -> None:
        """These deferred calls are completed: no longer open."""
        ids = sorted(set(call_ids))
        if ids:
            tx.execute(
                sa.delete(deferred_calls).where(
                    one_of(deferred_calls.c.call_id, "ids", sqlite=self.db.is_sqlite)
                ),
                {"ids": ids},
            )

    async def forget_completed_deferred(self) -> int:
        """Drop the notes of deferred calls that were completed after all (noted by a worker
        while another transaction completed them); returns how many."""
        done = sa.select(calls.c.id).where(
            calls.c.id == deferred_calls.c.call_id, calls.c.status.in_(("succeeded", "failed"))
        )
        result = await self.db.transact(
            lambda tx: tx.execute(sa.delete(deferred_calls).where(sa.exists(done)))
        )
        return int(result.rowcount or 0)

    def complete_open(self, tx: Transaction, outcome: CallOutcome) -> bool:
        """Write a final ``outcome`` over a call that has none yet (a deferred call, see
        :mod:`service_runtime.deferred`); False if it has one: another transaction completed
        it, and the caller writes nothing else for it either."""
        result = tx.execute(
            sa.update(calls)
            .where(calls.c.id == outcome.id, calls.c.status.not_in(("succeeded", "failed")))
            .values(
                status=outcome.status,
                result=outcome.result,
                error=outcome.error,
                attempts=outcome.attempts,
                finished_at=outcome.finished_at,
            )
        )
        return bool(result.rowcount)

    def reopen_failed(self, tx: Transaction, call_ids: Iterable[str]) -> None:
        """Queue these calls again if they failed (a dead-letter replay); others stay as they are."""
        ids = sorted(set(call_ids))
        if ids:
            tx.execute(self._reopen, {"ids": ids})

    def supersede(self, tx: Transaction, retries: Mapping[str, str]) -> int:
        """A job retry: each failed call (by id) is answered from now on by the call whose id
        it maps to, a new attempt the gateway makes when the call's packet comes again
        (:meth:`service_runtime.gateway.Gateway.record_calls`). A call that is not failed, or
        was superseded already, stays as it is. Returns how many were superseded."""
        done = 0
        for call_id, retry_id in sorted(retries.items()):
            result = tx.execute(
                sa.update(calls)
                .where(
                    calls.c.id == call_id,
                    calls.c.status == "failed",
                    calls.c.retry_id.is_(None),
                )
                .values(retry_id=retry_id)
            )
            done += result.rowcount
        return done

    @staticmethod
    def counts_by_status_on(conn: sa.Connection) -> list[tuple[str, str, int]]:
        """``(service, status, calls)`` over every account (a metrics scrape)."""
        query = sa.select(calls.c.service, calls.c.status, sa.func.count()).group_by(
            calls.c.service, calls.c.status
        )
        return [(r[0], r[1], int(r[2])) for r in conn.execute(query)]
