"""The ``sort`` node (Node-RED ``18-sort.js``), by value or by a JSONata key, in JavaScript's
order: an array in the message (:func:`run_sort`), or the messages of a sequence
(:func:`run_sort_sequence`: every message that reached the node in a job, grouped by
``msg.parts.id``; a group is sorted and sent, ``parts.index`` renumbered, once it holds
``parts.count`` messages)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import (
    UNDEFINED,
    JSThrowError,
    is_js_number,
    is_nan,
    js_gt,
    js_number,
    js_strict_equal,
)
from nodered_semantics.jsonata import evaluate_jsonata
from nodered_semantics.msg_paths import get_property, set_property
from services.nodered.common import Sent, by_sequence

__all__ = ["run_sort", "run_sort_sequence"]


def run_sort(node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any]) -> Sent:
    if node.get("targetType") != "msg":
        raise JSThrowError("sorting a message sequence needs the other messages of the sequence")
    target = str(node.get("target") or "payload")
    data = get_property(msg, target)
    if not isinstance(data, list):
        return []  # Node-RED sends nothing
    direction = -1 if (node.get("order") or "ascending") != "ascending" else 1
    as_num = bool(node.get("as_num"))
    if node.get("msgKeyType") == "jsonata":
        text = str(node.get("msgKey"))
        keys = [evaluate_jsonata(text, item, node, env) for item in data]
    else:
        keys = list(data)
    if as_num:
        keys = [js_number(k) for k in keys]
    order = _js_sort_order(keys, direction)
    if node.get("msgKeyType") == "jsonata":
        set_property(msg, target, [data[i] for i in order])
    else:
        data[:] = [data[i] for i in order]
    return [(0, msg)]


def run_sort_sequence(
    node: Mapping[str, Any], messages: list[dict[str, Any]], env: Mapping[str, Any]
) -> Sent:
    """Every message the node sends for ``messages`` (in delivery order), group by group."""
    return by_sequence(
        node,
        messages,
        lambda group, _count: _sorted_group(node, group, env),
        lambda _msg: [],  # not part of a sequence: Node-RED drops it
    )


def _sorted_group(
    node: Mapping[str, Any], group: list[dict[str, Any]], env: Mapping[str, Any]
) -> Sent:
    direction = -1 if (node.get("order") or "ascending") != "ascending" else 1
    if node.get("seqKeyType") == "jsonata":
        text = str(node.get("seqKey"))
        keys = [evaluate_jsonata(text, msg, node, env) for msg in group]
    else:
        prop = str(node.get("seqKey") or "payload")
        keys = [get_property(msg, prop) for msg in group]
    if node.get("as_num"):
        keys = [js_number(k) for k in keys]
    sent: Sent = []
    for index, position in enumerate(_js_sort_order(keys, direction)):
        msg = group[position]
        msg["parts"]["index"] = index
        sent.append((0, msg))
    return sent


def _js_sort_order(keys: list[Any], direction: int) -> list[int]:
    """The stable order of Array.prototype.sort with the sort node's comparison.

    Raises:
        ValueError: the keys mix kinds (or hold NaN, objects, undefined): the comparison is
            then not a consistent order and the result depends on the sort algorithm.
    """
    kinds = {_kind(k) for k in keys}
    if len(keys) > 1 and (len(kinds) > 1 or not kinds <= {"number", "str", "bool"}):
        raise ValueError(
            "the sort keys mix types or include NaN, null, objects or undefined "
            f"({', '.join(sorted(kinds))}); Node-RED's order for them depends on its sort "
            "algorithm, so the step engine does not guess it"
        )

    def compare(i: int, j: int) -> int:
        x, y = keys[i], keys[j]
        if js_strict_equal(x, y):
            return 0
        return direction if js_gt(x, y) else -direction

    return sorted(range(len(keys)), key=functools.cmp_to_key(compare))


def _kind(value: Any) -> str:
    if is_nan(value):
        return "NaN"
    if is_js_number(value):
        return "number"
    if value is None or value is UNDEFINED:
        return "null" if value is None else "undefined"
    return {bool: "bool", str: "str", dict: "object", list: "array"}.get(type(value), "other")
