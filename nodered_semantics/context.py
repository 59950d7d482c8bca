"""Node-RED's context (``context``/``flow``/``global``) as one message's view of a durable store.

On Node-RED the three stores live in the runtime's memory and outlive messages. Outside it, a
caller (the step engine) loads the scopes a node uses before the node runs and applies what the
node changed after: :class:`ContextView` is that view, pure. A key is a property expression as
Node-RED's memory store reads it (``count``, ``user.name``, ``list[0]``); what the node changed
is told per top-level key (:meth:`ContextView.writes`), so a caller writes back whole top-level
values and leaves the keys the node did not touch alone.

:func:`context_scopes` says statically which scopes a node's configuration uses, so the caller
loads only those; :func:`context_problem` what of context the step engine does not reproduce
(named stores other than the default, ``$flowContext`` in JSONata, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodered_semantics.js import UNDEFINED, JSThrowError
from nodered_semantics.msg_paths import get_property, property_parts, set_property

__all__ = [
    "CONTEXT_PORT",
    "SCOPES",
    "STATE_KEY",
    "ContextView",
    "ContextWrite",
    "context_key",
    "context_problem",
    "context_scopes",
    "function_context_scopes",
    "keeps_state",
    "user_context_scopes",
]

SCOPES = ("node", "flow", "global")

CONTEXT_PORT = -2
"""The output "port" of the packet in which the ``nodered-node`` service hands back what a node
wrote to context: ``{"port": -2, "writes": [{"scope", "key", "value"?}, ...]}`` (no ``value``:
the key was deleted). It is no message: the step engine applies it and routes nothing."""

STATE_KEY = "_fluxo_state"
"""The key of a node's own context (``node`` scope) under which a core node that depends on
earlier messages keeps that state between calls (:func:`keeps_state`): a csv node's "header
sent", a streaming split's remainder, a batch's held messages, a function's "setup ran", a
debug node's last status. On Node-RED that state lives in the running node and a deploy starts
it afresh; here it is ``{"version": <workflow version>, ...}`` and a call on another version
starts afresh. No node sees the key: the ``nodered-node`` service takes it out of the scope
before the node runs."""

_STORE_PREFIX = re.compile(r"^#:\((\S+?)\)::(.*)$")


def context_key(key: Any) -> tuple[str | None, str]:
    """``parseContextStore``: a key as ``(store or None, key)`` (``#:(file)::count``)."""
    text = str(key)
    found = _STORE_PREFIX.match(text)
    if found:
        return found.group(1), found.group(2)
    return None, text


@dataclass(frozen=True)
class ContextWrite:
    """A top-level key of one scope set to ``value`` (UNDEFINED: deleted)."""

    scope: str
    key: str
    value: Any

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": self.scope, "key": self.key}
        if self.value is not UNDEFINED:
            out["value"] = self.value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContextWrite:
        return cls(str(data["scope"]), str(data["key"]), data.get("value", UNDEFINED))


@dataclass
class ContextView:
    """The contents of the scopes a node may use, and the top-level keys it changed."""

    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    touched: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, given: Mapping[str, Any] | None) -> ContextView:
        stores = given or {}
        return cls({s: dict(stores.get(s) or {}) for s in SCOPES})

    def get(self, scope: str, key: Any) -> Any:
        """``flow.get(key)``: UNDEFINED when absent (or a path through a missing value)."""
        _, path = context_key(key)
        try:
            return get_property(self.data.setdefault(scope, {}), path)
        except JSThrowError:
            return UNDEFINED

    def set(self, scope: str, key: Any, value: Any) -> None:
        """``flow.set(key, value)``; ``value`` UNDEFINED deletes the key."""
        _, path = context_key(key)
        parts = property_parts(path)
        if not parts:
            raise JSThrowError(f"Invalid context key {path!r}")
        set_property(self.data.setdefault(scope, {}), path, value)
        self.touched.setdefault(scope, set()).add(str(parts[0]))

    def writes(self) -> list[ContextWrite]:
        """What changed, one write per touched top-level key, in a stable order."""
        return [
            ContextWrite(scope, key, self.data.get(scope, {}).get(key, UNDEFINED))
            for scope in SCOPES
            for key in sorted(self.touched.get(scope, ()))
        ]


# What a function body calls: flow.get(...), context.set(...), global.keys(), context.flow...
_FUNCTION_USE = re.compile(r"\b(context|flow|global)\s*\.\s*(get|set|keys|flow|global)\b")


def function_context_scopes(code: str) -> set[str]:
    """The scopes a function body (or its setup code) uses."""
    found: set[str] = set()
    for match in _FUNCTION_USE.finditer(code):
        owner, member = match.groups()
        if owner == "context" and member in ("flow", "global"):
            found.add(member)
        else:
            found.add("node" if owner == "context" else owner)
    return found


_TEMPLATE_USE = re.compile(r"\{\{\{?\s*(flow|global)(\[\w*\])?\.")


def keeps_state(node: Mapping[str, Any]) -> bool:
    """Whether the node keeps state between messages, as Node-RED keeps it in the running node
    (under :data:`STATE_KEY` of its node context here): a csv node sending its header
    ``once``, reading column names from a sequence's first message or joining a sequence's
    rows into one array, a split streaming, a batch in count or concatenate mode, a function
    whose setup code (``initialize``) uses context (it runs once per deployment, not per
    message), a trigger or a delay (the topics it blocks, the messages it holds, when it last
    sent: :mod:`nodered_semantics.timed`), a debug node showing values as its status (the last
    one shown: it sets a status only when it changes, ``oldState`` in 21-debug.js; such a node
    is a step only when a status or complete node watches it)."""
    kind = node.get("type")
    if kind in ("trigger", "delay"):
        return True
    if kind == "debug":
        return node.get("tostatus") is True
    if kind == "csv":  # a header sent once; a sequence's column names, rows in one array
        return node.get("spec") != "rfc" and (
            node.get("hdrout") == "once"
            or (node.get("multi") or "one") != "one"
            or node.get("hdrin") is True
        )
    if kind == "split":
        return bool(node.get("stream"))
    if kind == "batch":
        return (node.get("mode") or "count") in ("count", "concat")
    if kind == "function":
        return bool(function_context_scopes(str(node.get("initialize") or "")))
    return False


def context_scopes(node: Mapping[str, Any]) -> set[str]:
    """The context scopes (``node``, ``flow``, ``global``) a call of the node needs: those it
    reads or writes (:func:`user_context_scopes`) and ``node`` when it keeps state there
    (:func:`keeps_state`)."""
    found = user_context_scopes(node)
    if keeps_state(node):
        found.add("node")
    return found


def user_context_scopes(node: Mapping[str, Any]) -> set[str]:
    """The context scopes (``node``, ``flow``, ``global``) the node's configuration reads or
    writes (its own state under :data:`STATE_KEY` aside)."""
    kind = node.get("type")
    if kind == "function":
        return function_context_scopes(
            "\n".join(str(node.get(k) or "") for k in ("func", "initialize"))
        )
    if kind == "template":
        found = {m.group(1) for m in _TEMPLATE_USE.finditer(str(node.get("template") or ""))}
        if node.get("fieldType") in ("flow", "global"):
            found.add(str(node["fieldType"]))
        return found
    found = set()
    for value, kind in _typed_values(node):
        if kind in ("flow", "global"):
            found.add(str(kind))
        elif kind == "jsonata":
            found |= {_JSONATA_SCOPES[m] for m in _JSONATA_USE.findall(str(value))}
    return found


_JSONATA_USE = re.compile(r"\$(flowContext|globalContext)\s*\(")
_JSONATA_SCOPES = {"flowContext": "flow", "globalContext": "global"}


def _typed_values(node: Mapping[str, Any]) -> Iterable[tuple[Any, Any]]:
    """Every typed value and target of a change/switch node, as ``(value, type)``."""
    kind = node.get("type")
    rules = [r for r in node.get("rules") or [] if isinstance(r, Mapping)]
    if kind == "switch":
        yield node.get("property"), node.get("propertyType")
        for rule in rules:
            yield rule.get("v"), rule.get("vt")
            yield rule.get("v2"), rule.get("v2t")
    elif kind == "change":
        for rule in rules:
            yield rule.get("p"), rule.get("pt")
            yield rule.get("to"), rule.get("tot")
            yield rule.get("from"), rule.get("fromt")


def context_problem(node: Mapping[str, Any]) -> str | None:
    """What of the node's context use the step engine does not reproduce, or None."""
    for key in _literal_keys(node):
        store, _ = context_key(key)
        if store is not None:
            return (
                f"it names the context store {store!r}; the step engine keeps one durable store "
                "per workflow and account (remove the #:(store):: prefix)"
            )
    if node.get("type") == "function":
        code = str(node.get("func") or "")
        if re.search(
            r"\b(flow|global|context)\s*\.\s*(get|keys)\s*\(\s*(['\"])[^'\"]*\3\s*,\s*['\"]", code
        ) or re.search(r"\b(flow|global|context)\s*\.\s*keys\s*\(\s*['\"]", code):
            return "it names a context store in get(key, store); the step engine has one store"
        if re.search(r"\$parent\.", code):
            return "it reads $parent context (a subflow's parent flow), which is not kept apart"
    return None


def _literal_keys(node: Mapping[str, Any]) -> Iterable[str]:
    kind = node.get("type")
    if kind == "change":
        for rule in node.get("rules") or []:
            if isinstance(rule, Mapping):
                if rule.get("pt") in ("flow", "global"):
                    yield str(rule.get("p", ""))
                if rule.get("tot") in ("flow", "global"):
                    yield str(rule.get("to", ""))
                if rule.get("fromt") in ("flow", "global"):
                    yield str(rule.get("from", ""))
    elif kind == "switch":
        if node.get("propertyType") in ("flow", "global"):
            yield str(node.get("property", ""))
        for rule in node.get("rules") or []:
            if isinstance(rule, Mapping):
                for value, vtype in (("v", "vt"), ("v2", "v2t")):
                    if rule.get(vtype) in ("flow", "global"):
                        yield str(rule.get(value, ""))
    elif kind == "template" and node.get("fieldType") in ("flow", "global"):
        yield str(node.get("field", ""))
    elif kind == "function":
        code = str(node.get("func") or "")
        yield from re.findall(r"['\"](#:\([^)]*\)::[^'\"]*)['\"]", code)
