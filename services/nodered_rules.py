"""Node-RED's rule nodes on one message: ``change``, ``switch``, ``range`` and ``sort``.

Each follows its Node-RED 4.1 implementation (``15-change.js``, ``10-switch.js``,
``16-range.js``, ``18-sort.js``) and the ``RED.util`` helpers they use, with JavaScript's
semantics where they differ from Python's: loose equality and relational comparison
(``"10" == 10``, ``null < 1``), ``Number()``/``String()`` conversions, property paths
(``payload.a[0]["b c"]``, ``payload[msg.topic]``), a ``set`` of ``undefined`` deleting the
property, references shared between properties (``set msg.a to msg.payload`` without deep
copy), ``String.replace`` replacement patterns (``$&``, ``$1``), and JavaScript regular
expressions translated to Python's.

JSONata runs on jsonata-python with Node-RED's bindings: the input is the message (``{msg}`` in
legacy mode, when the expression names ``msg``), ``$env`` and ``$clone``; the switch node's
``$I``/``$N`` for messages of a sequence.

What Node-RED keeps between messages is refused by :func:`rules_problem` before a flow runs:
flow/global context, ``$flowContext``/``$globalContext``, switch rules on a message sequence
(head, tail, index, "recreate message sequences") or on the previous value, sorting a message
sequence. So is what the step engine cannot reproduce (environment variables other than
``NR_NODE_ID``/``NR_NODE_NAME``, ``$moment``, Buffers, Date objects and moment formats).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jsonata

from fluxo_core.errors import ServiceError

__all__ = [
    "RULE_TYPES",
    "UNDEFINED",
    "js_number",
    "js_string",
    "rules_problem",
    "run_rule_node",
]

RULE_TYPES = frozenset({"change", "switch", "range", "sort"})
JSONATA_TIMEOUT_MS = 1000
JSONATA_MAX_DEPTH = 200
# Environment variables the step engine can give a node: Node-RED reads every other one from the
# flow's settings or the Node-RED process, which the step engine does not have.
STATIC_ENV = ("NR_NODE_ID", "NR_NODE_NAME")


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"

    def __copy__(self) -> _Undefined:
        return self

    def __deepcopy__(self, memo: Any) -> _Undefined:
        return self


UNDEFINED: Any = _Undefined()
Sent = list[tuple[int, dict[str, Any]]]


class _JSThrowError(Exception):
    """What JavaScript would throw (a TypeError reading a property of undefined, ...)."""


# --- JavaScript values ---------------------------------------------------------------------------


def js_string(value: Any) -> str:
    """``String(value)`` as JavaScript prints it (numbers, arrays, objects, null)."""
    if value is None or value is UNDEFINED:
        return "null" if value is None else "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _js_number_text(value)
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list):
        return ",".join("" if v is None or v is UNDEFINED else js_string(v) for v in value)
    return "[object Object]"


def _js_number_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:  # 1e-07 -> 1e-7, 1e+21 stays
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


_JS_NUMBER = re.compile(r"^[+-]?(Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$")
_JS_WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_JS_TRIM = re.compile(f"^[{_JS_WHITESPACE}]+|[{_JS_WHITESPACE}]+$")


def js_number(value: Any) -> float | int:
    """``Number(value)``: NaN (a float) when JavaScript gives NaN."""
    if value is UNDEFINED:
        return math.nan
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = _JS_TRIM.sub("", value)
        if text == "":
            return 0
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            return int(text[2:], 16)
        if re.fullmatch(r"0[oO][0-7]+", text):
            return int(text[2:], 8)
        if re.fullmatch(r"0[bB][01]+", text):
            return int(text[2:], 2)
        if not _JS_NUMBER.match(text):
            return math.nan
        number = float(text)
        return _integral(number)
    if isinstance(value, list):
        return js_number(js_string(value))
    return math.nan


def _integral(number: float) -> float | int:
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _js_value(value: Any) -> Any:
    """A computed number as JavaScript holds it: integral floats become ints."""
    if isinstance(value, float) and math.isfinite(value):
        return _integral(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _primitive(value: Any) -> Any:
    """ToPrimitive: objects and arrays become their string form."""
    return js_string(value) if isinstance(value, dict | list) else value


def js_strict_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def js_loose_equal(a: Any, b: Any) -> bool:
    """``a == b``."""
    if isinstance(a, dict | list) and isinstance(b, dict | list):
        return a is b
    nullish = (None, UNDEFINED)
    if a in nullish or b in nullish:
        return (a in nullish) and (b in nullish)
    if isinstance(a, dict | list):
        return js_loose_equal(_primitive(a), b)
    if isinstance(b, dict | list):
        return js_loose_equal(a, _primitive(b))
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, bool) and isinstance(b, bool):
        return a == b
    return bool(js_number(a) == js_number(b))


def _js_less(a: Any, b: Any) -> bool | None:
    """The abstract relational comparison ``a < b``: None when undefined (NaN involved)."""
    a, b = _primitive(a), _primitive(b)
    if isinstance(a, str) and isinstance(b, str):
        return a.encode("utf-16-be") < b.encode("utf-16-be")
    x, y = js_number(a), js_number(b)
    if _nan(x) or _nan(y):
        return None
    return bool(x < y)


def js_lt(a: Any, b: Any) -> bool:
    return _js_less(a, b) is True


def js_gt(a: Any, b: Any) -> bool:
    return _js_less(b, a) is True


def js_lte(a: Any, b: Any) -> bool:
    return _js_less(b, a) is False


def js_gte(a: Any, b: Any) -> bool:
    return _js_less(a, b) is False


# --- JavaScript regular expressions --------------------------------------------------------------

_JS_SPACE_CLASS = _JS_WHITESPACE


def js_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """A JavaScript regular expression (no ``u``/``y``/``s``/``m`` flags) as a Python one.

    Raises:
        ValueError: it does not compile, or uses what translates badly (``\\S`` in a class).
    """
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "d":
                out.append("0-9" if in_class else "[0-9]")
            elif nxt == "D":
                if in_class:
                    raise ValueError("\\D inside a character class is not supported")
                out.append("[^0-9]")
            elif nxt == "s":
                out.append(_JS_SPACE_CLASS if in_class else f"[{_JS_SPACE_CLASS}]")
            elif nxt == "S":
                if in_class:
                    raise ValueError("\\S inside a character class is not supported")
                out.append(f"[^{_JS_SPACE_CLASS}]")
            elif nxt == "k" and pattern.startswith("<", i + 2):
                end = pattern.index(">", i)
                out.append(f"(?P={pattern[i + 3 : end]})")
                i = end + 1
                continue
            elif nxt in "wWbB":
                out.append("\\" + nxt)  # compiled with re.ASCII, as JavaScript's
            elif nxt == "/":
                out.append("/")
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            elif ch == "[":
                out.append("\\[")
                i += 1
                continue
        elif ch == "[":
            in_class = True
            if pattern.startswith("[]", i):  # JavaScript's empty class never matches
                out.append("(?!)")
                i += 2
                in_class = False
                continue
            if pattern.startswith("[^]", i):  # ... and its negation matches anything
                out.append("[\\s\\S]")
                i += 3
                in_class = False
                continue
        elif ch == "$":
            out.append("\\Z")  # the end of the input, not before a final newline
            i += 1
            continue
        elif pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        out.append(ch)
        i += 1
    flags = re.ASCII | (re.IGNORECASE if ignore_case else 0)
    try:
        return re.compile("".join(out), flags)
    except re.error as exc:
        raise ValueError(str(exc)) from exc


def _js_replace(
    text: str, regex: re.Pattern[str] | None, replacement: Any, *, global_: bool = True
) -> str:
    """``text.replace(regex, String(replacement))`` with JavaScript's ``$`` patterns."""
    template = js_string(replacement)
    if regex is None:  # String.replace(undefined, v): the first "undefined"
        regex, global_ = re.compile("undefined"), False

    def expand(match: re.Match[str]) -> str:
        out: list[str] = []
        i = 0
        groups = regex.groups if regex is not None else 0
        while i < len(template):
            ch = template[i]
            if ch != "$" or i + 1 == len(template):
                out.append(ch)
                i += 1
                continue
            nxt = template[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "&":
                out.append(match.group(0))
                i += 2
            elif nxt == "`":
                out.append(match.string[: match.start()])
                i += 2
            elif nxt == "'":
                out.append(match.string[match.end() :])
                i += 2
            elif nxt.isdigit():
                two = template[i + 1 : i + 3]
                if len(two) == 2 and two.isdigit() and 1 <= int(two) <= groups:
                    out.append(match.group(int(two)) or "")
                    i += 3
                elif 1 <= int(nxt) <= groups:
                    out.append(match.group(int(nxt)) or "")
                    i += 2
                else:
                    out.append("$" + nxt)
                    i += 2
            elif nxt == "<" and regex is not None and regex.groupindex and ">" in template[i:]:
                end = template.index(">", i)
                name = template[i + 2 : end]
                found = match.group(name) if name in regex.groupindex else None
                out.append(found or "")
                i = end + 1
            else:
                out.append("$")
                i += 1
        return "".join(out)

    return regex.sub(expand, text, count=0 if global_ else 1)


# --- message properties (RED.util) ---------------------------------------------------------------

PathPart = str | int


def property_parts(expr: str, msg: Any = None) -> list[Any]:
    """``RED.util.normalisePropertyExpression``: ``a.b[0]["c"][msg.topic]`` into its keys.

    Raises:
        _JSThrowError: the expression is malformed, or a ``[msg...]`` reference is undefined.
    """
    length = len(expr)
    if length == 0:
        raise _JSThrowError("Invalid property expression: zero-length")
    parts: list[Any] = []
    start, in_string, in_box, quote = 0, False, False, ""
    i = 0
    while i < length:
        c = expr[i]
        if not in_string:
            if c in "'\"":
                if i != start:
                    raise _JSThrowError(
                        f"Invalid property expression: unexpected {c} at position {i}"
                    )
                in_string, quote, start = True, c, i + 1
            elif c == ".":
                if i == 0:
                    raise _JSThrowError("Invalid property expression: unexpected . at position 0")
                if start != i:
                    v = expr[start:i]
                    parts.append(int(v) if re.fullmatch(r"\d+", v) else v)
                if i == length - 1 or not re.match(r"[a-z0-9$_]", expr[i + 1], re.IGNORECASE):
                    raise _JSThrowError(f"Invalid property expression at position {i + 1}")
                start = i + 1
            elif c == "[":
                if i == 0 or i == length - 1:
                    raise _JSThrowError(
                        f"Invalid property expression: unexpected [ at position {i}"
                    )
                if start != i:
                    parts.append(expr[start:i])
                if re.match(r"msg[.\[]", expr[i + 1 :]):
                    j = _closing_bracket(expr, i)
                    if j is None:
                        raise _JSThrowError(f"Invalid property expression: unmatched '[' at {i}")
                    inner = expr[i + 1 : j]
                    if msg is None:
                        raise _JSThrowError("a [msg...] reference needs the message")
                    found = get_property(msg, inner)
                    if found is UNDEFINED:
                        raise _JSThrowError(f"Invalid expression: undefined reference {inner}")
                    parts.append(found)
                    in_box, i, start = False, j + 1, j + 1
                    continue
                if not re.match(r"[\"'\d]", expr[i + 1]):
                    raise _JSThrowError(f"Invalid property expression at position {i + 1}")
                start, in_box = i + 1, True
            elif c == "]":
                if not in_box:
                    raise _JSThrowError(
                        f"Invalid property expression: unexpected ] at position {i}"
                    )
                if start != i:
                    v = expr[start:i]
                    if not re.fullmatch(r"\d+", v):
                        raise _JSThrowError(f"Invalid property expression at position {start}")
                    parts.append(int(v))
                start, in_box = i + 1, False
            elif c == " ":
                raise _JSThrowError(f"Invalid property expression: unexpected ' ' at position {i}")
        elif c == quote:
            if i == start:
                raise _JSThrowError(f"Invalid property expression: zero-length string at {start}")
            parts.append(expr[start:i])
            following = expr[i + 1] if i + 1 < length else ""
            if in_box and following != "]":
                raise _JSThrowError(f"Invalid property expression at position {start}")
            if not in_box and i + 1 != length and following not in "[.":
                raise _JSThrowError(f"Invalid property expression at position {i + 1}")
            start, in_string = i + 1, False
        i += 1
    if in_box or in_string:
        raise _JSThrowError("Invalid property expression: unterminated expression")
    if start < length:
        parts.append(expr[start:])
    return parts


def _closing_bracket(expr: str, i: int) -> int | None:
    depth, quote = 1, ""
    for j in range(i + 1, len(expr)):
        ch = expr[j]
        if ch in "\"'":
            if quote and ch == quote:
                quote = ""
            elif not quote:
                quote = ch
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if depth == 0:
            return j
    return None


def _strip_msg(expr: Any) -> str:
    text = str(expr)
    return text[4:] if text.startswith("msg.") else text


def _index(key: Any) -> int | None:
    """The array index a property key names (``0``, ``"0"``), or None."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 0 else None
    if isinstance(key, float) and key.is_integer() and key >= 0:
        return int(key)
    if isinstance(key, str) and re.fullmatch(r"0|[1-9]\d*", key):
        return int(key)
    return None


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else js_string(key)


def js_get(obj: Any, key: Any) -> Any:
    """``obj[key]`` (UNDEFINED when absent); raises like JavaScript on undefined/null."""
    if obj is None or obj is UNDEFINED:
        raise _JSThrowError(f"Cannot read properties of {js_string(obj)} (reading '{key}')")
    if isinstance(obj, dict):
        return obj.get(_key_text(key), UNDEFINED)
    if isinstance(obj, list | str):
        if key == "length":
            return len(obj)
        index = _index(key)
        return obj[index] if index is not None and index < len(obj) else UNDEFINED
    return UNDEFINED


def get_property(msg: Any, expr: Any) -> Any:
    """``RED.util.getMessageProperty``."""
    value = msg
    for key in property_parts(_strip_msg(expr), msg):
        value = js_get(value, key)
    return value


def _own(obj: Any, key: Any) -> bool:
    if isinstance(obj, dict):
        return _key_text(key) in obj
    if isinstance(obj, list | str):
        index = _index(key)
        return key == "length" or (index is not None and index < len(obj))
    return False


def _assign(obj: Any, key: Any, value: Any) -> None:
    if isinstance(obj, dict):
        obj[_key_text(key)] = value
        return
    index = _index(key)
    if not isinstance(obj, list) or index is None:
        raise _JSThrowError(f"cannot set {key!r} on {type(obj).__name__} as JavaScript would")
    while len(obj) <= index:
        obj.append(None)
    obj[index] = value


def set_property(msg: Any, expr: Any, value: Any, create_missing: bool | None = None) -> bool:
    """``RED.util.setMessageProperty``: ``value`` UNDEFINED deletes; False when not set."""
    if create_missing is None:
        create_missing = value is not UNDEFINED
    parts = property_parts(_strip_msg(expr), msg)
    obj = msg
    for i, key in enumerate(parts[:-1]):
        container = _container_for(parts[i + 1])
        if isinstance(key, str) or (isinstance(key, int | float) and not isinstance(obj, list)):
            if _own(obj, key):
                current = js_get(obj, key)
                if not isinstance(current, dict | list):
                    return False
                obj = current
            elif create_missing:
                _assign(obj, key, container)
                obj = container
            else:
                return False
        else:  # a number on an array
            current = js_get(obj, key)
            if current is UNDEFINED:
                if not create_missing:
                    return False
                _assign(obj, key, container)
                obj = container
            elif not isinstance(current, dict | list):
                raise _JSThrowError(f"cannot go below {js_string(current)!r}")
            else:
                obj = current
    key = parts[-1]
    if value is UNDEFINED:
        index = _index(key)
        if isinstance(obj, list) and isinstance(key, int) and index is not None:
            if index < len(obj):
                del obj[index]
        elif isinstance(obj, list) and index is not None and index < len(obj):
            obj[index] = None  # delete arr["0"] leaves a hole
        elif isinstance(obj, dict):
            obj.pop(_key_text(key), None)
        return True
    if not isinstance(obj, dict | list):
        return False
    _assign(obj, key, value)
    return True


def _container_for(following: Any) -> Any:
    return {} if isinstance(following, str) else []


# --- JSONata -------------------------------------------------------------------------------------

_LEGACY = re.compile(r"(^|[^a-zA-Z0-9_'\".])msg([^a-zA-Z0-9_'\"]|$)")


class _JsonataError(Exception):
    pass


class _Jsonata(jsonata.Jsonata):  # type: ignore[misc]
    """jsonata-python with JavaScript's ``%`` (it truncates ``2.5 % 2`` to 0)."""

    def evaluate_numeric_expression(self, lhs: Any, rhs: Any, op: Any) -> Any:
        numeric = jsonata.Utils.is_numeric
        if op == "%" and numeric(lhs) and numeric(rhs):
            if float(rhs) == 0:
                raise _JsonataError("the remainder of a division by zero is NaN, not a number")
            return jsonata.Utils.convert_number(math.fmod(float(lhs), float(rhs)))
        return super().evaluate_numeric_expression(lhs, rhs, op)


def evaluate_jsonata(
    text: str,
    msg: Any,
    node: Mapping[str, Any],
    env: Mapping[str, Any],
    bindings: Mapping[str, Any] | None = None,
) -> Any:
    """``RED.util.evaluateJSONataExpression`` of a prepared expression; UNDEFINED for none."""
    try:
        # Compiled right before use, on this thread: jsonata-python keeps per-thread state and
        # starts an expression's time budget when it is compiled.
        expr = _Jsonata(text, timeout=JSONATA_TIMEOUT_MS, stack=JSONATA_MAX_DEPTH)
        expr.set_output_convert_nulls(False)
        expr.register_lambda("env", lambda name: _env_or_empty(node, env, js_string(name)))
        expr.register_lambda("clone", copy.deepcopy)
        context = {"msg": msg} if _LEGACY.search(text) else msg
        raw = expr.evaluate(context, dict(bindings) if bindings else None)
    except RecursionError as exc:
        raise _JsonataError("the expression recursed too deeply") from exc
    except Exception as exc:  # jsonata-python raises JException and plain ValueError/TypeError
        code = getattr(exc, "error", None)
        if code == "D1012":
            raise _JsonataError(f"the expression ran longer than {JSONATA_TIMEOUT_MS} ms") from exc
        raise _JsonataError(str(getattr(exc, "message", None) or exc)) from exc
    inputs: dict[int, Any] = {}
    _containers(msg, inputs)
    return UNDEFINED if raw is None else _plain(raw, inputs)


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
        return _js_value(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, inputs) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [None if v is None else _plain(v, inputs) for v in value]
    raise _JsonataError(f"the expression gave a {type(value).__name__}, which is not JSON")


def jsonata_problem(text: Any) -> str | None:
    """Why a JSONata expression of a node cannot run on the step engine, or None."""
    if not isinstance(text, str):
        return "a JSONata expression is missing"
    try:
        jsonata.Jsonata(text)
    except Exception as exc:
        return f"the JSONata expression {text!r} does not compile: {exc}"
    if re.search(r"\$(flowContext|globalContext)\s*\(", text):
        return "a JSONata expression reads flow/global context, which outlives the message"
    if re.search(r"\$moment\s*\(", text):
        return "a JSONata expression calls $moment, which only Node-RED provides"
    for found in re.finditer(r"\$env\s*\(\s*(\"[^\"]*\"|'[^']*')?", text):
        name = found.group(1)
        if name is None or name[1:-1] not in STATIC_ENV:
            return _env_problem(name[1:-1] if name else "(computed)")
    return None


def _env_problem(name: str) -> str:
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


def _env_property(node: Mapping[str, Any], env: Mapping[str, Any], text: str) -> Any:
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


def _env_names(text: str) -> list[str]:
    if re.fullmatch(r"\$\{[^}]+\}", text) or not re.search(r"\$\{\S+\}", text):
        return [text[2:-1] if text.startswith("${") else text]
    return re.findall(r"\$\{([^}]+)\}", text)


# --- typed values (RED.util.evaluateNodeProperty) ------------------------------------------------

_CONTEXT_TYPES = frozenset({"flow", "global"})


def typed_value_problem(value: Any, kind: Any) -> str | None:
    """Why a typed value of a node cannot be evaluated here (None when it can)."""
    if kind in _CONTEXT_TYPES:
        return f"it reads {kind} context, which Node-RED keeps between messages"
    if kind == "jsonata":
        return jsonata_problem(value)
    if kind == "env":
        for name in _env_names(str(value or "")):
            if name not in STATIC_ENV:
                return _env_problem(name)
    if kind == "json":
        try:
            _parse_json(str(value))
        except ValueError:
            return f"its JSON value {value!r} does not parse (Node-RED does not start the node)"
    if kind == "num" and _nan(js_number(value)):
        return f"its number {value!r} is NaN, which a JSON message cannot carry"
    if kind == "bin":
        return "it makes a Buffer, which a JSON message cannot carry"
    if kind == "re":
        return "it makes a RegExp object, which a JSON message cannot carry"
    if kind == "date" and value not in (None, "", "iso"):
        return f"its date value {value!r} (a Date object or moment format) is not supported"
    return None


def _parse_json(text: str) -> Any:
    """``JSON.parse``: no NaN/Infinity, unlike Python's json."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def typed_value(
    value: Any, kind: Any, msg: Any, node: Mapping[str, Any], env: Mapping[str, Any]
) -> Any:
    """``evaluateNodeProperty(value, kind, node, msg)``; a msg read that throws gives UNDEFINED."""
    if kind == "str":
        return js_string(value)
    if kind == "num":
        return js_number(value)
    if kind == "json":
        return _parse_json(str(value))
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
        except _JSThrowError:
            return UNDEFINED
    if kind == "jsonata":
        return evaluate_jsonata(str(value), msg, node, env)
    if kind == "env":
        return _env_property(node, env, js_string(value))
    if kind in _CONTEXT_TYPES or kind in ("bin", "re"):
        raise _JSThrowError(f"{kind} values are not supported on the step engine")
    return value


# --- the nodes -----------------------------------------------------------------------------------


def rules_problem(node: Mapping[str, Any]) -> str | None:
    """Why a change/switch/range/sort node cannot run on one message here, or None."""
    kind = node.get("type")
    if kind == "change":
        return _change_problem(node)
    if kind == "switch":
        return _switch_problem(node)
    if kind == "range":
        return _range_problem(node)
    if kind == "sort":
        return _sort_problem(node)
    return f"{kind!r} is not a rule node"


_Fail = Callable[[Mapping[str, Any], str], ServiceError]


def _cyclic(value: Any, above: set[int]) -> bool:
    if not isinstance(value, dict | list):
        return False
    if id(value) in above:
        return True
    above.add(id(value))
    found = any(_cyclic(v, above) for v in (value.values() if isinstance(value, dict) else value))
    above.discard(id(value))
    return found


def run_rule_node(
    node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any], fail: _Fail
) -> Sent:
    """Run a change/switch/range/sort node on ``msg`` (a copy the node may change)."""
    kind = node.get("type")
    try:
        if kind == "change":
            sent = _change(node, msg, env)
        elif kind == "switch":
            sent = _switch(node, msg, env)
        elif kind == "range":
            sent = _range(node, msg)
        else:
            sent = _sort(node, msg, env)
        if sent and _cyclic(msg, set()):
            raise fail(node, "the message now contains itself, which JSON cannot carry")
        return sent
    except _JsonataError as exc:
        raise fail(node, f"invalid JSONata expression: {exc}") from exc
    except _JSThrowError as exc:
        raise fail(node, str(exc)) from exc
    except ValueError as exc:
        raise fail(node, str(exc)) from exc


# --- change --------------------------------------------------------------------------------------

_CHANGE_ACTIONS = frozenset({"set", "change", "delete", "move"})


def _change_rules(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The node's rules as Node-RED migrates them on start (old single-rule nodes too)."""
    raw = node.get("rules")
    if not raw:
        action = node.get("action")
        rule: dict[str, Any] = {"t": "set" if action == "replace" else action}
        rule["p"] = node.get("property") or ""
        if rule["t"] in ("set", "move"):
            rule["to"] = node.get("to") or ""
        elif rule["t"] == "change":
            rule["from"] = node.get("from") or ""
            rule["to"] = node.get("to") or ""
            rule["re"] = node.get("reg") is None or node.get("reg")
        raw = [rule]
    rules = []
    for given in raw if isinstance(raw, list) else []:
        rule = dict(given) if isinstance(given, Mapping) else {}
        rule.setdefault("pt", "msg")
        rule["pt"] = rule["pt"] or "msg"
        if rule.get("t") == "change" and rule.get("re"):
            rule["fromt"] = "re"
            del rule["re"]
        if (
            rule.get("t") == "set"
            and not rule.get("tot")
            and str(rule.get("to", "")).startswith("msg.")
        ):
            rule["to"] = str(rule["to"])[4:]
            rule["tot"] = "msg"
        rule["tot"] = rule.get("tot") or "str"
        rule["fromt"] = rule.get("fromt") or "str"
        rules.append(rule)
    return rules


# Message properties that make a delay or trigger node act on the messages it holds: the step
# engine's delay keeps no queue, so a flow that sends them would behave differently.
_QUEUE_CONTROLS = frozenset({"reset", "flush"})


def _change_problem(node: Mapping[str, Any]) -> str | None:
    rules = _change_rules(node)
    if not rules:
        return "it has no rules"
    for n, rule in enumerate(rules, 1):
        action = rule.get("t")
        if action not in _CHANGE_ACTIONS:
            return f"rule {n} has an unknown action {action!r}"
        if rule["pt"] != "msg":
            return f"rule {n} changes {rule['pt']} context, which outlives the message"
        if str(rule.get("p", "")).strip() in _QUEUE_CONTROLS:
            return (
                f"rule {n} sets msg.{str(rule.get('p')).strip()}, which controls the queue a "
                "following delay or trigger node keeps across messages"
            )
        if action == "delete":
            continue
        if action == "move":
            if rule["tot"] != "msg":
                return f"rule {n} moves a property into {rule['tot']} context"
            continue
        problem = typed_value_problem(rule.get("to"), rule["tot"])
        if problem is not None:
            return f"rule {n}: {problem}"
        if action == "change":
            fromt = rule["fromt"]
            if fromt in _CONTEXT_TYPES:
                return f"rule {n}: it reads {fromt} context, which outlives the message"
            if fromt == "re":
                try:
                    js_regex(str(rule.get("from", "")))
                except ValueError as exc:
                    return f"rule {n}: its regular expression cannot be reproduced: {exc}"
    return None


def _change(node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any]) -> Sent:
    for rule in _change_rules(node):
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
    except _JSThrowError:
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
                    replaced: Any = _js_replace(current, from_re, value, global_=True)
                    if rule["tot"] == "bool" and replaced == js_string(value):
                        replaced = value
                    set_property(msg, prop, replaced)
            elif _is_number(current) and from_type == "num":
                if current == js_number(from_value):
                    set_property(msg, prop, value)
            elif (
                isinstance(current, bool)
                and from_type == "bool"
                and js_string(current) == from_value
            ):
                set_property(msg, prop, value)
    except _JSThrowError:
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
        if _is_number(found):
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


# --- switch --------------------------------------------------------------------------------------

_SEQUENCE_RULES = frozenset({"head", "tail", "index"})
_SWITCH_RULES = frozenset(
    {"eq", "neq", "lt", "lte", "gt", "gte", "btwn", "cont", "regex", "true", "false", "null"}
    | {"nnull", "empty", "nempty", "istype", "hask", "jsonata_exp", "else"}
)


def _switch_problem(node: Mapping[str, Any]) -> str | None:
    if node.get("repair"):
        return (
            "it recreates message sequences (repair), which needs every message of the "
            "sequence; the step engine sees one message at a time"
        )
    problem = typed_value_problem(node.get("property"), node.get("propertyType") or "msg")
    if problem is not None:
        return f"its property: {problem}"
    rules = node.get("rules") or []
    if not isinstance(rules, list):
        return "its rules are not a list"
    for n, rule in enumerate(rules, 1):
        if not isinstance(rule, Mapping):
            return f"rule {n} is not an object"
        t = rule.get("t")
        if t in _SEQUENCE_RULES:
            return (
                f"rule {n} ({t}) selects messages by their place in a sequence, which needs "
                "the other messages of the sequence"
            )
        if t not in _SWITCH_RULES:
            return f"rule {n} has an unknown operator {t!r}"
        for value, kind in ((rule.get("v"), rule.get("vt")), (rule.get("v2"), rule.get("v2t"))):
            if kind == "prev":
                return f"rule {n} compares with the previous message's value"
            problem = typed_value_problem(value, kind)
            if problem is not None:
                return f"rule {n}: {problem}"
        if t == "regex" and rule.get("vt") in (None, "str", "num"):
            try:
                js_regex(js_string(rule.get("v")), ignore_case=bool(rule.get("case")))
            except ValueError as exc:
                return f"rule {n}: its regular expression cannot be reproduced: {exc}"
    return None


def _switch_rule_values(rule: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """A rule's v, vt, v2, v2t as the switch node prepares them on start."""
    v, vt = rule.get("v", UNDEFINED), rule.get("vt")
    if not vt:
        vt = "str" if _nan(js_number(v)) else "num"
    if vt == "num" and not _nan(js_number(v)):
        v = js_number(v)
    v2, v2t = rule.get("v2", UNDEFINED), rule.get("v2t")
    if v2 is not UNDEFINED:
        if not v2t:
            v2t = "str" if _nan(js_number(v2)) else "num"
        if v2t == "num":
            v2 = js_number(v2)
    return v, vt, v2, v2t


def _switch(node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any]) -> Sent:
    rules = [r for r in node.get("rules") or [] if isinstance(r, Mapping)]
    kind = node.get("propertyType") or "msg"
    if kind == "jsonata":
        try:
            prop = evaluate_jsonata(str(node.get("property")), msg, node, env)
        except _JsonataError:
            return []  # Node-RED warns and sends nothing
    else:
        prop = typed_value(node.get("property"), kind, msg, node, env)
    parts = msg.get("parts")
    has_parts = isinstance(parts, dict) and "id" in parts and "index" in parts
    stop_at_first = node.get("checkall") == "false"  # (n.checkall || "true") == "false"
    else_flag = True
    matched: list[int] = []
    for n, rule in enumerate(rules):
        v, vt, v2, v2t = _switch_rule_values(rule)
        if vt == "jsonata":
            bindings = None
            if rule.get("t") == "jsonata_exp" and has_parts:
                assert isinstance(parts, dict)
                bindings = {"I": parts.get("index"), "N": parts.get("count")}
            v1 = evaluate_jsonata(str(v), msg, node, env, bindings)
        elif vt == "json":
            v1 = "json"
        elif vt == "null":
            v1 = "null"
        else:
            v1 = typed_value(v, vt, msg, node, env)
        if v2t == "jsonata":
            v2 = evaluate_jsonata(str(v2), msg, node, env)
        elif v2 is not UNDEFINED:
            v2 = typed_value(v2, v2t, msg, node, env)
        a = prop
        if rule.get("t") == "else":
            a, else_flag = else_flag, True
        if _operator(str(rule.get("t")), a, v1, v2, bool(rule.get("case"))):
            matched.append(n)
            else_flag = False
            if stop_at_first:
                break
    return [(port, msg if i == 0 else copy.deepcopy(msg)) for i, port in enumerate(matched)]


def _operator(t: str, a: Any, b: Any, c: Any, case: bool) -> bool:
    if t == "eq":
        return js_loose_equal(a, b)
    if t == "neq":
        return not js_loose_equal(a, b)
    if t == "lt":
        return js_lt(a, b)
    if t == "lte":
        return js_lte(a, b)
    if t == "gt":
        return js_gt(a, b)
    if t == "gte":
        return js_gte(a, b)
    if t == "btwn":
        return (js_gte(a, b) and js_lte(a, c)) or (js_lte(a, b) and js_gte(a, c))
    if t == "cont":
        return js_string(b) in js_string(a)
    if t == "regex":
        pattern = "(?:)" if b is UNDEFINED else js_string(b)
        return js_regex(pattern, ignore_case=case).search(js_string(a)) is not None
    if t in ("true", "false"):
        return a is (t == "true")
    if t == "null":
        return a is None or a is UNDEFINED
    if t == "nnull":
        return a is not None and a is not UNDEFINED
    if t in ("empty", "nempty"):
        if isinstance(a, str | list | dict):
            return (len(a) == 0) == (t == "empty")
        return False
    if t == "istype":
        return _istype(a, b)
    if t == "hask":
        if a is None or a is UNDEFINED or isinstance(b, dict | list) or b is None:
            return False
        return _own(a, js_string(b)) if isinstance(a, dict | list | str) else False
    if t in ("jsonata_exp", "else"):
        return a is True if t == "else" else b is True
    raise _JSThrowError(f"operators[{t!r}] is not a function")


def _istype(a: Any, b: Any) -> bool:
    if b == "array":
        return isinstance(a, list)
    if b == "buffer":
        return False
    if b == "json":
        try:
            _parse_json(js_string(a))
        except ValueError:
            return False
        return True
    if b == "null":
        return a is None
    if b == "number":
        return _is_number(a) and not _nan(a)
    typeof: dict[type, str] = {bool: "boolean", str: "string", dict: "object"}
    typeof.update({int: "number", float: "number"})
    if a is UNDEFINED:
        return bool(b == "undefined")
    return a is not None and not isinstance(a, list) and bool(typeof.get(type(a)) == b)


# --- range ---------------------------------------------------------------------------------------


def _range_numbers(node: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    minin, maxin = js_number(node.get("minin", UNDEFINED)), js_number(node.get("maxin", UNDEFINED))
    minout = js_number(node.get("minout", UNDEFINED))
    maxout = js_number(node.get("maxout", UNDEFINED))
    if minin > maxin:
        minin, maxin, minout, maxout = maxin, minin, maxout, minout
    if node.get("round"):
        maxout, minout = math.floor(maxout), math.ceil(minout)
    return minin, maxin, minout, maxout


def _range_problem(node: Mapping[str, Any]) -> str | None:
    for name in ("minin", "maxin", "minout", "maxout"):
        number = js_number(node.get(name, UNDEFINED))
        if _nan(number) or (isinstance(number, float) and math.isinf(number)):
            return f"its {name} {node.get(name)!r} is not a finite number"
    if js_number(node.get("minin")) == js_number(node.get("maxin")):
        return "its input range is empty (minin = maxin): Node-RED would compute NaN or Infinity"
    return None


def _range(node: Mapping[str, Any], msg: dict[str, Any]) -> Sent:
    prop = str(node.get("property") or "payload")
    value = get_property(msg, prop)
    if value is UNDEFINED:
        return [(0, msg)]
    n = js_number(value)
    if _nan(n):
        return []  # Node-RED logs "not a number" and sends nothing
    minin, maxin, minout, maxout = _range_numbers(node)
    action = node.get("action")
    if action == "drop" and (n < minin or n > maxin):
        return []
    if action == "clamp":
        n = minin if n < minin else n
        n = maxin if n > maxin else n
    if action == "roll":
        divisor = maxin - minin
        n = math.fmod(math.fmod(n - minin, divisor) + divisor, divisor) + minin
    result = ((n - minin) / (maxin - minin) * (maxout - minout)) + minout
    if node.get("round"):
        result = math.floor(result + 0.5)  # Math.round: halves go up
    set_property(msg, prop, _js_value(float(result)))
    return [(0, msg)]


# --- sort ----------------------------------------------------------------------------------------


def _sort_problem(node: Mapping[str, Any]) -> str | None:
    if node.get("targetType") != "msg":
        return (
            "it sorts a message sequence (msg.parts), which needs every message of the "
            "sequence; the step engine sees one message at a time"
        )
    if node.get("msgKeyType") == "jsonata":
        return jsonata_problem(node.get("msgKey"))
    return None


def _sort(node: Mapping[str, Any], msg: dict[str, Any], env: Mapping[str, Any]) -> Sent:
    if node.get("targetType") != "msg":
        raise _JSThrowError("sorting a message sequence needs the other messages of the sequence")
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
    if _nan(value):
        return "NaN"
    if _is_number(value):
        return "number"
    if value is None or value is UNDEFINED:
        return "null" if value is None else "undefined"
    return {bool: "bool", str: "str", dict: "object", list: "array"}.get(type(value), "other")
