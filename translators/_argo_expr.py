"""Argo expressions for the Argo translator: payloads and switch conditions in expr-lang. Pure.

Argo evaluates ``{{=...}}`` tags with expr-lang (github.com/expr-lang/expr) plus its own functions
(``toJson``, ``jsonpath``, ``sprig``). Three quirks of Argo shape what is emitted here:

- Before evaluating a tag, Argo checks whether it contains both ``?`` and ``:``; if so it takes
  everything before the first ``?`` as a ternary condition and evaluates it alone. So a tag has no
  ``?`` at all, or starts with a complete condition followed by its ``?``. :class:`Choice` renders
  that way (its guard first) and string literals spell ``?`` as ``\\u003f``.
- A tag ends at the first ``}}`` and a value holding ``{{`` would open a tag: literals spell braces
  as ``\\u007b``/``\\u007d`` and nested braces are kept apart by a space.
- Names with a hyphen are written ``tasks['name']`` (``tasks.a-b`` would be a subtraction).

A payload is an :data:`Expr`: a :class:`Leaf` (one expression, and when there is one, a simple tag
giving its JSON text directly) or a :class:`Choice` between two payloads on a task's status (an
``on_error: continue`` step passes its output or, when it failed, its input). Task names are not
known while expressions are built: :func:`task_ref` writes a placeholder that the translator
replaces once every task is named.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.ir import AllOf, AnyOf, Comparison, Condition, JsonataCondition, Not

__all__ = [
    "Choice",
    "Expr",
    "Leaf",
    "all_of",
    "any_of",
    "condition",
    "expr_tag",
    "json_text",
    "lift",
    "literal",
    "path_value",
    "render",
    "static_json",
    "task_ref",
    "with_params",
]

PLACEHOLDER = "\x00"


def task_ref(uid: int) -> str:
    """A placeholder for the name of task ``uid``, replaced once tasks are named."""
    return f"{PLACEHOLDER}{uid}{PLACEHOLDER}"


@dataclass(frozen=True)
class Leaf:
    """One expr-lang expression (without ``?``).

    Attributes:
        expr: the expression; parenthesised where it could bind loosely.
        tag: a simple Argo tag (``{{...}}``) whose text is the value's JSON, if there is one.
        is_input: the job's input payload itself (it may be held by reference at the gateway).
    """

    expr: str
    tag: str | None = None
    is_input: bool = False


@dataclass(frozen=True)
class Choice:
    """``guard ? then : otherwise``; the guard (no ``?``) is a test of a task's status."""

    guard: str
    then: Expr
    otherwise: Expr


Expr = Leaf | Choice


def lift(build: Callable[..., str], *args: Expr) -> Expr:
    """Apply ``build`` to the expression texts of ``args``, distributing over their choices.

    The result has its choices outermost, so it renders with the first ``?`` right after a guard.
    """
    return _lift(build, args, {})


def _lift(build: Callable[..., str], args: Sequence[Expr], known: dict[str, bool]) -> Expr:
    resolved = [_resolve(arg, known) for arg in args]
    for i, arg in enumerate(resolved):
        if isinstance(arg, Choice):
            branches = []
            for value, branch in ((True, arg.then), (False, arg.otherwise)):
                rest = [*resolved[:i], branch, *resolved[i + 1 :]]
                branches.append(_lift(build, rest, {**known, arg.guard: value}))
            return Choice(arg.guard, branches[0], branches[1])
    return Leaf(build(*(arg.expr for arg in resolved if isinstance(arg, Leaf))))


def _resolve(expr: Expr, known: dict[str, bool]) -> Expr:
    while isinstance(expr, Choice) and expr.guard in known:
        expr = expr.then if known[expr.guard] else expr.otherwise
    return expr


def render(expr: Expr) -> str:
    """The expression text; a choice renders as a ternary with its guard first."""
    if isinstance(expr, Leaf):
        return expr.expr
    return f"{expr.guard} ? ({render(expr.then)}) : ({render(expr.otherwise)})"


def expr_tag(expr: Expr) -> str:
    """``{{=...}}`` around the expression."""
    text = render(expr)
    if "{{" in text or "}}" in text:
        # Only a bug here could produce these: literals escape braces, maps are spaced.
        raise UnsupportedFeatureError(
            f"internal: an Argo expression holds '{{{{' or '}}}}': {text[:200]}",
        )
    return "{{=" + text + (" " if text.endswith("}") else "") + "}}"


def json_text(expr: Expr) -> str:
    """A parameter value holding the payload's JSON text."""
    if isinstance(expr, Leaf) and expr.tag is not None:
        return expr.tag
    return expr_tag(lift(lambda e: f"toJson({e})", expr))


# --- literals ------------------------------------------------------------------------------------

_STRING_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "?": "\\u003f",  # Argo would read a '?' as the start of a ternary
    "{": "\\u007b",  # '{{' would open an Argo tag
    "}": "\\u007d",  # '}}' would close one
}


def literal(value: Any) -> str:
    """``value`` (JSON data) as an expr-lang literal."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedFeatureError(f"the number {value} has no Argo expression form")
        text = repr(value)
        return text if "e" not in text else format(value, ".17f").rstrip("0").rstrip(".")
    if isinstance(value, str):
        out = []
        for char in value:
            escaped = _STRING_ESCAPES.get(char)
            if escaped is None and ord(char) < 0x20:
                escaped = f"\\u{ord(char):04x}"
            out.append(escaped or char)
        return "'" + "".join(out) + "'"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise UnsupportedFeatureError(f"a {type(value).__name__} value has no Argo expression form")


def static_json(value: Any) -> str:
    """Compact JSON with sorted keys that cannot open an Argo tag (``{{`` is escaped)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("{{", "{\\u007b")


# --- with: parameters of a service call -----------------------------------------------------------


def with_params(payload: Expr, static: Mapping[str, Any]) -> Expr:
    """``payload`` with the ``static`` fields set on it: on an object, or on each item of an array.

    Built with Argo's sprig functions: ``sprig.omit(item)`` copies the item (expr-lang has no
    map built from dynamic keys; its ``fromPairs`` makes a ``map[any]any`` that Argo's ``toJson``
    cannot write), then one ``sprig.set`` per parameter replaces or adds the field, nulls kept.
    The object-or-array test is a :class:`Choice` guard, so the tag keeps its one leading
    condition. A non-object item fails the expression, and so the task (the step engine fails
    the step).
    """
    if isinstance(payload, Choice):
        return Choice(
            payload.guard, with_params(payload.then, static), with_params(payload.otherwise, static)
        )

    def merged(item: str) -> str:
        text = f"sprig.omit({item})"
        for name, value in static.items():
            text = f"sprig.set({text}, {literal(name)}, {literal(value)})"
        return text

    p = payload.expr
    return Choice(f"type({p}) == 'array'", Leaf(f"map({p}, {merged('#')})"), Leaf(merged(p)))


# --- paths and conditions ------------------------------------------------------------------------

_NAME = re.compile(r"[^.\[\]]+")
_BRACKET = re.compile(r'\[(?:(?P<index>[0-9]+)|"(?P<quoted>(?:[^"\\]|\\.)*)")\]')


def _path_keys(path: str) -> list[str | int]:
    """``a.b[0]["c.d"]`` -> ``["a", "b", 0, "c.d"]`` (the IR checked the path's form)."""
    keys: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "[":
            match = _BRACKET.match(path, pos)
            if match is None:
                raise UnsupportedFeatureError(f"cannot read the path {path!r}")
            index, quoted = match["index"], match["quoted"]
            keys.append(int(index) if index is not None else json.loads(f'"{quoted}"'))
            pos = match.end()
            continue
        if keys and path[pos] == ".":
            pos += 1
        match = _NAME.match(path, pos)
        if match is None:
            raise UnsupportedFeatureError(f"cannot read the path {path!r}")
        keys.append(match.group())
        pos = match.end()
    return keys


def path_value(base: str, path: str | None) -> str:
    """The value at ``path`` of ``base``, nil when absent (``get`` never fails)."""
    text = base
    for key in _path_keys(path) if path else []:
        text = f"get({text}, {literal(key)})"
    return text


def _exists(base: str, path: str) -> str:
    keys = _path_keys(path)
    parent = base
    for key in keys[:-1]:
        parent = f"get({parent}, {literal(key)})"
    last = keys[-1]
    if isinstance(last, int):
        return f"(type({parent}) == 'array' && len({parent}) > {last})"
    return f"(type({parent}) == 'map' && {literal(last)} in keys({parent}))"


_UNSUPPORTED_REGEX = re.compile(r"\(\?[=!]|\(\?<[=!]|\(\?P=|\(\?>|\\[1-9]|[*+?}]\+")
_NUMBER_TYPES = "['int', 'float']"


def _comparison(c: Comparison, p: str, step_id: str) -> str:
    """The comparison over payload ``p``, with the step engine's meaning (see its conditions)."""
    value = path_value(p, c.path)
    exists = _exists(p, c.path)
    if c.op == "exists":
        return exists
    if c.op == "not_exists":
        return f"!{exists}"
    lit = literal(c.value)
    if c.op == "eq":
        return f"({exists} && {value} == {lit})" if c.value is None else f"{value} == {lit}"
    if c.op == "ne":
        return f"({exists} && {value} != {lit})"
    if c.op in ("gt", "gte", "lt", "lte"):
        symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[c.op]
        kinds = "== 'string'" if isinstance(c.value, str) else f"in {_NUMBER_TYPES}"
        return f"(type({value}) {kinds} && {value} {symbol} {lit})"
    if c.op == "in":
        check = f"{value} in {lit}"
        return f"({exists} && {check})" if None in c.value else check
    if c.op == "contains":
        in_list = f"(type({value}) == 'array' && {lit} in {value})"
        if isinstance(c.value, str):
            return f"((type({value}) == 'string' && {value} contains {lit}) || {in_list})"
        return in_list
    # regex: Argo uses Go's RE2, which lacks look-around and back-references
    pattern = str(c.value)
    if _UNSUPPORTED_REGEX.search(pattern):
        raise UnsupportedFeatureError(
            f"step {step_id!r}: the regex {pattern!r} uses look-around, back-references or "
            "possessive quantifiers, which Argo's regular expressions (RE2) lack; rewrite it "
            "without them or run the workflow on the step engine",
            step=step_id,
        )
    return f"(type({value}) == 'string' && {value} matches {literal(pattern)})"


def condition(cond: Condition, p: str, step_id: str) -> str:
    """A structured condition over payload ``p`` as an expr-lang boolean (no ``?``).

    Raises:
        UnsupportedFeatureError: a JSONata condition (Argo cannot evaluate JSONata), naming the step.
    """
    if isinstance(cond, Comparison):
        return _comparison(cond, p, step_id)
    if isinstance(cond, AllOf):
        return all_of([condition(c, p, step_id) for c in cond.all])
    if isinstance(cond, AnyOf):
        return any_of([condition(c, p, step_id) for c in cond.any])
    if isinstance(cond, Not):
        return f"!({condition(cond.not_, p, step_id)})"
    if isinstance(cond, JsonataCondition):
        raise UnsupportedFeatureError(
            f"step {step_id!r}: the JSONata condition {cond.jsonata!r} cannot run on Argo (its "
            "conditions are expr-lang); write it as a structured condition ({path, op, value}, "
            "all, any, not) or run the workflow on the step engine",
            step=step_id,
            kind="switch",
        )
    raise UnsupportedFeatureError(f"step {step_id!r}: unknown condition {type(cond).__name__}")


def all_of(parts: Sequence[str]) -> str:
    if not parts:
        return "true"
    return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"


def any_of(parts: Sequence[str]) -> str:
    if not parts:
        return "false"
    return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"
