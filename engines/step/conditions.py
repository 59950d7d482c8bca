"""Switch conditions of the IR, evaluated against a payload (pure)."""

from __future__ import annotations

import re
from typing import Any

import jsonata

from fluxo_core.errors import ValidationError
from fluxo_core.ir import AllOf, AnyOf, Comparison, Condition, JsonataCondition, Not
from fluxo_core.ir.paths import parse_path

__all__ = ["evaluate", "lookup"]

_MISSING = object()


def lookup(payload: Any, path: str) -> Any:
    """The value at ``path`` (``a.b[0]``) in ``payload``, or a sentinel when absent."""
    node = payload
    for key in parse_path(path):
        if isinstance(key, int):
            if not isinstance(node, list) or not -len(node) <= key < len(node):
                return _MISSING
        elif not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def evaluate(condition: Condition, payload: Any) -> bool:
    """Whether ``condition`` holds for ``payload``.

    Comparisons of incompatible types (a number with a string) are false rather than errors, so a
    missing or malformed field routes to ``default`` like Node-RED's switch does.
    """
    if isinstance(condition, Comparison):
        return _compare(condition, payload)
    if isinstance(condition, AllOf):
        return all(evaluate(c, payload) for c in condition.all)
    if isinstance(condition, AnyOf):
        return any(evaluate(c, payload) for c in condition.any)
    if isinstance(condition, Not):
        return not evaluate(condition.not_, payload)
    if isinstance(condition, JsonataCondition):
        return _jsonata(condition.jsonata, payload)
    raise ValidationError(f"unknown condition {type(condition).__name__}")


def _compare(c: Comparison, payload: Any) -> bool:
    value = lookup(payload, c.path)
    if c.op == "exists":
        return value is not _MISSING
    if c.op == "not_exists":
        return value is _MISSING
    if value is _MISSING:
        return False
    try:
        if c.op == "eq":
            return bool(value == c.value)
        if c.op == "ne":
            return bool(value != c.value)
        if c.op == "gt":
            return bool(value > c.value)
        if c.op == "gte":
            return bool(value >= c.value)
        if c.op == "lt":
            return bool(value < c.value)
        if c.op == "lte":
            return bool(value <= c.value)
    except TypeError:
        return False
    if c.op == "in":
        return isinstance(c.value, list) and value in c.value
    if c.op == "contains":
        if isinstance(value, str) and isinstance(c.value, str):
            return c.value in value
        return isinstance(value, list) and c.value in value
    if c.op == "regex":
        return isinstance(value, str) and re.search(str(c.value), value) is not None
    raise ValidationError(f"unknown comparison op {c.op!r}")


def _jsonata(expression: str, payload: Any) -> bool:
    try:
        result = jsonata.Jsonata(expression).evaluate(payload)
    except Exception as exc:  # jsonata raises its own JException and plain errors
        raise ValidationError(
            f"the JSONata condition {expression!r} failed on this payload: {exc}",
            problems=[("when.jsonata", str(exc))],
        ) from exc
    return result is True
