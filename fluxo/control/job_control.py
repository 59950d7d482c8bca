"""Job control: resume a job a block stopped, retry a failed one, pause and resume a workflow.

**Resume** (``POST /v1/jobs/{id}/resume``, ``fluxo jobs resume``): a ``blocked`` job, once no
block holds it any more, continues from the step the block stopped it at. **Retry**
(``POST /v1/jobs/{id}/retry``, ``fluxo jobs retry``): a ``failed`` job continues from its failed
step, with the input that step stored. Either way the job is set running again in the
transaction that sends its engine the order, and nothing that finished runs (or is billed) twice:

- on the step engine the order is a ``resume``/``retry`` message on its own queue; the engine
  calls the stopped step again as its next attempt and applies what its other steps did
  meanwhile (:meth:`engines.step._run.JobRun.revive`);
- on Node-RED and Argo the job runs again from its start (a new run of the same job id): every
  call a finished step made has the same packet id as before, so the gateway answers it from
  its stored result instead of calling the service (the call id is the packet id, and a packet
  id seen before is the same call), and only the stopped step and those after it run. A retry
  first supersedes the failed call of each step key the failure stopped (:func:`retry_call_id`
  names its next attempt, stored as the call's ``retry_id``): when the new run sends that
  packet again, the gateway makes the next attempt under the retry id, once however often the
  packet comes, and answers with it. A step's earlier attempts stay answered by their stored
  failures, so the step's own ``retry`` budget is spent as before and the retry adds one
  attempt, as on the step engine; a second retry supersedes that attempt in turn. A resume
  likewise supersedes a call the worker refused for the block (the gateway had admitted it
  just before the block came): its stored refusal would block the new run again.

**Pause** (``POST /v1/workflows/{name}/pause``): new jobs of the workflow are created ``queued``
and not started (triggers' jobs too); **resume** starts them, oldest first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from fluxo.control.blocks import BlockIndex
from fluxo.control.jobs import JobRecord, JobService, split_workflow_ref
from fluxo.control.policy import Admission
from fluxo.control.remote import is_remote
from fluxo_core.errors import (
    BlockedError,
    ConflictError,
    PermissionDeniedError,
)
from fluxo_core.ir import NativeStep, ServiceStep, new_packet_id
from fluxo_core.storage import CallStore, Principal, Transaction
from fluxo_core.storage.blocks import BlockStore, PauseRow
from fluxo_core.storage.job_control import JobControlStore
from fluxo_core.storage.jobs import JobRow, job_channel
from service_runtime import CallRequest
from service_runtime.transports import OutgoingMessage

__all__ = ["JobControl", "WorkflowPause", "retry_call_id"]

BLOCKED = BlockedError.code
# Admission's reason for refusing a call of a job that had failed (fluxo.control.policy).
JOB_FAILED = "job_failed"
MAX_CALL_ID_LENGTH = 128  # the calls table's id column (and a packet id's limit)
_RETRY_SUFFIX = re.compile(r"^(?P<base>.+)@r(?P<n>[0-9]+)$")


def retry_call_id(call_id: str) -> str:
    """The id of the next attempt of a failed call a job retry supersedes: ``<id>@r1``, and
    ``@r2`` for the attempt after that one. Deterministic, so however many gateways see the
    packet again they make the same call. An id too long for a suffix is shortened to a digest
    of itself (a Node-RED or Argo packet id is far shorter)."""
    match = _RETRY_SUFFIX.match(call_id)
    base, attempt = (match["base"], int(match["n"]) + 1) if match else (call_id, 1)
    retry_id = f"{base}@r{attempt}"
    if len(retry_id) > MAX_CALL_ID_LENGTH:
        digest = hashlib.blake2b(base.encode(), digest_size=16).hexdigest()
        retry_id = f"{digest}@r{attempt}"
    return retry_id


class WorkflowPause:
    """Whether a workflow is paused, as the API shows it."""

    def __init__(self, workflow: str, pause: PauseRow | None, started: int = 0) -> None:
        self.workflow = workflow
        self.pause = pause
        self.started = started

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"workflow": self.workflow, "paused": self.pause is not None}
        if self.pause is not None:
            body.update(paused_by=self.pause.paused_by, paused_at=self.pause.paused_at)
        else:
            body["jobs_started"] = self.started
        return body


class JobControl:
    def __init__(
        self, jobs: JobService, blocks: BlockIndex, *, admission: Admission | None = None
    ) -> None:
        self.jobs = jobs
        self.blocks = blocks
        self.admission = admission
        self.db = jobs.db
        self.store = JobControlStore(jobs.db, clock=jobs.clock)
        self.pauses = BlockStore(jobs.db, clock=jobs.clock)
        self.calls = CallStore(jobs.db)

    # -- resume and retry -------------------------------------------------------------------------

    async def resume(self, principal: Principal, job_id: str) -> JobRecord:
        """Continue a ``blocked`` job from its blocked step.

        Raises:
            NotFoundError: no such job in the account.
            ConflictError: the job is not blocked, or a block still holds it (named).
        """
        _user_only(principal, "resume jobs")
        row = await self.jobs.store.job(job_id, account_id=principal.account_id)
        if row.status != "blocked":
            raise ConflictError(
                f"job {job_id} is {row.status}, not blocked; only a blocked job resumes"
                + (" (retry a failed one: fluxo jobs retry)" if row.status == "failed" else ""),
                job_id=job_id,
            )
        error = orjson.loads(row.error) if row.error else {}
        await self._check_unblocked(row, error)
        retries = None
        if is_remote(self.jobs.registry.get(row.engine)):
            retries = await self._calls_to_make_again(row, failed_steps=False)
        await self._reopen(row, "blocked", {"kind": "resume"}, retries=retries)
        return await self.jobs.get(principal, job_id, steps=False)

    async def retry(self, principal: Principal, job_id: str) -> JobRecord:
        """Continue a ``failed`` job from its failed step, with the input that step stored.

        Raises:
            ConflictError: the job is not failed, or it failed outside a service step (its
                engine could not start it, a transform failed): there is no call to make again.
        """
        _user_only(principal, "retry jobs")
        row = await self.jobs.store.job(job_id, account_id=principal.account_id)
        if row.status != "failed":
            raise ConflictError(
                f"job {job_id} is {row.status}, not failed; only a failed job is retried"
                + (" (resume a blocked one: fluxo jobs resume)" if row.status == "blocked" else ""),
                job_id=job_id,
            )
        error = orjson.loads(row.error) if row.error else {}
        step_id, key = error.get("step"), error.get("key")
        applied = await self.jobs.workflows.get(row.account_id, row.workflow, row.version)
        step = applied.workflow.spec.steps_by_id().get(step_id or "")
        if not isinstance(step, ServiceStep | NativeStep):
            where = f"at step {step_id!r}" if step_id else "before any step ran"
            raise ConflictError(
                f"job {job_id} failed {where}, not in a service call: there is no call to make "
                "again; fix the cause and create a new job",
                job_id=job_id,
            )
        engine = self.jobs.registry.get(row.engine)
        if is_remote(engine):
            # Nothing to supersede is fine too: a call the gateway refused (a quota) left no
            # row and is made anew, one that outlasted its step's timeout answers its result.
            retries = await self._calls_to_make_again(row, failed_steps=True)
            await self._reopen(row, "failed", {"kind": "retry"}, retries=retries)
            return await self.jobs.get(principal, job_id, steps=False)
        if not key:
            raise ConflictError(
                f"job {job_id} failed at step {step_id!r} but its error names no step execution "
                "(it failed under an earlier Fluxo); create a new job",
                job_id=job_id,
            )
        await self._reopen(row, "failed", {"kind": "retry", "failed_key": key})
        return await self.jobs.get(principal, job_id, steps=False)

    async def _calls_to_make_again(self, row: JobRow, *, failed_steps: bool) -> dict[str, str]:
        """The calls the new run of a remote job makes again, each mapped to its retry id.

        Of the latest call of each step key, those that failed: because the worker refused
        them (a block placed after the gateway admitted the call, or the job had failed
        meanwhile: they never ran) and, with ``failed_steps`` (a retry), because the service
        failed at a step that does not handle errors, which stopped the job. A failure a
        step's ``on_error`` handled stays: the new run goes past it as the first did.
        """
        applied = await self.jobs.workflows.get(row.account_id, row.workflow, row.version)
        steps = applied.workflow.spec.steps_by_id()
        retries = {}
        for call in await self.jobs.store.latest_calls(row.id, account_id=row.account_id):
            if call.status != "failed":
                continue
            error = orjson.loads(call.error) if call.error else {}
            reason = (error.get("context") or {}).get("reason")
            refused = error.get("code") == BLOCKED or reason == JOB_FAILED
            handled = getattr(steps.get(call.step_id or ""), "on_error", "fail") != "fail"
            if refused or (failed_steps and not handled):
                retries[call.id] = retry_call_id(call.id)
        return retries

    async def _check_unblocked(self, row: JobRow, error: dict[str, Any]) -> None:
        """No block may hold the job any more: neither the one that stopped it nor another."""
        self.blocks.invalidate()
        await self.blocks.refresh()
        block_id = error.get("block_id")
        request = CallRequest(
            account_id=row.account_id,
            user_id=row.user_id,
            service=error.get("service") or f"workflow:{row.workflow}",
            version="",
            job_id=row.id,
            step_id=error.get("step"),
            workflow=f"{row.workflow}@{row.version}",
        )
        holding = self.blocks.match(request)
        if holding is None and block_id:
            live = [b for b in await self.blocks.store.live() if b.id == block_id]
            holding = next((b for b in live if b.active_at(self.jobs.clock.time())), None)
        if holding is not None:
            raise ConflictError(
                f"job {row.id} is still blocked by block {holding.id} ({holding.kind} "
                f"{holding.target!r}: {holding.reason}); lift it first "
                f"(fluxo block lift {holding.id})",
                job_id=row.id,
                block_id=holding.id,
            )

    async def _reopen(
        self,
        row: JobRow,
        was: str,
        order: dict[str, Any],
        *,
        retries: Mapping[str, str] | None = None,
    ) -> None:
        """Set the job going again and send its engine the order, in one transaction;
        ``retries``: failed calls the new run makes again (see :meth:`_calls_to_make_again`)."""
        engine = self.jobs.registry.get(row.engine)
        remote = is_remote(engine)
        rerun = new_packet_id()
        # A remote job runs again from its start, as a new run of the same job (see the module
        # docstring); the step engine continues it from its open steps.
        start = {"kind": "start", "job_id": row.id, "rerun": rerun}
        body = start if remote else {**order, "job_id": row.id}
        message = OutgoingMessage(
            queue=f"engine.{row.engine}",
            message_id=f"{order['kind']}:{row.id}:{rerun}",
            body=orjson.dumps(body),
        )

        def run(tx: Transaction) -> None:
            status = "queued" if remote else "running"
            if not self.store.reopen(tx, row.id, was, status=status):
                raise ConflictError(
                    f"job {row.id} is no longer {was} (resumed or retried meanwhile)",
                    job_id=row.id,
                )
            if retries:
                self.calls.supersede(tx, retries)
            self.jobs.runtime.transport.enqueue(tx, [message])
            tx.notify(job_channel(row.id))

        await self.db.transact(run)
        if self.admission is not None:
            # This process's admission may hold the job as failed: its next call must pass.
            # (Another process's learns within its cache time.)
            self.admission.forget_job(row.id)

    # -- jobs of remote engines stopped at the gateway ------------------------------------------

    async def engine_call_blocked(
        self, job_id: str, step: str | None, error: dict[str, Any]
    ) -> None:
        """A block refused a call an external engine made for job ``job_id`` (``error``: the
        refusal as the API answers it): the job ends ``blocked``. The engine's report of the
        failure it sees changes nothing (see :meth:`RemoteJobs.report`)."""
        context = error.get("context") or {}
        detail = {
            "code": BLOCKED,
            "message": error.get("message"),
            "block_id": context.get("block_id"),
            "block_reason": context.get("block_reason"),
            "target": context.get("target"),
            "service": context.get("service"),
            "step": step,
        }

        def run(tx: Transaction) -> None:
            if self.store.block(tx, job_id, orjson.dumps(detail).decode()):
                tx.notify(job_channel(job_id))

        await self.db.transact(run)

    # -- paused workflows -------------------------------------------------------------------------

    async def pause_workflow(self, principal: Principal, workflow: str) -> WorkflowPause:
        _user_only(principal, "pause workflows")
        name, _ = split_workflow_ref(workflow)
        await self.jobs.workflows.get(principal.account_id, name, None)  # 404 if not there
        pause = await self.pauses.pause(
            principal.account_id, name, paused_by=f"{principal.account_id}/{principal.user_id}"
        )
        return WorkflowPause(name, pause)

    async def resume_workflow(self, principal: Principal, workflow: str) -> WorkflowPause:
        """Unpause a workflow and start its queued jobs (a workflow not paused: nothing)."""
        _user_only(principal, "resume workflows")
        name, _ = split_workflow_ref(workflow)
        await self.jobs.workflows.get(principal.account_id, name, None)
        account = principal.account_id

        def run(tx: Transaction) -> int:
            self.pauses.unpause(tx, account, name)
            queued = self.store.queued_jobs(tx, account, name)
            self.jobs.runtime.transport.enqueue(
                tx,
                [
                    OutgoingMessage(
                        queue=f"engine.{engine}",
                        message_id=f"start:{job_id}",
                        body=orjson.dumps({"kind": "start", "job_id": job_id}),
                    )
                    for job_id, engine in queued
                ],
            )
            return len(queued)

        started = await self.db.transact(run)
        return WorkflowPause(name, None, started)

    async def workflow_pause(self, principal: Principal, workflow: str) -> WorkflowPause:
        _user_only(principal, "read workflows")
        name, _ = split_workflow_ref(workflow)
        await self.jobs.workflows.get(principal.account_id, name, None)
        pause = await self.db.read(
            lambda conn: self.pauses.pause_on(conn, principal.account_id, name)
        )
        return WorkflowPause(name, pause)


def _user_only(principal: Principal, what: str) -> None:
    if principal.engine is not None:
        raise PermissionDeniedError(f"an engine's token may not {what}; use a user's token")
