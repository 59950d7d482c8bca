"""Paths and expressions between the IR and Node-RED: property paths, JSONata, mustache.

Node-RED evaluates JSONata with the whole ``msg`` as input; the IR evaluates it with the payload
(one item) as input. So an expression crossing over is wrapped:

* Node-RED -> IR: ``($$ := {"payload": $}; $$.(E))`` runs ``E`` on a msg-like object holding
  the payload, so ``payload.total`` and ``$$.payload`` keep their meaning (other msg properties
  such as ``topic`` are absent in Fluxo and read as undefined);
* IR -> Node-RED: ``($$ := $; (E))`` evaluated per item, so ``$$`` is the item as in the IR.

Transforms render as JSONata updates of ``msg.payload`` (``payload ~> |$|{...}|``) because the
transform operator applies to an object and to every item of an array alike, which is what an
IR transform does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fluxo_core.ir import (
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    DeleteOp,
    JsonataCondition,
    JsonataOp,
    MoveOp,
    Not,
    SetOp,
    TransformOp,
)
from fluxo_core.ir.paths import PathKey, format_path, parse_path
from nodered_semantics.jsonata import (
    gives_object,
    gives_value,
    portable_jsonata,
    reads_payload_only,
)
from nodered_semantics.msg_paths import payload_keys
from nodered_semantics.typed_values import constant_value

__all__ = [
    "ELSE",
    "PathKey",
    "change_rule_ops",
    "change_rules",
    "condition_jsonata",
    "ir_path",
    "ir_path_keys",
    "jsonata_path",
    "literal",
    "mustache_jsonata",
    "switch_rule_condition",
    "with_jsonata",
    "wrap_msg_expr",
]


ELSE = "else"
"""What :func:`switch_rule_condition` returns for an ``otherwise`` rule."""

# --- IR paths ------------------------------------------------------------------------------------


def ir_path_keys(path: str) -> tuple[PathKey, ...]:
    """``a.b[0]["c.d"]`` -> ``("a", "b", 0, "c.d")`` (the path is valid: the IR checked it)."""
    return parse_path(path)


def ir_path(keys: Sequence[PathKey]) -> str:
    """The IR spelling of ``keys`` (odd keys quoted as ``["a.b"]``)."""
    return format_path(keys)


# --- JSONata rendering ---------------------------------------------------------------------------

_JSONATA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSONATA_WORDS = frozenset({"and", "or", "in", "true", "false", "null", "function"})


def literal(value: Any) -> str:
    """A JSON value as a JSONata literal."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def jsonata_path(keys: Sequence[PathKey], base: str = "") -> str:
    """A JSONata path to ``keys`` from ``base`` (the context when empty)."""
    out = base
    for key in keys:
        if isinstance(key, int):
            out = f"{out or '$'}[{key}]"
        elif "`" in key:
            out = f"$lookup({out or '$'}, {literal(key)})"
        else:
            name = key if _JSONATA_NAME.fullmatch(key) and key not in _JSONATA_WORDS else f"`{key}`"
            out = f"{out}.{name}" if out else name
    return out or "$"


def _regex(pattern: str) -> str:
    """A JSONata regex literal: every unescaped ``/`` escaped."""
    out, escaped = [], False
    for ch in pattern:
        if ch == "/" and not escaped:
            out.append("\\/")
        else:
            out.append(ch)
        escaped = ch == "\\" and not escaped
    return "/" + "".join(out) + "/"


def compare_jsonata(op: str, value: Any, subject: str) -> str:
    """One IR comparison of ``subject`` (a JSONata expression) as a JSONata boolean.

    Mirrors the step engine: a missing field fails every op but ``not_exists``; comparing a
    number with a string is false rather than an error.
    """
    lit = literal(value)
    if op == "exists":
        return f"$exists({subject})"
    if op == "not_exists":
        return f"$not($exists({subject}))"
    if op == "eq":
        return f"{subject} = {lit}"
    if op == "ne":
        return f"($v := {subject}; $exists($v) and $v != {lit})"
    if op in ("gt", "gte", "lt", "lte"):
        sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        kind = "string" if isinstance(value, str) else "number"
        return f'($v := {subject}; $type($v) = "{kind}" and $v {sign} {lit})'
    if op == "in":
        return f"{subject} in {lit}"
    if op == "contains":
        in_array = f'($type($v) = "array" and {lit} in $v)'
        if isinstance(value, str):
            return (
                f'($v := {subject}; ($type($v) = "string" and $contains($v, {lit})) or {in_array})'
            )
        return f"($v := {subject}; {in_array})"
    if op == "regex":
        return f'($v := {subject}; $type($v) = "string" and $contains($v, {_regex(str(value))}))'
    raise ValueError(f"unknown comparison op {op!r}")


def condition_jsonata(condition: Condition) -> str:
    """An IR condition as a JSONata boolean over a Node-RED ``msg`` (for a switch rule)."""
    if isinstance(condition, Comparison):
        subject = jsonata_path(ir_path_keys(condition.path), "payload")
        return compare_jsonata(condition.op, condition.value, subject)
    if isinstance(condition, AllOf):
        return " and ".join(f"({condition_jsonata(c)})" for c in condition.all)
    if isinstance(condition, AnyOf):
        return " or ".join(f"({condition_jsonata(c)})" for c in condition.any)
    if isinstance(condition, Not):
        return f"$not({condition_jsonata(condition.not_)})"
    if isinstance(condition, JsonataCondition):
        # $eval runs the expression on the payload as a whole (an array too), like the IR does.
        return f"($$ := payload; $eval({literal(condition.jsonata)}, payload)) = true"
    raise ValueError(f"unknown condition {type(condition).__name__}")


def _assign(current: str, keys: Sequence[PathKey], value: str, depth: int) -> str:
    """``current`` (an expression) with the value at ``keys`` replaced by ``value``."""
    key, rest = keys[0], keys[1:]
    if isinstance(key, int):
        c, v, i = f"$c{depth}", f"$v{depth}", f"$i{depth}"
        new = _assign("{}", rest, value, depth + 1) if rest else value
        old = _assign(v, rest, value, depth + 1) if rest else value
        return (
            f"({c} := {current}; $count({c}) = {key} ? $append({c}, [{new}]) : "
            f"[$map({c}, function({v}, {i}) {{ {i} = {key} ? {old} : {v} }})])"
        )
    child = jsonata_path([key], current if current != "$" else "")
    inner = _assign(child, rest, value, depth + 1) if rest else value
    return f"$merge([{current}, {{{literal(key)}: {inner}}}])"


def _set_update(keys: Sequence[PathKey], value: str, *, maybe_missing: bool) -> str:
    """The update of a ``payload ~> |$|UPDATE|`` that sets ``keys`` to ``value``."""
    if isinstance(keys[0], int):
        return '$error("a transform path starts at a key of the item, not an index")'
    key, rest = keys[0], keys[1:]
    inner = (
        _assign(jsonata_path([key]), rest, "$value" if maybe_missing else value, 1)
        if rest
        else None
    )
    if not maybe_missing:
        return f"{{{literal(key)}: {inner if inner is not None else value}}}"
    update = f"{{{literal(key)}: {inner if inner is not None else '$value'}}}"
    return f"($value := {value}; $exists($value) ? {update} : {{}})"


def _delete_expr(keys: Sequence[PathKey]) -> str:
    last, parent = keys[-1], list(keys[:-1])
    if isinstance(last, str):
        where = jsonata_path(parent) if parent else "$"
        return f"payload ~> |{where}|{{}}, [{literal(last)}]|"
    # an array element: set the parent to the array without it
    source = jsonata_path(parent)
    without = f"[$filter({source}, function($x, $n) {{ $n != {last} }})]"
    keep = f'($type({source}) = "array" ? {without} : {source})'
    return f"payload ~> |$|{_set_update(parent, keep, maybe_missing=True)}|"


def _op_expressions(op: TransformOp) -> list[str]:
    if isinstance(op, SetOp):
        keys = ir_path_keys(op.path)
        if op.expr is not None:
            value = f"($$ := $; ({op.expr}))"
            return [f"payload ~> |$|{_set_update(keys, value, maybe_missing=True)}|"]
        return [f"payload ~> |$|{_set_update(keys, literal(op.value), maybe_missing=False)}|"]
    if isinstance(op, DeleteOp):
        return [_delete_expr(ir_path_keys(op.path))]
    if isinstance(op, MoveOp):
        source, target = ir_path_keys(op.from_), ir_path_keys(op.to)
        if source == target:
            return []
        moved = jsonata_path(source)
        return [
            f"payload ~> |$|{_set_update(target, moved, maybe_missing=True)}|",
            _delete_expr(source),
        ]
    if isinstance(op, JsonataOp):
        return [
            f"($f := function($item) {{ $item.($$ := $; ({op.expr})) }}; "
            '$type(payload) = "array" ? [payload.$f($)] : $f(payload))'
        ]
    raise ValueError(f"unknown transform op {type(op).__name__}")


def change_rules(ops: Sequence[TransformOp]) -> list[dict[str, Any]]:
    """IR transform ops as the rules of a Node-RED ``change`` node, one JSONata rule per op."""
    return [
        {"t": "set", "p": "payload", "pt": "msg", "to": expr, "tot": "jsonata"}
        for op in ops
        for expr in _op_expressions(op)
    ]


WITH_ITEMS_ERROR = (
    "with sets fields on the step's input, which must be an object or an array of objects"
)


def with_jsonata(static: Mapping[str, Any], expressions: Mapping[str, str], subject: str) -> str:
    """A service step's ``with`` over the payload at ``subject``, as one JSONata expression.

    Each item (the object, or each object of an array) is merged with the static values and the
    expressions' results, every expression evaluated on the item itself (``$$`` is the item, as
    in the IR); an undefined result adds no field, so the item keeps its own. A non-object item
    raises (``$error``), as on the step engine.
    """
    fields = ", ".join(f"{literal(k)}: ($$ := $; ({e}))" for k, e in expressions.items())
    parts = ["$item", literal(dict(static))] + ([f"$item.{{{fields}}}"] if fields else [])
    return (
        f'($f := function($item) {{ $type($item) = "object" ? $merge([{", ".join(parts)}]) : '
        f"$error({literal(WITH_ITEMS_ERROR)}) }}; $in := {subject}; "
        '$type($in) = "array" ? [$in.$f($)] : $f($in))'
    )


# --- Node-RED -> IR ------------------------------------------------------------------------------


def wrap_msg_expr(expr: str) -> str:
    """A Node-RED (msg-context) JSONata expression, runnable on an IR payload."""
    return f'($$ := {{"payload": $}}; $$.({expr}))'


def _compare(op: str, value: Any, keys: tuple[PathKey, ...]) -> dict[str, Any]:
    """A comparison on ``keys`` below the payload; a JSONata condition on the payload itself."""
    if keys:
        body: dict[str, Any] = {"path": ir_path(keys), "op": op}
        if op not in ("exists", "not_exists"):
            body["value"] = value
        return body
    return {"jsonata": compare_jsonata(op, value, "$")}


def switch_rule_condition(rule: Mapping[str, Any], keys: tuple[PathKey, ...]) -> Any:
    """A Node-RED switch rule on the payload at ``keys`` as an IR condition (a dict).

    Returns :data:`ELSE` for an ``otherwise`` rule and None for a rule the IR cannot say
    (sequence rules, values taken from context or other msg properties, ...).
    """
    kind = rule.get("t")
    if kind == "else":
        return ELSE
    if kind == "jsonata_exp":
        expr = rule.get("v")
        return (
            {"jsonata": wrap_msg_expr(expr)}
            if isinstance(expr, str) and portable_jsonata(expr) and reads_payload_only(expr)
            else None
        )
    subject = jsonata_path(keys) if keys else "$"
    if kind in ("true", "false"):
        return _compare("eq", kind == "true", keys)
    if kind == "null":
        return {"any": [_compare("not_exists", None, keys), _compare("eq", None, keys)]}
    if kind == "nnull":
        return _compare("ne", None, keys)
    if kind == "istype":
        kinds = {
            "string": "string",
            "number": "number",
            "boolean": "boolean",
            "array": "array",
            "object": "object",
            "null": "null",
        }
        wanted = kinds.get(str(rule.get("v")))
        return {"jsonata": f'$type({subject}) = "{wanted}"'} if wanted else None
    if kind in ("empty", "nempty"):
        empty = (
            f'($v := {subject}; ($type($v) = "string" and $v = "") or ($type($v) = "array" and '
            f'$count($v) = 0) or ($type($v) = "object" and $count($keys($v)) = 0))'
        )
        nonempty = (
            f'($v := {subject}; ($type($v) = "string" and $v != "") or ($type($v) = "array" and '
            f'$count($v) > 0) or ($type($v) = "object" and $count($keys($v)) > 0))'
        )
        return {"jsonata": empty if kind == "empty" else nonempty}
    ok, value = constant_value(rule.get("v"), rule.get("vt"))
    if not ok:
        return None
    if kind in ("eq", "neq", "lt", "lte", "gt", "gte"):
        if kind in ("lt", "lte", "gt", "gte") and not isinstance(value, int | float | str):
            return None
        return _compare({"neq": "ne"}.get(kind, kind), value, keys)
    if kind == "btwn":
        ok2, high = constant_value(rule.get("v2"), rule.get("v2t"))
        if not ok2 or not all(isinstance(v, int | float) for v in (value, high)):
            return None
        low, high = min(value, high), max(value, high)
        return {"all": [_compare("gte", low, keys), _compare("lte", high, keys)]}
    if kind == "cont":
        return _compare("contains", str(value), keys)
    if kind == "regex":
        pattern = str(value)
        if rule.get("case"):
            pattern = "(?i)" + pattern
        try:
            re.compile(pattern)
        except re.error:
            return None
        return _compare("regex", pattern, keys)
    if kind == "hask":
        return {
            "jsonata": f'($v := {subject}; $type($v) = "object" and '
            f"$exists($lookup($v, {literal(str(value))})))"
        }
    return None


def _set(
    keys: tuple[PathKey, ...], *, value: Any = None, expr: str | None = None
) -> dict[str, Any]:
    if expr is not None:
        return {"op": "set", "path": ir_path(keys), "expr": expr}
    return {"op": "set", "path": ir_path(keys), "value": value}


def _where(prop: Any, ptype: Any) -> str:
    return f"{ptype or 'msg'}.{prop}"


def change_rule_ops(rule: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    """One Node-RED change rule as IR transform ops (dicts), or why it is not portable."""
    kind, prop, ptype = rule.get("t"), rule.get("p"), rule.get("pt", "msg")
    keys = payload_keys(prop, ptype)
    if keys is None:
        if ptype in ("flow", "global"):
            return f"it writes {_where(prop, ptype)}: context stays in Node-RED"
        return f"it writes {_where(prop, ptype)}: only msg.payload is a Fluxo payload"
    if kind == "delete":
        return [{"op": "delete", "path": ir_path(keys)}] if keys else "it deletes the payload"
    if kind == "move":
        target = payload_keys(rule.get("to"), rule.get("tot", "msg"))
        if not keys or not target:
            return "it moves the payload itself or out of msg.payload"
        if keys != target:
            # Node-RED sets the target to the source's value: a missing source deletes it; an
            # IR move of a missing path does nothing.
            return (
                f"it moves {_where(prop, ptype)} to msg.{rule.get('to')}: when the source is "
                "missing Node-RED deletes the target, an IR move keeps it"
            )
        return [{"op": "move", "from": ir_path(keys), "to": ir_path(target)}]
    if kind != "set":
        return f"a {kind} rule (search and replace) has no IR op"
    source, stype = rule.get("to"), rule.get("tot", "str")
    expr: str | None = None
    if stype == "jsonata":
        if not portable_jsonata(source):
            return "its JSONata uses Node-RED's own functions ($env, $flowContext, ...)"
        if not reads_payload_only(source):
            return "its JSONata reads message properties besides msg.payload"
        expr = wrap_msg_expr(str(source))
    elif stype == "msg":
        from_keys = payload_keys(source)
        if from_keys is None:
            return f"its value comes from msg.{source}: only msg.payload is a Fluxo payload"
        expr = jsonata_path(from_keys)
    elif stype == "date" and source in (None, "", "timestamp"):
        expr = "$millis()"
    # The whole payload: an IR transform gives an object, Node-RED any value (a number, a
    # string, a timestamp); only a value that is surely an object maps.
    surely_object = stype == "jsonata" and gives_object(source)
    if expr is not None and not keys and expr != "$" and not surely_object:
        return (
            f"it sets msg.payload to {_value_source(source, stype)}, which may not be an "
            "object: an IR transform gives an object"
        )
    # A field: Node-RED deletes it (an array element: removes it) when the value is undefined,
    # an IR set keeps the old value; only a value that is surely there maps.
    surely_value = (stype == "jsonata" and gives_value(source)) or expr in ("$", "$millis()")
    if expr is not None and keys and not surely_value:
        return (
            f"it sets {_where(prop, ptype)} to {_value_source(source, stype)}, which may be "
            "undefined: Node-RED then deletes the property, an IR set keeps the old value"
        )
    if expr is not None:
        return [{"op": "jsonata", "expr": expr}] if not keys else [_set(keys, expr=expr)]
    ok, value = constant_value(source, stype)
    if not ok:
        return f"its value is of type {stype} (context, environment, buffer ...)"
    if not keys:  # the whole payload: only an object is a Fluxo payload
        if isinstance(value, dict):
            return [{"op": "jsonata", "expr": literal(value)}]
        return f"it makes msg.payload {_a(value)}: a Fluxo payload is an object"
    return [_set(keys, value=value)]


def _value_source(source: Any, stype: Any) -> str:
    if stype == "jsonata":
        return "a JSONata result"
    if stype == "date":
        return "a timestamp"
    return f"msg.{source}"


def _a(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array of values" if value else "an empty array"
    return "null"


_MUSTACHE = re.compile(
    r"\{\{\{\s*(?P<raw>[^{}]*?)\s*\}\}\}|\{\{(?P<sigil>[&!#^/>=]?)\s*(?P<tag>[^{}]*?)\s*\}\}"
)
_HTML_ESCAPES = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ('"', "&quot;"),
    ("'", "&#39;"),
    ("/", "&#x2F;"),
    ("`", "&#x60;"),
    ("=", "&#x3D;"),
)


def mustache_jsonata(template: str) -> str | None:
    """A mustache template of plain ``{{payload.x}}`` variables as a JSONata string expression.

    The variables are read from an IR payload (``payload.x`` -> ``x``); ``{{x}}`` is HTML-escaped
    as mustache does, ``{{{x}}}`` and ``{{& x}}`` are not. None for sections, partials and
    variables outside the payload.
    """
    parts: list[str] = []
    pos = 0
    for match in _MUSTACHE.finditer(template):
        if match.start() > pos:
            parts.append(literal(template[pos : match.start()]))
        pos = match.end()
        sigil = match["sigil"] or ""
        if sigil == "!":
            continue
        if sigil not in ("", "&"):
            return None
        name = match["raw"] if match["raw"] is not None else match["tag"]
        raw = match["raw"] is not None or sigil == "&"
        if not name or name == "." or "[" in name:
            return None
        keys = name.split(".")
        if keys[0] != "payload" or any(not key for key in keys):
            return None
        value = f"$string({jsonata_path(keys[1:])})"
        if not raw:
            for plain, escaped in _HTML_ESCAPES:
                value = f"$replace({value}, {literal(plain)}, {literal(escaped)})"
        parts.append(value)
    if pos < len(template):
        parts.append(literal(template[pos:]))
    return " & ".join(parts) if parts else '""'
