"""Persistence of jobs, their step executions and join buffers.

Two kinds of method: ``async`` ones read on their own, and plain ones take the caller's open
:class:`Transaction`, so an engine can apply a whole transition (job row, step rows, calls, timers,
inbox, ack) atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.engine import RunStatus, StepPhase, StepState
from fluxo_core.errors import NotFoundError, ValidationError
from fluxo_core.ir.step_keys import key_from_id
from fluxo_core.storage.bulk import as_dicts, bulk_insert, bulk_update, one_of
from fluxo_core.storage.calls import CallRow, CallStore
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import calls, inbox, job_joins, job_steps, jobs

SEARCH_WINDOW = 10_000
"""Jobs a search by packet content looks through per page (see :meth:`JobStore.page`)."""

__all__ = [
    "SEARCH_WINDOW",
    "ChildJob",
    "JobRow",
    "JobStore",
    "JobSummaryRow",
    "job_channel",
    "job_row",
    "job_summary_row",
    "jobs_ended",
]

STEP_KEY_HEADER = "fluxo-step-key"
_CALL_PHASES: dict[str, StepPhase] = {
    "queued": "running",
    "retrying": "running",
    "succeeded": "succeeded",
    "failed": "failed",
}

ACTIVE = ("queued", "running")
# The statuses a job stops in (blocked: until it is resumed).
ENDED = frozenset({"succeeded", "failed", "cancelled", "blocked"})


@dataclass(slots=True, frozen=True)
class ChildJob:
    """A job a call of another job started (a workflow used as a service)."""

    job_id: str
    account_id: str
    parent_step_id: str | None
    parent_call_id: str | None


@dataclass(slots=True, frozen=True)
class JobSummaryRow:
    """A job as stored, without its packets (what a page of jobs reads).

    A plain slotted dataclass, not a pydantic model: rows are read by the page, and made for
    every job created, where validation per row would cost more than the query.
    Times are seconds since the epoch; ``error`` is the JSON text of the job's error, if any.
    """

    id: str
    account_id: str
    user_id: str
    workflow: str
    version: int
    engine: str
    status: str
    idempotency_key: str | None
    error: str | None
    active: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    run_id: str | None


@dataclass(slots=True, frozen=True)
class JobRow(JobSummaryRow):
    """A job as stored, whole: with its input packet and its result (JSON bytes)."""

    input: bytes
    result: bytes | None


_SUMMARY_FIELDS = tuple(f.name for f in fields(JobSummaryRow))
_JOB_FIELDS = tuple(f.name for f in fields(JobRow))


def job_summary_row(values: Mapping[Any, Any]) -> JobSummaryRow:
    """The one mapping of a job's columns (a query's row, or the values a job was written
    with) to :class:`JobSummaryRow`; a column it does not hold reads as ``None``."""
    columns: dict[str, Any] = {name: values.get(name) for name in _SUMMARY_FIELDS}
    return JobSummaryRow(**columns)


def job_row(values: Mapping[Any, Any]) -> JobRow:
    """The one mapping of a job's columns to :class:`JobRow` (see :func:`job_summary_row`)."""
    columns: dict[str, Any] = {name: values.get(name) for name in _JOB_FIELDS}
    return JobRow(**columns)


class JobStore:
    """The ``jobs``, ``job_steps`` and ``job_joins`` tables.

    ``clock``: what the times it writes (started, finished, processed) read.
    """

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self._calls = CallStore(db)
        self.clock = clock
        # Built once: the engine runs these for every batch, and building a statement costs
        # several times more than SQLite takes to execute it.
        self._statuses = sa.select(jobs.c.id, jobs.c.status).where(
            one_of(jobs.c.id, "ids", sqlite=db.is_sqlite)
        )
        lock = sa.select(jobs).where(one_of(jobs.c.id, "ids", sqlite=db.is_sqlite))
        self._lock_many = (lock if db.is_sqlite else lock.with_for_update()).order_by(jobs.c.id)
        self._steps_of_calls = (
            sa.select(
                job_steps,
                calls.c.status.label("call_status"),
                calls.c.result.label("call_result"),
                calls.c.error.label("call_error"),
            )
            .join(calls, calls.c.id == job_steps.c.call_id)
            .where(one_of(job_steps.c.call_id, "call_ids", sqlite=db.is_sqlite))
        )
        self._steps_by_keys = sa.select(job_steps).where(
            job_steps.c.job_id == sa.bindparam("job_id"),
            one_of(job_steps.c.key, "keys", sqlite=db.is_sqlite),
        )

    # -- reads --------------------------------------------------------------------------------

    async def open_children(self, job_id: str) -> list[tuple[str, str]]:
        """``(job id, account)`` of the unfinished child jobs that calls of ``job_id`` started
        (workflow services; the children run in their publishers' accounts)."""
        query = sa.select(jobs.c.id, jobs.c.account_id).where(
            jobs.c.parent_job_id == job_id,
            jobs.c.status.in_(("queued", "running", "blocked")),
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [(row.id, row.account_id) for row in rows]

    async def children(self, job_id: str) -> list[ChildJob]:
        """The child jobs that calls of ``job_id`` started (workflow services), oldest first,
        each with its account: a child usually runs in its publisher's account, which the
        caller must not be shown."""
        query = (
            sa.select(jobs.c.id, jobs.c.account_id, jobs.c.parent_step_id, jobs.c.parent_call_id)
            .where(jobs.c.parent_job_id == job_id)
            .order_by(jobs.c.created_at, jobs.c.id)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [ChildJob(r.id, r.account_id, r.parent_step_id, r.parent_call_id) for r in rows]

    async def job(self, job_id: str, *, account_id: str | None = None) -> JobRow:
        """The job ``job_id`` (of ``account_id``, if given), whole.

        Raises:
            NotFoundError: no such job (in that account).
        """
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if account_id is not None:
            query = query.where(jobs.c.account_id == account_id)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFoundError(f"no job {job_id!r} in this account", job_id=job_id)
        return job_row(row._mapping)

    async def statuses(self, job_ids: Iterable[str]) -> dict[str, str]:
        """Status by job id, in one query (unknown ids are absent)."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        return await self.db.read(lambda conn: self.statuses_on(conn, ids))

    def statuses_on(self, conn: sa.Connection, job_ids: Iterable[str]) -> dict[str, str]:
        """:meth:`statuses` on a connection the caller holds (inside its transaction)."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        return {r.id: r.status for r in conn.execute(self._statuses, {"ids": ids}).all()}

    async def steps(self, job_id: str) -> Sequence[Any]:
        query = (
            sa.select(job_steps)
            .where(job_steps.c.job_id == job_id)
            .order_by(job_steps.c.started_at, job_steps.c.seq)
        )
        return await self.db.read(lambda conn: conn.execute(query).all())

    async def calls(self, job_id: str, *, account_id: str) -> list[CallRow]:
        """The gateway calls made for a job, oldest first: the steps of a job on an external
        engine, which Fluxo sees only through the calls that engine makes.

        Only calls of the job's own account count: a call row naming the job from another
        account is never one of its steps.
        """
        return await self._calls.of_job(job_id, account_id=account_id)

    async def latest_calls(self, job_id: str, *, account_id: str) -> list[CallRow]:
        """The latest call of each step key of a job (a retry replaces its earlier calls)."""
        latest: dict[str, CallRow] = {}
        for call in await self.calls(job_id, account_id=account_id):
            key = _step_key(job_id, call.id, orjson.loads(call.request), call.step_id)
            latest.pop(key, None)
            latest[key] = call
        return list(latest.values())

    async def run_status_from_calls(self, job_id: str) -> RunStatus:
        """The status of a job on an external engine: its row, and one step per gateway call.

        The engine's own view may be out of reach (a Node-RED flow keeps no history); the calls
        it made are in Fluxo. A step's key is the ``fluxo-step-key`` header the Node-RED flow
        sets, or the middle of an Argo packet id ``<job>:<key>:<retry>``; a key called again
        (a retry) shows its latest call, with ``attempt`` counting them.
        """
        row = await self.job(job_id)
        steps: dict[str, StepState] = {}
        for call in await self.calls(job_id, account_id=row.account_id):
            request = orjson.loads(call.request)
            key = _step_key(job_id, call.id, request, call.step_id)
            previous = steps.pop(key, None)
            results = orjson.loads(call.result) if call.result else None
            payloads = [p.get("payload") for p in results] if results is not None else None
            steps[key] = StepState(
                key=key,
                step_id=call.step_id or call.service,
                phase=_CALL_PHASES.get(call.status, "running"),
                attempt=(previous.attempt + 1) if previous else 1,
                call_id=call.id,
                input=request.get("payload"),
                # Every output payload, as the step engine shows a service step's outputs.
                output=payloads,
                error=orjson.loads(call.error) if call.error else None,
                started_at=_datetime(call.created_at),
                finished_at=_datetime(call.finished_at),
            )
        results = orjson.loads(row.result) if row.result else None
        return RunStatus(
            job_id=job_id,
            phase=row.status,
            steps=list(steps.values()),
            result=results[0] if results is not None and len(results) == 1 else results,
            error=orjson.loads(row.error) if row.error else None,
        )

    async def workflow_versions(self, job_ids: Iterable[str]) -> Sequence[Any]:
        """``(id, account_id, workflow, version)`` of each job."""
        query = sa.select(jobs.c.id, jobs.c.account_id, jobs.c.workflow, jobs.c.version).where(
            jobs.c.id.in_(sorted(set(job_ids)))
        )
        return await self.db.read(lambda conn: conn.execute(query).all())

    async def page(
        self,
        account_id: str,
        *,
        workflow: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
        engine: str | None = None,
        since: float | None = None,
        until: float | None = None,
        contains: str | None = None,
    ) -> tuple[list[JobSummaryRow], str | None]:
        """Newest first, keyset-paginated; returns ``(rows, next_cursor)``.

        The rows are summaries: every column but the packets (``input``, ``result``), which can
        be megabytes each; :meth:`job` reads one job whole. ``since``/``until`` bound the
        creation time (``[since, until)``); ``contains`` keeps the jobs whose input or result
        holds that text (an order id, an email): a scan of the account's jobs in the other
        bounds, newest first, that stops once the page is full.
        """
        summary = [c for c in jobs.c if c.name not in ("input", "result")]
        query = sa.select(*summary).where(jobs.c.account_id == account_id)
        if workflow:
            query = query.where(jobs.c.workflow == workflow)
        if status:
            query = query.where(jobs.c.status == status)
        if engine:
            query = query.where(jobs.c.engine == engine)
        if since is not None:
            query = query.where(jobs.c.created_at >= since)
        if until is not None:
            query = query.where(jobs.c.created_at < until)
        if cursor:
            try:
                created, job_id = cursor.split("_", 1)
                created_at = float(created)
            except ValueError:
                raise ValidationError(
                    "cursor is not one this API returned; pass next_cursor unchanged",
                    problems=[("cursor", "malformed")],
                ) from None
            query = query.where(
                sa.or_(
                    jobs.c.created_at < created_at,
                    sa.and_(jobs.c.created_at == created_at, jobs.c.id < job_id),
                )
            )
        newest_first = (jobs.c.created_at.desc(), jobs.c.id.desc())
        edge = None
        if contains:
            # A search reads packets: it looks through SEARCH_WINDOW jobs per page at most (the
            # page's cursor then continues after them), so a value found nowhere costs a
            # bounded scan, not the account's whole history.
            filtered = query.whereclause
            assert filtered is not None  # the account, at least
            edge_query = (
                sa.select(jobs.c.created_at, jobs.c.id)
                .where(filtered)
                .order_by(*newest_first)
                .offset(SEARCH_WINDOW - 1)
                .limit(1)
            )
            edge = await self.db.read(lambda conn: conn.execute(edge_query).first())
            if edge is not None:
                query = query.where(
                    sa.or_(
                        jobs.c.created_at > edge.created_at,
                        sa.and_(jobs.c.created_at == edge.created_at, jobs.c.id >= edge.id),
                    )
                )
            needle = contains.encode()
            query = query.where(
                sa.or_(_HoldsBytes(jobs.c.input, needle), _HoldsBytes(jobs.c.result, needle))
            )
        query = query.order_by(*newest_first).limit(limit + 1)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = f"{last.created_at!r}_{last.id}"
        elif edge is not None:
            next_cursor = f"{edge.created_at!r}_{edge.id}"
        return [job_summary_row(r._mapping) for r in rows[:limit]], next_cursor

    # -- inside a transaction -----------------------------------------------------------------

    def insert_many(self, tx: Transaction, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new job rows (every column of each), in one statement per batch."""
        bulk_insert(tx, jobs, rows)
        # A job may end in the transaction that creates it (a workflow of transforms only).
        self.ended(tx, [r["id"] for r in rows if r.get("status") in ENDED])

    def ended(self, tx: Transaction, job_ids: list[str]) -> None:
        jobs_ended(self.db, tx, job_ids)

    def jobs_by_keys(
        self, tx: Transaction, account_id: str, workflow: str, keys: Iterable[str]
    ) -> dict[str, str]:
        """The jobs of ``workflow`` created with these idempotency keys: key -> job id."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        query = sa.select(jobs.c.idempotency_key, jobs.c.id).where(
            jobs.c.account_id == account_id,
            jobs.c.workflow == workflow,
            jobs.c.idempotency_key.in_(wanted),
        )
        return {row.idempotency_key: row.id for row in tx.execute(query)}

    def lock(self, tx: Transaction, job_id: str) -> dict[str, Any] | None:
        """The job row, locked for this transaction (PostgreSQL ``FOR UPDATE``)."""
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if not self.db.is_sqlite:
            query = query.with_for_update()
        row = tx.execute(query).first()
        return dict(row._mapping) if row is not None else None

    def lock_many(self, tx: Transaction, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Job rows by id, locked in id order (so two engines never deadlock)."""
        rows = as_dicts(tx.execute(self._lock_many, {"ids": sorted(set(job_ids))}))
        return {r["id"]: r for r in rows}

    def steps_of_calls(self, tx: Transaction, call_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Step rows of these calls, each with the call's ``call_status/result/error``."""
        ids = sorted(set(call_ids))
        if not ids:
            return []
        return as_dicts(tx.execute(self._steps_of_calls, {"call_ids": ids}))

    def steps_by_keys(
        self, tx: Transaction, job_id: str, keys: Iterable[str]
    ) -> list[dict[str, Any]]:
        wanted = sorted(set(keys))
        if not wanted:
            return []
        params = {"job_id": job_id, "keys": wanted}
        return as_dicts(tx.execute(self._steps_by_keys, params))

    def save_many(self, tx: Transaction, values: list[dict[str, Any]]) -> None:
        """Write job rows: each dict holds ``id`` and the columns to set."""
        for group in _by_columns(values):
            bulk_update(tx, jobs, ["id"], group)
        self.ended(tx, [v["id"] for v in values if v.get("status") in ENDED])

    def save_steps(self, tx: Transaction, rows: list[dict[str, Any]]) -> None:
        """Write step rows: each dict holds ``job_id``, ``key`` and the columns to set."""
        for group in _by_columns(rows):
            bulk_update(tx, job_steps, ["job_id", "key"], group)

    def save(self, tx: Transaction, job_id: str, values: dict[str, Any]) -> None:
        tx.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**values))
        if values.get("status") in ENDED:
            self.ended(tx, [job_id])

    def cancel(self, tx: Transaction, job_id: str) -> bool:
        result = tx.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_((*ACTIVE, "blocked")))
            .values(status="cancelled", finished_at=self.clock.time())
        )
        if result.rowcount:
            self.ended(tx, [job_id])
        return bool(result.rowcount)

    def mark_starting(self, tx: Transaction, job_id: str) -> bool:
        """A queued job is being started on its engine: ``running`` from now on, so that a run
        which ends before its start call returns can report its end. False if it is no longer
        queued (cancelled, or a start was recorded already)."""
        result = tx.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == "queued")
            .values(status="running", started_at=self.clock.time())
        )
        return bool(result.rowcount)

    def unmark_starting(self, tx: Transaction, job_id: str) -> None:
        """A start that failed and will be retried: the job is ``queued`` again (unless its
        run ended, or was recorded, meanwhile)."""
        tx.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.run_id.is_(None))
            .values(status="queued", started_at=None)
        )

    def record_run(self, tx: Transaction, job_id: str, run_id: str) -> None:
        """The engine's id of the job's run (whatever the job's status is by now)."""
        tx.execute(sa.update(jobs).where(jobs.c.id == job_id).values(run_id=run_id))

    def finish(
        self,
        tx: Transaction,
        job_id: str,
        status: str,
        *,
        result: bytes | None = None,
        error: str | None = None,
    ) -> bool:
        """End a job that is still queued or running; False if it had already ended (so a
        repeated report changes nothing)."""
        result_row = tx.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
            .values(status=status, result=result, error=error, finished_at=self.clock.time())
        )
        if result_row.rowcount:
            self.ended(tx, [job_id])
        return bool(result_row.rowcount)

    def step_by_call(self, tx: Transaction, job_id: str, call_id: str) -> Any:
        return tx.execute(
            sa.select(job_steps).where(job_steps.c.job_id == job_id, job_steps.c.call_id == call_id)
        ).first()

    def step_by_key(self, tx: Transaction, job_id: str, key: str) -> Any:
        return tx.execute(
            sa.select(job_steps).where(job_steps.c.job_id == job_id, job_steps.c.key == key)
        ).first()

    def call(self, tx: Transaction, call_id: str) -> Any:
        return tx.execute(sa.select(calls).where(calls.c.id == call_id)).first()

    def add_steps(self, tx: Transaction, rows: list[dict[str, Any]]) -> None:
        bulk_insert(tx, job_steps, rows, skip_conflicts=True)

    def update_step(self, tx: Transaction, job_id: str, key: str, values: dict[str, Any]) -> None:
        tx.execute(
            sa.update(job_steps)
            .where(job_steps.c.job_id == job_id, job_steps.c.key == key)
            .values(**values)
        )

    def join_arrive(
        self, tx: Transaction, job_id: str, join_key: str, index: int, payload: bytes
    ) -> int:
        """Buffer one branch at a join (a branch delivered twice counts once); returns arrivals."""
        row = {"job_id": job_id, "join_key": join_key, "idx": index, "payload": payload}
        bulk_insert(tx, job_joins, [row], skip_conflicts=True)
        match = (job_joins.c.job_id == job_id) & (job_joins.c.join_key == join_key)
        return int(
            tx.conn.scalar(sa.select(sa.func.count()).select_from(job_joins).where(match)) or 0
        )

    def join_take(self, tx: Transaction, job_id: str, join_key: str) -> list[bytes]:
        """Every buffered branch in index order, removed from the buffer."""
        match = (job_joins.c.job_id == job_id) & (job_joins.c.join_key == join_key)
        rows = tx.execute(
            sa.select(job_joins.c.payload).where(match).order_by(job_joins.c.idx)
        ).all()
        tx.execute(sa.delete(job_joins).where(match))
        return [r.payload for r in rows]

    def claim_inbox(self, tx: Transaction, consumer: str, keys: Iterable[str]) -> set[str]:
        """Record ``keys`` as processed by ``consumer``; returns the ones that were new."""
        now = self.clock.time()
        rows = [
            {"consumer": consumer, "message_id": k, "processed_at": now}
            for k in dict.fromkeys(keys)
        ]
        return {
            r.message_id
            for r in bulk_insert(tx, inbox, rows, skip_conflicts=True, returning=["message_id"])
        }

    # -- monitoring ---------------------------------------------------------------------------

    @staticmethod
    def counts_by_status_on(conn: sa.Connection) -> list[tuple[str, str, str, int]]:
        """``(workflow, engine, status, jobs)`` over every account (a metrics scrape)."""
        query = sa.select(jobs.c.workflow, jobs.c.engine, jobs.c.status, sa.func.count()).group_by(
            jobs.c.workflow, jobs.c.engine, jobs.c.status
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in conn.execute(query)]


def _by_columns(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by the columns they hold (one UPDATE statement per group)."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    return list(groups.values())


class _HoldsBytes(sa.sql.functions.FunctionElement[bool]):
    """Whether a binary column holds a byte string (no LIKE: its wildcards would need escaping,
    and PostgreSQL's bytea takes no ESCAPE); compiled per dialect."""

    type = sa.Boolean()
    name = "holds_bytes"
    inherit_cache = True


@compiles(_HoldsBytes, "sqlite")
def _holds_bytes_sqlite(element: _HoldsBytes, compiler: SQLCompiler, **kw: Any) -> str:
    column, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"(instr({column}, {needle}) > 0)"


@compiles(_HoldsBytes, "postgresql")
def _holds_bytes_postgresql(element: _HoldsBytes, compiler: SQLCompiler, **kw: Any) -> str:
    column, needle = (compiler.process(c, **kw) for c in element.clauses)
    return f"(position({needle} in {column}) > 0)"


def jobs_ended(db: Database, tx: Transaction, job_ids: list[str]) -> None:
    """Jobs that ended in ``tx``: the database's job end hooks run with them, in it."""
    if job_ids and db.job_end_hooks:
        for hook in db.job_end_hooks:
            hook(tx, job_ids)


def job_channel(job_id: str) -> str:
    """The notification channel of one job: woken when it ends (``JobService.wait``)."""
    return f"job:{job_id}"


def _step_key(job_id: str, call_id: str, request: dict[str, Any], step_id: str | None) -> str:
    headers = request.get("headers") or {}
    if isinstance(headers, dict) and isinstance(headers.get(STEP_KEY_HEADER), str):
        return str(headers[STEP_KEY_HEADER])
    prefix = f"{job_id}:"
    if call_id.startswith(prefix) and call_id.count(":") >= 2:
        return key_from_id(call_id[len(prefix) :].rsplit(":", 1)[0])
    return step_id or call_id


def _datetime(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None
