"""The built-in step engine: durable jobs in the database, service calls through the runtime.

A job created by the control plane starts in the transaction that inserts it (:meth:`starter`):
its first calls commit with its row. From then on the engine is a consumer of its own queue,
``engine.step``, which receives the results of the service calls it made (their ``reply_to``),
its own timers (delays, retries) and ``start`` messages (job rows written without
being started, as an earlier Fluxo wrote them). Each batch of messages is applied in ONE
transaction together with its inbox rows, the job and step rows, the next calls and timers, and
the acknowledgement: a crash anywhere re-delivers the batch and the inbox makes the second
application a no-op. So a job survives the crash of any process and no effect doubles.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from engines.step._context import StepContext
from engines.step._loopback import start_loopback_jobs
from engines.step._nodered import RUNNABLE_NATIVE_ENGINES
from engines.step._nodered_http import is_http_request
from engines.step._plan import RUNNABLE_KINDS, Plan
from engines.step._run import ENGINE_QUEUE, JobRun, job_channel
from fluxo_core.engine import (
    Deployment,
    EngineCapabilities,
    JobStarter,
    JobTransaction,
    RunHandle,
    RunStatus,
    StartRequest,
    StepState,
)
from fluxo_core.errors import (
    ConfigError,
    FluxoError,
    UnknownServiceError,
    UnsupportedFeatureError,
)
from fluxo_core.ir import PacketTemplate, Workflow
from fluxo_core.logs import bind_ids, reset_ids
from fluxo_core.storage import Database, Transaction
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.job_control import JobControlStore
from fluxo_core.storage.jobs import JobStore
from fluxo_core.storage.nodered_context import NodeRedContextStore
from fluxo_core.storage.workflows import WorkflowStore
from nodered_semantics.http_request import HTTP_SERVICE
from nodered_semantics.support import NODERED_NODE_SERVICE
from service_runtime import ServiceRuntime
from service_runtime.gateway import PreparedCall
from service_runtime.transports import Delivery, TakesInTransaction
from service_runtime.worker import CALL_ID_HEADER

__all__ = ["ENGINE_QUEUE", "StepEngine"]

_JOB_PLAN_CACHE = 100_000
# Messages the control plane sends to continue a stopped job (fluxo.control.job_control).
_REVIVALS = ("resume", "retry")

log = logging.getLogger(__name__)


class StepEngine:
    """Runs workflows as durable jobs in the database (the default engine).

    Args:
        runtime: the service runtime whose gateway records the calls (same database).
        workflows: where workflow versions are stored.
        batch_size: engine messages applied per transaction. A batch costs a fixed number of
            statements whatever its size, so bigger batches amortise them (measured on SQLite:
            100 -> 500 messages, about +20% jobs/s); its transaction stays in the milliseconds.
        lease_s: how long a claimed batch stays hidden; after a crash it is re-delivered then.
    """

    name = "step"
    # ``native`` only for the Node-RED nodes the nodered-node service runs: step_runnable() and
    # deploy() say which, per workflow.
    capabilities = EngineCapabilities(
        locality="in_process", step_kinds=RUNNABLE_KINDS, native_engines=RUNNABLE_NATIVE_ENGINES
    )

    def __init__(
        self,
        runtime: ServiceRuntime,
        workflows: WorkflowStore,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        lease_s: float = 15.0,
    ) -> None:
        self.db: Database = runtime.db
        self.lease_s = lease_s
        self.runtime = runtime
        self.workflows = workflows
        self.store = JobStore(runtime.db)
        self.contexts = NodeRedContextStore(runtime.db)
        self._control = JobControlStore(runtime.db)
        self._pauses = BlockStore(runtime.db)
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._plans: dict[PlanKey, Plan] = {}
        self._job_plans: dict[str, PlanKey] = {}
        self._templates: dict[str, PacketTemplate] = {}  # job id -> its input, for its calls
        self._stop = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None

    # -- the Engine protocol --------------------------------------------------------------------

    async def open(self) -> None:
        """Start consuming the engine's queue in the background (until :meth:`aclose`)."""
        if self._consumer is None:
            self._stop = asyncio.Event()
            self._consumer = asyncio.create_task(self.run(self._stop), name=f"engine-{self.name}")

    async def aclose(self) -> None:
        """Stop the consumer after the batch it is applying (a batch is one transaction)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            self.request_stop()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    async def deploy(self, workflow: Workflow) -> Deployment:
        """Check that every step can run here and every service exists; cache the plan."""
        account = workflow.metadata.account or ""
        version = int(workflow.metadata.version or 0)
        plan = await self._build_plan(workflow, version)
        self._plans[(account, workflow.metadata.name, version)] = plan
        return Deployment(workflow=plan.ref, engine=self.name)

    async def undeploy(self, workflow: str, *, account: str | None = None) -> None:
        name, _, version = workflow.partition("@")
        for key in [
            k
            for k in self._plans
            if k[1] == name and str(k[2]) == version and account in (None, k[0])
        ]:
            del self._plans[key]

    async def start(self, request: StartRequest) -> RunHandle:
        """Start a job whose row exists (idempotent: a started job is left alone)."""
        row = await self.store.job(request.job_id)
        plan = await self._plan_for(row.account_id, row.workflow, row.version)
        await self.db.transact(
            lambda tx: self._apply(
                tx, {request.job_id: plan}, [("start", request.job_id, None, None)]
            )
        )
        return RunHandle(engine=self.name, job_id=request.job_id, run_id=request.job_id)

    async def starter(self, account: str, workflow: str, version: int) -> JobStarter:
        """Start jobs of this workflow version inside the transaction that inserts them."""
        plan = await self._plan_for(account, workflow, version)
        key = (account, workflow, version)

        def start(tx: JobTransaction, rows: Sequence[dict[str, Any]]) -> None:
            if not isinstance(tx, Transaction):
                # The jobs' steps and calls are rows of this engine's database: they can only
                # be written by one of its transactions.
                raise ConfigError(
                    "the step engine starts jobs only in a transaction of Fluxo's database, "
                    f"not in a {type(tx).__name__}"
                )
            jobs = {row["id"]: row for row in rows}  # the caller's rows: the start writes them
            for job_id in jobs:  # their later events need no lookup of the version
                self._job_plans[job_id] = key
            self._apply(
                tx,
                dict.fromkeys(jobs, plan),
                [("start", j, None, None) for j in jobs],
                locked=jobs,
                unsaved=True,
            )

        return start

    async def status(self, handle: RunHandle) -> RunStatus:
        row = await self.store.job(handle.job_id)
        steps = await self.store.steps(handle.job_id)
        return RunStatus(
            job_id=handle.job_id,
            phase=row.status,
            steps=[_step_state(s) for s in steps],
            result=job_result(row),
            error=orjson.loads(row.error) if row.error else None,
        )

    async def cancel(self, handle: RunHandle) -> None:
        """Mark the job cancelled; results still in flight are ignored, queued calls refused."""

        def run(tx: Transaction) -> None:
            if self.store.cancel(tx, handle.job_id):
                tx.notify(job_channel(handle.job_id))

        await self.db.transact(run)

    # -- the consumer -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Apply engine messages until ``stop``; sleeps on queue wake-ups when idle."""
        stop = stop or self._stop
        channel = f"q:{ENGINE_QUEUE}"
        with await self.db.subscribe([channel]) as sub:
            while not stop.is_set():
                sub.clear()
                try:
                    done = await self.run_once()
                except FluxoError as exc:
                    if not exc.retryable:
                        log.exception("step engine batch failed")
                    await asyncio.sleep(0.5)
                    continue
                if done < self.batch_size and not stop.is_set():
                    await sub.wait(self.poll_interval_s)

    def request_stop(self) -> None:
        self._stop.set()
        self.db.notify_local(f"q:{ENGINE_QUEUE}")

    async def run_once(self) -> int:
        """Apply one batch of engine messages; returns how many messages it settled."""
        transport = self.runtime.transport
        if isinstance(transport, TakesInTransaction):
            try:
                return await self._take_and_apply(transport)
            except FluxoError as exc:
                if exc.retryable:
                    raise
                # A message that fails the batch: the leased path below finds it and applies
                # the batch's messages one by one, so it fails only its own job.
                log.warning("engine batch failed (%s); applying it with a lease", exc.message)
        return await self._claim_and_apply()

    async def _take_and_apply(self, transport: TakesInTransaction) -> int:
        """Take the batch inside the transaction that applies it (the queue is in this
        database): no claim transaction, no lease written on each message."""
        tried: set[PlanKey] = set()  # plans looked up during this call, found or not

        def apply(tx: Transaction) -> tuple[int, set[PlanKey]]:
            deliveries = transport.take(tx, [ENGINE_QUEUE], limit=self.batch_size)
            events, unreadable = _events(deliveries)
            self._bury(tx, unreadable)
            jobs = self.store.lock_many(tx, {e.job_id for e in events})
            plans: dict[str, Plan] = {}
            missing: set[PlanKey] = set()
            for job_id, job in jobs.items():
                key = _plan_key(job)
                plan = self._plans.get(key)
                if plan is not None:
                    plans[job_id] = plan
                elif key not in tried:
                    missing.add(key)
            # Messages of jobs whose plan is still to be read stay in the queue for the next
            # round; those of jobs without a plan (gone, or not runnable) are settled unapplied.
            ready = [
                e
                for e in events
                if e.job_id not in jobs or _plan_key(jobs[e.job_id]) not in missing
            ]
            self._apply_batch(tx, plans, ready, jobs=jobs)
            return len(ready) + len(unreadable), missing

        settled, missing = await self.db.transact(apply, keyed=True)
        while missing:
            for key in missing:
                tried.add(key)
                try:
                    await self._plan_for(*key)
                except FluxoError as exc:
                    if exc.retryable:
                        raise
                    log.error("workflow %s@%s cannot run here: %s", key[1], key[2], exc.message)
            more, missing = await self.db.transact(apply, keyed=True)
            settled += more
        return settled

    def _bury(self, tx: Transaction, unreadable: list[Delivery]) -> None:
        if unreadable:
            log.error("dead-lettering %d unreadable engine message(s)", len(unreadable))
        for d in unreadable:
            self.runtime.transport.dead_letter(tx, d, error="not an engine message")

    async def _claim_and_apply(self) -> int:
        deliveries = await self.runtime.transport.claim(
            [ENGINE_QUEUE], limit=self.batch_size, lease_s=self.lease_s
        )
        if not deliveries:
            return 0
        events, unreadable = _events(deliveries)
        if unreadable:
            await self.db.transact(lambda tx: self._bury(tx, unreadable))
        plans = await self._plans_for({e.job_id for e in events})
        try:
            await self.db.transact(lambda tx: self._apply_batch(tx, plans, events), keyed=True)
        except FluxoError as exc:
            if exc.retryable:
                raise  # the database is away: the whole batch comes back after its lease
            await self._apply_one_by_one(plans, events, exc)
        return len(deliveries)

    async def _apply_one_by_one(
        self, plans: dict[str, Plan], events: list[Event], cause: FluxoError
    ) -> None:
        """A batch failed for good: apply its messages alone, so one poisoned message fails its
        own job (recorded, acknowledged) instead of stalling every job batched with it."""
        log.warning("engine batch failed (%s); applying its messages one by one", cause.message)
        for event in events:
            try:
                await self.db.transact(
                    functools.partial(self._apply_batch, plans=plans, events=[event])
                )
            except FluxoError as exc:
                if exc.retryable:
                    raise
                log.error("job %s failed on an engine message: %s", event.job_id, exc.message)
                await self.db.transact(functools.partial(self._fail_job, event=event, error=exc))

    def _fail_job(self, tx: Transaction, event: Event, error: FluxoError) -> None:
        job = self.store.lock(tx, event.job_id)
        if job is not None and job["status"] in ("queued", "running"):
            detail = orjson.dumps({"step": None, **error.to_dict()}).decode()
            self.store.save(
                tx, event.job_id, {"status": "failed", "error": detail, "finished_at": _now()}
            )
            tx.notify(job_channel(event.job_id))
        self.runtime.transport.ack(tx, [event.delivery])

    def _apply_batch(
        self,
        tx: Transaction,
        plans: dict[str, Plan],
        events: list[Event],
        *,
        jobs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        fresh = self.store.claim_inbox(tx, ENGINE_QUEUE, (e.inbox_key for e in events))
        todo = []
        for e in events:
            if e.inbox_key in fresh and e.job_id in plans:
                fresh.discard(e.inbox_key)  # N output messages of one call: applied once
                todo.append((e.kind, e.job_id, e.arg, None))
        self._apply(tx, plans, todo, locked=jobs)
        self.runtime.transport.ack(tx, [e.delivery for e in events])

    def _apply(
        self,
        tx: Transaction,
        plans: dict[str, Plan],
        events: list[tuple[str, str, Any, Any]],
        *,
        locked: dict[str, dict[str, Any]] | None = None,
        unsaved: bool = False,
    ) -> list[JobRun]:
        """Apply events with a fixed number of statements per batch, whatever its size: load
        every job and step the events touch, run the transitions in memory, write it all back.

        ``locked``: the jobs' rows as this very transaction locked them (nothing to read
        again). ``unsaved``: those rows are not in the table yet (the caller inserts them
        next): the jobs' new state goes into the row dicts instead of an UPDATE.
        """
        if not events:
            return []
        jobs = (
            locked
            if locked is not None
            else self.store.lock_many(tx, {job_id for _, job_id, _, _ in events})
        )
        calls = {}
        steps: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for row in self.store.steps_of_calls(tx, (a for k, _, a, _ in events if k == "result")):
            calls[row["call_id"]] = {
                "id": row["call_id"],
                "status": row.pop("call_status"),
                "result": row.pop("call_result"),
                "error": row.pop("call_error"),
                "key": row["key"],
            }
            steps[row["job_id"]][row["key"]] = row
        timer_keys: dict[str, list[str]] = defaultdict(list)
        for kind, job_id, arg, _ in events:
            if kind == "timer":
                timer_keys[job_id].append(arg["key"])
        for job_id, keys in timer_keys.items():
            for row in self.store.steps_by_keys(tx, job_id, keys):
                steps[job_id].setdefault(row["key"], row)
        # Jobs the control plane set running again (resumed, retried): their open steps.
        revived = {j for k, j, _, _ in events if k in _REVIVALS and j in jobs}
        open_steps = {j: self._control.open_steps(tx, j) for j in sorted(revived)}
        runs: dict[str, JobRun] = {}
        for kind, job_id, arg, _ in events:
            job = jobs.get(job_id)
            if job is None:
                continue
            run = runs.get(job_id)
            if run is None:
                run = runs[job_id] = JobRun(
                    tx,
                    self.store,
                    plans[job_id],
                    job,
                    self.runtime.gateway.check_call,
                    steps=steps[job_id],
                    template=self._templates.get(job_id),
                    context=StepContext(
                        self.contexts, tx, job["account_id"], plans[job_id].workflow.metadata.name
                    ),
                )
                self._remember_input(job_id, run)
            # What a transition logs carries its job's ids.
            source = run.template.source if run.template is not None else None
            ids = bind_ids(
                job_id=job_id,
                trace_id=source.trace_id if source is not None else None,
                account=job.get("account_id"),
            )
            try:
                if kind == "start":
                    run.start()
                elif kind == "result":
                    call = calls.get(arg)
                    if call is not None:
                        run.call_finished(call["key"], call)
                elif kind == "timer":
                    run.timer_fired(arg)
                elif kind in _REVIVALS:
                    run.revive(open_steps[job_id], failed_key=arg.get("failed_key"))
            finally:
                reset_ids(ids)
        self._write(tx, list(runs.values()), save_jobs=not unsaved)
        return list(runs.values())

    def _remember_input(self, job_id: str, run: JobRun) -> None:
        # A job's input never changes; parsing it again for every batch costs more than the
        # batch's transitions.
        if len(self._templates) > _JOB_PLAN_CACHE:
            self._templates.clear()
        if run.template is not None:
            self._templates[job_id] = run.template

    def _write(self, tx: Transaction, runs: list[JobRun], *, save_jobs: bool = True) -> None:
        if save_jobs:
            self.store.save_many(tx, [v for run in runs if (v := run.job_values()) is not None])
        else:
            for run in runs:  # rows the caller inserts next: their new state goes into them
                run.job.update(run.job_values() or {})
        self.store.add_steps(tx, [row for run in runs for row in run.new_rows()])
        self.store.save_steps(tx, [row for run in runs for row in run.changed_rows()])
        by_service: dict[str, list[PreparedCall]] = defaultdict(list)
        infos = {}
        for run in runs:
            for info, call in run.calls:
                by_service[info.ref].append(call)
                infos[info.ref] = info
        for ref, prepared in by_service.items():
            self.runtime.gateway.record_calls(tx, infos[ref], prepared, reply_to=ENGINE_QUEUE)
        self.runtime.transport.enqueue(tx, [timer for run in runs for timer in run.timers])
        spawned = [
            (run.job, run.template.source, run.plan.ref, spawn)
            for run in runs
            if run.template is not None
            for spawn in run.spawns
        ]
        if spawned:  # jobs network out steps start at in nodes of their workflow, once
            starts = start_loopback_jobs(tx, self.store, ENGINE_QUEUE, spawned, self._pauses)
            self.runtime.transport.enqueue(tx, starts)
        tx.notify(*(job_channel(run.job["id"]) for run in runs if run.finished))
        tracing = self.runtime.tracing
        if tracing is not None and tracing.exports_jobs:
            tracing.jobs_ended(tx, [span for run in runs if (span := run.ended_span())])

    # -- plans --------------------------------------------------------------------------------

    async def _build_plan(self, workflow: Workflow, version: int) -> Plan:
        # The plan checks first what the engine can run at all (pure); then the services.
        plan = Plan(workflow=workflow, version=version, services={})
        for index, step in enumerate(workflow.spec.steps):
            if step.kind == "native":
                # An http request node is a call of the http service; any other native node
                # runs in the nodered-node service.
                service = HTTP_SERVICE if is_http_request(step) else NODERED_NODE_SERVICE
                try:
                    plan.services[step.id] = await self.runtime.catalog.resolve(service)
                except UnknownServiceError as exc:
                    raise UnsupportedFeatureError(
                        f"step {step.id!r} (spec.steps[{index}]) is a native Node-RED node, "
                        f"which the step engine runs with the {service!r} built-in "
                        "service; this Fluxo does not offer it, so the step cannot run here: "
                        "add that service to its services",
                        step=step.id,
                    ) from exc
            if step.kind != "service":
                continue
            try:
                plan.services[step.id] = await self.runtime.catalog.resolve(step.service)
            except UnknownServiceError as exc:
                raise UnknownServiceError(
                    f"spec.steps[{index}].service: {exc.message}", step=step.id
                ) from exc
        return plan

    async def _plan_for(self, account: str, name: str, version: int) -> Plan:
        key = (account, name, version)
        plan = self._plans.get(key)
        if plan is None:
            applied = await self.workflows.get(account, name, version)
            plan = await self._build_plan(applied.workflow, version)
            self._plans[key] = plan
        return plan

    async def _plans_for(self, job_ids: set[str]) -> dict[str, Plan]:
        # A job's workflow version never changes: remember it, so a batch reads only new jobs.
        unknown = [j for j in job_ids if j not in self._job_plans]
        if unknown:
            if len(self._job_plans) > _JOB_PLAN_CACHE:
                self._job_plans.clear()
            for row in await self.store.workflow_versions(unknown):
                self._job_plans[row.id] = (row.account_id, row.workflow, row.version)
        plans = {}
        for job_id in job_ids:
            key = self._job_plans.get(job_id)
            if key is None:
                continue
            try:
                plans[job_id] = await self._plan_for(*key)
            except FluxoError as exc:
                log.error("job %s cannot run: %s", job_id, exc.message)
        return plans


PlanKey = tuple[str, str, int]  # account, workflow, version


def _plan_key(job: dict[str, Any]) -> PlanKey:
    return (job["account_id"], job["workflow"], job["version"])


def _events(deliveries: list[Delivery]) -> tuple[list[Event], list[Delivery]]:
    """The engine messages as events, and those that are not engine messages."""
    events: list[Event] = []
    unreadable: list[Delivery] = []
    for d in deliveries:
        try:
            body = orjson.loads(d.body)
            if CALL_ID_HEADER in d.headers:
                call_id = d.headers[CALL_ID_HEADER]
                events.append(Event("result", body["job_id"], call_id, f"call:{call_id}", d))
            else:
                events.append(Event(body["kind"], body["job_id"], body, d.message_id, d))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            unreadable.append(d)
    return events, unreadable


@dataclass(frozen=True)
class Event:
    """One engine message: what happened to which job. ``inbox_key`` makes it apply once (all
    N output messages of one call share the call's key: the call's outcome applies once)."""

    kind: str  # start | result | timer | resume | retry
    job_id: str
    arg: Any  # the call id (result) or the message body (start, timer)
    inbox_key: str
    delivery: Delivery


def job_result(row: Any) -> Any:
    """The job's result: the payload of its one output, or the list of several."""
    if not row.result:
        return None
    results = orjson.loads(row.result)
    return results[0] if len(results) == 1 else results


def _now() -> float:
    import time

    return time.time()


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def _step_state(row: Any) -> StepState:
    return StepState(
        key=row.key,
        step_id=row.step_id,
        phase=row.status if row.status != "retrying" else "running",
        attempt=row.attempt,
        call_id=row.call_id,
        input=orjson.loads(row.input) if row.input else None,
        output=orjson.loads(row.output) if row.output else None,
        error=orjson.loads(row.error) if row.error else None,
        started_at=_ts(row.started_at),
        finished_at=_ts(row.finished_at),
    )


if TYPE_CHECKING:  # mypy proves that the engine keeps the whole contract
    from fluxo_core.engine import Engine

    _CONTRACT: type[Engine] = StepEngine
