"""Workflows as services: a published workflow answers calls like any Python service.

A ``kind: Service`` resource with ``spec.workflow`` publishes a workflow of the publisher's
account under a service name. Here it becomes a :class:`~service_runtime.sdk.Service` whose
handler starts a child job of that workflow (on the workflow's own engine, in the PUBLISHER's
account) and answers the call with the child's result; the runtime publishes it to the catalog
and runs it like any service, so a caller reaches it through the gateway, the input queue and
``POST /v1/services/{name}/calls``, and the worker's Metering bills the CALLER the service's
price. The child's own calls are made by the child job, so they are metered to the publisher.

Durability: the child job is created with an idempotency key derived from the call id, so a
call delivered again (a worker crashed) finds the same child and waits for it instead of
starting another. The handler is ``async``: waiting for the child holds no thread, only a
subscription to the job's channel.

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
import time
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
from fluxo_core.ir import Packet, ServiceStep, Workflow, WorkflowCallStep
from fluxo_core.storage import Principal, Role, ServiceStore
from fluxo_core.storage.ledger import month_bounds
from fluxo_core.storage.margin import MarginStore
from fluxo_core.storage.resources import ResourceRow, ResourceStore
from service_runtime import AdmitRequest, CallRequest
from service_runtime.interceptors import Interceptor
from service_runtime.sdk import Call, Outputs, Price, RetryPolicy, Service
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
# A child job may run long; the caller's step timeout (fluxo-timeout-s) shortens it.
CHILD_TIMEOUT_S = 3600.0
STOP_GRACE_S = 2.0
CALLER_CHECK_S = 1.0  # how often a waiting call asks whether its caller was blocked


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
        workers: concurrent worker loops for workflow services (each waits for its batch's
            children, so several keep one long child from holding the others back).
    """

    def __init__(
        self,
        jobs: JobService,
        resources: ResourceStore,
        *,
        admission: Interceptor | None = None,
        workers: int = 4,
    ) -> None:
        self.jobs = jobs
        # Asked while a child runs: a block of the caller stops its child.
        self.admission = admission
        self.runtime = jobs.runtime
        self.resources = resources
        self.workers = workers
        self.published: dict[str, PublishedWorkflow] = {}
        self._loops: list[tuple[Worker, asyncio.Task[None]]] = []
        self._retired: list[tuple[Worker, asyncio.Task[None]]] = []
        self._stop = asyncio.Event()
        self._running = False
        jobs.workflow_checks.append(self.check_workflow)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish every stored workflow service and start running them."""
        self._running = True
        self._stop.clear()
        for row in await self.resources.list("Service", None):
            published = published_of(row, row.account_id)
            if published is not None:
                with contextlib.suppress(NotFoundError):  # its workflow was deleted since
                    self.published[published.name] = await self._with_schemas(published)
        await self._restart()

    async def stop(self) -> None:
        self._running = False
        self._stop.set()
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
        if self.published.pop(name, None) is not None and self._running:
            await self._restart()

    # -- reporting ----------------------------------------------------------------------------

    async def margin(self, principal: Principal, period: str) -> dict[str, Any]:
        """The margin report of the principal's account (see :func:`margin_report`)."""
        return await margin_report(self.resources, principal, period)

    async def publish(self, published: PublishedWorkflow) -> None:
        """Make ``published`` callable: in the catalog, and run by this process."""
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
        async def handler(packet: Packet, call: Call | None = None) -> Any:
            # The worker passes the call (the handler declares it); a bare invocation has none.
            return await self._run_child(published.name, packet, call or Call.of(packet))

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
            timeout_s=CHILD_TIMEOUT_S,
        )

    # -- running ------------------------------------------------------------------------------

    async def _run_child(self, name: str, packet: Packet, call: Call) -> Any:
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
        except BlockedError as exc:
            raise _unavailable(name) from exc
        except AdmissionDeniedError as exc:
            raise _unavailable(name) from exc
        record = child
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not record.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceError(
                    f"service {name!r}: its job did not end in time", retryable=False, service=name
                )
            record = await self.jobs.wait(publisher, child.id, min(left, CALLER_CHECK_S))
            if not record.done:
                refusal = await self._caller_refusal(packet, name)
                if refusal is not None:
                    # The caller was blocked (or its job ended) meanwhile: its child stops
                    # too, and the call ends as a refused call does (a blocked step resumes
                    # with a new call, so a new child).
                    await self.jobs.cancel(publisher, child.id)
                    raise refusal
        if record.status == "succeeded":
            # The stored results, not the record's: a record masks credential-looking values.
            row = await self.jobs.store.job(child.id, account_id=published.account)
            results = orjson.loads(row.result) if row.result else []
            if len(results) == 1:
                return results[0]
            return Outputs(results) if results else None
        if record.status == "blocked":
            raise _unavailable(name)
        error = record.error or {}
        raise ServiceError(
            f"service {name!r} failed: its job {child.id} {record.status}"
            + (f" at step {error.get('step')!r}" if error.get("step") else "")
            + (f": {error.get('message')}" if error.get("message") else ""),
            retryable=False,
            service=name,
            child_job=child.id,
            child_step=error.get("step"),
            cause=error.get("code") or record.status,
        )

    async def _caller_refusal(self, packet: Packet, name: str) -> FluxoError | None:
        """Why the caller's call may no longer run (a block of its account, workflow, user
        or of this service; its job cancelled), asked of admission as the worker asks it."""
        if self.admission is None:
            return None
        request = AdmitRequest("worker", [CallRequest.for_call(packet, name, SERVICE_VERSION)])
        await self.admission.admit(request)
        return request.refusals[0]

    async def _restart(self) -> None:
        """Run the current set of workflow services: new worker loops, the old ones stop after
        the batch they are in (their children keep running and are answered by them)."""
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
                    lease_s=30.0,
                )
                stop = asyncio.Event()
                task = asyncio.create_task(
                    worker.run(stop, idle_timeout_s=self.runtime.poll_interval_s),
                    name=f"fluxo-workflow-services-{i}",
                )
                self._loops.append((worker, task))
        # Not awaited: an old loop may be waiting for a child job; it stops after it.
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
        # Idle loops stop at once; one waiting for a child job is cancelled after a grace
        # period: its message's lease runs out and the next process waits for the same child.
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
