"""Node-RED's ``status`` and ``complete`` events: which node reports them, to which node, as
which message (Node-RED 4.1: ``Flow.handleStatus``/``handleComplete``, ``Node.status``,
``Node._complete``, the ``status`` and ``complete`` nodes).

* **status**: a node sets its status (``node.status({fill, shape, text})`` in a function, a
  debug node showing a value under itself); every ``status`` node of its tab whose scope holds
  it (every node of the tab when it lists none) gets ``{status: {fill, shape, text, source:
  {id, type, name}}}`` (the text made a string). The event is fire-and-forget: Node-RED does
  not order it against the messages the node sends.
* **complete**: a node calls ``done()`` for a message (a function when its body returned, or
  when the body calls ``node.done()``; a debug node once it showed the message); every
  ``complete`` node listing it gets a copy of the message the node was given (as the node left
  it) with ``msg.complete = {source: {id, type, name}}``. A complete node with no list gets
  nothing.

Both nodes drop from their lists the nodes they are wired to (Node-RED's loop guard, with its
quirk: after a dropped entry the next one is not looked at).

The step engine reports the events of native steps (:data:`STATUS_PORT`,
:data:`COMPLETE_PORT` packets of the ``nodered-node`` service) and delivers them to the status
and complete steps the step leads to; :func:`status_problem` and :func:`completion_problem`
say which nodes' events it does not reproduce, so a flow watching them is refused.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import UNDEFINED, js_string

__all__ = [
    "COMPLETE_PORT",
    "EVENT_PORTS",
    "STATUS_PORT",
    "WATCHER_TYPES",
    "complete_event",
    "completion_problem",
    "debug_status",
    "emits_event",
    "inspect_value",
    "scope_of",
    "status_event",
    "status_problem",
    "watcher_problem",
    "watches",
]

STATUS_PORT = -4
"""The output "port" of a status a node set while handling a message: the packet's msg is
what a status node sends (``{status: {..., source}}``)."""
COMPLETE_PORT = -5
"""The output "port" of a node's completion of a message: the packet's msg is what a complete
node sends (the message with ``complete: {source}``)."""
EVENT_PORTS = {"status": STATUS_PORT, "complete": COMPLETE_PORT}
"""The port of each event, by the type of the node that receives it."""
WATCHER_TYPES = frozenset(EVENT_PORTS)

# Core node types that never set a status while handling a message (their constructors may, at
# deploy, before Node-RED lists the status nodes of the flow).
_SILENT_TYPES = frozenset(
    {
        "inject",
        "catch",
        "status",
        "complete",
        "link in",
        "link out",
        "link call",
        "comment",
        "junction",
        "change",
        "switch",
        "range",
        "template",
        "json",
        "xml",
        "yaml",
        "html",
        "split",
        "join",
        "sort",
        "batch",
        "http in",
        "http response",
    }
)


def scope_of(watcher: Mapping[str, Any]) -> list[str] | None:
    """The node ids a status or complete node watches (None: every node of its tab), after
    Node-RED drops the nodes it is wired to (a ``splice`` inside a counting loop, so the entry
    after a dropped one stays)."""
    scope = watcher.get("scope")
    if watcher.get("type") == "complete":
        scope = scope or []
    if not isinstance(scope, list):
        return None
    ids = list(scope)
    wired = {t for port in watcher.get("wires") or [] if isinstance(port, list) for t in port}
    i = 0
    while i < len(ids):
        if ids[i] in wired:
            del ids[i]
        i += 1
    return [str(i) for i in ids]


def watches(watcher: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether ``watcher`` (an enabled status or complete node) gets ``node``'s events."""
    if watcher.get("d") is True or watcher.get("type") not in WATCHER_TYPES:
        return False
    if str(watcher.get("z") or "") != str(node.get("z") or ""):
        return False
    scope = scope_of(watcher)
    if scope is None:
        return str(node.get("id")) != str(watcher.get("id"))
    return str(node.get("id")) in scope


def watcher_problem(watcher: Mapping[str, Any]) -> str | None:
    """Why a status or complete node's scope is not reproduced, or None."""
    scope = watcher.get("scope")
    if watcher.get("type") == "status" and scope not in (None, "") and not isinstance(scope, list):
        return f"it reports the status of its {scope!r} (only the tab or listed nodes are)"
    if (
        watcher.get("type") == "complete"
        and scope not in (None, "")
        and not isinstance(scope, list)
    ):
        return f"its scope {scope!r} is not a list of nodes"
    return None


def emits_event(node: Mapping[str, Any], watcher_type: str) -> bool:
    """Whether the step engine reports the event a ``watcher_type`` node (status, complete)
    gets from ``node``: a function's completions and, when its body names ``status``, its
    statuses; a debug node's completions and, when it shows values as its status, its
    statuses."""
    kind = node.get("type")
    if watcher_type == "complete":
        return kind in ("function", "debug")
    if kind == "function":  # a body that never names status sets none
        return "status" in _function_code(node)
    return kind == "debug" and node.get("tostatus") is True


def _function_code(node: Mapping[str, Any]) -> str:
    return str(node.get("func") or "")


_NODE_DONE = re.compile(r"node\.done\s*\(")
_STATUS_CALL = re.compile(r"\bstatus\s*\(")


def status_problem(node: Mapping[str, Any]) -> str | None:
    """Why the step engine does not report the status ``node`` sets while handling messages
    as Node-RED does (None: it reports it, or the node sets none)."""
    kind = str(node.get("type", ""))
    if kind == "function":
        if _STATUS_CALL.search(str(node.get("initialize") or "")):
            return (
                "its setup code (initialize) sets its status once at deploy, which the step "
                "engine does not report"
            )
        return None
    if kind == "debug":
        if node.get("tostatus") is not True:
            return None
        if node.get("statusType") == "counter":
            return "it shows a message counter, updated on a timer"
        if node.get("statusType") == "jsonata" or (
            node.get("targetType") == "jsonata" and node.get("statusType", "auto") == "auto"
        ):
            return "it shows a JSONata expression's value, which the step engine does not report"
        return None
    if kind in _SILENT_TYPES:
        return None
    if kind.startswith("subflow:"):
        return "the status of the nodes in a subflow instance reaches its tab as the instance's"
    return f"a {kind} node sets its status in ways the step engine does not report"


def completion_problem(node: Mapping[str, Any]) -> str | None:
    """Why the step engine does not report ``node``'s completions (its ``done()``) as
    Node-RED does, or None."""
    kind = str(node.get("type", ""))
    if kind == "function":
        if _NODE_DONE.search(_function_code(node)):
            return "its code calls node.done() itself, which the step engine does not follow"
        return None
    if kind == "debug":
        if node.get("targetType") == "jsonata":
            return "it completes a message only when its JSONata expression succeeds"
        return None
    return (
        f"the step engine reports the completion of function and debug nodes only, not of a "
        f"{kind} node"
    )


def _source(node: Mapping[str, Any]) -> dict[str, Any]:
    source: dict[str, Any] = {"id": node.get("id"), "type": node.get("type")}
    if "name" in node:  # the function and debug nodes set this.name = n.name
        source["name"] = node["name"]
    return source


def status_event(node: Mapping[str, Any], status: Any) -> dict[str, Any]:
    """The message a status node sends for ``status`` set by ``node`` (``Node.status``: a
    string, number or boolean is ``{text}``; ``Flow.handleStatus``: the text made a string)."""
    if isinstance(status, str | bool | int | float) and status is not UNDEFINED:
        status = {"text": js_string(status)}
    body = copy.deepcopy(dict(status)) if isinstance(status, Mapping) else {}
    if "text" in body:
        body["text"] = js_string(body["text"])
    body["source"] = _source(node)
    return {"status": body}


def complete_event(node: Mapping[str, Any], msg: Mapping[str, Any]) -> dict[str, Any]:
    """The message a complete node sends when ``node`` completed ``msg``."""
    out = copy.deepcopy(dict(msg))
    out["complete"] = {"source": _source(node)}
    return out


_STATUS_LENGTH = 32  # RED.settings.debugStatusLength


def debug_status(node: Mapping[str, Any], msg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The status a debug node with ``tostatus`` sets for ``msg`` (None: it sets none), as
    21-debug.js computes it ("auto" or a message property). Node-RED sets it only when it
    differs from the last one: the caller compares.

    Raises:
        ValueError: the value is one whose ``util.inspect`` text is not reproduced here.
    """
    from nodered_semantics.msg_paths import get_property

    if node.get("tostatus") is not True:
        return None
    status = msg.get("status")
    source = status.get("source") if isinstance(status, Mapping) else None
    if isinstance(source, Mapping) and source.get("id") == node.get("id"):
        return None  # its own status coming back: ignored
    complete = str(node.get("complete") or "payload")
    if complete == "false":
        complete = "payload"
    kind = node.get("statusType") or "auto"

    def read(prop: str) -> Any:
        try:
            return get_property(dict(msg), prop)
        except Exception:
            return UNDEFINED

    if kind == "auto":
        output = msg.get("payload", UNDEFINED) if complete == "true" else read(complete)
    else:
        output = read(str(node.get("statusVal") or complete))
    text = output if isinstance(output, str) else inspect_value(output)
    fill, shape = "grey", "dot"
    if (
        isinstance(output, Mapping)
        and output.get("fill")
        and output.get("shape")
        and output.get("text")
    ):
        fill, shape, text = output["fill"], output["shape"], output["text"]
    if kind == "auto":
        if "error" in msg:
            error = msg["error"]
            fill = "red"
            text = error.get("message", UNDEFINED) if isinstance(error, Mapping) else UNDEFINED
        if "status" in msg:
            given = msg["status"] if isinstance(msg["status"], Mapping) else {}
            fill = given.get("fill") or "grey"
            shape = given.get("shape") or "ring"
            text = given.get("text") or ""
    if not isinstance(text, str):
        raise ValueError("its status text is not a string (Node-RED would fail on it)")
    if len(text.encode("utf-16-le")) // 2 > _STATUS_LENGTH:
        if any(ord(c) > 0xFFFF for c in text):
            raise ValueError("its status text has characters outside the BMP")
        text = text[:_STATUS_LENGTH] + "..."
    return {"fill": fill, "shape": shape, "text": text}


def inspect_value(value: Any) -> str:
    """``util.inspect(value)`` for what a JSON message holds, when short enough to stay on one
    line (flat arrays and objects of at most six entries).

    Raises:
        ValueError: a value whose layout is not reproduced here.
    """
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and value == 0 and math.copysign(1, value) < 0:
            return "-0"
        return js_string(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, list | dict):
        entries = (
            [_flat_entry(v) for v in value]
            if isinstance(value, list)
            else [f"{_key(k)}: {_flat_entry(v)}" for k, v in value.items()]
        )
        if not entries:
            return "[]" if isinstance(value, list) else "{}"
        if len(entries) > 6:
            raise ValueError("util.inspect groups or breaks the lines of longer lists")
        start = len(entries) + 1 + 10
        if sum(len(e) for e in entries) + len(entries) + start > 80:
            raise ValueError("util.inspect breaks this value over several lines")
        open_, close = ("[", "]") if isinstance(value, list) else ("{", "}")
        return f"{open_} {', '.join(entries)} {close}"
    raise ValueError(f"a {type(value).__name__} value")


def _flat_entry(value: Any) -> str:
    if isinstance(value, list | dict) and value:
        raise ValueError("util.inspect of nested values is not reproduced")
    return inspect_value(value)


_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z_$0-9]*$")


def _key(key: str) -> str:
    return key if _IDENTIFIER.match(key) else _quoted(key)


def _quoted(text: str) -> str:
    if "\n" in text or "\\" in text or any(ord(c) < 0x20 for c in text):
        raise ValueError("util.inspect escapes in strings are not reproduced")
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    if "`" not in text:
        return f"`{text}`"
    raise ValueError("util.inspect quoting of this string is not reproduced")
