"""JavaScript's values as Node-RED's nodes see them, where they differ from Python's.

Loose and strict equality and relational comparison (``"10" == 10``, ``null < 1``), ``Number()``
and ``String()`` conversions (how JavaScript prints a number), ``JSON.stringify`` (integral floats
print as integers), ``undefined`` (:data:`UNDEFINED`, distinct from ``null``), ``throw``
(:class:`JSThrowError`), and JavaScript regular expressions translated to Python's with
``String.replace`` replacement patterns (``$&``, ``$1``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "UNDEFINED",
    "JSThrowError",
    "is_js_number",
    "is_nan",
    "js_gt",
    "js_gte",
    "js_json",
    "js_loose_equal",
    "js_lt",
    "js_lte",
    "js_number",
    "js_regex",
    "js_replace",
    "js_strict_equal",
    "js_string",
    "js_value",
]


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"

    def __copy__(self) -> _Undefined:
        return self

    def __deepcopy__(self, memo: Any) -> _Undefined:
        return self


UNDEFINED: Any = _Undefined()


class JSThrowError(Exception):
    """What JavaScript would throw (a TypeError reading a property of undefined, ...)."""


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


def js_value(value: Any) -> Any:
    """A computed number as JavaScript holds it: integral floats become ints."""
    if isinstance(value, float) and math.isfinite(value):
        return _integral(value)
    return value


def is_js_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _primitive(value: Any) -> Any:
    """ToPrimitive: objects and arrays become their string form."""
    return js_string(value) if isinstance(value, dict | list) else value


def js_strict_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return a is b
    if is_js_number(a) and is_js_number(b):
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
    if is_nan(x) or is_nan(y):
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


def js_replace(
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


def js_json(value: Any, indent: int = 0) -> str:
    """``JSON.stringify(value, null, indent)``: integral floats print as integers, as in JS."""
    return json.dumps(
        _js_numbers(value),
        ensure_ascii=False,
        indent=indent or None,
        separators=(",", ": ") if indent else (",", ":"),
    )


def _js_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value
