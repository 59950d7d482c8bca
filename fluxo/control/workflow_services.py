"""Workflows as services: a published workflow answers calls like any Python service.

A ``kind: Service`` resource with ``spec.workflow`` publishes a workflow of the publisher's
account under a service name. Here it becomes a :class:`~service_runtime.sdk.Service` whose
handler starts a child job of that workflow (on the workflow's own engine, in the PUBLISHER's
account) and answers the call with the child's result; the runtime publishes it to the catalog
and runs it like any service, so a caller reaches it through the gateway, the input queue and
``POST /v1/services/{name}/calls``, and the worker's Metering bills the CALLER the service's
price. The child's own calls are made by the child job, so they are metered to the publisher.

Durability: the handler only starts the child job, with an idempotency key derived from the
call id (a call delivered again after a crash finds the same child), and answers
``DEFERRED``: no worker, thread or connection waits while the child runs. The call is
completed in the transaction that ends the child job, whatever its engine (a job end hook of
the database, :meth:`WorkflowServices._on_jobs_ended`): its result (the child's outputs,
1 -> N), or its failure naming the child's step and cause, goes through the transactional
outbox to the caller's reply queue with the usage record that bills the caller, as a Python
service's result would. A child that ended in a process running no workflow services is
answered by the sweep every ``sweep_s``; a call is completed once whoever tries.

Every process that runs workflow services (``fluxo up``, ``fluxo worker``) loads them from
the stored Service resources at start and follows their changes, so a call made in one
process is served and completed by any other.

Safety: a Service whose workflow (through the services its steps call) reaches itself is
refused at apply, naming the cycle; at run time the depth travels in the ``fluxo-depth``
packet header (a job's input headers go on every call it makes), and a call deeper than
:data:`MAX_DEPTH` fails. A refusal of the child job (the publisher's account or workflow
blocked, a quota) is the call's block, with a reason that names only the service.

This module belongs to the control plane: it needs :class:`~fluxo.control.jobs.JobService`.
The runtime never imports it; it runs the services it is handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from fluxo.control.auth import require
from fluxo.control.billing import money_text, parse_period
from fluxo.control.jobs import JobService, ParentLink
from fluxo_core.errors import (
    AdmissionDeniedError,
    BlockedError,
    FluxoError,
    NotFoundError,
    ServiceError,
    UnknownServiceError,
    ValidationError,
)
from fluxo_core.ir import Packet, ServiceStep, Workflow, WorkflowCallStep, parse_packet
from fluxo_core.storage import Principal, Role, ServiceStore, Transaction
from fluxo_core.storage.child_jobs import ChildJob, ChildJobStore
from fluxo_core.storage.ledger import month_bounds
from fluxo_core.storage.margin import MarginStore
from fluxo_core.storage.resources import ResourceRow, ResourceStore
from service_runtime import AdmitRequest, CallRequest
from service_runtime.deferred import Completion
from service_runtime.interceptors import Interceptor
from service_runtime.sdk import DEFERRED, Call, Deferred, Price, RetryPolicy, Service
from service_runtime.worker import Worker

__all__ = [
    "DEPTH_HEADER",
    "MAX_DEPTH",
    "PublishedWorkflow",
    "WorkflowServices",
    "margin_report",
    "published_from",
    "published_of",
]

log = logging.getLogger(__name__)

DEPTH_HEADER = "fluxo-depth"
MAX_DEPTH = 8
"""How many workflow services deep a call may go (a caller's job is depth 0)."""
SERVICE_VERSION = "1"
# The handler only starts the child job (its run is not waited for).
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 2.0
# Every this many sweeps, the notes of deferred calls completed in a race are dropped.
FORGET_EVERY = 60


@dataclass(frozen=True, slots=True)
class PublishedWorkflow:
    """One workflow service: the service ``name`` and the workflow it runs."""

    name: str
    account: str
    workflow: str
    version: int | None  # None: the newest version at each call
    description: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    price: Price
    visibility: str
    accounts: tuple[str, ...]

    @property
    def workflow_ref(self) -> str:
        return self.workflow if self.version is None else f"{self.workflow}@{self.version}"

    def visible_to(self, account: str) -> bool:
        if self.visibility == "public" or account == self.account:
            return True
        return self.visibility == "accounts" and account in self.accounts


def published_of(row: ResourceRow, default_account: str) -> PublishedWorkflow | None:
    """The workflow a Service resource publishes, or None for a Service of terms only."""
    return published_from(row.name, row.spec, default_account)


def published_from(
    name: str, spec: dict[str, Any], default_account: str
) -> PublishedWorkflow | None:
    """The workflow a Service's ``spec`` publishes as ``name``, or None (terms only)."""
    target = spec.get("workflow")
    if target is None:
        return None
    price = spec.get("price") or {}
    visibility = spec.get("visibility") or {}
    version = target.get("version", "latest")
    return PublishedWorkflow(
        name=name,
        account=target.get("account") or default_account,
        workflow=target["name"],
        version=None if version == "latest" else int(version),
        description=spec.get("description") or "",
        input_schema=spec.get("inputSchema"),
        output_schema=spec.get("outputSchema"),
        price=Price(
            per_call=Decimal(price.get("perCall", "0")),
            per_item=Decimal(price.get("perItem", "0")),
            currency=price.get("currency", "EUR"),
        ),
        visibility=visibility.get("scope", "account"),
        accounts=tuple(visibility.get("accounts", ())),
    )


class WorkflowServices:
    """The workflow services of this process: published to the catalog, run by their worker.

    Args:
        jobs: where child jobs are created and awaited.
        resources: the stored Service resources (read at start).
        admission: the platform's admission, asked about each caller while its child runs.
        workers: worker loops for workflow services (a batch only starts child jobs).
        sweep_s: how often the stored Services are read again, children that ended elsewhere
            answered and callers asked whether they may still run.
        lease_s: the lease of the workers' claims (a crashed process's calls come back then).
    """

    def __init__(
        self,
        jobs: JobService,
        resources: ResourceStore,
        *,
        admission: Interceptor | None = None,
        workers: int = 2,
        sweep_s: float = 1.0,
        lease_s: float = 5.0,
    ) -> None:
        self.jobs = jobs
        # Asked while a child runs: a block of the caller stops its child.
        self.admission = admission
        self.runtime = jobs.runtime
        self.resources = resources
        self.workers = workers
        self.sweep_s = sweep_s
        self.lease_s = lease_s
        self.published: dict[str, PublishedWorkflow] = {}
        # The Services as stored, before their schemas were filled in (what reload compares).
        self._declared: dict[str, PublishedWorkflow] = {}
        self._children = ChildJobStore(self.runtime.db)
        self._watcher: asyncio.Task[None] | None = None
        self._loops: list[tuple[Worker, asyncio.Task[None]]] = []
        self._retired: list[tuple[Worker, asyncio.Task[None]]] = []
        self._stop = asyncio.Event()
        self._running = False
        jobs.workflow_checks.append(self.check_workflow)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish every stored workflow service, run them and complete their calls."""
        self._running = True
        self._stop.clear()
        await self.reload()
        await self._restart()
        self.runtime.db.job_end_hooks.append(self._on_jobs_ended)
        self._watcher = asyncio.create_task(self._watch(), name="fluxo-workflow-services")

    async def stop(self) -> None:
        self._running = False
        self._stop.set()
        if self._watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        with contextlib.suppress(ValueError):
            self.runtime.db.job_end_hooks.remove(self._on_jobs_ended)
        await self._stop_loops(self._loops)
        self._loops = []

    # -- publishing ---------------------------------------------------------------------------

    async def check(self, published: PublishedWorkflow) -> None:
        """Refuse a publication whose workflow does not exist or calls itself back."""
        try:
            applied = await self.jobs.workflows.get(
                published.account, published.workflow, published.version
            )
        except NotFoundError:
            raise ValidationError(
                f"spec.workflow: account {published.account!r} has no workflow "
                f"{published.workflow_ref!r}; apply the workflow first, then the Service",
                problems=[("spec.workflow.name", "no such workflow")],
            ) from None
        del applied
        if published.name not in self.published and await ServiceStore(self.runtime.db).versions(
            published.name, None
        ):
            raise ValidationError(
                f"metadata.name: a service named {published.name!r} is already published by "
                "the code of a process; publish the workflow under another name",
                problems=[("metadata.name", "a published service's name")],
            )
        cycle = await self.cycle_through(published)
        if cycle:
            path = " -> ".join(cycle)
            raise ValidationError(
                f"spec.workflow: publishing workflow {published.workflow!r} as service "
                f"{published.name!r} makes a cycle: {path}; a workflow service must not call "
                "itself, directly or through other workflow services",
                problems=[("spec.workflow", f"cycle {path}")],
            )

    async def check_workflow(self, workflow: Workflow, account: str) -> None:
        """Refuse a new version of a workflow published as ``latest`` that would call its own
        service back (through workflow services): a cycle, named."""
        name = workflow.metadata.name
        for published in list(self.published.values()):
            if (published.account, published.workflow, published.version) != (account, name, None):
                continue
            cycle = await self.cycle_through(published, pending=(account, workflow))
            if cycle:
                path = " -> ".join(cycle)
                raise ValidationError(
                    f"workflow {name!r} is published as service {published.name!r} and this "
                    f"version would make a cycle: {path}; a workflow service must not call "
                    "itself, directly or through other workflow services",
                    problems=[("spec.steps", f"cycle {path}")],
                )

    async def cycle_through(
        self, published: PublishedWorkflow, *, pending: tuple[str, Workflow] | None = None
    ) -> list[str]:
        """The cycle ``published`` would close (``service -> workflow -> service ...``), or [].
        ``pending``: a workflow version about to be applied (account, document), read instead
        of the stored newest one."""
        services = {**self.published, published.name: published}
        path: list[str] = []
        seen: set[str] = set()

        async def visit(name: str) -> bool:
            current = services[name]
            path.extend([f"service {name}", f"workflow {current.workflow}"])
            for called in await self._called_services(current, pending):
                if called == published.name:
                    path.append(f"service {called}")
                    return True
                if called in services and called not in seen:
                    seen.add(called)
                    if await visit(called):
                        return True
            del path[-2:]
            return False

        return path if await visit(published.name) else []

    async def _called_services(
        self, published: PublishedWorkflow, pending: tuple[str, Workflow] | None = None
    ) -> list[str]:
        if (
            pending is not None
            and published.version is None
            and (published.account, published.workflow) == (pending[0], pending[1].metadata.name)
        ):
            workflow = pending[1]
        else:
            try:
                applied = await self.jobs.workflows.get(
                    published.account, published.workflow, published.version
                )
            except NotFoundError:
                return []
            workflow = applied.workflow
        called = []
        for step in workflow.spec.steps:
            if isinstance(step, ServiceStep):
                called.append(step.service.partition("@")[0])
            elif isinstance(step, WorkflowCallStep):
                called.append(step.workflow_name)
        return called

    def offered_to(self, name: str, account: str) -> bool:
        """Whether ``account`` may see and call service ``name``: any service that is not a
        workflow published here, and a published workflow its visibility offers to it."""
        published = self.published.get(name)
        return published is None or published.visible_to(account)

    async def unpublish(self, name: str) -> None:
        """Stop running service ``name`` here (its Service resource was deleted). Its catalog
        row stays, as a Python service's does when its process stops: calls wait queued."""
        self._declared.pop(name, None)
        if self.published.pop(name, None) is not None and self._running:
            await self._restart()

    # -- reporting ----------------------------------------------------------------------------

    async def margin(self, principal: Principal, period: str) -> dict[str, Any]:
        """The margin report of the principal's account (see :func:`margin_report`)."""
        return await margin_report(self.resources, principal, period)

    async def publish(self, published: PublishedWorkflow) -> None:
        """Make ``published`` callable: in the catalog, and run by this process."""
        self._declared[published.name] = published
        published = await self._with_schemas(published)
        self.published[published.name] = published
        await self.runtime.catalog.publish([self.service_of(published)])
        if self._running:
            await self._restart()

    async def _with_schemas(self, published: PublishedWorkflow) -> PublishedWorkflow:
        """``published`` with the workflow's own schemas where the Service gives none."""
        if published.input_schema is not None and published.output_schema is not None:
            return published
        applied = await self.jobs.workflows.get(
            published.account, published.workflow, published.version
        )
        spec = applied.workflow.spec
        return dataclasses.replace(
            published,
            input_schema=published.input_schema or spec.input_schema,
            output_schema=published.output_schema or getattr(spec, "output_schema", None),
        )

    def service_of(self, published: PublishedWorkflow) -> Service:
        async def handler(packet: Packet, call: Call | None = None) -> Deferred:
            # The worker passes the call (the handler declares it); a bare invocation has none.
            return await self._start_child(published.name, packet, call or Call.of(packet))

        return Service(
            name=published.name,
            version=SERVICE_VERSION,
            handler=handler,
            description=published.description or f"workflow {published.workflow} as a service",
            takes="packet",
            input_schema=published.input_schema,
            output_schema=published.output_schema,
            price=published.price,
            # A child's failure is final: its own steps retried what they could.
            retry=RetryPolicy(max_attempts=1),
            timeout_s=START_TIMEOUT_S,
        )

    # -- running ------------------------------------------------------------------------------

    async def _start_child(self, name: str, packet: Packet, call: Call) -> Deferred:
        """Start the call's child job (once per call id) and answer later: the transaction
        that ends the child completes the call (:meth:`_on_jobs_ended`)."""
        published = self.published.get(name)
        if published is None:
            raise ServiceError(
                f"service {name!r} is no longer published", retryable=False, service=name
            )
        caller = packet.account_id
        if not published.visible_to(caller):
            # Worded as the gateway words an unknown service: a private one is not the
            # caller's to know of.
            raise UnknownServiceError(f"no service named {name!r}", service=name)
        depth = _depth(packet) + 1
        if depth > MAX_DEPTH:
            raise ServiceError(
                f"service {name!r}: workflow services call each other {depth} deep, over the "
                f"limit of {MAX_DEPTH}; a workflow service probably calls itself back (through "
                "a 'latest' version that changed)",
                retryable=False,
                service=name,
                depth=depth,
            )
        publisher = Principal(account_id=published.account, user_id=f"service:{name}")
        try:
            child = await self.jobs.create(
                publisher,
                published.workflow_ref,
                packet.payload,
                idempotency_key=f"call:{call.id}",
                headers={DEPTH_HEADER: str(depth)},
                parent=ParentLink(
                    service=name, call_id=call.id, job_id=call.job_id, step_id=call.step_id
                ),
            )
        except (BlockedError, AdmissionDeniedError) as exc:
            raise _unavailable(name) from exc
        if child.done:
            # It ended before this call was settled (as it started, or a delivery again after
            # a crash): its end found the call open, or ran in a process that completes no
            # calls. Completing it here is idempotent.
            await self.answer_ended()
        return DEFERRED

    def _on_jobs_ended(self, tx: Transaction, job_ids: list[str]) -> None:
        """A job end hook: complete the calls of the child jobs that ended in ``tx``, in it,
        so a child's end and its caller's result commit together or not at all."""
        if not self.published:
            return
        ended = self._children.ended_with_open_calls(tx, job_ids)
        completions = [c for child in ended if (c := self._completion(child)) is not None]
        if completions:
            self.runtime.deferred.complete(tx, completions)

    def _completion(self, child: ChildJob, error: FluxoError | None = None) -> Completion | None:
        """How the call of ``child`` ends (with ``error``, or the child's outcome); None for a
        service this process does not run (another one completes it)."""
        name = child.call.service
        published = self.published.get(name)
        if published is None:
            return None
        svc = self.service_of(published)
        applied = self.runtime.terms.applied(svc.name, svc.version)
        svc = svc if applied.empty else applied.service(svc)
        if error is not None:
            return Completion(child.call, svc, error=error, started_at=child.created_at)
        if child.status == "succeeded":
            # The stored results, whole: the caller's next step needs the data itself.
            results = orjson.loads(child.result) if child.result else []
            return Completion(child.call, svc, outputs=results, started_at=child.created_at)
        if child.status == "blocked":
            return Completion(
                child.call, svc, error=_unavailable(name), started_at=child.created_at
            )
        detail = orjson.loads(child.error) if child.error else {}
        failure = ServiceError(
            f"service {name!r} failed: its job {child.id} {child.status}"
            + (f" at step {detail.get('step')!r}" if detail.get("step") else "")
            + (f": {detail.get('message')}" if detail.get("message") else ""),
            retryable=False,
            service=name,
            child_job=child.id,
            child_step=detail.get("step"),
            cause=detail.get("code") or child.status,
        )
        return Completion(child.call, svc, error=failure, started_at=child.created_at)

    async def answer_ended(self) -> int:
        """Complete the open calls whose child jobs ended without completing them (ended by a
        process that runs no workflow services, or before this one published the service);
        returns how many were completed."""
        ended = await self._children.unanswered(self.published)
        completions = [c for child in ended if (c := self._completion(child)) is not None]
        if not completions:
            return 0
        done = await self.runtime.db.transact(
            lambda tx: self.runtime.deferred.complete(tx, completions)
        )
        return len(done)

    async def stop_refused_callers(self) -> int:
        """Children whose callers may no longer run (a block of the caller's account, workflow
        or user, or of the service; the caller's job ended): the call ends as a refused call
        does (a blocked step resumes with a new call, so a new child) and the child is
        cancelled. Admission is asked as the worker asks it. Returns how many were stopped."""
        if self.admission is None:
            return 0
        running = await self._children.running(self.published)
        if not running:
            return 0
        packets = [parse_packet(c.call.request, where=f"call {c.call.id}") for c in running]
        request = AdmitRequest(
            "worker",
            [
                CallRequest.for_call(p, c.call.service, SERVICE_VERSION)
                for p, c in zip(packets, running, strict=True)
            ],
        )
        await self.admission.admit(request)
        refused = [
            (child, refusal)
            for child, refusal in zip(running, request.refusals, strict=True)
            if refusal is not None
        ]
        completions = [
            c for child, refusal in refused if (c := self._completion(child, refusal)) is not None
        ]
        if completions:
            await self.runtime.db.transact(
                lambda tx: self.runtime.deferred.complete(tx, completions)
            )
        for child, _ in refused:
            try:
                await self.jobs.cancel(
                    Principal(account_id=child.account_id, user_id="platform"), child.id
                )
            except FluxoError as exc:
                # The call is answered already; a child left running costs its publisher
                # only. Named, so an operator can cancel it.
                log.warning("could not cancel child job %s: %s", child.id, exc.message)
        return len(refused)

    async def reload(self) -> bool:
        """Publish here what the stored Service resources publish now (applied or deleted in
        another process); True if that changed what this process runs."""
        declared: dict[str, PublishedWorkflow] = {}
        for row in await self.resources.list("Service", None):
            published = published_of(row, row.account_id)
            if published is not None:
                declared[published.name] = published
        if declared == self._declared:
            return False
        current: dict[str, PublishedWorkflow] = {}
        for name, published in declared.items():
            with contextlib.suppress(NotFoundError):  # its workflow was deleted since
                current[name] = await self._with_schemas(published)
        self._declared = declared
        changed = current != self.published
        self.published = current
        if changed and self._running:
            await self._restart()
        return changed

    async def _watch(self) -> None:
        """The background duties of the workflow services of this process, every
        ``sweep_s``: follow the stored Service resources, answer calls whose children ended
        elsewhere, stop children whose callers were refused."""
        sweeps = 0
        while not self._stop.is_set():
            try:
                await self.reload()
                await self.answer_ended()
                sweeps += 1
                if sweeps % FORGET_EVERY == 0:
                    await self.runtime.gateway.calls.forget_completed_deferred()
                await self.stop_refused_callers()
            except FluxoError as exc:
                if not exc.retryable:
                    log.error("workflow services: %s", exc.message)
                else:
                    log.warning("workflow services, will try again: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.sweep_s)

    async def _restart(self) -> None:
        """Run the current set of workflow services: new worker loops; the old ones stop after
        the batch they are in (a batch only starts child jobs: it ends at once)."""
        old, self._loops = self._loops, []
        if self.published:
            services = [self.service_of(p) for p in self.published.values()]
            await self.runtime.catalog.publish(services)
            for i in range(self.workers):
                worker = Worker(
                    self.runtime.db,
                    self.runtime.transport,
                    services,
                    interceptors=self.runtime.interceptors,
                    terms=self.runtime.terms,
                    lease_s=self.lease_s,
                )
                stop = asyncio.Event()
                task = asyncio.create_task(
                    worker.run(stop, idle_timeout_s=self.runtime.poll_interval_s),
                    name=f"fluxo-workflow-services-{i}",
                )
                self._loops.append((worker, task))
        for worker, _ in old:
            worker.request_stop()
        self._retired.extend(old)

    async def _stop_loops(self, loops: Iterable[tuple[Worker, asyncio.Task[None]]]) -> None:
        loops = [*loops, *self._retired]
        self._retired = []
        for worker, _ in loops:
            worker.request_stop()
        tasks = [task for _, task in loops]
        if not tasks:
            return
        # A loop stops after its batch (which only starts child jobs); one stuck longer (a
        # slow database) is cancelled after a grace period: its messages' leases run out and
        # another process starts the same children (once: the call id is their key).
        _, waiting = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in waiting:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, FluxoError):
                await task


def _depth(packet: Packet) -> int:
    raw = packet.headers.get(DEPTH_HEADER, "0")
    return int(raw) if raw.isascii() and raw.isdigit() else MAX_DEPTH


def _unavailable(name: str) -> BlockedError:
    # Names the service only: the publisher's block (its reason, account, workflow) is its own.
    return BlockedError(
        f"service {name!r} is unavailable: its publisher has stopped it; try again later",
        service=name,
    )


async def margin_report(
    resources: ResourceStore, principal: Principal, period: str
) -> dict[str, Any]:
    """Revenue, cost and margin of each workflow the principal's account publishes as a
    service, in one UTC month (``YYYY-MM``): sums of the usage ledger (see
    :mod:`fluxo_core.storage.margin`). An account admin's report: it shows what callers paid."""
    require(principal, Role.ACCOUNT_ADMIN, "read the margin of published workflows")
    start, end = month_bounds(parse_period(period, "query.period"))
    names = []
    for row in await resources.list("Service", None):
        published = published_of(row, row.account_id)
        if published is not None and published.account == principal.account_id:
            names.append(published.name)
    lines = await MarginStore(resources.db).lines(principal.account_id, names, start, end)
    return {
        "period": period,
        "items": [
            {
                "service": line.service,
                "currency": line.currency,
                "calls": line.calls,
                "revenue": money_text(line.revenue_micros),
                "cost": money_text(line.cost_micros),
                "margin": money_text(line.margin_micros),
            }
            for line in lines
        ],
    }
