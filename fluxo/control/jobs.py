"""Jobs: created by triggers and the API, run by the workflow's engine, observed here.

Creating a job is one transaction: admission first, then the job row (unique per account, workflow
and idempotency key, so a repeated request returns the first job) and the engine's ``start``
message. The engine is reached only through the registry, by name.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict

from fluxo.control.remote import EngineJob, RemoteJobs, is_remote
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.engine import FINAL_PHASES, Engine, EngineRegistry, RunHandle, StepState
from fluxo_core.errors import (
    ConflictError,
    FluxoError,
    NotFoundError,
    PayloadSchemaError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UnsupportedFeatureError,
    ValidationError,
)
from fluxo_core.ir import (
    NativeStep,
    Packet,
    Workflow,
    WorkflowSource,
    new_packet_id,
    validate_workflow,
)
from fluxo_core.ir._problems import problems_from_pydantic
from fluxo_core.redaction import mask_credentials
from fluxo_core.storage import Database, Principal, Transaction
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.jobs import JobRow, JobStore, JobSummaryRow, job_row
from fluxo_core.storage.workflows import AppliedWorkflow, WorkflowStore
from service_runtime import AdmitRequest, CallRequest, ServiceRuntime
from service_runtime.sdk import _schema_problems
from service_runtime.transports import OutgoingMessage

__all__ = [
    "JOB_STATUSES",
    "MAX_VERSION",
    "ChildLink",
    "EngineRegistry",
    "JobLimits",
    "JobPage",
    "JobRecord",
    "JobService",
    "JobSummary",
    "ParentLink",
    "job_summary",
    "parse_version",
    "split_workflow_ref",
]

# Where a job stops: ``blocked`` too (a block stopped it; it may be resumed once lifted).
FINAL = ("succeeded", "failed", "cancelled", "blocked")
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "blocked"]
JOB_STATUSES: Final = ("queued", "running", "succeeded", "failed", "cancelled", "blocked")
MAX_VERSION: Final = 2**31 - 1  # versions are 32-bit integer columns
JobLimits = Callable[[Transaction, str, str, int], None]
"""``(tx, account_id, workflow name, new jobs)``: raises to refuse them (concurrency limits)."""
_VERSION = re.compile(r"[0-9]{1,10}")


def parse_version(raw: str, *, where: str) -> int:
    """A workflow version number from text (``where`` names the field in the error)."""
    if not _VERSION.fullmatch(raw) or not 1 <= int(raw) <= MAX_VERSION:
        raise ValidationError(
            f"{where}: {raw!r} is not a workflow version; versions are whole numbers from 1 to "
            f"{MAX_VERSION} (see them with GET /v1/workflows/NAME)",
            problems=[(where, "expected a version number such as 3")],
        )
    return int(raw)


def split_workflow_ref(ref: str, *, where: str = "workflow") -> tuple[str, int | None]:
    """``name`` or ``name@version`` as ``(name, version or None)``."""
    name, at, version = ref.partition("@")
    return name, parse_version(version, where=f"{where} version") if at else None


@dataclass(frozen=True, slots=True)
class ParentLink:
    """The call that started a child job: a call of a published workflow (a workflow
    service) from the caller's job and step."""

    service: str
    call_id: str
    job_id: str | None
    step_id: str | None


@dataclass(frozen=True, slots=True)
class ChildLink:
    """A child job a step's call started, as its caller's account may see it: ``job_id`` is
    None when the child runs in another account (the workflow's publisher)."""

    step_id: str | None
    call_id: str | None
    job_id: str | None


class JobSummary(BaseModel):
    """A job in a list: its state without its packets (``GET /v1/jobs/{id}`` has those)."""

    model_config = ConfigDict(frozen=True)

    id: str
    workflow: str
    version: int
    engine: str
    status: JobStatus
    account_id: str
    user_id: str
    idempotency_key: str | None
    error: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL


class JobRecord(JobSummary):
    """A job as the API shows it: with its input and result, and its steps when asked."""

    input: Any
    result: Any = None
    steps: list[StepState] | None = None


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = None


class JobService:
    def __init__(
        self,
        runtime: ServiceRuntime,
        workflows: WorkflowStore,
        registry: EngineRegistry,
        *,
        clock: Clock = SYSTEM_CLOCK,
        job_limits: JobLimits | None = None,
    ) -> None:
        self.db: Database = runtime.db
        self.clock = clock
        # Asked in the transaction that creates jobs (concurrency limits), before they start.
        self.job_limits = job_limits
        self.runtime = runtime
        self.workflows = workflows
        self.registry = registry
        self.store = JobStore(runtime.db, clock=clock)
        # More checks of a workflow version before it is stored, ``(workflow, account)``:
        # raise to refuse it (the workflow services' cycle check).
        self.workflow_checks: list[Callable[[Workflow, str], Awaitable[None]]] = []
        self._pauses = BlockStore(runtime.db, clock=clock)
        self.remote = RemoteJobs(
            runtime,
            workflows,
            {e.name: e for e in registry.engines() if is_remote(e)},
            poll_interval_s=runtime.poll_interval_s,
            clock=clock,
        )

    # -- workflows ----------------------------------------------------------------------------

    async def apply(
        self, document: Any, principal: Principal, *, source: bytes | None = None
    ) -> AppliedWorkflow:
        """Validate, store (new version if changed) and deploy a workflow document.

        Args:
            source: the flow ``spec.source.sha256`` names, when the document does not carry it
                inline (``spec.source.flow``); stored with the version (once per digest).
        """
        published = await self.runtime.catalog.list()
        known = [s.name for s in published] + [f"{s.name}@{s.version}" for s in published]
        # In a thread: a large workflow takes a while to validate (fields, graph, JSONata).
        workflow = (
            document
            if isinstance(document, Workflow)
            else await asyncio.to_thread(validate_workflow, document, known_services=known)
        )
        account = workflow.metadata.account
        if account is not None and account != principal.account_id:
            raise ValidationError(
                f"metadata.account is {account!r} but the token belongs to account "
                f"{principal.account_id!r}; remove metadata.account or use that account's token",
                problems=[("metadata.account", "another account")],
            )
        workflow, inline = take_source(workflow)
        source = inline if inline is not None else source
        engine = self.registry.get(workflow.spec.engine or self.workflows.default_engine)
        # Checked before storing: a version the engine cannot run is never recorded. The step
        # engine's deploy is that check; an external engine is only deployed once stored (its
        # deploy writes to the engine, and the runner deploys again before a job if needed),
        # and a version it refuses is taken back, so a refused apply leaves nothing stored.
        _check_runnable(engine, workflow)
        for check in self.workflow_checks:
            await check(workflow, principal.account_id)
        if not is_remote(engine):
            # The check deploys the document without the version it may carry (an exported
            # workflow carries one): versions are the control plane's to assign, on store.
            unversioned = workflow.metadata.model_copy(update={"version": None})
            await engine.deploy(workflow.model_copy(update={"metadata": unversioned}))
        applied = await self.workflows.apply(workflow, principal.account_id, source=source)
        try:
            if is_remote(engine):
                await self.remote.deploy(engine, applied)
            else:
                await engine.deploy(applied.workflow)
        except FluxoError:
            await self.workflows.discard(applied)
            raise
        return applied

    # -- jobs ---------------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        workflow: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        parent: ParentLink | None = None,
    ) -> JobRecord:
        """Create and start a job; the same idempotency key returns the first job instead.

        The record returned is the job as created (``queued``, no ``steps``); ``get`` shows its
        progress. ``parent``: the call that starts it as a workflow service's child job.
        """
        job, _ = await self.create_once(
            principal,
            workflow,
            payload,
            idempotency_key=idempotency_key,
            headers=headers,
            parent=parent,
        )
        return job

    async def create_once(
        self,
        principal: Principal,
        workflow: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        parent: ParentLink | None = None,
    ) -> tuple[JobRecord, bool]:
        """:meth:`create`, and whether the job is new (False: the key's earlier job)."""
        applied, engine_name = await self._target(principal, workflow)
        spec = applied.workflow.spec
        if spec.input_schema is not None:
            problems = _schema_problems(spec.input_schema, payload)
            if problems:
                raise PayloadSchemaError(
                    f"the input does not match the input schema of workflow {applied.ref}",
                    problems=[(loc.replace("payload", "input", 1), msg) for loc, msg in problems],
                )
        await self._admit(principal, applied)
        row = self._row(principal, applied, engine_name, payload, idempotency_key, headers)
        if parent is not None:
            row.update(
                parent_job_id=parent.job_id,
                parent_step_id=parent.step_id,
                parent_call_id=parent.call_id,
                via_service=parent.service,
            )
        start = await self._starter(principal, applied, engine_name)
        ((created, started),) = await self._insert_started(principal, [row], start)
        new = created == row["id"]
        if not new or started["status"] in FINAL_PHASES:
            # The idempotency key was used before (that job is the answer), or the job ended
            # as it started (its result is in the database).
            return await self.get(principal, created, steps=False), new
        return _record(job_row(started)), new

    async def create_many(
        self,
        principal: Principal,
        workflow: str,
        payloads: Sequence[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[JobRecord]:
        """Create and start one job per payload, all or none, in one transaction.

        Every input is checked first; one that does not match the input schema refuses the whole
        batch, with every problem located (``inputs[3].n``). ``idempotency_keys`` (one per
        payload, ``None`` for none) make the call safe to repeat: a key used before, or earlier
        in the same batch, gives that job instead of a new one. Records come in payload order.
        """
        created = await self.create_many_once(
            principal, workflow, payloads, idempotency_keys=idempotency_keys, headers=headers
        )
        return [record for record, _ in created]

    async def create_many_once(
        self,
        principal: Principal,
        workflow: str,
        payloads: Sequence[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        headers: dict[str, str] | Sequence[dict[str, str]] | None = None,
        with_jobs: Callable[[Transaction, list[tuple[str, bool]]], None] | None = None,
    ) -> list[tuple[JobRecord, bool]]:
        """:meth:`create_many`, and per job whether it is new (False: its key's earlier job).
        ``headers``: one set for every job, or one per payload. ``with_jobs(tx, new)``: more
        writes of the caller in the transaction that creates the jobs (a trigger's counters),
        told each job's id and whether it is new."""
        if idempotency_keys is not None and len(idempotency_keys) != len(payloads):
            raise ValidationError(
                f"{len(idempotency_keys)} idempotency keys for {len(payloads)} inputs; "
                "give one key (or None) per input",
                problems=[("idempotency_keys", "length differs from inputs")],
            )
        applied, engine_name = await self._target(principal, workflow)
        spec = applied.workflow.spec
        if spec.input_schema is not None:
            problems: list[tuple[str, str]] = []
            bad = 0
            for i, payload in enumerate(payloads):
                found = _schema_problems(spec.input_schema, payload)
                bad += bool(found)
                problems += [(loc.replace("payload", f"inputs[{i}]", 1), m) for loc, m in found]
            if problems:
                raise PayloadSchemaError(
                    f"{bad} of {len(payloads)} inputs do not match the input schema of workflow "
                    f"{applied.ref}; no job was created",
                    problems=problems,
                )
        if not payloads:
            return []
        await self._admit(principal, applied)
        keys = idempotency_keys or [None] * len(payloads)
        each = (
            [headers] * len(payloads) if headers is None or isinstance(headers, dict) else headers
        )
        rows = [
            self._row(principal, applied, engine_name, payload, key, hdrs, where=f"inputs[{i}]")
            for i, (payload, key, hdrs) in enumerate(zip(payloads, keys, each, strict=True))
        ]

        start = await self._starter(principal, applied, engine_name)
        created = await self._insert_started(principal, rows, start, with_jobs)
        return [
            (
                _record(job_row(started))
                if job_id == row["id"] and started["status"] not in FINAL_PHASES
                else await self.get(principal, job_id, steps=False),
                job_id == row["id"],
            )
            for row, (job_id, started) in zip(rows, created, strict=True)
        ]

    async def _insert_started(
        self,
        principal: Principal,
        rows: list[dict[str, Any]],
        start: Callable[[Transaction, list[dict[str, Any]]], None],
        with_jobs: Callable[[Transaction, list[tuple[str, bool]]], None] | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Start the new jobs and insert their rows as started, in one transaction: per row,
        the id of its job and the row as written.

        A row whose idempotency key was used before (or earlier in this batch) is neither
        started nor inserted: its job is that earlier one. The rows are written once, already
        started, so a job costs one INSERT and no UPDATE.
        """
        account = principal.account_id

        def run(tx: Transaction) -> list[tuple[str, dict[str, Any]]]:
            work = [dict(r) for r in rows]  # fresh copies: a retry starts from the rows again
            keys = [r["idempotency_key"] for r in work if r["idempotency_key"] is not None]
            earlier = self.store.jobs_by_keys(tx, account, work[0]["workflow"], keys)
            fresh, created = [], []
            for r in work:
                key = r["idempotency_key"]
                if key is not None and key in earlier:
                    created.append((earlier[key], r))
                    continue
                if key is not None:
                    earlier[key] = r["id"]
                fresh.append(r)
                created.append((r["id"], r))
            if fresh and self.job_limits is not None:
                self.job_limits(tx, account, fresh[0]["workflow"], len(fresh))
            if fresh:
                # A paused workflow's jobs wait queued (fluxo workflows resume starts them).
                if self._pauses.pause_on(tx.conn, account, work[0]["workflow"]) is None:
                    start(tx, fresh)
                self.store.insert_many(tx, fresh)
            if with_jobs is not None:
                with_jobs(tx, [(job_id, job_id == r["id"]) for job_id, r in created])
            return created

        try:
            return await self.db.transact(run)
        except ConflictError:
            # Another transaction used one of the keys between the look-up and the insert
            # (PostgreSQL; this one rolled back whole): look again, it finds that job now.
            return await self.db.transact(run)

    async def _starter(
        self, principal: Principal, applied: AppliedWorkflow, engine_name: str
    ) -> Callable[[Transaction, list[dict[str, Any]]], None]:
        """How new jobs start, inside the transaction that inserts their rows.

        An engine that keeps its jobs in this database starts them right there (their first
        calls commit with them) and the rows get the status it left; any other engine gets a
        start message on its queue, which its runner turns into ``Engine.start``.
        """
        engine = self.registry.get(engine_name)
        starter = await engine.starter(
            principal.account_id, applied.workflow.metadata.name, applied.version
        )
        if starter is not None:

            def start_here(tx: Transaction, rows: list[dict[str, Any]]) -> None:
                starter(tx, rows)  # the rows come back started (or already finished)

            return start_here

        def send_start(tx: Transaction, rows: list[dict[str, Any]]) -> None:
            self.runtime.transport.enqueue(tx, [_start_message(engine_name, r["id"]) for r in rows])

        return send_start

    async def _target(self, principal: Principal, workflow: str) -> tuple[AppliedWorkflow, str]:
        """The workflow version ``name`` or ``name@version`` names, and its engine's name."""
        name, version = split_workflow_ref(workflow)
        applied = await self.workflows.get(principal.account_id, name, version)
        engine_name = applied.workflow.spec.engine or self.workflows.default_engine
        self.registry.get(engine_name)  # fail before writing anything if it is not here
        return applied, engine_name

    async def _admit(self, principal: Principal, applied: AppliedWorkflow) -> None:
        """The runtime's interceptors admit a new job as they admit a call (blocks, quotas)."""
        interceptors = self.runtime.interceptors
        if not interceptors.admits:
            return
        job = CallRequest(
            account_id=principal.account_id,
            user_id=principal.user_id,
            service=f"workflow:{applied.workflow.metadata.name}",
            version=str(applied.version),
            job_id=None,
            step_id=None,
            workflow=applied.ref,
        )
        request = AdmitRequest("job", [job])
        await interceptors.admit(request)
        request.raise_refused()

    def _row(
        self,
        principal: Principal,
        applied: AppliedWorkflow,
        engine_name: str,
        payload: Any,
        idempotency_key: str | None,
        headers: dict[str, str] | None,
        *,
        where: str = "input",
    ) -> dict[str, Any]:
        """The new job's row (``status`` queued), its input the packet the engine starts from.

        Whatever way the job came in (API, CLI, trigger), its input is checked here: the shape
        of a packet (one object or an array of objects; headers of strings), and the same
        packet size limit as every service call.
        """
        job_id = new_packet_id()  # time-ordered, as the packets of its calls
        try:
            packet = Packet.model_validate(
                {
                    "id": job_id,
                    "job_id": job_id,
                    "workflow": applied.ref,
                    "actor": {
                        "user": {"id": principal.user_id},
                        "account": {"id": principal.account_id},
                    },
                    "payload": payload,
                    "headers": {} if headers is None else headers,
                }
            )
        except pydantic.ValidationError as exc:
            problems = [
                (where + loc[len("payload") :] if loc.startswith("payload") else loc, message)
                for loc, message in problems_from_pydantic(exc)
            ]
            raise PayloadSchemaError(
                f"invalid job: the {where} must be one JSON object or an array of objects, and "
                "headers an object of strings",
                problems=problems,
            ) from exc
        try:
            body = packet.model_dump_json().encode()
        except pydantic_core.PydanticSerializationError as exc:  # e.g. text that is not Unicode
            raise PayloadSchemaError(
                f"the {where} cannot be stored as JSON: {exc}", problems=[(where, str(exc))]
            ) from exc
        limit = self.runtime.gateway.max_packet_bytes
        if len(body) > limit:
            raise PayloadTooLargeError(
                f"the {where} makes a packet of {len(body)} bytes, over the limit of {limit} "
                "bytes (FLUXO_MAX_PACKET_BYTES); send a reference to the data instead, or raise "
                "the limit",
                limit=limit,
                size=len(body),
            )
        return {
            "id": job_id,
            "account_id": principal.account_id,
            "user_id": principal.user_id,
            "workflow": applied.workflow.metadata.name,
            "version": applied.version,
            "engine": engine_name,
            "status": "queued",
            "idempotency_key": idempotency_key,
            "input": body,
            "result": None,
            "error": None,
            "active": 0,
            "created_at": self.clock.time(),
            "started_at": None,
            "finished_at": None,
            "parent_job_id": None,
            "parent_step_id": None,
            "parent_call_id": None,
            "via_service": None,
        }

    async def get(self, principal: Principal, job_id: str, *, steps: bool = True) -> JobRecord:
        row = await self.store.job(job_id, account_id=principal.account_id)
        record = _record(row)
        if steps:
            engine = self.registry.get(row.engine)
            if is_remote(engine):  # its steps are the calls it made through the gateway
                status = await self.store.run_status_from_calls(job_id)
            else:
                handle = RunHandle(engine=row.engine, job_id=job_id, run_id=job_id)
                status = await engine.status(handle)
            record = record.model_copy(update={"steps": _masked_steps(status.steps)})
        return record

    async def children(self, principal: Principal, job_id: str) -> list[ChildLink]:
        """The child jobs calls of the account's job ``job_id`` started (a workflow used as a
        service). A child in another account (usually the publisher's) is only said to be
        there: its id is that account's to see.

        Raises:
            NotFoundError: no such job in the account.
        """
        await self.store.job(job_id, account_id=principal.account_id)
        return [
            ChildLink(
                step_id=child.parent_step_id,
                call_id=child.parent_call_id,
                job_id=child.job_id if child.account_id == principal.account_id else None,
            )
            for child in await self.store.children(job_id)
        ]

    async def wait(self, principal: Principal, job_id: str, timeout: float) -> JobRecord:
        """The job once it ended, or as it is after ``timeout`` seconds.

        The timeout bounds waiting for I/O, so it runs on the machine's monotonic clock, not the
        injected one (a test's manual clock would never let it end).
        """
        deadline = time.monotonic() + timeout
        with await self.db.subscribe([f"job:{job_id}"]) as sub:
            while True:
                sub.clear()
                record = await self.get(principal, job_id, steps=False)
                left = deadline - time.monotonic()
                if record.done or left <= 0:
                    return await self.get(principal, job_id)
                await sub.wait(min(left, self.runtime.poll_interval_s))

    async def list(
        self,
        principal: Principal,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        engine: str | None = None,
        since: float | None = None,
        until: float | None = None,
        contains: str | None = None,
    ) -> JobPage:
        """Newest first; ``cursor`` is the ``next_cursor`` of the previous page. ``engine``,
        ``since``/``until`` (creation time, epoch seconds) and ``contains`` (text inside the
        job's input or result) narrow it further (the console's filters)."""
        if not 1 <= limit <= 500:
            raise ValidationError(
                "limit must be between 1 and 500", problems=[("limit", "out of range")]
            )
        if status is not None and status not in JOB_STATUSES:
            raise ValidationError(
                f"status {status!r} is not a job status; use one of {', '.join(JOB_STATUSES)}",
                problems=[("status", f"one of {', '.join(JOB_STATUSES)}")],
            )
        rows, next_cursor = await self.store.page(
            principal.account_id,
            workflow=workflow,
            status=status,
            limit=limit,
            cursor=cursor,
            engine=engine,
            since=since,
            until=until,
            contains=contains,
        )
        return JobPage(items=[job_summary(r) for r in rows], next_cursor=next_cursor)

    async def cancel(self, principal: Principal, job_id: str) -> JobRecord:
        row = await self.store.job(job_id, account_id=principal.account_id)
        if row.status not in FINAL or row.status == "blocked":  # a blocked job may be cancelled
            engine = self.registry.get(row.engine)
            if is_remote(engine):
                await self.remote.cancel(row)
            else:
                await engine.cancel(RunHandle(engine=row.engine, job_id=job_id, run_id=job_id))
        # A cancel goes down to the jobs its calls of workflow services started (each in its
        # publisher's account, on the platform's behalf), and theirs in turn.
        for child_id, account in await self.store.open_children(job_id):
            await self.cancel(Principal(account_id=account, user_id="platform"), child_id)
        return await self.get(principal, job_id)

    # -- external engines -----------------------------------------------------------------------

    async def engine_event(self, principal: Principal, job_id: str, event: Any) -> JobRecord:
        """An external engine reports a job's end (engine tokens only, for jobs of their own
        account and engine: any other job is not found)."""
        _engine_only(principal, "report job events")
        await self.remote.report(principal, job_id, event)
        return _record(await self.store.job(job_id, account_id=principal.account_id))

    async def engine_job(self, principal: Principal, job_id: Any) -> EngineJob:
        """The live job a call made with an engine token is for; the call runs as its account.

        Raises:
            NotFoundError: no job ``job_id`` in the token's account.
            PermissionDeniedError: a user's token, a job of another engine, or a job that ended.
        """
        _engine_only(principal, "act for a job")
        return await self.remote.live_job(principal, job_id)

    @staticmethod
    def stored_payload(job: EngineJob, ref: str) -> Any:
        """The payload a ``fluxo-payload-ref`` names: the input of the job the call is for.

        Argo parameters are limited in size, so a large job input stays in Fluxo and the
        workflow carries the job's id instead. Only the calling job's own id resolves: a
        reference to any other job, even of the same account, is not found.
        """
        if ref != job.id:
            raise NotFoundError(
                f"fluxo-payload-ref {ref!r} names no stored packet of job {job.id}; it may only "
                "name the id of the job the call is for",
                ref=ref,
            )
        return orjson.loads(job.input)["payload"]


def take_source(workflow: Workflow) -> tuple[Workflow, bytes | None]:
    """The workflow as stored (``spec.source`` without its flow, with the flow's digest) and
    the flow's bytes, when the document carries its source flow inline (``fluxo apply`` reads
    the sidecar file and sends it so)."""
    ref = workflow.spec.source
    if ref is None or ref.flow is None:
        return workflow, None
    content = orjson.dumps(ref.flow)
    digest = hashlib.sha256(content).hexdigest()
    if ref.sha256 is not None and ref.sha256 != digest:
        raise ValidationError(
            f"spec.source.sha256 is {ref.sha256} but the flow sent with it has digest {digest}: "
            f"{ref.file} changed since the workflow named it; remove spec.source.sha256 or "
            "restore the file",
            problems=[("spec.source.sha256", "does not match spec.source.flow")],
        )
    stored = WorkflowSource(format=ref.format, file=ref.file, sha256=digest)
    spec = workflow.spec.model_copy(update={"source": stored})
    return workflow.model_copy(update={"spec": spec}), content


def _check_runnable(engine: Engine, workflow: Workflow) -> None:
    """Every step is of a kind the engine runs (a native step: of this engine)."""
    can = engine.capabilities
    refused = [
        step
        for step in workflow.spec.steps
        if step.kind not in can.step_kinds
        or (isinstance(step, NativeStep) and step.engine not in can.native_engines)
    ]
    if refused:
        what = "; ".join(
            f"step {s.id!r} is a {s.kind} step"
            + (f" of engine {s.engine!r}" if isinstance(s, NativeStep) else "")
            for s in refused
        )
        raise UnsupportedFeatureError(
            f"engine {engine.name!r} cannot run workflow {workflow.metadata.name!r}: {what}; "
            "choose another spec.engine or change these steps",
            steps=[s.id for s in refused],
        )


def _engine_only(principal: Principal, what: str) -> None:
    if principal.engine is None:
        raise PermissionDeniedError(
            f"only an engine's token may {what}; issue one with `fluxo token --engine NAME`"
        )


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def _start_message(engine_name: str, job_id: str) -> OutgoingMessage:
    return OutgoingMessage(
        queue=f"engine.{engine_name}",
        message_id=f"start:{job_id}",
        body=orjson.dumps({"kind": "start", "job_id": job_id}),
    )


def _masked_steps(steps: Sequence[StepState]) -> list[StepState]:
    """Steps as shown: credential-looking values in their packets masked (see redaction)."""
    return [
        s.model_copy(
            update={"input": mask_credentials(s.input), "output": mask_credentials(s.output)}
        )
        for s in steps
    ]


def job_summary(row: JobSummaryRow) -> JobSummary:
    """A stored job as the API lists it (the one place a job row becomes a summary)."""
    return JobSummary(
        id=row.id,
        workflow=row.workflow,
        version=row.version,
        engine=row.engine,
        status=row.status,  # validated: the column holds only JOB_STATUSES
        account_id=row.account_id,
        user_id=row.user_id,
        idempotency_key=row.idempotency_key,
        error=orjson.loads(row.error) if row.error else None,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        started_at=_ts(row.started_at),
        finished_at=_ts(row.finished_at),
    )


def _record(row: JobRow) -> JobRecord:
    """The job as shown: credential-looking values in its input and result masked."""
    results = orjson.loads(row.result) if row.result else None
    result = results[0] if results is not None and len(results) == 1 else results
    return JobRecord(
        **dict(job_summary(row)),
        input=mask_credentials(orjson.loads(row.input)["payload"]),
        result=mask_credentials(result) if row.status == "succeeded" else None,
    )
