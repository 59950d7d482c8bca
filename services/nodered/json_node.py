"""The ``json`` node: JSON text <-> object in both directions (``action``, ``property``,
``pretty``), and ``msg.schema`` validation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from nodered_semantics.js import UNDEFINED, js_json
from services.nodered.common import node_error, property_text, read_property, write_property

__all__ = ["run_json"]


def run_json(node: Mapping[str, Any], msg: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    action = node.get("action") or ""
    prop = property_text(node.get("property"))
    indent = 4 if node.get("pretty") else 0
    schema = msg.get("schema")
    value = read_property(node, msg, prop)
    if value is UNDEFINED:
        return [(0, msg)]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise node_error(node, f"msg.{prop} is not JSON: {exc}") from exc
        if action in ("", "obj"):
            write_property(node, msg, prop, parsed)
        _validate(node, msg, schema, parsed)
    elif isinstance(value, dict | list | bool | int | float) or value is None:
        _validate(node, msg, schema, value)
        if action in ("", "str"):
            write_property(node, msg, prop, js_json(value, indent))
    return [(0, msg)]


def _validate(node: Mapping[str, Any], msg: dict[str, Any], schema: Any, value: Any) -> None:
    if not schema:
        return
    try:
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(value), key=str)
    except jsonschema.SchemaError as exc:
        raise node_error(node, f"msg.schema is not a valid JSON Schema: {exc.message}") from exc
    if errors:
        where = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors
        ]
        raise node_error(node, "JSON Schema validation failed: " + "; ".join(where[:5]))
    del msg["schema"]
