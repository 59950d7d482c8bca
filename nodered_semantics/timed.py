"""Node-RED's time-based nodes (``trigger``, ``delay``) outside Node-RED: what is kept, and what
is not reproduced.

Node-RED keeps a trigger's or a delay's state in the running node, across messages (and so across
jobs): the topics a trigger blocks, the messages a delay holds, when a rate limit last sent. Here
that state lives in the node's own ``node`` context scope under
:data:`nodered_semantics.context.STATE_KEY`, tagged with the workflow version (durable per
account, workflow and node; see :mod:`engines.step._context`), and a message the node sends later
is a *schedule*: a packet on port :data:`SCHEDULE_PORT`, ``{"port": -3, "tick": {...}, "at":
<epoch seconds>, "msg": {...}}``, which the caller turns into a durable timer. When the timer
fires, the caller runs the node again with ``{"tick": ..., "msg": ...}``: the node sends the
message if the tick is still pending in its state (a reset, an extended trigger or a newer
message of the same topic cancels it) and forgets it.

:func:`timed_problem` is the static check: which options are reproduced equal to Node-RED 4.1,
and why the others are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import is_nan, js_number
from nodered_semantics.typed_values import typed_value_problem

__all__ = [
    "RELEASE_PORT",
    "SCHEDULE_PORT",
    "TIMED_TYPES",
    "is_timed_node",
    "timed_problem",
]

TIMED_TYPES = frozenset({"trigger", "delay"})
SCHEDULE_PORT = -6
"""The output "port" of a message the node sends later: the caller times it durably."""
RELEASE_PORT = -7
"""The output "port" of a message held for another execution (``{"job", "parent", "tick"}``)
that a ``msg.flush`` releases now: the caller fires that execution's tick at once."""

TRIGGER_VALUE_TYPES = frozenset({"str", "num", "bool", "json", "null", "val", "nul", "pay"})
DELAY_MODES = frozenset({"delay", "delayv", "random", "rate", "timed"})


def is_timed_node(node: Mapping[str, Any]) -> bool:
    """A node whose behaviour depends on time and earlier messages, kept in its node context."""
    return node.get("type") in TIMED_TYPES


def timed_problem(node: Mapping[str, Any]) -> str | None:
    """Why a trigger or delay node cannot run here as Node-RED 4.1 runs it, or None."""
    if node.get("type") == "trigger":
        return _trigger_problem(node)
    if node.get("type") == "delay":
        return _delay_problem(node)
    return None


def _trigger_problem(node: Mapping[str, Any]) -> str | None:
    duration = js_number(node.get("duration"))
    if not is_nan(duration) and duration < 0:
        return (
            "it repeats its first output every interval until reset (a negative duration), "
            "which never lets a job end; run it on Node-RED"
        )
    for name in ("op1", "op2"):
        kind = node.get(f"{name}type") or "str"
        allowed = TRIGGER_VALUE_TYPES | ({"payl"} if name == "op2" else set())
        if kind not in allowed:
            return f"its {name} of type {kind!r} is not supported on the step engine"
        value = node.get(name) or ("1" if name == "op1" else "0")
        if kind == "str" and "{{" in str(value):
            return f"its {name} is a mustache template, which is not supported on the step engine"
        if kind in ("num", "json"):
            problem = typed_value_problem(value, kind)
            if problem is not None:
                return f"its {name}: {problem}"
    if node.get("units", "ms") not in ("ms", "s", "min", "hr"):
        return f"its duration unit {node.get('units')!r} is unknown"
    if node.get("bytopic", "all") not in ("all", "topic"):
        return f"its mode {node.get('bytopic')!r} is unknown"
    return None


def _delay_problem(node: Mapping[str, Any]) -> str | None:
    mode = node.get("pauseType") or "delay"
    if mode not in DELAY_MODES:
        return (
            f"its mode {mode!r} (a queue sending one topic per interval) is not supported on the "
            "step engine"
        )
    if mode in ("rate", "timed"):
        if node.get("allowrate"):
            return "it lets msg.rate change its rate, which is not supported on the step engine"
        if node.get("rateUnits", "second") not in ("second", "minute", "hour", "day"):
            return f"its rate unit {node.get('rateUnits')!r} is unknown"
        rate = js_number(node.get("rate"))
        if is_nan(rate) or rate <= 0:
            return f"its rate {node.get('rate')!r} is not a positive number"
    units = "randomUnits" if mode == "random" else "timeoutUnits"
    if mode in ("delay", "delayv", "random"):
        if node.get(units, "seconds") not in (
            "milliseconds",
            "seconds",
            "minutes",
            "hours",
            "days",
        ):
            return f"its unit {node.get(units)!r} is unknown"
        fields = ("randomFirst", "randomLast") if mode == "random" else ("timeout",)
        for name in fields:
            if is_nan(js_number(node.get(name))):
                return f"its {name} {node.get(name)!r} is not a number"
    return None
