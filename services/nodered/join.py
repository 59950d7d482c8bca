"""The ``join`` node (Node-RED 4, ``17-split.js``) over the messages that reached it in one job.

Node-RED's join keeps groups in the running node, message after message. The step engine hands
this node every message that reached it in a job at once, in the order Node-RED would deliver
them (see :mod:`engines.step._nodered`), so :func:`run_join` replays its input handler over them:

* ``auto``: groups by ``msg.parts.id``, rebuilt as the split described them (``type``, ``ch``,
  ``key``, ``index``, ``count``);
* ``custom`` (manual): builds an array, a string (joined with ``joiner``), an object (keyed by
  the ``key`` property, ``topic`` by default) or a merged object from a message property or the
  whole message; a group is sent when it holds ``count`` parts (``msg.parts.count`` when the
  count is empty), or at a message with ``msg.complete``; ``msg.reset`` drops the group;
* ``reduce``: groups by ``msg.parts.id``; a complete group is reduced with the JSONata
  expression (``$A`` the accumulated value from ``reduceInit``, ``$I`` the part's index, ``$N``
  the count), left to right or right to left, then ``reduceFixup``; a message without
  ``msg.parts`` goes on unchanged.

What reaches no end in the job (a group still waiting for parts) is a failure naming the node:
Node-RED would keep it for messages a later job brings, which this call cannot see. Timeouts,
``accumulate`` and Buffers are refused beforehand by
:func:`nodered_semantics.support.node_problem`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxo_core.errors import ServiceError
from nodered_semantics.js import UNDEFINED, is_nan, js_number, js_string
from nodered_semantics.jsonata import evaluate_jsonata
from nodered_semantics.support import UNFINISHED_SEQUENCE
from nodered_semantics.typed_values import typed_value
from services.nodered.common import (
    Sent,
    node_error,
    node_label,
    property_text,
    read_property,
    write_property,
)

__all__ = ["join_joiner", "run_join"]


def join_joiner(text: Any) -> str:
    """The string a custom join puts between parts, escapes read as the node reads them."""
    raw = str(text or "")
    for escape, char in (("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"), ("\\f", "\f"), ("\\0", "\0")):
        raw = raw.replace(escape, char)
    return raw.replace("\\e", "e")  # JavaScript reads the unknown escape "\e" as "e"


@dataclass
class _Group:
    """One group in flight, as ``inflight[partId]`` holds it."""

    kind: str  # array | string | object
    msg: dict[str, Any]
    target: Any
    prop: str
    join_char: Any = None
    array_len: Any = None
    items: list[Any] = field(default_factory=list)  # array and string: in order, holes UNDEFINED
    keyed: dict[str, Any] = field(default_factory=dict)  # object and merged
    count: int = 0


def run_join(
    node: Mapping[str, Any], messages: list[dict[str, Any]], env: Mapping[str, Any]
) -> Sent:
    """Every message the node sends for ``messages`` (each a copy it may change), in order."""
    mode = node.get("mode") or "auto"
    if mode == "reduce":
        return _Reducer(node, env).run(messages)
    return _Joiner(node).run(messages)


class _Joiner:
    """The auto and custom modes: the node's input handler, message by message."""

    def __init__(self, node: Mapping[str, Any]) -> None:
        self.node = node
        self.mode = node.get("mode") or "auto"
        self.whole = node.get("propertyType") == "full"
        self.prop = "payload" if self.whole else property_text(node.get("property"))
        self.key = property_text(node.get("key") or "topic")
        count = js_number(node.get("count") or 0)
        self.count = 0 if is_nan(count) else count
        self.joiner = join_joiner(node.get("joiner"))
        self.build = node.get("build") or "array"
        self.useparts = True if "useparts" not in node else bool(node.get("useparts"))
        self.inflight: dict[str, _Group] = {}
        self.sent: Sent = []

    def run(self, messages: list[dict[str, Any]]) -> Sent:
        for msg in messages:
            self.receive(msg)
        if self.inflight:
            held = ", ".join(
                f"{len(g.items) or len(g.keyed)} part(s)" for g in self.inflight.values()
            )
            raise _unfinished(
                self.node,
                f"a group is still incomplete when the job has no more messages for it ({held}); "
                "Node-RED would wait for later messages, which another job brings: complete "
                "each group within one job (count, msg.complete or msg.parts), or run the flow "
                "on the nodered engine",
            )
        return self.sent

    def receive(self, msg: dict[str, Any]) -> None:
        parts = msg.get("parts")
        has_parts = "parts" in msg
        part_id = "_"
        if self.whole:
            value: Any = msg
        else:
            value = read_property(self.node, msg, self.prop)
        if self.mode == "auto" and not (isinstance(parts, dict) and "id" in parts):
            if "reset" in msg:
                self.inflight.clear()
            return  # Node-RED warns: "Message missing msg.parts property"
        if self.mode == "custom" and has_parts and not self.useparts:
            if isinstance(parts, dict) and "parts" in parts:
                msg["parts"] = parts = {"parts": parts["parts"]}
            else:
                del msg["parts"]
                parts, has_parts = None, False
        key: Any = None
        index: Any = UNDEFINED
        join_char: Any = None
        array_len: Any = None
        if self.mode == "auto" and isinstance(parts, dict):
            part_id = js_string(parts["id"])
            kind, target = parts.get("type"), parts.get("count")
            join_char, key = parts.get("ch"), parts.get("key", UNDEFINED)
            array_len, index = parts.get("len"), parts.get("index", UNDEFINED)
            value = read_property(self.node, msg, str(parts.get("property") or "payload"))
        else:
            kind, target, join_char = self.build, self.count, self.joiner
            if self.node.get("count") == "" and isinstance(parts, dict):
                target = parts.get("count") or 0
                if "id" in parts:
                    part_id = js_string(parts["id"])
            if self.build == "object":
                key = read_property(self.node, msg, self.key)
        if "reset" in msg:
            self.inflight.pop(part_id, None)
            return
        if kind == "buffer":
            raise node_error(self.node, "it joins Buffers, which a JSON message cannot carry")
        if kind == "object" and key in (None, UNDEFINED, ""):
            if self.mode != "auto" and "complete" in msg and part_id in self.inflight:
                self.inflight[part_id].msg["complete"] = msg["complete"]
                self._send(part_id)
            return  # Node-RED warns: the key property is missing
        group = self.inflight.get(part_id)
        if group is None:
            group = self.inflight[part_id] = _Group(
                kind="object" if kind in ("object", "merged") else str(kind),
                msg=copy.deepcopy(msg),
                target=target,
                prop=str(parts.get("property") or "payload")
                if self.mode == "auto" and isinstance(parts, dict)
                else self.prop,
                join_char=join_char if kind == "string" else None,
                array_len=array_len if kind == "array" else None,
            )
        self._add(group, kind, key, index, value)
        group.msg.update(copy.deepcopy(msg))
        wanted = group.target
        if has_parts and isinstance(parts, dict):
            wanted = group.target or parts.get("count")
            group.target = wanted
        number = js_number(wanted) if wanted not in (None, UNDEFINED) else 0
        if (not is_nan(number) and number > 0 and group.count >= number) or "complete" in msg:
            self._send(part_id)

    def _add(self, group: _Group, kind: Any, key: Any, index: Any, value: Any) -> None:
        if kind == "object":
            group.keyed[js_string(key)] = value
            group.count = len(group.keyed)
        elif kind == "merged":
            if isinstance(value, dict):
                for name, item in value.items():
                    if name != "_msgid":
                        group.keyed[name] = item
                group.count = len(group.keyed)
            elif value is None:  # typeof null is "object": nothing to merge, nothing warned
                group.count = len(group.keyed)
            # else Node-RED warns "Cannot merge non-object types" (unless msg.complete)
        else:
            position = js_number(index) if index is not UNDEFINED else math.nan
            if not is_nan(position) and float(position).is_integer() and position >= 0:
                slot = int(position)
                if slot >= len(group.items):
                    group.items.extend([UNDEFINED] * (slot + 1 - len(group.items)))
                if group.items[slot] in (None, UNDEFINED):
                    group.count += 1
                group.items[slot] = value
            elif value is not UNDEFINED:
                group.items.append(value)
                group.count += 1

    def _send(self, part_id: str) -> None:
        group = self.inflight.pop(part_id)
        result: Any
        if group.kind == "object":
            result = group.keyed
        elif group.kind == "string":
            char = (
                group.join_char if isinstance(group.join_char, str) else js_string(group.join_char)
            )
            result = char.join(
                "" if item in (None, UNDEFINED) else js_string(item) for item in group.items
            )
        else:
            items = [None if item is UNDEFINED else item for item in group.items]
            if group.kind == "array" and _above_one(group.array_len):
                result = [x for item in items for x in (item if isinstance(item, list) else [item])]
            else:
                result = items
        out = copy.deepcopy(group.msg) if self.whole else group.msg
        write_property(self.node, out, group.prop or "payload", result)
        parts = out.get("parts")
        if isinstance(parts, dict) and "parts" in parts:
            out["parts"] = parts["parts"]
        else:
            out.pop("parts", None)
        out.pop("complete", None)
        self.sent.append((0, _json_message(out)))


def _above_one(value: Any) -> bool:
    number = js_number(value) if value not in (None, UNDEFINED) else math.nan
    return not is_nan(number) and number > 1


class _Reducer:
    """The reduce mode: groups by ``msg.parts.id``, reduced when the last part arrives."""

    def __init__(self, node: Mapping[str, Any], env: Mapping[str, Any]) -> None:
        self.node = node
        self.env = env
        self.pending: dict[str, dict[str, Any]] = {}
        self.sent: Sent = []

    def run(self, messages: list[dict[str, Any]]) -> Sent:
        for msg in messages:
            self.receive(msg)
        if self.pending:
            held = ", ".join(f"{len(g['msgs'])} of {g['count']}" for g in self.pending.values())
            raise _unfinished(
                self.node,
                f"a sequence to reduce is still incomplete when the job has no more messages "
                f"for it ({held} part(s)); Node-RED would wait for later messages, which "
                "another job brings: run the flow on the nodered engine",
            )
        return self.sent

    def receive(self, msg: dict[str, Any]) -> None:
        parts = msg.get("parts")
        if "parts" not in msg:
            self.sent.append((0, msg))
            return
        if not isinstance(parts, dict):
            raise node_error(self.node, "msg.parts is not an object")
        gid = js_string(parts.get("id", UNDEFINED))
        group = self.pending.setdefault(gid, {"count": parts.get("count"), "msgs": []})
        if group["count"] is None and "count" in parts:
            group["count"] = parts["count"]
        group["msgs"].append(msg)
        if len(group["msgs"]) == group["count"]:
            del self.pending[gid]
            self.sent.append((0, _json_message(self._reduce(group["msgs"], group["count"]))))

    def _reduce(self, msgs: list[dict[str, Any]], count: Any) -> dict[str, Any]:
        node = self.node
        accumulator = typed_value(
            node.get("reduceInit"), node.get("reduceInitType"), {}, node, self.env
        )

        def index_of(msg: dict[str, Any]) -> float:
            number = js_number(msg["parts"].get("index", UNDEFINED))
            return math.inf if is_nan(number) else float(number)

        ordered = sorted(msgs, key=index_of, reverse=bool(node.get("reduceRight")))
        for msg in ordered:
            bindings = {
                "I": _bound(msg["parts"].get("index")),
                "N": _bound(count),
                "A": _bound(accumulator),
            }
            accumulator = self._evaluate(str(node.get("reduceExp") or ""), msg, bindings)
        fixup = node.get("reduceFixup")
        if fixup not in (None, ""):
            bindings = {"N": _bound(count), "A": _bound(accumulator)}
            accumulator = self._evaluate(str(fixup), {}, bindings)
        last = ordered[-1]
        last["payload"] = accumulator
        return last

    def _evaluate(self, text: str, msg: Any, bindings: dict[str, Any]) -> Any:
        return evaluate_jsonata(text, msg, self.node, self.env, bindings)


def _unfinished(node: Mapping[str, Any], what: str) -> ServiceError:
    """A group the job left incomplete: the job fails (no catch node sees it, as Node-RED
    reports nothing then)."""
    return ServiceError(
        f"{node_label(node)}: {what}",
        retryable=False,
        node=str(node.get("id", "?")),
        **{UNFINISHED_SEQUENCE: True},
    )


def _json_message(value: Any) -> Any:
    """A copy of a message as JSON carries it: undefined properties left out, holes null."""
    if isinstance(value, dict):
        return {k: _json_message(v) for k, v in value.items() if v is not UNDEFINED}
    if isinstance(value, list):
        return [None if v is UNDEFINED else _json_message(v) for v in value]
    return value


def _bound(value: Any) -> Any:
    """A value as a JSONata binding (JavaScript's undefined is jsonata-python's None)."""
    return None if value is UNDEFINED else value
