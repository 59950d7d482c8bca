"""Jobs on engines that run outside Fluxo (Node-RED, Argo): start, report back, observe.

Creating a job writes its row and a ``start`` message on ``engine.<name>`` in one transaction,
whatever the engine. The step engine consumes its own queue; for an external engine the
:class:`RemoteJobs` runner does: it deploys the job's workflow version on the engine (idempotent,
remembered per version), marks the job ``running``, starts the run (idempotent by job id on both
engines) and records the engine's run id. ``running`` comes first because a run may end, and
report its end, before the start call returns. A crash before the record re-delivers the message
and the second start is a no-op, so a job is started once. A start that fails and is retried puts
the job back to ``queued``; one that keeps failing ends the job ``failed`` with the engine's error
instead of leaving it queued forever.

While the run goes on, every service call the engine makes passes the gateway with an engine
token (see :meth:`RemoteJobs.principal_for_call`): the call runs as the job's own account, is
metered and admitted like any other, and is refused once the job has ended, which is how a
cancel or a block stops a run Fluxo does not execute itself. The engine reports the end
(:meth:`RemoteJobs.report`); the job's steps are read from its gateway calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.engine import FINAL_PHASES, Engine, RunHandle, StartRequest
from fluxo_core.errors import (
    ConflictError,
    FluxoError,
    PermissionDeniedError,
    ValidationError,
)
from fluxo_core.ir import Packet, ServiceStep, SwitchStep
from fluxo_core.storage import Database, Principal, Transaction
from fluxo_core.storage.jobs import ACTIVE, JobRow, JobStore, job_channel
from fluxo_core.storage.workflows import AppliedWorkflow, WorkflowStore
from service_runtime import ServiceRuntime
from service_runtime.interceptors import JobSpan
from service_runtime.transports import Delivery

__all__ = ["EngineJob", "RemoteJobs", "is_remote"]

log = logging.getLogger(__name__)

MAX_START_BACKOFF_S = 60.0


def _result_steps(spec: Any) -> list[str]:
    """The steps whose output may become the job result: ``spec.output``, else every step that
    can hand its packet to no other (no ``next``; a switch with a case or default leading
    nowhere)."""
    if spec.output:
        return [spec.output]
    ends = []
    for step in spec.steps:
        if isinstance(step, SwitchStep):
            if not step.default or any(not case.next for case in step.cases):
                ends.append(step.id)
        elif not getattr(step, "next", []):
            ends.append(step.id)
    return ends


def _canonical(value: Any) -> bytes:
    """One spelling per JSON value: sorted keys, and integral floats as integers (a payload
    that passed through JavaScript reads ``3`` where Python wrote ``3.0``)."""
    return orjson.dumps(_integral(value), option=orjson.OPT_SORT_KEYS)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def is_remote(engine: Engine) -> bool:
    """Whether the engine runs its jobs on a server of its own (its declared locality): then
    this runner starts them, and their steps are the calls they made through the gateway."""
    return engine.capabilities.locality == "external"


@dataclass(frozen=True)
class EngineJob:
    """The live job an engine's call is for.

    Attributes:
        principal: the job's account and user: who the call runs as and who pays.
        workflow: the job's ``name@version`` (what admission checks blocks against).
        input: the job's stored input packet (JSON), which ``fluxo-payload-ref`` may name.
    """

    id: str
    principal: Principal
    workflow: str
    input: bytes


class RemoteJobs:
    """Starts, ends and observes the jobs of external engines.

    Args:
        engines: the external engines, by name.
        batch_size: start messages claimed at once; they are started concurrently.
        lease_s: how long a claimed start stays hidden (must outlast a deploy and a start).
        clock: what the jobs' start and end times read.
    """

    def __init__(
        self,
        runtime: ServiceRuntime,
        workflows: WorkflowStore,
        engines: Mapping[str, Engine],
        *,
        batch_size: int = 20,
        lease_s: float = 120.0,
        poll_interval_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db: Database = runtime.db
        self.runtime = runtime
        self.workflows = workflows
        self.engines = dict(engines)
        self.store = JobStore(runtime.db, clock=clock)
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self._deployed: set[tuple[str, str]] = set()  # (engine, account/name@version)
        # Told of every error an engine answers (engine, operation, error): the metrics.
        self.on_engine_error: Callable[[str, str, FluxoError], None] | None = None
        self._queues = [f"engine.{name}" for name in sorted(self.engines)]

    # -- starting ------------------------------------------------------------------------------

    async def deploy(self, engine: Engine, applied: AppliedWorkflow) -> None:
        """Deploy a stored version on its engine, once per process (the engines' deploys are
        idempotent, so another process deploying it too changes nothing)."""
        account = applied.workflow.metadata.account
        key = (engine.name, f"{account}/{applied.ref}")
        if key not in self._deployed:
            await engine.deploy(applied.workflow)
            self._deployed.add(key)

    async def run(self, stop: asyncio.Event) -> None:
        """Start queued jobs until ``stop``; sleeps on queue wake-ups when idle."""
        if not self._queues:
            return
        with await self.db.subscribe([f"q:{q}" for q in self._queues]) as sub:
            while not stop.is_set():
                sub.clear()
                try:
                    done = await self.run_once()
                except FluxoError as exc:
                    log.warning("starting remote jobs failed: %s", exc.message)
                    await asyncio.sleep(0.5)
                    continue
                if done < self.batch_size and not stop.is_set():
                    await sub.wait(self.poll_interval_s)

    async def run_once(self) -> int:
        deliveries = await self.runtime.transport.claim(
            self._queues, limit=self.batch_size, lease_s=self.lease_s
        )
        await asyncio.gather(*(self._start(d) for d in deliveries))
        return len(deliveries)

    async def _start(self, delivery: Delivery) -> None:
        transport = self.runtime.transport
        try:
            body = orjson.loads(delivery.body)
            job_id = str(body["job_id"])
            # A job resumed or retried runs again as a new run (fluxo.control.job_control).
            rerun = str(body["rerun"]) if body.get("rerun") else None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.db.transact(
                lambda tx: transport.dead_letter(tx, delivery, error="not a start message")
            )
            return
        engine_name = delivery.queue.removeprefix("engine.")
        try:
            row = await self.store.job(job_id)
            if row.status not in ACTIVE:  # cancelled (or ended) before it started
                await self.db.transact(lambda tx: transport.ack(tx, [delivery]))
                return
            if row.status == "queued":
                # Running BEFORE the start call: a run that ends before the call returns (a flow
                # without service calls takes milliseconds) reports its end to a running job.
                # A crash after this re-delivers the message, and the start below is repeated
                # (idempotent by job id on every engine): a running job's message still starts it.
                def starting(tx: Transaction) -> None:
                    if self.store.mark_starting(tx, job_id):
                        tx.notify(job_channel(job_id))

                await self.db.transact(starting)
            applied = await self.workflows.get(row.account_id, row.workflow, row.version)
            engine = self.engines[engine_name]
            await self.deploy(engine, applied)
            packet = Packet.model_validate_json(row.input)
            if rerun is not None:
                # The stopped run first forgets the job (a no-op where it ended already).
                stopped = RunHandle(engine=engine_name, job_id=job_id, run_id=row.run_id or job_id)
                await engine.cancel(stopped)
            handle = await engine.start(
                StartRequest(
                    job_id=job_id,
                    workflow=applied.ref,
                    input=packet,
                    account=row.account_id,
                    rerun=rerun,
                )
            )
        except FluxoError as exc:
            self._engine_error(engine_name, "start", exc)
            await self._start_failed(delivery, job_id, engine_name, exc)
            return

        def started(tx: Transaction) -> None:
            self.store.record_run(tx, job_id, handle.run_id)
            transport.ack(tx, [delivery])

        await self.db.transact(started)

    async def _start_failed(
        self, delivery: Delivery, job_id: str, engine_name: str, exc: FluxoError
    ) -> None:
        transport = self.runtime.transport
        if exc.retryable and delivery.attempt < delivery.max_attempts:
            delay = min(2.0**delivery.attempt, MAX_START_BACKOFF_S)
            log.warning(
                "job %s: starting on %s failed (attempt %d, retry in %.0f s): %s",
                job_id,
                engine_name,
                delivery.attempt,
                delay,
                exc.message,
            )

            def retry(tx: Transaction) -> None:
                self.store.unmark_starting(tx, job_id)
                transport.retry(tx, delivery, delay_s=delay, error=exc.message)

            await self.db.transact(retry)
            return
        log.error("job %s: could not start on %s: %s", job_id, engine_name, exc.message)
        error = {
            "code": "engine_start_failed",
            "message": f"the {engine_name} engine could not start the job: {exc.message}",
            "engine": engine_name,
        }

        def failed(tx: Transaction) -> None:
            if self.store.finish(tx, job_id, "failed", error=orjson.dumps(error).decode()):
                tx.notify(job_channel(job_id))
            transport.ack(tx, [delivery])

        await self.db.transact(failed)

    # -- calls and reports from the engine -------------------------------------------------------

    async def job_for_engine(self, principal: Principal, job_id: Any) -> JobRow:
        """The job row an engine token may act for: a job of its own account and engine.

        A job of another account is not found (404, the same answer as for no job at all), so
        a token learns nothing about other accounts. One engine token therefore serves one
        account; a Node-RED shared by several accounts holds one token per account (see
        ``translators.nodered``: each tab sends the token of its workflow's account).

        Raises:
            ValidationError: no ``job_id``.
            NotFoundError: no job of that id in the token's account.
            PermissionDeniedError: a job of the token's account that another engine runs.
        """
        if not isinstance(job_id, str) or not job_id:
            raise ValidationError(
                "an engine token acts for one job: the packet needs the job's job_id",
                problems=[("body.job_id", "missing")],
            )
        row = await self.store.job(job_id, account_id=principal.account_id)
        if row.engine != principal.engine or row.engine not in self.engines:
            # The step engine's jobs run inside Fluxo: no token writes their steps from outside.
            raise PermissionDeniedError(
                f"job {job_id} runs on engine {row.engine!r}, not {principal.engine!r}; "
                "use that engine's token"
            )
        return row

    async def principal_for_call(self, principal: Principal, job_id: Any) -> Principal:
        """Who a call an engine makes for ``job_id`` runs as: the job's account and user.

        Raises:
            NotFoundError: no job of that id in the token's account.
            PermissionDeniedError: not a job of this engine, or the job has ended (cancelled,
                failed): its remaining calls are refused, which stops the run.
        """
        return (await self.live_job(principal, job_id)).principal

    async def live_job(self, principal: Principal, job_id: Any) -> EngineJob:
        """The job a call an engine makes is for: of its account and engine, not ended."""
        row = await self.job_for_engine(principal, job_id)
        if row.status in FINAL_PHASES or row.status == "blocked":
            raise PermissionDeniedError(
                f"job {job_id} is {row.status}; the gateway refuses its further calls",
                job_id=job_id,
            )
        return EngineJob(
            id=row.id,
            principal=Principal(account_id=row.account_id, user_id=row.user_id),
            workflow=f"{row.workflow}@{row.version}",
            input=row.input,
        )

    async def report(self, principal: Principal, job_id: str, event: Any) -> bool:
        """Apply an engine's report of a job's end; True if it ended the job now.

        Two forms: Node-RED's ``{status: succeeded|failed, result | error}`` carries the
        outcome, and a ``succeeded`` result is checked against the job's recorded gateway
        calls (:meth:`_check_result`); Argo's ``{event: finished, run}`` is a signal to read
        the outcome from the engine. Either way a forged body cannot set a result Fluxo did
        not see produced. A repeated report, or one for a job already ended (cancelled
        meanwhile), changes nothing.
        """
        row = await self.job_for_engine(principal, job_id)
        if not isinstance(event, dict):
            raise ValidationError(
                "an engine event is a JSON object", problems=[("body", "not an object")]
            )
        if event.get("event") == "finished":
            engine = self.engines[row.engine]
            run_id = row.run_id or str(event.get("run") or job_id)
            status = await engine.status(RunHandle(engine=row.engine, job_id=job_id, run_id=run_id))
            if status.phase not in FINAL_PHASES:
                return False  # the engine does not see it ended yet: its final report follows
            phase: str = status.phase
            result, error = status.result, status.error
        else:
            reported = event.get("status")
            if reported not in ("succeeded", "failed"):
                raise ValidationError(
                    f"engine event status {reported!r} is not 'succeeded' or 'failed'",
                    problems=[("body.status", "expected succeeded or failed")],
                )
            phase = str(reported)
            result, error = event.get("result"), event.get("error")
            if phase == "failed" and not isinstance(error, dict):
                raise ValidationError(
                    "a failed job's event needs an error object",
                    problems=[("body.error", "expected an object")],
                )
            if phase == "succeeded" and row.status not in FINAL_PHASES:
                await self._check_result(row, result)
        if phase == "failed" and isinstance(error, dict) and error.get("code") == "blocked":
            # The gateway set the job blocked when it refused the call; a stopped run's report
            # arriving after the job was resumed must not fail its new run.
            return False
        results = None
        if phase == "succeeded":
            results = orjson.dumps(result if isinstance(result, list) else [result])
        error_text = orjson.dumps(error).decode() if phase != "succeeded" and error else None

        def finish(tx: Transaction) -> bool:
            ended = self.store.finish(tx, job_id, phase, result=results, error=error_text)
            if ended:
                tx.notify(job_channel(job_id))
                self._span_ended(tx, row, phase, error)
            return ended

        return await self.db.transact(finish)

    def _engine_error(self, engine: str, operation: str, error: FluxoError) -> None:
        if self.on_engine_error is not None:
            self.on_engine_error(engine, operation, error)

    def _span_ended(self, tx: Transaction, row: JobRow, status: str, error: Any) -> None:
        """Export the span of a job that ``tx`` ends (when spans are exported at all)."""
        tracing = self.runtime.tracing
        if tracing is None or not tracing.exports_jobs:
            return
        packet = Packet.model_validate_json(row.input)
        code = error.get("code") if isinstance(error, dict) else None
        tracing.jobs_ended(
            tx,
            [
                JobSpan(
                    trace_id=packet.trace_id,
                    parent_id=packet.parent_id,
                    job_id=row.id,
                    workflow=f"{row.workflow}@{row.version}",
                    engine=row.engine,
                    account_id=row.account_id,
                    status=status,
                    start=row.created_at,
                    duration_s=max(0.0, self.store.clock.time() - row.created_at),
                    error=(code if isinstance(code, str) else "error") if error else None,
                )
            ],
        )

    async def _check_result(self, row: JobRow, result: Any) -> None:
        """A reported result must be what the job's recorded calls produced.

        The flow's result is the payloads that reached the workflow's result steps
        (``spec.output``, else the steps without ``next``). Where those are service steps,
        Fluxo holds what they produced: the outputs of the latest call of each step key (its
        input, for a failed call the step continues past). The report must carry exactly those
        payloads (in any order); anything else is refused and the job stays as it was. A result
        step that runs inside the engine (a transform, a switch) leaves nothing recorded to
        compare with: such a result is taken as the engine computed it.

        Raises:
            ConflictError: the result differs from the recorded outputs, or the job has not
                started on its engine.
        """
        if row.status != "running":
            raise ConflictError(
                f"job {row.id} is {row.status}, not running on its engine; it cannot have "
                "succeeded",
                field="body.status",
            )
        applied = await self.workflows.get(row.account_id, row.workflow, row.version)
        spec = applied.workflow.spec
        steps = spec.steps_by_id()
        ends = _result_steps(spec)
        if not all(isinstance(steps[s], ServiceStep) for s in ends):
            return
        produced: Counter[bytes] = Counter()
        for call in await self.store.latest_calls(row.id, account_id=row.account_id):
            step = steps.get(call.step_id or "")
            if call.step_id not in ends or not isinstance(step, ServiceStep):
                continue
            if call.status == "succeeded":
                for packet in orjson.loads(call.result or b"[]"):
                    produced[_canonical(packet.get("payload"))] += 1
            elif step.on_error == "continue":
                produced[_canonical(orjson.loads(call.request).get("payload"))] += 1
        reported = result if isinstance(result, list) else [result]
        if Counter(_canonical(p) for p in reported) != produced:
            raise ConflictError(
                f"the result reported for job {row.id} is not what its recorded calls of "
                f"step(s) {', '.join(ends)} produced; the job stays {row.status}",
                field="body.result",
                job_id=row.id,
            )

    async def cancel(self, row: JobRow) -> None:
        """Cancel a job on its engine: first in Fluxo (its calls are refused from now on), then
        on the engine, best effort (an unreachable engine cannot run the job on anyway)."""

        def mark(tx: Transaction) -> bool:
            cancelled = self.store.cancel(tx, row.id)
            if cancelled:
                tx.notify(job_channel(row.id))
            return cancelled

        if not await self.db.transact(mark):
            return
        engine = self.engines[row.engine]
        handle = RunHandle(engine=row.engine, job_id=row.id, run_id=row.run_id or row.id)
        try:
            await engine.cancel(handle)
        except FluxoError as exc:
            self._engine_error(row.engine, "cancel", exc)
            log.warning(
                "job %s cancelled in Fluxo; %s could not stop its run: %s",
                row.id,
                row.engine,
                exc.message,
            )
