"""The state machine of one job, applied inside one database transaction.

Packets flow as *tokens*: a payload arriving at a step, with the fan-out frames it sits in. A service
step turns a token into a call (recorded through the gateway in the same transaction, so the call
exists iff the transition committed); switch, transform, split and join run right here; a delay or
a retry becomes a delayed message to the engine's own queue. ``jobs.active`` counts tokens in
flight (calls and timers); the job succeeds when it reaches zero.

Keys name each execution of a step within a job, stably (re-delivered messages recompute the same
keys): ``reserve[2]`` is the third item of a fan-out, ``mail<review`` the visit of a step with
several predecessors that came from ``review``, ``ship~1`` the second output of a 1 -> N step;
the steps after ``mail<review`` inherit its origin (``send<review``). The rule is
:mod:`fluxo_core.ir.step_keys`. A frame of a fan-out holds the origin of the execution that fanned
out, when it has one, so that its join gathers that execution's branches only.

A native Node-RED step is a call of the ``nodered-node`` service with ``{node, msg}``; each
message it sends comes back tagged with its output port and goes to that port's steps only. The
token's payload is ``msg.payload``; the message's other properties ride along in the step
context (``msg``), so every step passes them on as Node-RED does (see
:mod:`engines.step._nodered`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from engines.step._context import MAX_CONTEXT_RERUNS, READ_KEY, RERUNS_KEY, StepContext
from engines.step._files import FILES_READ_KEY, StepFiles, is_file_step
from engines.step._loopback import (
    MAX_GENERATIONS,
    Spawn,
    generation,
    is_network_in,
    is_network_out,
    loopback_deliveries,
)
from engines.step._nodered import (
    CONTENT_TYPE_HEADER,
    NODERED_MSG_CONTENT_TYPE,
    node_message,
    token_of,
)
from engines.step._nodered_http import (
    http_request_body,
    http_request_failed,
    http_request_outputs,
    is_http_request,
)
from engines.step._plan import Plan
from engines.step.conditions import evaluate, lookup
from fluxo_core.errors import FluxoError, ValidationError
from fluxo_core.ir import (
    ENTRY_HEADER,
    MAX_ATTEMPTS_HEADER,
    DelayStep,
    JoinStep,
    NativeStep,
    Packet,
    ServiceStep,
    SplitStep,
    SwitchStep,
    key_origin,
)
from fluxo_core.ir.packet import PacketTemplate, dump_json, keyed_id
from fluxo_core.storage import Transaction
from fluxo_core.storage.jobs import JobStore, job_channel
from nodered_semantics.context import CONTEXT_PORT
from nodered_semantics.events import EVENT_PORTS
from nodered_semantics.files import FILES_KEY, FILES_PORT
from nodered_semantics.support import REPORTED_PORT, SUBFLOW_ENV, UNFINISHED_SEQUENCE
from nodered_semantics.timed import RELEASE_PORT, SCHEDULE_PORT, is_timed_node
from service_runtime.catalog import ServiceInfo
from service_runtime.gateway import PreparedCall
from service_runtime.interceptors import JobSpan
from service_runtime.transports import OutgoingMessage
from service_runtime.worker import TIMEOUT_HEADER

__all__ = ["ENGINE_QUEUE", "STEP_KEY_HEADER", "JobRun", "call_id_for", "job_channel"]

ENGINE_QUEUE = "engine.step"
STEP_KEY_HEADER = "fluxo-step-key"
MAX_STORED_BYTES = 64 * 1024
BLOCKED = "blocked"  # the error code of a call a block refused (fluxo_core.errors.BlockedError)
_JOB_STATE = ("status", "active", "error", "started_at", "finished_at")  # what transitions change
_FINAL_STATUSES = ("succeeded", "failed", "cancelled")

Frame = list[Any]  # [split step id, index, count] + [origin of the split's execution], if any
Meta = dict[str, Any] | None  # a Node-RED message's properties besides payload


EVENT_CODES = frozenset(EVENT_PORTS.values())


def call_id_for(job_id: str, key: str, attempt: int) -> str:
    """The id of a step execution's call: stable (a re-delivered transition makes the same call,
    which the gateway then records once), and sorting with the job's id."""
    return keyed_id(job_id, f"{job_id}/{key}/{attempt}")


def stored(value: Any) -> bytes:
    """JSON for the observability columns; large values keep a marker instead of the data."""
    data = dump_json(value)
    if len(data) > MAX_STORED_BYTES:
        return orjson.dumps({"_truncated": True, "bytes": len(data)})
    return data


@dataclass
class JobRun:
    """One job's transitions within one transaction. Build, apply events, then :meth:`flush`."""

    tx: Transaction
    store: JobStore
    plan: Plan
    job: dict[str, Any]  # the locked jobs row, as a dict; written back by the batch
    check_call: Callable[[ServiceInfo, str, Any, bytes], None]  # the gateway's packet checks
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # by key: loaded and new
    now: float = field(default_factory=time.time)
    calls: list[tuple[ServiceInfo, PreparedCall]] = field(default_factory=list)
    timers: list[OutgoingMessage] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)
    dirty: dict[str, set[str]] = field(default_factory=dict)  # loaded step key -> changed columns
    results: list[Any] = field(default_factory=list)
    finished: bool = False
    # Jobs a network out step starts at an in node of the workflow (engines.step._loopback).
    spawns: list[Spawn] = field(default_factory=list)

    # The job's input packet as the template of its call packets, when the caller has it.
    template: PacketTemplate | None = None
    # Node-RED context of the job's account and workflow (engines.step._context).
    context: StepContext | None = None
    # The account's Node-RED file store, for file/file in nodes (engines.step._files).
    files: StepFiles | None = None

    def __post_init__(self) -> None:
        self.results = orjson.loads(self.job["result"]) if self.job["result"] else []
        if self.template is None:
            source = Packet.model_validate_json(self.job["input"])
            self.template = PacketTemplate(source, workflow=self.plan.ref)
        self._template = self.template
        self._input: Packet = self.template.source
        # What the row held, so that only what changed is written back.
        self._loaded = {name: self.job[name] for name in _JOB_STATE}
        self._loaded_results = len(self.results)  # results are only ever appended

    @property
    def running(self) -> bool:
        return bool(self.job["status"] == "running")

    # -- events -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.job["status"] != "queued":
            return  # started before: start is idempotent by job id
        self.job.update(status="running", started_at=self.now)
        start = self.plan.workflow.spec.start_id
        entry = self._input.headers.get(ENTRY_HEADER)
        if entry is not None and entry != start:
            entries = list(getattr(self.plan.steps[start], "next", []))
            if entry not in entries:
                error = ValidationError(
                    f"the job's {ENTRY_HEADER} header names {entry!r}, which is not an entry of "
                    f"workflow {self.plan.workflow.metadata.name!r}: name one of the steps its "
                    f"start step {start!r} leads to ({', '.join(entries) or 'none'})"
                )
                self.job.update(
                    status="failed",
                    error=orjson.dumps(error.to_dict()).decode(),
                    finished_at=self.now,
                )
                return
            start = entry  # a trigger's own entry: the start step and other entries do not run
        payload: Any = self._input.payload
        meta: Meta = None
        if self._input.headers.get(CONTENT_TYPE_HEADER) == NODERED_MSG_CONTENT_TYPE:
            # A whole Node-RED message: its payload need not be an object.
            payload, message = token_of(
                payload if isinstance(payload, dict) else {"payload": payload}
            )
            meta = {"_msgid": self.job["id"][:16], **message}
        elif self.plan.ports:
            meta = {"_msgid": self.job["id"][:16]}
        self.deliver(start, payload, [], start, meta)

    def call_finished(self, key: str, call: dict[str, Any]) -> None:
        """The service call of step execution ``key`` ended (``call``: the gateway's record)."""
        row = self.steps.get(key)
        if (
            not self.running
            or row is None
            or row["status"] != "running"
            or row["call_id"] != call["id"]
        ):
            return  # a late result of a timed-out attempt, or of a job that ended
        context = orjson.loads(row["context"])
        step = self.plan.steps[row["step_id"]]
        went_on = None  # an http request node's call failed in the network: Node-RED goes on
        if call["status"] != "succeeded" and call["error"] and is_http_request(step):
            payload = orjson.loads(row["input"]) if row["input"] else None
            msg = node_message(context.get("msg"), payload)
            url = str(context.get("url", ""))
            went_on = http_request_failed(step, msg, url, orjson.loads(call["error"]))
        if call["status"] == "succeeded" or went_on is not None:
            outputs = (
                went_on
                if went_on is not None
                else [p["payload"] for p in orjson.loads(call["result"])]
            )
            if went_on is None and is_http_request(step):  # the response as the node's message
                try:
                    msg, url = context.get("msg") or {}, str(context.get("url", ""))
                    outputs = http_request_outputs(step, msg, url, outputs)
                except FluxoError as exc:
                    self.fail(step, key, row["attempt"], exc.to_dict(), context, row["input"])
                    return
            elif isinstance(step, NativeStep):  # what it wrote to context is no output
                writes = [w for o in outputs if o.get("port") == CONTEXT_PORT for w in o["writes"]]
                outputs = [o for o in outputs if o.get("port") != CONTEXT_PORT]
                if not self._keep_context(step, key, row, context, writes):
                    return
                ops = [op for o in outputs if o.get("port") == FILES_PORT for op in o["ops"]]
                outputs = [o for o in outputs if o.get("port") != FILES_PORT]
                if not self._keep_files(step, key, row, context, ops):
                    return
                # What it sends later (a trigger's second message, a delayed message): timed.
                for later in (o for o in outputs if o.get("port") == SCHEDULE_PORT):
                    self._later(step, key, later, context)
                for held in (o for o in outputs if o.get("port") == RELEASE_PORT):
                    self._release(held)
                outputs = [o for o in outputs if o.get("port") not in (SCHEDULE_PORT, RELEASE_PORT)]
            self.job["active"] -= 1
            if isinstance(step, NativeStep):  # failures reported on the way are no outputs
                for j, report in enumerate(o for o in outputs if o.get("port") == REPORTED_PORT):
                    self._reported(
                        step, report.get("msg") or {}, key + (f"~{j}" if j else ""), context
                    )
                outputs = [o for o in outputs if o.get("port") != REPORTED_PORT]
                # Its status and completion events: to the steps watching it, beside its
                # messages (Node-RED does not order them against those).
                events = self.plan.events.get(step.id, {})
                for j, event in enumerate(o for o in outputs if o.get("port") in EVENT_CODES):
                    # A status node's message has no payload: it must not arrive with null.
                    data, message = token_of(event.get("msg") or {})
                    for target in events.get(int(event["port"]), []):
                        child = f"{target}<{key}" + (f"~{j}" if j else "")
                        self.deliver(target, data, context["frames"], child, message)
                outputs = [o for o in outputs if o.get("port") not in EVENT_CODES]
                if step.config.get("type") == "debug" and self.plan.workflow.spec.output in (
                    None,
                    step.id,
                ):  # a debug node (kept as a step for its events) ends its branch, as a sink
                    self.results.append(orjson.loads(row["input"]) if row["input"] else None)
            # A success replaces the error of an earlier attempt: the step shows its last one.
            cleared = {"error": None} if row["error"] is not None else {}
            self._update(key, status="succeeded", output=stored(outputs), **cleared)
            # Outputs a join gathers are its branches, one per packet, even if there is one.
            join_id = self.plan.join_of_split.get(step.id)
            many = len(outputs) > 1 or join_id is not None
            origin = key_origin(key)  # the outputs' tokens come from `key`, even as `key~j`
            if "tick" in context:  # a message a node sent later: its tokens are new ones
                origin = f"<{key}"
            if join_id is not None and not outputs:  # no branch: the join fires at once, with []
                self._join_done(self.plan.steps[join_id], [], context["frames"], origin)
            for j, payload in enumerate(outputs):
                level = [_frame(f"{step.id}~", j, len(outputs), origin)] if many else []
                frames = context["frames"] + level
                child = key + (f"~{j}" if many else "")
                if isinstance(step, NativeStep):  # {port, msg}: the port picks the targets
                    data, message = token_of(payload.get("msg") or {})
                    self.route(
                        step, data, frames, child, message, port=int(payload["port"]), origin=origin
                    )
                else:
                    self.route(step, payload, frames, child, context.get("msg"), origin=origin)
        else:
            error = orjson.loads(call["error"]) if call["error"] else {"message": "failed"}
            if error.get("code") == BLOCKED:
                self.block(step, key, error)
            else:
                self.fail(step, key, row["attempt"], error, context, row["input"])

    def timer_fired(self, body: dict[str, Any]) -> None:
        row = self.steps.get(body["key"])
        if not self.running or row is None:
            return
        key = row["key"]
        step = self.plan.steps[row["step_id"]]
        context = orjson.loads(row["context"])
        purpose = body["purpose"]
        if purpose == "delay" and row["status"] == "waiting":
            self.job["active"] -= 1
            self._update(key, status="succeeded", output=row["input"])
            self.route(step, orjson.loads(row["input"]), context["frames"], key, context.get("msg"))
        elif purpose == "retry" and row["status"] == "retrying":
            try:
                self._call(step, key, orjson.loads(row["input"]), context, body["attempt"])
            except FluxoError as exc:
                self.fail(step, key, body["attempt"], exc.to_dict(), context, row["input"])
        elif purpose == "nodered" and row["status"] == "waiting":
            self._tick(step, key, row, context)
        # A "timeout" timer (written by an earlier Fluxo) does nothing: the worker times each
        # run of the handler itself (see _call).

    def _later(
        self, step: NativeStep, key: str, later: dict[str, Any], context: dict[str, Any]
    ) -> None:
        """Native step ``key`` will send a message later (``later``: ``{tick, at, msg}``, see
        :mod:`nodered_semantics.timed`): a step execution ``<key>~t<tick>`` waits for a durable
        timer, holding a token of the job, and then runs the node on the tick."""
        tick = dict(later.get("tick") or {})
        at = float(later.get("at") or self.now)
        payload, msg = token_of(later.get("msg") or {})
        tick_key = _tick_key(key, tick.get("id"))
        state = {"frames": context["frames"], "msg": msg, "tick": tick, "at": at}
        self._add_step(tick_key, step.id, "waiting", payload, state)
        self.job["active"] += 1
        self._timer({"purpose": "nodered", "key": tick_key}, max(0.0, at - self.now))

    def _release(self, held: dict[str, Any]) -> None:
        """A delay flushed the message it held for execution ``parent`` of job ``job`` (this
        one or another): its tick fires now, in that job (its own timer then finds it done)."""
        if not held.get("job") or not held.get("parent"):
            return
        body = {
            "kind": "timer",
            "job_id": str(held["job"]),
            "purpose": "nodered",
            "key": _tick_key(str(held["parent"]), held.get("tick")),
            "released": True,
        }
        self.timers.append(
            OutgoingMessage(
                queue=ENGINE_QUEUE,
                message_id=hashlib.blake2b(orjson.dumps(body), digest_size=16).hexdigest(),
                body=orjson.dumps(body),
                delay_s=0.0,
                max_attempts=10,
            )
        )

    def _tick(self, step: Any, key: str, row: dict[str, Any], context: dict[str, Any]) -> None:
        """A message a native step sends later is due: the node runs on its tick (it sends the
        message unless a reset or a newer message cancelled it), as a call like any other."""
        self.job["active"] -= 1  # the waiting token becomes the call's
        try:
            self._call(step, key, orjson.loads(row["input"]), context, attempt=1)
        except FluxoError as exc:
            self.job["active"] += 1
            self._update(key, status="failed")
            self.fail(step, key, 1, exc.to_dict(), context, row["input"])
            return
        self._update(
            key,
            status="running",
            call_id=call_id_for(self.job["id"], key, 1),
            started_at=self.now,
            context=orjson.dumps(context).decode(),
        )

    # -- stopping and continuing -----------------------------------------------------------------

    def block(self, step: Any, key: str, error: dict[str, Any]) -> None:
        """A block refused the call of step ``key``: the step waits ``blocked`` (holding its
        token) and the job ends ``blocked``, naming the block and the step, until resumed."""
        self._update(key, status="blocked", error=orjson.dumps(error).decode())
        context = error.get("context") or {}
        self.job.update(
            status="blocked",
            error=orjson.dumps(
                {
                    "code": BLOCKED,
                    "message": error.get("message", "blocked"),
                    "block_id": context.get("block_id"),
                    "block_reason": context.get("block_reason"),
                    "target": context.get("target"),
                    "step": step.id,
                    "key": key,
                }
            ).decode(),
            finished_at=self.now,
        )

    def revive(self, rows: list[dict[str, Any]], *, failed_key: str | None = None) -> None:
        """Continue a job the control plane set ``running`` again after it stopped (blocked,
        or failed at step ``failed_key``): from the steps it left open.

        ``rows``: its open step executions, each with its call's ``call_status/result/error``.
        A blocked step (or the failed one) calls its service again as its next attempt, with
        the input it stored; a running step whose call ended while the job stood still gets
        that outcome now (results were ignored meanwhile; a call refused by the block is made
        again); a retry or delay whose timer fired meanwhile is timed again. Nothing that
        finished runs again, so nothing is billed twice.
        """
        if not self.running:
            return
        revival = f"{self.now}"
        for found in rows:
            # A step this batch loaded already (a result applied just before) is as it left it.
            row = {**found, **self.steps.setdefault(found["key"], found)}
            key, status = row["key"], row["status"]
            step = self.plan.steps[row["step_id"]]
            context = orjson.loads(row["context"])
            callable_step = isinstance(step, ServiceStep | NativeStep)
            if status == "blocked" or (status == "failed" and key == failed_key and callable_step):
                if status == "failed":
                    self.job["active"] += 1  # fail() settled its token; it runs again
                self._again(step, key, row, context)
            elif status == "running" and row.get("call_status") in ("succeeded", "failed"):
                error = orjson.loads(row["call_error"]) if row.get("call_error") else {}
                if error.get("code") == BLOCKED:
                    self._again(step, key, row, context)
                else:
                    call = {
                        "id": row["call_id"],
                        "status": row["call_status"],
                        "result": row["call_result"],
                        "error": row["call_error"],
                    }
                    self.call_finished(key, call)
            elif status == "retrying":
                body = {"purpose": "retry", "key": key, "attempt": row["attempt"] + 1}
                self._timer({**body, "revival": revival}, 0.0)
            elif status == "waiting" and isinstance(step, DelayStep):
                left = max(0.0, (row["started_at"] or self.now) + step.seconds - self.now)
                self._timer({"purpose": "delay", "key": key, "revival": revival}, left)
            elif status == "waiting" and "tick" in context:  # a native step's later message
                left = max(0.0, float(context.get("at") or self.now) - self.now)
                self._timer({"purpose": "nodered", "key": key, "revival": revival}, left)

    def _again(self, step: Any, key: str, row: dict[str, Any], context: dict[str, Any]) -> None:
        try:
            self._call(step, key, orjson.loads(row["input"]), context, row["attempt"] + 1)
        except FluxoError as exc:
            self.fail(step, key, row["attempt"] + 1, exc.to_dict(), context, row["input"])

    # -- the flow -----------------------------------------------------------------------------

    def deliver(
        self, step_id: str, payload: Any, frames: list[Frame], key: str, meta: Meta = None
    ) -> None:
        """A token arrives at ``step_id`` (``meta``: the rest of its Node-RED message)."""
        if not self.running:
            return
        step = self.plan.steps[step_id]
        context: dict[str, Any] = {"frames": frames}
        if meta:
            context["msg"] = meta
        try:
            if step.id in self.plan.sequences:
                self._hold(step, key, payload, frames, meta)
            elif is_network_in(step) or is_network_out(step):
                self._loopback(step, key, payload, context, frames, meta)
            elif isinstance(step, ServiceStep | NativeStep):
                self._call(step, key, payload, context, attempt=1)
            elif isinstance(step, SwitchStep):
                self._switch(step, key, payload, frames, meta)
            elif isinstance(step, SplitStep):
                self._split(step, key, payload, frames, meta)
            elif isinstance(step, JoinStep):
                self._join(step, payload, frames)
            elif isinstance(step, DelayStep):
                self._add_step(key, step.id, "waiting", payload, context)
                self.job["active"] += 1
                self._timer({"purpose": "delay", "key": key}, step.seconds)
            else:  # transform
                out = self.plan.transforms[step.id].apply(payload)
                self._add_step(key, step.id, "succeeded", payload, context, output=out)
                self.route(step, out, frames, key, meta)
        except FluxoError as exc:
            self.job["active"] += 1  # the failed step holds the token until fail() settles it
            self._add_step(key, step.id, "failed", payload, context)
            self.fail(step, key, 1, exc.to_dict(), context, stored(payload))

    def route(
        self,
        step: Any,
        payload: Any,
        frames: list[Frame],
        key: str,
        meta: Meta = None,
        *,
        port: int | None = None,
        origin: str | None = None,
    ) -> None:
        """``step`` produced ``payload``: pass it along ``next`` or, at the end, into the result.

        ``port``: the output of a native Node-RED step the message left by; only that port's
        steps get it, and a port wired to no step ends the branch (like ``next: []``).
        ``origin``: what the next steps inherit when ``key`` is an output's (``fan~j``): the
        origin of the execution ``fan``; by default, ``key``'s.
        """
        origin = key_origin(key) if origin is None else origin
        if port is not None and step.id in self.plan.ports:
            ports = self.plan.ports[step.id]
            targets = list(ports[port]) if 0 <= port < len(ports) else []
        else:
            targets = list(getattr(step, "next", []))
        output_step = self.plan.workflow.spec.output
        if output_step == step.id or (not targets and output_step is None):
            self.results.append(payload)
        for target in targets:
            child_key = self._child_key(target, key, frames, origin)
            self.deliver(target, payload, frames, child_key, meta)

    def fail(
        self,
        step: Any,
        key: str,
        attempt: int,
        error: dict[str, Any],
        context: dict[str, Any],
        raw_input: bytes | None,
    ) -> None:
        """Step ``key`` failed: retry it, or apply its ``on_error``. Settles one token."""
        retry = getattr(step, "retry", None)
        if (
            isinstance(step, ServiceStep | NativeStep)
            and retry is not None
            and attempt < retry.max_attempts
        ):
            self._update(key, status="retrying", error=orjson.dumps(error).decode())
            self._timer(
                {"purpose": "retry", "key": key, "attempt": attempt + 1},
                retry.delay_before(attempt + 1),
            )
            return
        self.job["active"] -= 1
        self._update(key, status="failed", error=orjson.dumps(error).decode())
        # The statuses a function set before it failed reach the status steps watching it.
        statuses = (error.get("context") or {}).get("nodered_statuses")
        watching = self.plan.events.get(step.id, {}).get(EVENT_PORTS["status"], [])
        for j, status in enumerate(statuses if isinstance(statuses, list) and watching else []):
            data, message = token_of(status)  # {status: {...}}: no payload
            for target in watching:
                child = f"{target}<{key}" + (f"~{j}" if j else "")
                self.deliver(target, data, context["frames"], child, dict(message))
        payload = orjson.loads(raw_input) if raw_input else {}
        on_error = step.on_error
        if (error.get("context") or {}).get(UNFINISHED_SEQUENCE):
            on_error = "fail"  # a join left a group incomplete: Node-RED reports nothing then
        if on_error == "continue":
            self.route(step, payload, context["frames"], key, context.get("msg"))
        elif on_error == "fail":
            self.job.update(
                status="failed",
                error=orjson.dumps({"step": step.id, "key": key, **error}).decode(),
                finished_at=self.now,
            )
        else:  # goto
            target = on_error.goto
            failed = {"error": error, "input": payload, "step": step.id, **_failed_node(step)}
            self.deliver(target, failed, context["frames"], f"{target}<{key}", context.get("msg"))

    def _reported(
        self,
        step: NativeStep,
        report: dict[str, Any],
        key: str,
        context: dict[str, Any],
    ) -> None:
        """A native Node-RED step reported a failure with a message and went on: to its catch
        (``on_error: goto``), as Node-RED hands it to its catch nodes; else it was only logged."""
        if isinstance(step.on_error, str):
            return
        target = step.on_error.goto
        found = report.get("msg")
        msg: dict[str, Any] = found if isinstance(found, dict) else {}
        text = str(report.get("message") or "error")
        error = {"message": text, "context": {"nodered_message": text, "nodered_msg": msg}}
        failed = {"error": error, "input": msg.get("payload"), "step": step.id}
        failed.update(_failed_node(step))
        self.deliver(target, failed, context["frames"], f"{target}<{key}", context.get("msg"))

    def _keep_context(
        self,
        step: NativeStep,
        key: str,
        row: dict[str, Any],
        context: dict[str, Any],
        writes: list[Any],
    ) -> bool:
        """Write what the step's node wrote to context; False when the step does not go on: a
        scope it used changed since its call read it, so it runs again (or fails after too
        many such runs), see :mod:`engines.step._context`."""
        if self.context is None or not writes:
            return True
        try:
            if self.context.save(step, context.get(READ_KEY) or {}, writes):
                return True
        except FluxoError as exc:  # e.g. the scope would grow past its bound
            self.fail(step, key, row["attempt"], exc.to_dict(), context, row["input"])
            return False
        return self._rerun(step, key, row, context, "the context its node uses")

    def _rerun(
        self, step: NativeStep, key: str, row: dict[str, Any], context: dict[str, Any], what: str
    ) -> bool:
        """What the step read (``what``) changed since its call read it: run it again on the
        newer contents, or fail it after :data:`MAX_CONTEXT_RERUNS` such runs in a row.
        Always False: the step does not go on now."""
        reruns = int(context.get(RERUNS_KEY) or 0) + 1
        if reruns > MAX_CONTEXT_RERUNS:
            error = {
                "code": "conflict",
                "message": f"step {step.id!r}: {what} changed under it {MAX_CONTEXT_RERUNS} "
                "times in a row (other messages write it); it was not run again",
            }
            self.fail(step, key, row["attempt"], error, context, row["input"])
            return False
        context[RERUNS_KEY] = reruns
        self._again(step, key, row, context)
        return False

    def _keep_files(
        self,
        step: NativeStep,
        key: str,
        row: dict[str, Any],
        context: dict[str, Any],
        ops: list[Any],
    ) -> bool:
        """Apply what the step's file node wrote; False when the step does not go on: a file
        it expected as it read it changed since, so it runs again (or fails after too many such
        runs), see :mod:`engines.step._files`."""
        if not ops:
            return True
        try:
            if self.files is None:
                raise ValidationError(f"step {step.id!r}: no file store to write its files to")
            if self.files.save(step, ops):
                return True
        except FluxoError as exc:  # e.g. the file would grow past its bound
            self.fail(step, key, row["attempt"], exc.to_dict(), context, row["input"])
            return False
        return self._rerun(step, key, row, context, "the file its node uses")

    # -- step kinds ---------------------------------------------------------------------------

    def _call(
        self,
        step: ServiceStep | NativeStep,
        key: str,
        payload: Any,
        context: dict[str, Any],
        attempt: int,
    ) -> None:
        call_id = call_id_for(self.job["id"], key, attempt)
        body = payload
        if isinstance(step, NativeStep) and step.id in self.plan.sequences:
            # A Node-RED join: the messages it gathered (a batch: and what it held before).
            body = {"node": step.config, "messages": payload}
            scopes = self.plan.context_scopes.get(step.id)
            if scopes and self.context is not None:
                body["context"], context[READ_KEY] = self.context.load(step, scopes)
                body["version"] = self.plan.version  # a node's state is kept per version
        elif is_http_request(step):  # the http service sends what the node would
            body = http_request_body(step, node_message(context.get("msg"), payload))
            context = {**context, "url": body["url"]}
        elif isinstance(step, NativeStep):  # the nodered-node service runs the node on msg
            body = {"node": step.config, "msg": node_message(context.get("msg"), payload)}
            env = step.config.get(SUBFLOW_ENV)
            if isinstance(env, dict):  # what the subflow instances it runs within set
                body["env"] = env
            events = self.plan.events.get(step.id)
            if events:  # the events status and complete steps watch (nodered_semantics.events)
                body["events"] = sorted(
                    name for name, port in EVENT_PORTS.items() if port in events
                )
            scopes = self.plan.context_scopes.get(step.id)
            if scopes and self.context is not None:
                body["context"], context[READ_KEY] = self.context.load(step, scopes)
                body["version"] = self.plan.version  # a node's state is kept per version
            if is_file_step(step) and self.files is not None:
                body[FILES_KEY], context[FILES_READ_KEY] = self.files.load(step, body["msg"])
            if "tick" in context:  # a message it sends later, now due
                body["tick"] = context["tick"]
            elif is_timed_node(step.config):  # where a message it holds is to go
                body["origin"] = {"job": self.job["id"], "parent": key}
        elif step.id in self.plan.params:
            # The call gets the input with the step's `with`; the step keeps its input (what
            # on_error hands on and a retry starts from).
            body = self.plan.params[step.id].apply(
                payload, input_where=f"input of step {step.id!r}"
            )
        # A payload a service cannot take (a Node-RED string reaching a service step) fails
        # this step with a located error, not the transaction.
        headers = {STEP_KEY_HEADER: key}
        if step.timeout_s:
            # The worker that runs the handler enforces the step's timeout on each run, so it
            # counts the handler's time only: not the queue, nor a crashed worker's lease,
            # after which the call is delivered again with the whole timeout (a timer here
            # would count both, and fail jobs a crash only delayed).
            headers[TIMEOUT_HEADER] = str(step.timeout_s)
        if step.retry is not None or is_http_request(step):
            # The step's retry replaces its service's RetryPolicy: each attempt is a new call
            # (see fail), which the worker must not retry as well. Node-RED's http request
            # node makes one attempt.
            headers[MAX_ATTEMPTS_HEADER] = "1"
        data = self._template.json(
            id=call_id,
            step_id=step.id,
            payload=body,
            headers=headers,
            where=f"input of step {step.id!r}",
        )
        info = self.plan.services[step.id]
        # Checked now (size, input schema) so a bad packet fails this step, handled by on_error,
        # rather than the engine's transaction.
        self.check_call(info, call_id, body, data)
        actor = self._input.actor
        call = PreparedCall(
            call_id, actor.account.id, actor.user.id, self.job["id"], step.id, data, self.plan.ref
        )
        self.calls.append((info, call))
        if attempt == 1:
            self._add_step(key, step.id, "running", payload, context, call_id=call_id)
            self.job["active"] += 1
        else:
            self._update(
                key, status="running", attempt=attempt, call_id=call_id, started_at=self.now
            )
            if READ_KEY in context or FILES_READ_KEY in context:  # what this attempt read
                self._update(key, context=orjson.dumps(context).decode())

    def _loopback(
        self,
        step: NativeStep,
        key: str,
        payload: Any,
        context: dict[str, Any],
        frames: list[Frame],
        meta: Meta,
    ) -> None:
        """A network node whose peer is in the workflow: an in node's step passes the message
        its job started with on; an out node's step starts a job per message its in nodes
        emit (once: with this execution, see engines.step._loopback), and sends nothing on."""
        msg = {**(meta or {}), "payload": payload}
        if is_network_in(step):  # its output as any native step's: {port, msg}
            output = [{"port": 0, "msg": msg}]
            self._add_step(key, step.id, "succeeded", payload, context, output=output)
            self.route(step, payload, frames, key, meta)
            return
        if key[:500] in self.steps:
            return  # this execution ran before (its token was delivered again)
        spawns = loopback_deliveries(self.plan.workflow, step, msg, self.job["id"], key[:500])
        if spawns and generation(self._input) >= MAX_GENERATIONS:
            raise ValidationError(
                f"step {step.id!r}: this job is the {MAX_GENERATIONS}th of a chain of jobs its "
                "workflow started through its own network nodes; it starts no more (an in node "
                "wired back to its out node loops for ever): break the loop in the flow"
            )
        # No output of its own (it has no output port); what it started is in its context.
        context["started"] = [{"entry": s.entry, "msg": s.msg} for s in spawns]
        self._add_step(key, step.id, "succeeded", payload, context, output=[])
        self.spawns += spawns
        self.route(step, payload, frames, key, meta)

    def _switch(
        self, step: SwitchStep, key: str, payload: Any, frames: list[Frame], meta: Meta
    ) -> None:
        targets: list[str] = []
        for case in step.cases:
            if evaluate(case.when, payload):
                targets += case.next
                if step.mode == "first":
                    break
        if not targets:
            targets = list(step.default)
        chosen = list(dict.fromkeys(targets))
        self._add_step(
            key, step.id, "succeeded", payload, {"frames": frames}, output={"next": chosen}
        )
        origin = key_origin(key)
        for target in chosen:
            child_key = self._child_key(target, key, frames, origin)
            self.deliver(target, payload, frames, child_key, meta)

    def _split(
        self, step: SplitStep, key: str, payload: Any, frames: list[Frame], meta: Meta
    ) -> None:
        items = payload if step.path is None else lookup(payload, step.path)
        if not isinstance(items, list):
            raise ValidationError(
                f"split {step.id!r} needs an array at {step.path or 'the payload'}, "
                f"got {type(items).__name__}",
                problems=[(f"{step.id}.path", "not an array")],
            )
        self._add_step(
            key, step.id, "succeeded", payload, {"frames": frames}, output={"items": len(items)}
        )
        origin = key_origin(key)  # the items' keys inherit the split's origin
        if not items:
            join_id = self.plan.join_of_split.get(step.id)
            if join_id is not None:  # nothing to wait for: the join fires at once, with []
                self._join_done(self.plan.steps[join_id], [], frames, origin)
            return
        for i, item in enumerate(items):
            branch = [*frames, _frame(step.id, i, len(items), origin)]
            item_payload = item if isinstance(item, dict) else {"value": item}
            for target in step.next:
                item_key = f"{target}{_suffix(branch)}{origin}"
                self.deliver(target, item_payload, branch, item_key, meta)

    def _join(self, step: JoinStep, payload: Any, frames: list[Frame]) -> None:
        # A split's branch, or (``<id>~``) one output packet of a 1 -> N service step.
        if not frames or frames[-1][0] not in (step.split, f"{step.split}~"):
            raise ValidationError(
                f"join {step.id!r} received a packet that is not a branch of split "
                f"{step.split!r} (a 1 -> N step between them adds outputs the join cannot pair); "
                "join right after the steps of each branch",
                problems=[(f"{step.id}.split", "unmatched branch")],
            )
        index, count = frames[-1][1], frames[-1][2]
        origin = str(frames[-1][3]) if len(frames[-1]) > 3 else ""
        parent = frames[:-1]
        # The split's execution's branches wait under the join's key: an execution of the split
        # on another path (another origin) has branches of its own.
        join_key = f"{step.id}{_suffix(parent)}{origin}"
        arrived = self.store.join_arrive(
            self.tx, self.job["id"], join_key, index, orjson.dumps(payload)
        )
        if arrived < count:
            return
        branches = self.store.join_take(self.tx, self.job["id"], join_key)
        self._join_done(step, [orjson.loads(b) for b in branches], parent, origin)

    def _join_done(self, step: Any, items: list[Any], frames: list[Frame], origin: str) -> None:
        key = f"{step.id}{_suffix(frames)}{origin}"
        joined: list[Any] = []
        for item in items:  # one array payload: branch arrays are concatenated
            joined.extend(item if isinstance(item, list) else [item])
        self._add_step(key, step.id, "succeeded", None, {"frames": frames}, output=joined)
        self.route(step, joined, frames, key)

    def _hold(
        self, step: NativeStep, key: str, payload: Any, frames: list[Frame], meta: Meta
    ) -> None:
        """A message reaches a Node-RED join: held until nothing else moves in the job.

        Node-RED's join keeps its groups across messages; here it gets every message of the
        job at once (:meth:`_release_held`), ordered as Node-RED delivers them: by their places
        in the fan-outs they came from (a split's parts in order, whichever call ended first),
        then by arrival.
        """
        record = {
            "order": [f[1] for f in frames],
            "at": [self.now, len(self.new_keys), len(self.calls)],
            "key": key,
            "msg": node_message(meta, payload),
        }
        slot = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest()) >> 1
        self.store.join_arrive(self.tx, self.job["id"], _held_key(step.id), slot, dump_json(record))

    def _release_held(self) -> None:
        """Nothing moves in the job: the first join (upstream ones first) holding messages
        gets them all in one call; its outputs go on as any native step's do."""
        for step_id in self.plan.sequences:
            held = self.store.join_take(self.tx, self.job["id"], _held_key(step_id))
            if not held:
                continue
            records = sorted((orjson.loads(h) for h in held), key=lambda r: (r["order"], r["at"]))
            step = self.plan.steps[step_id]
            digest = hashlib.blake2b(
                "|".join(r["key"] for r in records).encode(), digest_size=6
            ).hexdigest()
            key = f"{step_id}#{digest}"
            messages = [r["msg"] for r in records]
            context: dict[str, Any] = {"frames": []}
            try:
                self._call(step, key, messages, context, attempt=1)
            except FluxoError as exc:
                self.job["active"] += 1  # the failed step holds the token until fail() settles it
                self._add_step(key, step.id, "failed", messages, context)
                self.fail(step, key, 1, exc.to_dict(), context, stored(messages))
            return

    # -- bookkeeping --------------------------------------------------------------------------

    def _child_key(self, target: str, key: str, frames: list[Frame], origin: str) -> str:
        """The key of ``target``'s execution for a token from ``key`` (``origin``: what it
        inherits; see :mod:`fluxo_core.ir.step_keys`)."""
        base = f"{target}{_suffix(frames)}"
        if target in self.plan.merging:  # several predecessors, not a join
            return f"{base}<{key}"
        return f"{base}{origin}"

    def _add_step(
        self,
        key: str,
        step_id: str,
        status: str,
        payload: Any,
        context: dict[str, Any],
        *,
        output: Any = None,
        call_id: str | None = None,
    ) -> None:
        key = key[:500]
        if key in self.steps:
            return  # this execution exists already (its token was delivered before)
        done = status in ("succeeded", "failed")
        self.steps[key] = {
            "job_id": self.job["id"],
            "key": key,
            "step_id": step_id,
            "status": status,
            "attempt": 1,
            "call_id": call_id,
            "input": stored(payload),
            "output": stored(output) if output is not None else None,
            "error": None,
            "context": orjson.dumps(context).decode(),
            "seq": len(self.new_keys),  # order within one batch; across batches, started_at
            "started_at": self.now,
            "finished_at": self.now if done else None,
        }
        self.new_keys.append(key)

    def _update(self, key: str, **values: Any) -> None:
        if values.get("status") in ("succeeded", "failed"):
            values.setdefault("finished_at", self.now)
        row = self.steps.get(key)
        if row is None:  # not loaded for this batch: fetch it once
            loaded = self.store.step_by_key(self.tx, self.job["id"], key)
            if loaded is None:
                return
            row = self.steps[key] = dict(loaded._mapping)
        row.update(values)
        if key not in self.new_keys:
            self.dirty.setdefault(key, set()).update(values)

    def _timer(self, body: dict[str, Any], delay_s: float) -> None:
        body = {"kind": "timer", "job_id": self.job["id"], **body}
        self.timers.append(
            OutgoingMessage(
                queue=ENGINE_QUEUE,
                message_id=hashlib.blake2b(orjson.dumps(body), digest_size=16).hexdigest(),
                body=orjson.dumps(body),
                delay_s=delay_s,
                max_attempts=10,
            )
        )

    def settle(self) -> None:
        """End the job if nothing is in flight any more (a join holding messages gets them
        first)."""
        if self.running and self.job["active"] <= 0 and self.plan.sequences:
            self._release_held()
        if self.running and self.job["active"] <= 0:
            self.job.update(status="succeeded", finished_at=self.now)
        self.finished = self.job["status"] in ("succeeded", "failed", "cancelled", "blocked")

    def job_values(self) -> dict[str, Any] | None:
        """The job row's changed columns with its ``id``, or None if nothing changed.

        Most transitions change nothing on the row: a step's call ends and the next one's
        starts, so ``active`` goes down and up again. Writing only real changes saves an UPDATE
        per job and step, and leaves the status index alone until the status moves.
        """
        self.settle()
        values = {
            name: self.job[name] for name in _JOB_STATE if self.job[name] != self._loaded[name]
        }
        if len(self.results) != self._loaded_results:
            values["result"] = dump_json(self.results)
        if not values:
            return None
        values["id"] = self.job["id"]
        return values

    def new_rows(self) -> list[dict[str, Any]]:
        return [self.steps[k] for k in self.new_keys]

    def changed_rows(self) -> list[dict[str, Any]]:
        """Each changed step row as its key and the columns that changed."""
        return [
            {"job_id": self.job["id"], "key": key, **{c: self.steps[key][c] for c in columns}}
            for key, columns in sorted(self.dirty.items())
        ]

    def ended_span(self) -> JobSpan | None:
        """The job's span if it ended in this batch (after :meth:`job_values`), else None."""
        if not self.finished or self._loaded["status"] in _FINAL_STATUSES:
            return None
        job = self.job
        created = float(job["created_at"])
        return JobSpan(
            trace_id=self._input.trace_id,
            parent_id=self._input.parent_id,
            job_id=job["id"],
            workflow=self.plan.ref,
            engine="step",
            account_id=job["account_id"],
            status=job["status"],
            start=created,
            duration_s=max(0.0, float(job["finished_at"] or self.now) - created),
            error=error_code(job["error"]),
        )


def error_code(error: str | None) -> str | None:
    """The ``code`` of a job's stored error (JSON), if it has one."""
    if not error:
        return None
    try:
        code = orjson.loads(error).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return "error"
    return code if isinstance(code, str) else "error"


def _tick_key(key: str, tick: Any) -> str:
    """The step execution of the message execution ``key`` of a native node sends later."""
    return f"{key}~t{tick}"


def _held_key(step_id: str) -> str:
    """Where a Node-RED join's messages wait (beside the IR joins' branches)."""
    return f"{step_id}#held"


def _frame(split: str, index: int, count: int, origin: str) -> Frame:
    """A fan-out level; the origin only when there is one (frames stored before had none)."""
    return [split, index, count, origin] if origin else [split, index, count]


def _suffix(frames: list[Frame]) -> str:
    return "".join(f"[{f[1]}]" for f in frames)


def _failed_node(step: Any) -> dict[str, Any]:
    """What a Node-RED catch reports of a failed native step: its node's id, type and name."""
    if not isinstance(step, NativeStep):
        return {}
    return {"node": {k: step.config[k] for k in ("id", "type", "name") if k in step.config}}
