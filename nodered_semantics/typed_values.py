"""Typed inputs of Node-RED nodes (``RED.util.evaluateNodeProperty``): ``str``, ``num``, ``bool``,
``json``, ``date``, ``msg``, ``jsonata``, ``env``; and which of them cannot be evaluated on one
message outside Node-RED (:func:`typed_value_problem`: Buffers, RegExps, Date objects).
flow/global values read the node's :class:`~nodered_semantics.context.ContextView`."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from nodered_semantics.context import ContextView
from nodered_semantics.js import UNDEFINED, JSThrowError, is_nan, js_number, js_string
from nodered_semantics.jsonata import (
    STATIC_ENV,
    env_names,
    env_problem,
    env_property,
    evaluate_jsonata,
    jsonata_problem,
)
from nodered_semantics.msg_paths import get_property

__all__ = [
    "CONTEXT_TYPES",
    "SUBFLOW_ENV_TYPES",
    "constant_value",
    "parse_json_text",
    "subflow_env_values",
    "typed_value",
    "typed_value_problem",
]

CONTEXT_TYPES = frozenset({"flow", "global"})


def typed_value_problem(value: Any, kind: Any, env: Collection[str] = ()) -> str | None:
    """Why a typed value of a node cannot be evaluated here (None when it can; ``env``: the
    variables the call provides besides :data:`STATIC_ENV`).

    flow/global values can: the caller hands :func:`typed_value` the node's
    :class:`~nodered_semantics.context.ContextView`."""
    if kind == "jsonata":
        return jsonata_problem(value, env)
    if kind == "env":
        for name in env_names(str(value or "")):
            if name not in STATIC_ENV and name not in env:
                return env_problem(name)
    if kind == "json":
        try:
            parse_json_text(str(value))
        except ValueError:
            return f"its JSON value {value!r} does not parse (Node-RED does not start the node)"
    if kind == "num" and is_nan(js_number(value)):
        return f"its number {value!r} is NaN, which a JSON message cannot carry"
    if kind == "bin":
        return "it makes a Buffer, which a JSON message cannot carry"
    if kind == "re":
        return "it makes a RegExp object, which a JSON message cannot carry"
    if kind == "date" and value not in (None, "", "iso"):
        return f"its date value {value!r} (a Date object or moment format) is not supported"
    return None


def parse_json_text(text: str) -> Any:
    """``JSON.parse``: no NaN/Infinity, unlike Python's json."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def typed_value(
    value: Any,
    kind: Any,
    msg: Any,
    node: Mapping[str, Any],
    env: Mapping[str, Any],
    context: ContextView | None = None,
) -> Any:
    """``evaluateNodeProperty(value, kind, node, msg)``; a msg read that throws gives UNDEFINED.

    flow/global values are read from ``context`` (without one they cannot be evaluated)."""
    if kind == "str":
        return js_string(value)
    if kind == "num":
        return js_number(value)
    if kind == "json":
        return parse_json_text(str(value))
    if kind == "bool":
        return bool(re.fullmatch(r"true", js_string(value), re.IGNORECASE))
    if kind == "date":
        if value == "iso":
            now = datetime.now(UTC)
            return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return int(time.time() * 1000)
    if kind == "msg":
        try:
            return get_property(msg, js_string(value))
        except JSThrowError:
            return UNDEFINED
    if kind == "jsonata":
        return evaluate_jsonata(str(value), msg, node, env, context=context)
    if kind == "env":
        return env_property(node, env, js_string(value))
    if kind in CONTEXT_TYPES and context is not None:
        return context.get(str(kind), js_string(value))
    if kind in CONTEXT_TYPES or kind in ("bin", "re"):
        raise JSThrowError(f"{kind} values are not supported on the step engine")
    return value


_CONSTANT_TYPES = frozenset({"str", "num", "bool", "json"})


def constant_value(value: Any, kind: Any) -> tuple[bool, Any]:
    """What a typed input stands for when it depends on neither the message nor the moment, as
    Node-RED evaluates it (:func:`typed_value`): ``(True, value)``.

    ``(False, None)`` for every other kind (``msg``, ``jsonata``, ``env``, context, ``date``,
    Buffers, RegExps) and for what a JSON document cannot hold (NaN, Infinity) or what Node-RED
    refuses (JSON text that does not parse). The translator maps a node to the IR only when its
    values are constants, so it reads them exactly as the node would at run time.
    """
    kind = kind or "str"
    if kind == "null":
        return (True, None)
    if kind not in _CONSTANT_TYPES:
        return (False, None)
    if kind == "json" and not isinstance(value, str):
        return (True, value)  # a flow written by a program may hold the parsed value
    try:
        found = typed_value(value, kind, None, {}, {})
    except ValueError:
        return (False, None)
    if isinstance(found, float) and (math.isnan(found) or math.isinf(found)):
        return (False, None)
    return (True, found)


SUBFLOW_ENV_TYPES = ("str", "num", "bool", "json", "env")
"""The types of subflow properties (env) whose values an import can resolve: Node-RED evaluates
them once, when the subflow instance starts, from the flow alone (``jsonata``, ``cred``,
``bin`` and ``conf-type`` need Node-RED's runtime)."""


def subflow_env_values(
    definition: Mapping[str, Any], instance: Mapping[str, Any], parent: Mapping[str, Any]
) -> dict[str, Any]:
    """The environment variables a subflow instance sets, as Node-RED evaluates them when it
    starts the instance (``evaluateEnvProperties``): the subflow's properties with the
    instance's over them by name; ``env`` properties last, reading this instance's other
    values, then ``parent`` (the variables around the instance; a property naming itself reads
    the parent's). A property whose value depends on what Node-RED alone knows (a variable of
    its settings or process, a type outside :data:`SUBFLOW_ENV_TYPES`) is left out, so a node
    reading it is refused rather than given a wrong value."""
    props: dict[str, Mapping[str, Any]] = {}
    for prop in [*(definition.get("env") or []), *(instance.get("env") or [])]:
        if isinstance(prop, Mapping) and isinstance(prop.get("name"), str):
            props[prop["name"]] = prop
    values: dict[str, Any] = {}
    later: list[tuple[str, str]] = []
    for name, prop in props.items():
        kind, value = prop.get("type"), prop.get("value")
        if kind == "env":
            later.append((name, js_string(value)))
        elif kind == "bool":
            values[name] = value == "true" or value is True
        elif kind in ("str", "num", "json"):
            found, constant = constant_value(value, kind)
            if found:
                values[name] = constant
    own = (
        {"NR_SUBFLOW_NAME": instance.get("name") or "", "NR_SUBFLOW_ID": instance["id"]}
        if "id" in instance
        else {}
    )
    for name, text in later:
        if text == name:  # "$parent.NAME": straight to the parent
            if name in parent:
                values[name] = parent[name]
        elif text in values:
            values[name] = values[text]
        else:
            scope = {**parent, **own, **values}
            if all(n in scope or n in STATIC_ENV for n in env_names(text)):
                values[name] = env_property(instance, scope, text)
    return values
