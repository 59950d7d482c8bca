"""The ``switch`` node (Node-RED ``10-switch.js``): route a message to the ports whose rules
hold, with JavaScript comparison (``"10" == 10``) and JSONata rules that see ``$I``/``$N``. The
rules on message sequences are refused beforehand (:mod:`nodered_semantics.support`); flow and
global values are read from the node's :class:`~nodered_semantics.context.ContextView`.

With "recreate message sequences" (``repair``) the node gets every message that reached it in a
job (:func:`run_switch_sequence`): it routes a sequence (``msg.parts`` with ``id`` and
``index``) once all ``parts.count`` messages are in, then gives each port's share a new sequence
(a new ``parts.id``, ``index`` and ``count`` per port)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from nodered_semantics.context import ContextView
from nodered_semantics.js import (
    UNDEFINED,
    JSThrowError,
    is_js_number,
    is_nan,
    js_gt,
    js_gte,
    js_loose_equal,
    js_lt,
    js_lte,
    js_regex,
    js_string,
)
from nodered_semantics.jsonata import JsonataError, evaluate_jsonata
from nodered_semantics.msg_paths import has_own
from nodered_semantics.support import switch_rule_values
from nodered_semantics.typed_values import parse_json_text, typed_value
from services.nodered.common import Sent, by_sequence

__all__ = ["run_switch", "run_switch_sequence"]


def run_switch_sequence(
    node: Mapping[str, Any], messages: list[dict[str, Any]], env: Mapping[str, Any]
) -> Sent:
    """Every message a switch with ``repair`` sends for ``messages`` (in delivery order)."""
    return by_sequence(
        node,
        messages,
        lambda group, count: _recreated(node, group, count, env),
        lambda msg: run_switch(node, msg, env),  # not part of a sequence: as without repair
    )


def _recreated(
    node: Mapping[str, Any], group: list[dict[str, Any]], count: Any, env: Mapping[str, Any]
) -> Sent:
    """A complete sequence routed message by message, then sent as one new sequence per port
    (``sendGroup``): what a message sends is ``onward``, one slot per rule evaluated."""
    rules = [r for r in node.get("rules") or [] if isinstance(r, Mapping)]
    stop_at_first = node.get("checkall") == "false"
    onwards: list[tuple[dict[str, Any], set[int], int]] = []
    for msg in group:
        msg["parts"]["count"] = count
        ports = {port for port, _ in run_switch(node, msg, env)}
        # Node-RED stops evaluating after the first match when checkall is "false".
        evaluated = max(ports) + 1 if stop_at_first and ports else len(rules)
        onwards.append((msg, ports, evaluated))
    if not onwards:
        return []
    port_count = onwards[-1][2]  # the last message's onward.length, as Node-RED takes it
    # A slot past a shorter onward is undefined, which Node-RED counts as a message (!== null).
    counts = [
        sum(1 for _, ports, evaluated in onwards if j in ports or j >= evaluated)
        for j in range(port_count)
    ]
    ids = [uuid.uuid4().hex[:16] for _ in range(port_count)]
    indexes = [0] * port_count
    sent: Sent = []
    for msg, ports, _ in onwards:
        for j in range(port_count):
            if j in ports:
                out = copy.deepcopy(msg)
                out["parts"].update(id=ids[j], index=indexes[j], count=counts[j])
                indexes[j] += 1
                sent.append((j, out))
    return sent


def run_switch(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    env: Mapping[str, Any],
    context: ContextView | None = None,
) -> Sent:
    rules = [r for r in node.get("rules") or [] if isinstance(r, Mapping)]
    kind = node.get("propertyType") or "msg"
    if kind == "jsonata":
        try:
            prop = evaluate_jsonata(str(node.get("property")), msg, node, env, context=context)
        except JsonataError:
            return []  # Node-RED warns and sends nothing
    else:
        prop = typed_value(node.get("property"), kind, msg, node, env, context)
    parts = msg.get("parts")
    has_parts = isinstance(parts, dict) and "id" in parts and "index" in parts
    stop_at_first = node.get("checkall") == "false"  # (n.checkall || "true") == "false"
    else_flag = True
    matched: list[int] = []
    for n, rule in enumerate(rules):
        v, vt, v2, v2t = switch_rule_values(rule)
        if vt == "jsonata":
            bindings = None
            if rule.get("t") == "jsonata_exp" and has_parts:
                assert isinstance(parts, dict)
                bindings = {"I": parts.get("index"), "N": parts.get("count")}
            v1 = evaluate_jsonata(str(v), msg, node, env, bindings, context)
        elif vt == "json":
            v1 = "json"
        elif vt == "null":
            v1 = "null"
        else:
            v1 = typed_value(v, vt, msg, node, env, context)
        if v2t == "jsonata":
            v2 = evaluate_jsonata(str(v2), msg, node, env, context=context)
        elif v2 is not UNDEFINED:
            v2 = typed_value(v2, v2t, msg, node, env, context)
        a = prop
        if rule.get("t") == "else":
            a, else_flag = else_flag, True
        if _operator(str(rule.get("t")), a, v1, v2, bool(rule.get("case"))):
            matched.append(n)
            else_flag = False
            if stop_at_first:
                break
    return [(port, msg if i == 0 else copy.deepcopy(msg)) for i, port in enumerate(matched)]


def _operator(t: str, a: Any, b: Any, c: Any, case: bool) -> bool:
    if t == "eq":
        return js_loose_equal(a, b)
    if t == "neq":
        return not js_loose_equal(a, b)
    if t == "lt":
        return js_lt(a, b)
    if t == "lte":
        return js_lte(a, b)
    if t == "gt":
        return js_gt(a, b)
    if t == "gte":
        return js_gte(a, b)
    if t == "btwn":
        return (js_gte(a, b) and js_lte(a, c)) or (js_lte(a, b) and js_gte(a, c))
    if t == "cont":
        return js_string(b) in js_string(a)
    if t == "regex":
        pattern = "(?:)" if b is UNDEFINED else js_string(b)
        return js_regex(pattern, ignore_case=case).search(js_string(a)) is not None
    if t in ("true", "false"):
        return a is (t == "true")
    if t == "null":
        return a is None or a is UNDEFINED
    if t == "nnull":
        return a is not None and a is not UNDEFINED
    if t in ("empty", "nempty"):
        if isinstance(a, str | list | dict):
            return (len(a) == 0) == (t == "empty")
        return False
    if t == "istype":
        return _istype(a, b)
    if t == "hask":
        if a is None or a is UNDEFINED or isinstance(b, dict | list) or b is None:
            return False
        return has_own(a, js_string(b)) if isinstance(a, dict | list | str) else False
    if t in ("jsonata_exp", "else"):
        return a is True if t == "else" else b is True
    raise JSThrowError(f"operators[{t!r}] is not a function")


def _istype(a: Any, b: Any) -> bool:
    if b == "array":
        return isinstance(a, list)
    if b == "buffer":
        return False
    if b == "json":
        try:
            parse_json_text(js_string(a))
        except ValueError:
            return False
        return True
    if b == "null":
        return a is None
    if b == "number":
        return is_js_number(a) and not is_nan(a)
    typeof: dict[type, str] = {bool: "boolean", str: "string", dict: "object"}
    typeof.update({int: "number", float: "number"})
    if a is UNDEFINED:
        return bool(b == "undefined")
    return a is not None and not isinstance(a, list) and bool(typeof.get(type(a)) == b)
