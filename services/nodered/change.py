"""The ``change`` node (Node-RED ``15-change.js``): set, change, delete and move message
properties. A ``set`` of ``undefined`` deletes the property; ``set msg.a to msg.payload`` shares
the value (no deep copy) unless the rule asks for a copy, as in Node-RED."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

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


def run_change(node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any]) -> Sent:
    for rule in change_rules(node):
        if rule["t"] == "move":
            source, target = str(rule.get("p", "")), str(rule.get("to", ""))
            if target in source and source != target:  # a child up to its parent: directly
                steps = [("set", target, source), ("delete", source, None)]
            else:  # (as Node-RED does it) through a temporary property
                steps = [("set", "_temp_move", source), ("delete", source, None)]
                steps += [("set", target, "_temp_move"), ("delete", "_temp_move", None)]
            for action, prop, to in steps:
                _change_rule(node, msg, env, {"t": action, "p": prop, "to": to, "tot": "msg"})
        else:
            _change_rule(node, msg, env, rule)
    return [(0, msg)]


def _change_rule(
    node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any], rule: dict[str, Any]
) -> None:
    """``applyRule``: a property that cannot be read or set leaves the message as it was."""
    try:
        value = _to_value(node, msg, env, rule)
        if rule.get("dc"):
            value = copy.deepcopy(value)
        from_type, from_value, from_re = _from_value(msg, rule)
    except JSThrowError:
        return
    prop = str(rule.get("p", ""))
    try:
        if rule["t"] == "delete":
            set_property(msg, prop, UNDEFINED)
        elif rule["t"] == "set":
            set_property(msg, prop, value)
        elif rule["t"] == "change":
            current = get_property(msg, prop)
            if isinstance(current, str):
                if from_type in ("num", "bool", "str") and current == from_value:
                    set_property(msg, prop, value)
                else:
                    replaced: Any = js_replace(current, from_re, value, global_=True)
                    if rule["tot"] == "bool" and replaced == js_string(value):
                        replaced = value
                    set_property(msg, prop, replaced)
            elif is_js_number(current) and from_type == "num":
                if current == js_number(from_value):
                    set_property(msg, prop, value)
            elif (
                isinstance(current, bool)
                and from_type == "bool"
                and js_string(current) == from_value
            ):
                set_property(msg, prop, value)
    except JSThrowError:
        pass


def _to_value(
    node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any], rule: dict[str, Any]
) -> Any:
    kind, to = rule["tot"], rule.get("to", UNDEFINED)
    if kind == "msg":
        return get_property(msg, js_string(to))  # a throw skips the rule
    if kind == "str":
        return to
    if kind == "num":
        return js_number(to)
    return typed_value(to, kind, msg, node, env)


def _from_value(msg: dict[str, Any], rule: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``getFromValue``: (type, value, compiled regex) of a ``change`` rule's search."""
    if rule["t"] != "change":
        return None, None, None
    fromt, raw = rule["fromt"], rule.get("from", "")
    if fromt == "msg":
        found = get_property(msg, js_string(raw))
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
