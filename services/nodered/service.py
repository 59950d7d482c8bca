"""The ``nodered-node`` built-in service: one Node-RED node run on one message.

The step engine runs a flow imported from Node-RED by calling this service for every node the
importer kept ``native`` (its whole configuration travels in the call), so such a node is
admitted, metered and observed like any service call. Payload in and out::

    in:  {"node": <the node as Node-RED stores it>, "msg": {"payload": ..., "topic": ..., ...},
          "env": {NAME: value, ...}?, "context": {"node": {...}, "flow": {...}, "global": {...}}?}
    out: one packet per message sent, {"port": <output port, 0-based>, "msg": {...}}
         (no packet at all when the node sends nothing)

Node types (:data:`nodered_semantics.support.SUPPORTED_TYPES`), each as its Node-RED 4
implementation behaves:

* ``function``: JavaScript in a QuickJS sandbox with time and memory limits, see
  :mod:`services.nodered.function`;
* ``template``, ``json``, ``csv`` (legacy mode): :mod:`services.nodered.template`,
  :mod:`services.nodered.json_node`, :mod:`services.nodered.csv_node`;
* ``change``, ``switch`` (every rule but the sequence ones), ``range`` and ``sort`` (of an array
  in the message): :mod:`services.nodered.change`, :mod:`services.nodered.switch`,
  :mod:`services.nodered.range`, :mod:`services.nodered.sort`;
* ``yaml``, ``xml``, ``html`` (the parser nodes, as js-yaml, xml2js and cheerio do it):
  :mod:`services.nodered.yaml_node`, :mod:`services.nodered.xml_node`,
  :mod:`services.nodered.html_node`;
* ``split`` (strings, arrays, objects; a string stream): :mod:`services.nodered.split`;
* ``join`` (automatic, manual, reduce), ``batch`` (count and concatenate modes), ``sort`` of
  a message sequence and ``switch`` recreating sequences (``repair``) over every message that
  reached it in a job,
  called with ``{node, messages}`` (:func:`run_sequence_node`): :mod:`services.nodered.join`,
  :mod:`services.nodered.batch`, :mod:`services.nodered.sort`, :mod:`services.nodered.switch`;
* ``catch``: a failed step's ``{error, input, step, node}`` (its ``on_error: goto``) as the
  message Node-RED's catch sends, :mod:`services.nodered.catch`;
* ``file`` and ``file in``: on the caller's file store (the file the node names comes in
  ``files``, what it writes goes back as the ``-3`` packet), :mod:`services.nodered.file_node`;
* ``junction`` and ``link out``: the message on, unchanged (an import keeps them as steps where
  a port of a node with several outputs leads to them);
* ``http request`` calling its flow's own ``http in`` endpoint, and the ``http response``
  answering it: :mod:`services.nodered.http_self`.

* ``status`` and ``complete``: the message on, as the node sends it (the step engine hands
  them the events of the steps they watch);
* ``debug`` (kept as a step only when a status or complete node watches it): sends nothing;
  it sets a status only when it changes, the last one being its state (below).

Events, when the call asks for them (``"events": ["status", "complete"]``): a status the node
set is a packet on port ``-4``, its completion of the message (``done()``) one on port ``-5``,
each with the message a status or complete node sends
(:mod:`nodered_semantics.events`). A function's ``node.error(err, msg)`` is a packet on port ``-1``
(:data:`nodered_semantics.support.REPORTED_PORT`), ``{message, msg}``, which the step engine
hands to the step's catch.

Context (``node``/``flow``/``global``) starts from what the caller passes in ``context`` and
lives for the call; what the node wrote comes back as the ``-2`` packet (one write per
top-level key), for the caller to keep (the step engine keeps it durably per workflow and
account). ``env`` holds the node's ``NR_*``
variables plus what the caller passes, never the worker's environment.

What a core node keeps between messages on Node-RED (a csv header sent ``once``, a streaming
split's remainder, a batch's held messages, "the function's setup ran", the last status a
debug node showed) is its **state**: it comes in the node's own context under
:data:`~nodered_semantics.context.STATE_KEY` and goes back as one more write, tagged with the
workflow version the call names (``"version"``), so the first call of a new version starts
afresh as a deploy does (:mod:`services.nodered.state`).
A function whose setup code uses context runs it once per version, before the body (which waits
for its promise); a csv or streaming split with state takes a job's messages together, in order.
What still depends on earlier messages (RFC 4180 mode, switch rules on a sequence's places) is
refused with a :class:`ServiceError` naming the node, as is any other node type;
:func:`nodered_semantics.support.node_problem` tells a caller beforehand whether a node can run
here.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Collection, Mapping
from typing import Any

from fluxo_core.errors import ServiceError
from nodered_semantics.context import CONTEXT_PORT, ContextView, ContextWrite
from nodered_semantics.events import (
    COMPLETE_PORT,
    STATUS_PORT,
    WATCHER_TYPES,
    complete_event,
    debug_status,
    status_event,
)
from nodered_semantics.files import FILE_TYPES, FILES_KEY, FILES_PORT
from nodered_semantics.http_in import HTTP_ENDPOINT, HTTP_RESPONSE_TYPE
from nodered_semantics.http_request import HTTP_REQUEST_TYPE
from nodered_semantics.js import JSThrowError
from nodered_semantics.jsonata import JsonataError
from nodered_semantics.support import (
    NODERED_NODE_SERVICE,
    PASSING_TYPES,
    RULE_TYPES,
    is_sequence_node,
    supported_types_text,
)
from nodered_semantics.timed import RELEASE_PORT, SCHEDULE_PORT, is_timed_node
from service_runtime.sdk import Outputs, Service
from services.nodered.batch import run_batch
from services.nodered.catch import run_catch
from services.nodered.change import run_change
from services.nodered.common import Fail, Sent, node_error, node_label
from services.nodered.csv_node import run_csv
from services.nodered.file_node import run_file_node
from services.nodered.function import FunctionLimits, FunctionSandbox, run_function
from services.nodered.html_node import run_html
from services.nodered.http_self import run_http_self
from services.nodered.join import run_join
from services.nodered.json_node import run_json
from services.nodered.range import run_range
from services.nodered.sort import run_sort, run_sort_sequence
from services.nodered.split import run_split
from services.nodered.state import NodeState
from services.nodered.switch import run_switch, run_switch_sequence
from services.nodered.template import run_template
from services.nodered.timed import run_timed
from services.nodered.xml_node import run_xml
from services.nodered.yaml_node import run_yaml

__all__ = [
    "NODERED_NODE_SCHEMA",
    "nodered_node_service",
    "run_node",
    "run_node_in_context",
    "run_rule_node",
    "run_sequence_node",
    "run_sequence_node_in_context",
]


def _cyclic(value: Any, above: set[int]) -> bool:
    if not isinstance(value, dict | list):
        return False
    if id(value) in above:
        return True
    above.add(id(value))
    found = any(_cyclic(v, above) for v in (value.values() if isinstance(value, dict) else value))
    above.discard(id(value))
    return found


def run_rule_node(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    env: Mapping[str, Any],
    fail: Fail,
    context: ContextView | None = None,
) -> Sent:
    """Run a change/switch/range/sort node on ``msg`` (a copy the node may change)."""
    kind = node.get("type")
    try:
        if kind == "change":
            sent = run_change(node, msg, env, context)
        elif kind == "switch":
            sent = run_switch(node, msg, env, context)
        elif kind == "range":
            sent = run_range(node, msg)
        else:
            sent = run_sort(node, msg, env)
        if sent and _cyclic(msg, set()):
            raise fail(node, "the message now contains itself, which JSON cannot carry")
        return sent
    except JsonataError as exc:
        raise fail(node, f"invalid JSONata expression: {exc}") from exc
    except JSThrowError as exc:
        raise fail(node, str(exc)) from exc
    except ValueError as exc:
        raise fail(node, str(exc)) from exc


NODERED_NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["node"],
    "anyOf": [{"required": ["msg"]}, {"required": ["messages"]}],
    "properties": {
        "node": {"type": "object", "required": ["id", "type"]},
        "msg": {"type": "object"},
        "messages": {"type": "array", "items": {"type": "object"}},
        "env": {"type": "object"},
        "context": {"type": "object"},
        "events": {"type": "array", "items": {"enum": ["status", "complete"]}},
        "tick": {"type": "object"},
        "origin": {"type": "object"},
        "version": {},
        FILES_KEY: {"type": "object"},
    },
}


def run_node(
    node: Mapping[str, Any],
    msg: Mapping[str, Any],
    *,
    env: Mapping[str, Any] | None = None,
    context: Mapping[str, Mapping[str, Any]] | None = None,
    limits: FunctionLimits | None = None,
    sandbox: FunctionSandbox | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """Run ``node`` on a copy of ``msg``; the messages it sends, as ``(port, msg)`` pairs.

    ``sandbox``: run function bodies in its child processes (what the service does); without
    one they run in this process. What the node writes to context is dropped here
    (:func:`run_node_in_context` hands it back).

    Raises:
        ServiceError: (not retryable) the node type is not supported, its configuration is
            unusable, or it failed on this message; the message names the node.
    """
    sent, _ = run_node_in_context(
        node, msg, env=env, context=context, limits=limits, sandbox=sandbox
    )
    return sent


def run_node_in_context(
    node: Mapping[str, Any],
    msg: Mapping[str, Any],
    *,
    env: Mapping[str, Any] | None = None,
    context: Mapping[str, Mapping[str, Any]] | None = None,
    limits: FunctionLimits | None = None,
    sandbox: FunctionSandbox | None = None,
    events: Collection[str] = (),
    tick: Mapping[str, Any] | None = None,
    origin: Mapping[str, Any] | None = None,
    version: Any = None,
) -> tuple[Sent, list[ContextWrite]]:
    """:func:`run_node`, and what the node wrote to context (``context``: the contents of the
    ``node``/``flow``/``global`` scopes it starts from), one write per top-level key set.

    ``events``: which of the node's events to report besides (``status``: the statuses it
    set, on port :data:`STATUS_PORT`; ``complete``: its completion of the message, on port
    :data:`COMPLETE_PORT`), each as the message a status or complete node sends.

    A node that keeps state between messages (:func:`~nodered_semantics.context.keeps_state`)
    finds it under :data:`~nodered_semantics.context.STATE_KEY` of its node scope, kept for
    workflow version ``version`` (another version's state is none: a deploy starts the node
    afresh); its new state is one more write. A trigger or delay node
    (:mod:`services.nodered.timed`) keeps its queue and timers there; what it sends later is a
    ``(SCHEDULE_PORT, {tick, at, msg})`` pair, and ``tick`` runs such a schedule when it is due
    (a function's ``setTimeout`` sends too: :func:`_function_sends`)."""
    message = copy.deepcopy(dict(msg))
    view = ContextView.of(copy.deepcopy(dict(context or {})))
    if tick is not None and not is_timed_node(node):  # a message its function sent later
        return [(int(tick.get("out") or 0), message)], []
    state = NodeState.of(node, view, version)
    if is_timed_node(node):
        sent, schedules, kept = run_timed(node, message, state.data, time.time(), tick, origin)
        state.data = kept
        later = [(s["port"], {k: v for k, v in s.items() if k != "port"}) for s in schedules]
        return [*sent, *later], state.writes()
    sent, writes = _run_in_view(node, message, env, view, state, limits, sandbox, events)
    return sent, writes + state.writes()


def _run_in_view(
    node: Mapping[str, Any],
    message: dict[str, Any],
    env: Mapping[str, Any] | None,
    view: ContextView,
    state: NodeState,
    limits: FunctionLimits | None,
    sandbox: FunctionSandbox | None,
    events: Collection[str] = (),
) -> tuple[Sent, list[ContextWrite]]:
    kind = str(node.get("type", ""))
    if kind == "function":
        run = sandbox.run if sandbox is not None else run_function
        if state.kept and state.data.get("setup"):  # its setup ran for this deployment
            node = {k: v for k, v in node.items() if k != "initialize"}
        result = run(node, message, limits=limits, env=env, context=view.data)
        if state.kept:
            state.data["setup"] = True
        ran = ContextView(
            {scope: dict(result.context.get(scope) or {}) for scope in view.data},
            {scope: set(keys) for scope, keys in result.touched.items()},
        )
        sent = _function_sends(result.outputs, result.delays_ms)
        if "status" in events:
            sent += [(STATUS_PORT, status) for status in result.statuses]
        if "complete" in events and result.completed is not None:
            sent.append((COMPLETE_PORT, complete_event(node, result.completed)))
        return sent, ran.writes()
    if kind == "debug":
        return _run_debug(node, message, state, events), []
    if kind in WATCHER_TYPES:  # a status or complete node sends what it is given
        return [(0, message)], []
    if kind == "template":
        return run_template(node, message, env or {}, view), view.writes()
    if kind == "json":
        return run_json(node, message), []
    if kind == "csv":
        return run_csv(node, message, state.data if state.kept else None), []
    if kind == "split":
        return run_split(node, message, state.data if state.kept else None), []
    if kind == "yaml":
        return run_yaml(node, message), []
    if kind == "xml":
        return run_xml(node, message), []
    if kind == "html":
        return run_html(node, message), []
    if is_sequence_node(node):
        return _run_sequence(node, [message], env, state), []
    if kind in RULE_TYPES:
        return run_rule_node(node, message, env or {}, node_error, view), view.writes()
    if kind == "catch":
        return run_catch(node, message), []
    if kind in PASSING_TYPES:  # a junction or link out kept as a step: on, unchanged
        return [(0, message)], []
    if kind == HTTP_RESPONSE_TYPE or (kind == HTTP_REQUEST_TYPE and HTTP_ENDPOINT in node):
        return run_http_self(node, message), []  # a call of the flow's own http in endpoint
    raise ServiceError(
        f"{node_label(node)}: the {kind!r} node type runs only on Node-RED (the step engine "
        f"supports {supported_types_text()}); set spec.engine: nodered for this workflow",
        retryable=False,
        node=str(node.get("id", "?")),
        type=kind,
    )


def _run_debug(
    node: Mapping[str, Any], msg: dict[str, Any], state: NodeState, events: Collection[str]
) -> Sent:
    """A debug node's events: its status (``tostatus``) and its completion; it sends nothing.

    It sets a status only when it differs from the last one it set (``oldState`` in
    21-debug.js), which it keeps in its node state (:class:`NodeState`): a new workflow version
    starts it afresh, as a deploy does on Node-RED."""
    sent: Sent = []
    if "status" in events:
        try:
            status = debug_status(node, msg)
        except ValueError as exc:
            raise node_error(
                node, f"its status for this message is not reproduced on the step engine: {exc}"
            ) from exc
        if status is not None:
            shown = json.dumps(status, separators=(",", ":"), ensure_ascii=False)
            if state.data.get("status") != shown:
                state.data["status"] = shown
                sent.append((STATUS_PORT, status_event(node, status)))
    if "complete" in events:
        sent.append((COMPLETE_PORT, complete_event(node, msg)))
    return sent


def _function_sends(outputs: Sent, delays_ms: list[float]) -> Sent:
    """A function's messages: those its setTimeout callbacks sent as schedules, due then."""
    if not any(delays_ms):
        return outputs
    now = time.time()
    sent: Sent = []
    for n, ((port, msg), delay_ms) in enumerate(zip(outputs, delays_ms, strict=False)):
        if delay_ms > 0 and port >= 0:
            later = {"tick": {"id": f"f{n}", "out": port}, "at": now + delay_ms / 1000, "msg": msg}
            sent.append((SCHEDULE_PORT, later))
        else:
            sent.append((port, msg))
    return sent


def run_sequence_node(
    node: Mapping[str, Any],
    messages: list[Mapping[str, Any]],
    *,
    env: Mapping[str, Any] | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """Run a sequence node (a join, a batch, a sort of a sequence, a switch recreating
    sequences: :func:`~nodered_semantics.support.is_sequence_node`) over every message that
    reached it in a job, in order (copies the node may change); the messages it sends. A batch
    starts afresh (:func:`run_sequence_node_in_context` keeps what it holds between jobs).

    Raises:
        ServiceError: (not retryable) a group is left incomplete, an expression fails, or the
            node is not a sequence node; the message names the node.
    """
    sent, _ = run_sequence_node_in_context(node, messages, env=env)
    return sent


def run_sequence_node_in_context(
    node: Mapping[str, Any],
    messages: list[Mapping[str, Any]],
    *,
    env: Mapping[str, Any] | None = None,
    context: Mapping[str, Mapping[str, Any]] | None = None,
    version: Any = None,
) -> tuple[Sent, list[ContextWrite]]:
    """:func:`run_sequence_node` for a node that may keep state between jobs (a batch holding
    messages), as :func:`run_node_in_context` keeps it: its state and what changed of it."""
    view = ContextView.of(copy.deepcopy(dict(context or {})))
    state = NodeState.of(node, view, version)
    sent = _run_sequence(node, [copy.deepcopy(dict(m)) for m in messages], env, state)
    return sent, state.writes()


def _run_sequence(
    node: Mapping[str, Any],
    copies: list[dict[str, Any]],
    env: Mapping[str, Any] | None,
    state: NodeState,
) -> Sent:
    kind = str(node.get("type", ""))
    if not is_sequence_node(node):
        raise node_error(node, f"a {kind!r} node runs on one message at a time, not on a sequence")
    try:
        if kind in ("csv", "split"):  # one message after the other, in order, with its state
            run = run_csv if kind == "csv" else run_split
            data = state.data if state.kept else None
            return [out for msg in copies for out in run(node, msg, data)]
        if kind == "batch":
            return run_batch(node, copies, state.data if state.kept else None)
        if kind == "sort":
            return run_sort_sequence(node, copies, env or {})
        if kind == "switch":
            return run_switch_sequence(node, copies, env or {})
        return run_join(node, copies, env or {})
    except JsonataError as exc:
        raise node_error(node, f"invalid JSONata expression: {exc}") from exc
    except (JSThrowError, ValueError) as exc:
        raise node_error(node, str(exc)) from exc


def nodered_node_service(*, limits: FunctionLimits | None = None) -> Service:
    """The ``nodered-node`` built-in service (see the module docstring for its payload).

    Function bodies run in a :class:`FunctionSandbox`'s child processes: a body that crashes
    QuickJS fails its call instead of the worker.
    """
    sandbox = FunctionSandbox()

    def handle(payload: Any) -> Outputs | None:
        calls = payload if isinstance(payload, list) else [payload]
        out = Outputs()
        for call in calls:
            node = call["node"]
            env = call.get("env") if isinstance(call.get("env"), Mapping) else None
            context = call.get("context") if isinstance(call.get("context"), Mapping) else None
            writes: list[ContextWrite] = []
            version = call.get("version")
            if node.get("type") in FILE_TYPES and "msg" in call:  # on the caller's file store
                files = call.get(FILES_KEY) if isinstance(call.get(FILES_KEY), Mapping) else {}
                sent_files, ops = run_file_node(node, copy.deepcopy(dict(call["msg"])), files)
                for port, sent in sent_files:
                    out.append({"port": port, "msg": sent})
                if ops:
                    out.append({"port": FILES_PORT, "ops": ops})
                continue
            if "messages" in call:  # a sequence node: every message that reached it in the job
                sent_messages, writes = run_sequence_node_in_context(
                    node, call["messages"], env=env, context=context, version=version
                )
            else:
                events = call.get("events") if isinstance(call.get("events"), list) else []
                tick = call.get("tick") if isinstance(call.get("tick"), Mapping) else None
                origin = call.get("origin") if isinstance(call.get("origin"), Mapping) else None
                sent_messages, writes = run_node_in_context(
                    node,
                    call["msg"],
                    env=env,
                    context=context,
                    limits=limits,
                    sandbox=sandbox,
                    events=[str(e) for e in events],
                    tick=tick,
                    origin=origin,
                    version=version,
                )
            for port, sent in sent_messages:
                if port in (SCHEDULE_PORT, RELEASE_PORT):  # sent later, or released now
                    out.append({"port": port, **sent})
                else:
                    out.append({"port": port, "msg": sent})
            if writes:
                out.append({"port": CONTEXT_PORT, "writes": [w.as_json() for w in writes]})
        return out or None

    return Service(
        name=NODERED_NODE_SERVICE,
        version="1",
        handler=handle,
        description=f"Run one Node-RED node ({supported_types_text()}) on one message.",
        input_schema=NODERED_NODE_SCHEMA,
        # Not inline: a function body may run for its whole CPU budget.
        inline=False,
    )
