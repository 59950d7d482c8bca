"""Native Node-RED steps on the step engine: which ones it can run, and where their outputs go.

An imported flow keeps every node without an IR counterpart as a ``native`` step whose
``config`` is the node itself. The step engine runs such a step by calling the built-in
``nodered-node`` service with ``{node, msg}`` (so the call is admitted, metered and observed like
any other) when the node's type is one that service supports.

**Ports.** A Node-RED node has several outputs; the importer writes one flat ``next`` (every
port's targets, port by port, in wire order) and keeps the per-port wiring only in
``config.wires``, as node ids. The IR does not say which step a node id became, so the ports
are recovered here: wires to other native steps are read from their ``config.id``; what is left
of ``next`` belongs to the one port whose wires lead elsewhere (mapped steps, junctions). When
two or more ports lead to unidentifiable targets the split is ambiguous and the step is refused
rather than guessed (:func:`step_runnable` says so). A node may have several steps (the import
copies nodes per link call, subflow instance and loop pass): a port's step is the one of them in
``next``. The importer keeps a junction or link out a port leads to as a native pass-through
step, so such a port is identifiable too.

**Failures.** A native step's failure goes to its ``on_error: goto`` with the failing node
(``{error, input, step, node}``), which is how a Node-RED ``catch`` step receives it; a packet
on port ``-1`` is a failure the node reported and went on (``node.error(err, msg)``), handed
to the same goto, or dropped (Node-RED only logs it) when there is none.

**Sequences.** A Node-RED join keeps groups across messages; the step engine holds every
message that reaches a native join in a job and, when nothing else in the job moves, calls the
service once with them all (``{node, messages}``), ordered by their places in the fan-outs they
came from (a split's parts in order, whichever call ended first), with its state when it keeps
one between jobs (a batch's held messages, a csv node's header sent once: see
:mod:`engines.step._context`). A join the import copied
(link calls, loop passes) is refused: Node-RED keeps one set of groups for the node.

**http request.** A native ``http request`` node is a call of the ``http`` service (host policy,
admission, metering), its request and its message built as
:mod:`nodered_semantics.http_request` says (:mod:`engines.step._nodered_http`).

**Network nodes.** A ``tcp``/``udp``/``websocket`` out node whose peer is an in node of the
same workflow needs no socket: the step engine starts, once, a job at the in node's step with
the message that node would send (:mod:`engines.step._loopback`,
:mod:`nodered_semantics.network`); a peer elsewhere is a real socket and is refused.

**Messages.** Between steps the token's payload is ``msg.payload``; the other message
properties (``topic``, ``parts``, ...) travel beside it, so a native node downstream sees what
Node-RED would give it. A message without a payload (a change node set it to a JSONata value
that is nothing, or deleted it; a status node's ``{status}``; a message completed without one;
a ``file in``'s message when it could not read the file) travels with the payload None and
:data:`NO_PAYLOAD` beside it, so the next native node gets it without one again, not with
``null`` (:func:`node_message`). Every message a native node sends (its outputs, its status and
complete events, what it sends later) becomes a token through :func:`token_of`.
A job whose input packet has the header ``content-type: application/vnd.node-red.msg+json``
carries a whole message as its payload (``{"payload": "text", "topic": "t"}``): that is how a
payload that is not an object (an inject node's string, number or timestamp) enters a job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engines.step._context import context_problems
from fluxo_core.ir import NativeStep, Workflow
from nodered_semantics.context import keeps_state
from nodered_semantics.events import (
    EVENT_PORTS,
    WATCHER_TYPES,
    completion_problem,
    emits_event,
    status_problem,
    watches,
)
from nodered_semantics.network import NETWORK_TYPES, network_problem
from nodered_semantics.support import (
    QUEUE_CONTROLS,
    function_reports_errors,
    is_sequence_node,
    node_problem,
)
from translators.nodered import DROPPED_LABEL, Trigger

__all__ = [
    "CONTENT_TYPE_HEADER",
    "NODERED_MSG_CONTENT_TYPE",
    "NO_PAYLOAD",
    "RUNNABLE_NATIVE_ENGINES",
    "dropped_problems",
    "native_events",
    "native_ports",
    "native_problem",
    "native_steps_by_node",
    "node_message",
    "step_runnable",
    "token_of",
]

CONTENT_TYPE_HEADER = "content-type"
NODERED_MSG_CONTENT_TYPE = "application/vnd.node-red.msg+json"
RUNNABLE_NATIVE_ENGINES = frozenset({"nodered"})
_PLAIN_KINDS = frozenset({"service", "switch", "transform", "split", "join", "delay"})
# Beside a token's payload (None): its message has no payload (Node-RED's msg.payload undefined).
NO_PAYLOAD = "fluxo:no-payload"


def token_of(msg: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A Node-RED message as a token: its payload, and its other properties (with
    :data:`NO_PAYLOAD` when it has no payload)."""
    rest = dict(msg)
    if "payload" not in rest:
        return None, {**rest, NO_PAYLOAD: True}
    return rest.pop("payload"), rest


def node_message(meta: Mapping[str, Any] | None, payload: Any) -> dict[str, Any]:
    """The Node-RED message of a token: its other properties and its payload (none if it had
    none and nothing gave it one since: a payload that is not None is a new one)."""
    msg = dict(meta or {})
    if msg.pop(NO_PAYLOAD, False) and payload is None:
        return msg
    msg["payload"] = payload
    return msg


def native_steps_by_node(workflow: Workflow) -> dict[str, set[str]]:
    """The ids of ``workflow``'s native Node-RED steps by the node each runs (the import copies a
    node per link call, subflow instance and loop pass). A caller asking about many steps makes
    it once and passes it on: made per step, it made large flows quadratic."""
    by_node: dict[str, set[str]] = {}
    for s in workflow.spec.steps:
        if isinstance(s, NativeStep) and s.engine == "nodered":
            by_node.setdefault(str(s.config.get("id")), set()).add(s.id)
    return by_node


def _wired_ids(config: Mapping[str, Any]) -> set[str]:
    wires = config.get("wires")
    return {
        str(t)
        for port in (wires if isinstance(wires, list) else [])
        if isinstance(port, list)
        for t in port
    }


_INDEXES: dict[int, tuple[Workflow, dict[str, Any], list[NativeStep]]] = {}


def _index(workflow: Workflow) -> tuple[dict[str, Any], list[NativeStep]]:
    """``workflow``'s steps by id and its status/complete steps, made once per workflow (the
    checks ask per step; made per step, large flows were quadratic)."""
    found = _INDEXES.get(id(workflow))
    if found is None or found[0] is not workflow:
        watchers = [
            s
            for s in workflow.spec.steps
            if isinstance(s, NativeStep) and s.config.get("type") in WATCHER_TYPES
        ]
        if len(_INDEXES) >= 16:
            _INDEXES.clear()
        found = (workflow, workflow.spec.steps_by_id(), watchers)
        _INDEXES[id(workflow)] = found
    return found[1], found[2]


def native_events(step: NativeStep, workflow: Workflow) -> dict[int, list[str]]:
    """The status and complete steps a native step's events go to, by event port
    (:data:`~nodered_semantics.events.STATUS_PORT`, ``COMPLETE_PORT``): the steps of its
    ``next`` that run a status or complete node watching its node and that it is not wired to
    (the import leads a watched step to its watchers so)."""
    steps, watchers = _index(workflow)
    if not watchers:
        return {}
    wired = _wired_ids(step.config)
    found: dict[int, list[str]] = {}
    for sid in step.next:
        target = steps.get(sid)
        if not isinstance(target, NativeStep) or target.config.get("type") not in WATCHER_TYPES:
            continue
        if str(target.config.get("id")) in wired or not watches(target.config, step.config):
            continue
        found.setdefault(EVENT_PORTS[str(target.config["type"])], []).append(sid)
    return found


def native_ports(
    step: NativeStep, workflow: Workflow, by_node: Mapping[str, set[str]] | None = None
) -> list[list[str]] | str:
    """The step ids each output port of a native Node-RED step feeds, or why that is unknown
    (its event targets, :func:`native_events`, are no port's).

    ``by_node``: :func:`native_steps_by_node` of ``workflow`` (made here when not given)."""
    wires = step.config.get("wires")
    ports: list[list[Any]] = (
        [port if isinstance(port, list) else [] for port in wires]
        if isinstance(wires, list)
        else []
    )
    events = {sid for targets in native_events(step, workflow).values() for sid in targets}
    nxt = [sid for sid in step.next if sid not in events]
    wired = [p for p, port in enumerate(ports) if port]
    if len(wired) <= 1:
        out: list[list[str]] = [[] for _ in ports] or [[]]
        out[wired[0] if wired else 0] = nxt
        return out
    # A node may have several steps (copies the import made for link calls and loop passes):
    # the one this step leads to is the one in its next.
    if by_node is None:
        by_node = native_steps_by_node(workflow)
    known: list[list[str]] = []
    unknown_ports: list[int] = []
    for p, port in enumerate(ports):
        found = [sid for sid in nxt if any(sid in by_node.get(str(t), ()) for t in port)]
        known.append(list(dict.fromkeys(found)))
        if any(t not in by_node for t in port):
            unknown_ports.append(p)
    claimed = {s for port in known for s in port}
    leftover = [s for s in nxt if s not in claimed]
    if not leftover:
        return known
    if len(unknown_ports) == 1:
        known[unknown_ports[0]] += leftover
        return known
    return (
        f"ports {', '.join(str(p + 1) for p in unknown_ports)} lead to steps the IR does not "
        f"tie to a node ({', '.join(leftover)}), so which port feeds which is unknown"
    )


def step_runnable(workflow: Workflow, triggers: Sequence[Trigger] = ()) -> tuple[bool, list[str]]:
    """Whether the step engine can run ``workflow``, and if not, every reason why.

    Pure (no I/O): the step engine's ``deploy`` refuses what this refuses, and the differential
    test against a real Node-RED checks what it accepts. Services are not looked up here.
    ``triggers``: the import's entry nodes; an inject that sends ``msg.reset`` or ``msg.flush``
    to a delay acts on the messages that delay holds, and the step engine's delay holds none.
    """
    reasons: list[str] = []
    reasons += dropped_problems(workflow)
    reasons += context_problems(workflow)
    if any(s.kind == "delay" for s in workflow.spec.steps):
        for trigger in triggers:
            controls = sorted(set(trigger.sets) & QUEUE_CONTROLS)
            if trigger.workflow == workflow.metadata.name and controls:
                reasons.append(
                    f"inject {trigger.node_id} sends msg.{'/'.join(controls)} to a delay, which "
                    "acts on the messages the delay holds; the step engine's delay holds none"
                )
    reasons += _order_problems(workflow)
    fed = {t for s in workflow.spec.steps for t in _successors(s)} | {workflow.spec.start}
    by_node = native_steps_by_node(workflow)
    # What the steps lead to, besides an entry step leading to every start of the flow.
    entered = {
        t
        for s in workflow.spec.steps
        if not (s.id == "start" and s.kind == "transform")
        for t in _successors(s)
    }
    for step in workflow.spec.steps:
        if isinstance(step, NativeStep) and step.config.get("type") == "catch" and step.id in fed:
            reasons.append(
                f"step {step.id!r} (catch node {step.config.get('id', '?')}): messages reach it "
                "by wires, not failures by on_error: goto (nothing in its scope runs natively "
                "here, or it catches a group)"
            )
            continue
        if (
            isinstance(step, NativeStep)
            and step.config.get("type") in WATCHER_TYPES
            and step.id not in entered
        ):
            reasons.append(
                f"step {step.id!r} ({step.config.get('type')} node {step.config.get('id', '?')}): "
                "nothing leads to it, so the job would start there (nothing it watches reports "
                "its events on the step engine)"
            )
        if step.kind in _PLAIN_KINDS:
            continue
        if not isinstance(step, NativeStep):
            reasons.append(
                f"step {step.id!r}: a {step.kind!r} step does not run on the step engine"
            )
            continue
        reason = native_problem(step, workflow, by_node)
        if reason is not None:
            reasons.append(reason)
    return not reasons, reasons


def _order_sensitive(config: Any) -> bool:
    """A trigger, or a rate limit dropping messages: which message it passes depends on which
    came first (a rate limit by topic keeps the later part of a sequence itself)."""
    if config.get("type") == "trigger":
        return True
    return bool(config.get("type") == "delay" and config.get("pauseType") == "rate") and bool(
        config.get("drop")
    )


def _order_problems(workflow: Workflow) -> list[str]:
    """Order-sensitive timed nodes a split feeds: Node-RED hands them a sequence's parts in
    order, the step engine's branches reach them in any order."""
    steps = {s.id: s for s in workflow.spec.steps}
    splits = [
        s.id
        for s in workflow.spec.steps
        if s.kind == "split" or (isinstance(s, NativeStep) and s.config.get("type") == "split")
    ]
    below: set[str] = set()
    todo = [t for sid in splits for t in _successors(steps[sid])]
    while todo:
        sid = todo.pop()
        if sid in below or sid not in steps:
            continue
        below.add(sid)
        todo += _successors(steps[sid])
    return [
        f"step {sid!r} ({s.config.get('type')} node {s.config.get('id', '?')}): a split feeds "
        "it, and which message it passes depends on the order its parts arrive in: Node-RED's "
        "order, not the step engine's (its branches run concurrently)"
        for sid in sorted(below)
        if isinstance(s := steps[sid], NativeStep) and _order_sensitive(s.config)
    ]


def _successors(step: Any) -> list[str]:
    """The steps a step's output goes to (next, switch cases and default)."""
    found = list(getattr(step, "next", None) or [])
    for case in getattr(step, "cases", None) or []:
        found += case.next
    found += list(getattr(step, "default", None) or [])
    return found


_DROPPED = {
    "loop": "the Node-RED flow loops (a wire closing the loop was cut by the import, so the "
    "workflow would run the loop once); run it on Node-RED",
    "status": "a status node watches a node whose status the step engine does not report (the "
    "import says which); run it on Node-RED",
    "complete": "a complete node watches a node whose completion the step engine does not "
    "report (the import says which); run it on Node-RED",
    "entries": "the Node-RED flow has several triggers, each starting only its own nodes; the "
    "workflow starts them all together; run it on Node-RED",
}
"""Why each behaviour the import lost (label ``fluxo.dev/nodered-dropped``) keeps a workflow off
the step engine: it would run, but not as Node-RED does."""


def dropped_problems(workflow: Workflow) -> list[str]:
    """Why the step engine would not run ``workflow`` as Node-RED runs the flow it was imported
    from: the behaviour its import dropped (label ``fluxo.dev/nodered-dropped``)."""
    dropped = workflow.metadata.labels.get(DROPPED_LABEL) or ""
    return [
        _DROPPED.get(what, f"the import dropped {what!r} of the Node-RED flow")
        for what in dropped.split(".")
        if what
    ]


def native_problem(
    step: NativeStep, workflow: Workflow, by_node: Mapping[str, set[str]] | None = None
) -> str | None:
    """Why the step engine cannot run this native step (None when it can).

    ``by_node``: as for :func:`native_ports`."""
    config: Mapping[str, Any] = step.config
    kind = str(config.get("type", "?"))
    where = f"step {step.id!r} ({kind} node {config.get('id', '?')})"
    if step.engine not in RUNNABLE_NATIVE_ENGINES:
        return f"{where}: a native {step.engine} step runs only on the {step.engine} engine"
    if kind in NETWORK_TYPES:  # runs without a socket when its peer is in the workflow
        problem = network_problem(
            config,
            (s.config for s in workflow.spec.steps if isinstance(s, NativeStep) and s is not step),
        )
        return None if problem is None else f"{where}: {problem}"
    problem = node_problem(config)
    if problem is not None:
        return f"{where}: {problem}"
    if (
        kind == "function"
        and not isinstance(step.on_error, str)
        and function_reports_errors(str(config.get("func") or ""))
    ):
        return (
            f"{where}: it reports failures with done(err), which reaches its catch node while "
            "its messages go on only on Node-RED"
        )
    if by_node is None:
        by_node = native_steps_by_node(workflow)
    if kind == "function" and keeps_state(config):  # its setup runs once per node
        copies = sorted(by_node.get(str(config.get("id")), ()))
        if len(copies) > 1:
            return (
                f"{where}: the import made several steps of it ({', '.join(copies)}) and its "
                "setup code uses context: Node-RED runs the setup once per node instance (one "
                "per subflow instance), which these steps do not tell apart"
            )
    if is_sequence_node(config):
        copies = sorted(by_node.get(str(config.get("id")), ()))
        if len(copies) > 1:
            return (
                f"{where}: the import made several steps of it ({', '.join(copies)}), while "
                "Node-RED keeps one set of groups for the node"
            )
    ports = native_ports(step, workflow, by_node)
    if isinstance(ports, str):
        return f"{where}: {ports}"
    return _event_problem(step, workflow, where)


def _event_problem(step: NativeStep, workflow: Workflow, where: str) -> str | None:
    """Why the status and complete steps watching this step's node would not get its events
    as on Node-RED, or None."""
    config = step.config
    _, watchers = _index(workflow)
    if config.get("type") == "debug" and not any(w.id in step.next for w in watchers):
        return f"{where}: a debug step reports events, and nothing it leads to watches it"
    wired = _wired_ids(config)
    for watcher in watchers:
        if not watches(watcher.config, config):
            continue
        kind = str(watcher.config.get("type"))
        problem = status_problem(config) if kind == "status" else completion_problem(config)
        if problem is not None:
            return f"{where}: {kind} node {watcher.config.get('id')} watches it, but {problem}"
        if str(watcher.config.get("id")) in wired and emits_event(config, kind):
            return (
                f"{where}: it is both wired to {kind} node {watcher.config.get('id')} and "
                "watched by it, and its step cannot tell its messages from its events"
            )
        if emits_event(config, kind) and watcher.id not in step.next:
            return (
                f"{where}: {kind} node {watcher.config.get('id')} watches it, but its step "
                "does not lead to that node's step (copies made for link calls or loops)"
            )
    return None
