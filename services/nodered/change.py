"""The ``change`` node (Node-RED ``15-change.js``): set, change, delete and move message
properties. A ``set`` of ``undefined`` deletes the property; ``set msg.a to msg.payload`` shares
the value (no deep copy) unless the rule asks for a copy, as in Node-RED. A rule's property
(``pt``), value (``tot``) and search (``fromt``) may be ``flow``/``global`` context, read and
written through the node's :class:`~nodered_semantics.context.ContextView`."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from nodered_semantics.context import ContextView
from nodered_semantics.js import (
    UNDEFINED,
    JSThrowError,
    is_js_number,
    js_number,
    js_regex,
    js_replace,
    js_string,
)
from nodered_semantics.msg_paths import get_property, set_property
from nodered_semantics.support import change_rules
from nodered_semantics.typed_values import typed_value
from services.nodered.common import Sent

__all__ = ["run_change"]


def run_change(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    env: Mapping[str, Any],
    context: ContextView | None = None,
) -> Sent:
    view = context if context is not None else ContextView.of(None)
    for rule in change_rules(node):
        if rule["t"] == "move":
            source, target = str(rule.get("p", "")), str(rule.get("to", ""))
            pt, tot = rule["pt"], rule["tot"]
            if tot != pt or (target in source and source != target):  # set, then delete
                steps = [("set", target, tot, source, pt), ("delete", source, pt, None, None)]
            else:  # (as Node-RED does it) through a temporary property
                steps = [("set", "_temp_move", tot, source, pt)]
                steps += [
                    ("delete", source, pt, None, None),
                    ("set", target, tot, "_temp_move", pt),
                ]
                steps += [("delete", "_temp_move", pt, None, None)]
            for action, prop, prop_type, to, to_type in steps:
                step = {"t": action, "p": prop, "pt": prop_type, "to": to, "tot": to_type}
                _change_rule(node, msg, env, view, step)
        else:
            _change_rule(node, msg, env, view, rule)
    return [(0, msg)]


def _change_rule(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    env: Mapping[str, Any],
    context: ContextView,
    rule: dict[str, Any],
) -> None:
    """``applyRule``: a property that cannot be read or set leaves the message as it was."""
    try:
        value = _to_value(node, msg, env, context, rule)
        if rule.get("dc"):
            value = copy.deepcopy(value)
        from_type, from_value, from_re = _from_value(msg, context, rule)
    except JSThrowError:
        return
    prop = str(rule.get("p", ""))
    scope = rule.get("pt") or "msg"

    def read() -> Any:
        return get_property(msg, prop) if scope == "msg" else context.get(scope, prop)

    def write(new: Any) -> None:
        if scope == "msg":
            set_property(msg, prop, new)
        else:
            context.set(scope, prop, new)

    try:
        if rule["t"] == "delete":
            write(UNDEFINED)
        elif rule["t"] == "set":
            write(value)
        elif rule["t"] == "change":
            current = read()
            if isinstance(current, str):
                if from_type in ("num", "bool", "str") and current == from_value:
                    write(value)
                else:
                    replaced: Any = js_replace(current, from_re, value, global_=True)
                    if rule["tot"] == "bool" and replaced == js_string(value):
                        replaced = value
                    write(replaced)
            elif is_js_number(current) and from_type == "num":
                if current == js_number(from_value):
                    write(value)
            elif (
                isinstance(current, bool)
                and from_type == "bool"
                and js_string(current) == from_value
            ):
                write(value)
    except JSThrowError:
        pass


def _to_value(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    env: Mapping[str, Any],
    context: ContextView,
    rule: dict[str, Any],
) -> Any:
    kind, to = rule["tot"], rule.get("to", UNDEFINED)
    if kind == "msg":
        return get_property(msg, js_string(to))  # a throw skips the rule
    if kind == "str":
        return to
    if kind == "num":
        return js_number(to)
    return typed_value(to, kind, msg, node, env, context)


def _from_value(
    msg: dict[str, Any], context: ContextView, rule: dict[str, Any]
) -> tuple[Any, Any, Any]:
    """``getFromValue``: (type, value, compiled regex) of a ``change`` rule's search."""
    if rule["t"] != "change":
        return None, None, None
    fromt, raw = rule["fromt"], rule.get("from", "")
    if fromt in ("msg", "flow", "global"):
        found = (
            get_property(msg, js_string(raw))
            if fromt == "msg"
            else context.get(fromt, js_string(raw))
        )
        if is_js_number(found):
            return "num", found, None
        if isinstance(found, bool):
            return "bool", found, None
        if isinstance(found, str):
            return "str", found, re.compile(re.escape(found))
        # Node-RED reports the error, then goes on with an undefined search
        return None, None, None
    text = js_string(raw)
    if fromt == "re":
        return "re", text, js_regex(text)
    return fromt, text, re.compile(re.escape(text))
