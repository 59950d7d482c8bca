"""Message property paths as ``RED.util`` reads and writes them.

``payload.a[0]["b c"]``, ``msg.payload`` and ``payload[msg.topic]`` (a nested path evaluated on
the message) split into parts (:func:`property_parts`); :func:`get_property` reads one
(``RED.util.getMessageProperty``: reading below ``undefined`` throws), :func:`set_property`
writes one (``setMessageProperty``: ``undefined`` deletes, ``createMissing`` builds objects and
arrays on the way). Values are shared, not copied, as in JavaScript.
"""

from __future__ import annotations

import re
from typing import Any

from nodered_semantics.js import UNDEFINED, JSThrowError, js_string

__all__ = [
    "PathPart",
    "get_property",
    "has_own",
    "js_get",
    "payload_keys",
    "property_keys",
    "property_parts",
    "set_property",
]

PathPart = str | int


def property_parts(expr: str, msg: Any = None) -> list[Any]:
    """``RED.util.normalisePropertyExpression``: ``a.b[0]["c"][msg.topic]`` into its keys.

    Raises:
        JSThrowError: the expression is malformed, or a ``[msg...]`` reference is undefined.
    """
    length = len(expr)
    if length == 0:
        raise JSThrowError("Invalid property expression: zero-length")
    parts: list[Any] = []
    start, in_string, in_box, quote = 0, False, False, ""
    i = 0
    while i < length:
        c = expr[i]
        if not in_string:
            if c in "'\"":
                if i != start:
                    raise JSThrowError(
                        f"Invalid property expression: unexpected {c} at position {i}"
                    )
                in_string, quote, start = True, c, i + 1
            elif c == ".":
                if i == 0:
                    raise JSThrowError("Invalid property expression: unexpected . at position 0")
                if start != i:
                    v = expr[start:i]
                    parts.append(int(v) if re.fullmatch(r"\d+", v) else v)
                if i == length - 1 or not re.match(r"[a-z0-9$_]", expr[i + 1], re.IGNORECASE):
                    raise JSThrowError(f"Invalid property expression at position {i + 1}")
                start = i + 1
            elif c == "[":
                if i == 0 or i == length - 1:
                    raise JSThrowError(f"Invalid property expression: unexpected [ at position {i}")
                if start != i:
                    parts.append(expr[start:i])
                if re.match(r"msg[.\[]", expr[i + 1 :]):
                    j = _closing_bracket(expr, i)
                    if j is None:
                        raise JSThrowError(f"Invalid property expression: unmatched '[' at {i}")
                    inner = expr[i + 1 : j]
                    if msg is None:
                        raise JSThrowError("a [msg...] reference needs the message")
                    found = get_property(msg, inner)
                    if found is UNDEFINED:
                        raise JSThrowError(f"Invalid expression: undefined reference {inner}")
                    parts.append(found)
                    in_box, i, start = False, j + 1, j + 1
                    continue
                if not re.match(r"[\"'\d]", expr[i + 1]):
                    raise JSThrowError(f"Invalid property expression at position {i + 1}")
                start, in_box = i + 1, True
            elif c == "]":
                if not in_box:
                    raise JSThrowError(f"Invalid property expression: unexpected ] at position {i}")
                if start != i:
                    v = expr[start:i]
                    if not re.fullmatch(r"\d+", v):
                        raise JSThrowError(f"Invalid property expression at position {start}")
                    parts.append(int(v))
                start, in_box = i + 1, False
            elif c == " ":
                raise JSThrowError(f"Invalid property expression: unexpected ' ' at position {i}")
        elif c == quote:
            if i == start:
                raise JSThrowError(f"Invalid property expression: zero-length string at {start}")
            parts.append(expr[start:i])
            following = expr[i + 1] if i + 1 < length else ""
            if in_box and following != "]":
                raise JSThrowError(f"Invalid property expression at position {start}")
            if not in_box and i + 1 != length and following not in "[.":
                raise JSThrowError(f"Invalid property expression at position {i + 1}")
            start, in_string = i + 1, False
        i += 1
    if in_box or in_string:
        raise JSThrowError("Invalid property expression: unterminated expression")
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
        raise JSThrowError(f"Cannot read properties of {js_string(obj)} (reading '{key}')")
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


def has_own(obj: Any, key: Any) -> bool:
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
        raise JSThrowError(f"cannot set {key!r} on {type(obj).__name__} as JavaScript would")
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
            if has_own(obj, key):
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
                raise JSThrowError(f"cannot go below {js_string(current)!r}")
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


def property_keys(expr: Any) -> tuple[PathPart, ...] | None:
    """The keys a msg property names (``payload.a["b"][0]`` -> ``("payload", "a", "b", 0)``),
    parsed as Node-RED parses it (:func:`property_parts`); None when it is not a string, is
    malformed, or depends on the message (``payload[msg.topic]``)."""
    if not isinstance(expr, str) or not expr.strip():
        return None
    try:
        return tuple(property_parts(expr.strip()))
    except JSThrowError:
        return None


def payload_keys(expr: Any, prop_type: Any = "msg") -> tuple[PathPart, ...] | None:
    """The keys below ``msg.payload`` of a msg property (``()`` for the payload itself); None
    when the property is not under the payload (or is not a msg property, or is dynamic)."""
    if prop_type not in (None, "", "msg"):
        return None
    keys = property_keys(expr)
    if not keys or keys[0] != "payload":
        return None
    return keys[1:]
