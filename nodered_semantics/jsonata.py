"""JSONata as Node-RED evaluates it in its nodes, on jsonata-python.

The input is the message (``{msg}`` in legacy mode, when the expression names ``msg``); the
bindings are ``$env`` (only ``NR_NODE_ID``/``NR_NODE_NAME`` and what the caller passes: Node-RED
reads every other variable from the flow's settings or its own process) and ``$clone``; the
switch node adds ``$I``/``$N``; ``$flowContext``/``$globalContext`` read the node's
:class:`~nodered_semantics.context.ContextView`. :func:`jsonata_problem` refuses beforehand what
the step engine cannot reproduce (``$moment``, other environment variables).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

import jsonata

from nodered_semantics.context import ContextView
from nodered_semantics.js import UNDEFINED, js_string, js_value

__all__ = [
    "JSONATA_MAX_DEPTH",
    "JSONATA_TIMEOUT_MS",
    "STATIC_ENV",
    "JsonataError",
    "env_names",
    "env_problem",
    "env_property",
    "evaluate_jsonata",
    "gives_object",
    "gives_value",
    "jsonata_problem",
    "portable_jsonata",
    "reads_payload_only",
]

JSONATA_TIMEOUT_MS = 1000
JSONATA_MAX_DEPTH = 200
# Environment variables the step engine can give a node: Node-RED reads every other one from the
# flow's settings or the Node-RED process, which the step engine does not have.
STATIC_ENV = ("NR_NODE_ID", "NR_NODE_NAME")


_LEGACY = re.compile(r"(^|[^a-zA-Z0-9_'\".])msg([^a-zA-Z0-9_'\"]|$)")


class JsonataError(Exception):
    """A node's JSONata expression did not compile or did not evaluate; the message says why."""


class _Jsonata(jsonata.Jsonata):  # type: ignore[misc]
    """jsonata-python with JavaScript's ``%`` (it truncates ``2.5 % 2`` to 0)."""

    def evaluate_numeric_expression(self, lhs: Any, rhs: Any, op: Any) -> Any:
        numeric = jsonata.Utils.is_numeric
        if op == "%" and numeric(lhs) and numeric(rhs):
            if float(rhs) == 0:
                raise JsonataError("the remainder of a division by zero is NaN, not a number")
            return jsonata.Utils.convert_number(math.fmod(float(lhs), float(rhs)))
        return super().evaluate_numeric_expression(lhs, rhs, op)


def evaluate_jsonata(
    text: str,
    msg: Any,
    node: Mapping[str, Any],
    env: Mapping[str, Any],
    bindings: Mapping[str, Any] | None = None,
    context: ContextView | None = None,
) -> Any:
    """``RED.util.evaluateJSONataExpression`` of a prepared expression; UNDEFINED for none.

    ``context``: what ``$flowContext(key)`` and ``$globalContext(key)`` read."""
    try:
        # Compiled right before use, on this thread: jsonata-python keeps per-thread state and
        # starts an expression's time budget when it is compiled.
        expr = _Jsonata(text, timeout=JSONATA_TIMEOUT_MS, stack=JSONATA_MAX_DEPTH)
        expr.set_output_convert_nulls(False)
        expr.register_lambda("env", lambda name: _env_or_empty(node, env, js_string(name)))
        expr.register_lambda("clone", copy.deepcopy)
        if context is not None:
            for name, scope in (("flowContext", "flow"), ("globalContext", "global")):
                expr.register_lambda(name, _context_reader(context, scope))
        data = {"msg": msg} if _LEGACY.search(text) else msg
        raw = expr.evaluate(data, dict(bindings) if bindings else None)
    except RecursionError as exc:
        raise JsonataError("the expression recursed too deeply") from exc
    except Exception as exc:  # jsonata-python raises JException and plain ValueError/TypeError
        code = getattr(exc, "error", None)
        if code == "D1012":
            raise JsonataError(f"the expression ran longer than {JSONATA_TIMEOUT_MS} ms") from exc
        raise JsonataError(str(getattr(exc, "message", None) or exc)) from exc
    inputs: dict[int, Any] = {}
    _containers(msg, inputs)
    return UNDEFINED if raw is None else _plain(raw, inputs)


def _context_reader(context: ContextView, scope: str) -> Any:
    def read(key: Any, store: Any = None) -> Any:
        found = context.get(scope, js_string(key))
        return None if found is UNDEFINED else copy.deepcopy(found)

    return read


def _containers(value: Any, found: dict[int, Any]) -> None:
    if isinstance(value, dict | list) and id(value) not in found:
        found[id(value)] = value
        for item in value.values() if isinstance(value, dict) else value:
            _containers(item, found)


def _plain(value: Any, inputs: Mapping[int, Any]) -> Any:
    """A JSONata result as the message holds it; an object of the input stays that object."""
    if inputs.get(id(value)) is value:
        return value
    if value is None:
        return UNDEFINED
    if value is jsonata.Utils.NULL_VALUE:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return js_value(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, inputs) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [None if v is None else _plain(v, inputs) for v in value]
    raise JsonataError(f"the expression gave a {type(value).__name__}, which is not JSON")


def jsonata_problem(text: Any, env: Collection[str] = ()) -> str | None:
    """Why a JSONata expression of a node cannot run on the step engine, or None (``env``:
    the variables the call provides besides :data:`STATIC_ENV`)."""
    if not isinstance(text, str):
        return "a JSONata expression is missing"
    try:
        jsonata.Jsonata(text)
    except Exception as exc:
        return f"the JSONata expression {text!r} does not compile: {exc}"
    if re.search(r"\$moment\s*\(", text):
        return "a JSONata expression calls $moment, which only Node-RED provides"
    for found in re.finditer(r"\$env\s*\(\s*(\"[^\"]*\"|'[^']*')?", text):
        name = found.group(1)
        if name is None or (name[1:-1] not in STATIC_ENV and name[1:-1] not in env):
            return env_problem(name[1:-1] if name else "(computed)")
    return None


def env_problem(name: str) -> str:
    return (
        f"it reads the environment variable {name}, which Node-RED takes from the flow's "
        f"settings or its own process; the step engine provides only {', '.join(STATIC_ENV)}"
    )


def _env_value(node: Mapping[str, Any], env: Mapping[str, Any], name: str) -> Any:
    """``RED.util.getSetting`` as the step engine has it: the node's NR_* and the call's env."""
    if name == "NR_NODE_NAME":
        return node.get("name", UNDEFINED)
    if name == "NR_NODE_ID":
        return node.get("id", UNDEFINED)
    return env.get(name, UNDEFINED)


def _env_or_empty(node: Mapping[str, Any], env: Mapping[str, Any], name: str) -> Any:
    found = _env_value(node, env, name)
    return "" if found is UNDEFINED else found


def env_property(node: Mapping[str, Any], env: Mapping[str, Any], text: str) -> Any:
    """``RED.util.evaluateEnvProperty``: ``NAME``, ``${NAME}`` or ``a${NAME}b``."""
    if re.fullmatch(r"\$\{[^}]+\}", text):
        found = _env_value(node, env, text[2:-1])
    elif not re.search(r"\$\{\S+\}", text):
        found = _env_value(node, env, text)
    else:

        def sub(match: re.Match[str]) -> str:
            value = _env_value(node, env, match.group(1))
            return "" if value is UNDEFINED else js_string(value)

        return re.sub(r"\$\{([^}]+)\}", sub, text)
    return "" if found is UNDEFINED else found


def env_names(text: str) -> list[str]:
    if re.fullmatch(r"\$\{[^}]+\}", text) or not re.search(r"\$\{\S+\}", text):
        return [text[2:-1] if text.startswith("${") else text]
    return re.findall(r"\$\{([^}]+)\}", text)


# Node-RED's own JSONata functions: an expression that uses none of them means the same on any
# JSONata (the IR's, for one), given the same input.
_NODE_RED_ONLY = re.compile(r"\$(flowContext|globalContext|env|moment|parts|clone)\b")


def portable_jsonata(expr: Any) -> bool:
    """Whether a Node-RED JSONata expression uses none of Node-RED's own functions."""
    return isinstance(expr, str) and bool(expr.strip()) and not _NODE_RED_ONLY.search(expr)


_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_BACKTICK = re.compile(r"`[^`]*`")
# A name that starts a path: not after a dot (a field below), $ (a variable) or a word character.
_TOP_NAME = re.compile(r"(?<![\w$.`])(`[^`]*`|[A-Za-z_]\w*)")
_WORDS = frozenset({"and", "or", "in", "true", "false", "null", "function"})


def reads_payload_only(expr: Any) -> bool:
    """Whether a Node-RED JSONata expression reads no message property but ``payload``.

    Conservative: every name that starts a path must be ``payload``; a name inside a filter
    (``payload[name = "x"]``) counts too, so such an expression is not claimed. Node-RED gives
    the expression the whole message; an expression that reads ``topic`` (or ``msg.topic``)
    needs it, not just the payload."""
    if not isinstance(expr, str):
        return False
    text = _COMMENT.sub(" ", _STRING_LITERAL.sub('""', expr))
    names = {m.group(1).strip("`") for m in _TOP_NAME.finditer(text)} - _WORDS
    return names <= {"payload"}


def gives_object(expr: Any) -> bool:
    """Whether a JSONata expression surely gives an object: it is one object constructor
    (``{"a": payload.x}``). Conservative: any other expression (a path, a function call, a
    condition) may give a number, a string or nothing."""
    return isinstance(expr, str) and _one_constructor(_bare(expr), "{", "}")


_LITERAL = re.compile(r'""|-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null|\$(millis|now)\(\s*\)')


def gives_value(expr: Any) -> bool:
    """Whether a JSONata expression surely gives a value, never nothing (*undefined*): it is one
    object or array constructor (``[payload.x]`` gives ``[]`` when ``x`` is missing), a literal,
    ``$millis()``/``$now()`` or a string concatenation (``"id " & payload.id``). Conservative:
    a path, another operator or a function call may give nothing, which Node-RED's change node
    takes as "delete the property"."""
    if not isinstance(expr, str):
        return False
    text = _bare(expr)
    return (
        _one_constructor(text, "{", "}")
        or _one_constructor(text, "[", "]")
        or _LITERAL.fullmatch(text) is not None
        or _concatenation(text)
    )


# Operators that bind as loosely as ``&`` or looser (JSONata: ``+``/``-`` 50, comparisons and
# ``~>`` 40, ``and`` 30, ``or`` 25, ``?:`` 20, ``:=`` 10) and the expression separator.
_LOOSE = re.compile(r"[-+=!<>?:~;]|\b(and|or|in)\b")


def _concatenation(text: str) -> bool:
    """Whether ``text`` is a string concatenation at its top: ``a & b & ...``, with no operator
    that binds as loosely. ``&`` gives a string even of missing operands (``""``)."""
    top: list[str] = []
    depth = 0
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            top.append(char)
    flat = "".join(top)
    return depth == 0 and "&" in flat and _LOOSE.search(flat) is None


def _bare(expr: str) -> str:
    """The expression without comments, its strings and quoted names emptied (brackets in them
    do not count)."""
    return _COMMENT.sub(" ", _BACKTICK.sub("``", _STRING_LITERAL.sub('""', expr))).strip()


def _one_constructor(text: str, opening: str, closing: str) -> bool:
    """Whether ``text`` is one bracketed constructor and nothing else (``{...}``, not
    ``{...}.a`` nor ``[...][0]``)."""
    if not text.startswith(opening):
        return False
    depth = 0
    for n, char in enumerate(text):
        depth += {opening: 1, closing: -1}.get(char, 0)
        if depth == 0:  # the first bracket closes here: the constructor must be all there is
            return n == len(text) - 1
    return False
