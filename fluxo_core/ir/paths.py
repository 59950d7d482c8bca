"""Field paths inside a payload: ``a.b[0]["c.d"]``, shared by every part that reads fields
(the transform service, switch conditions, the translators)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

__all__ = ["PathKey", "format_path", "parse_path"]

PathKey = str | int

_NAME = re.compile(r"[^.\[\]]+")
_BRACKET = re.compile(r'\[(?:(?P<index>[0-9]+)|"(?P<quoted>(?:[^"\\]|\\.)*)")\]')


def parse_path(path: str) -> tuple[PathKey, ...]:
    """Split ``a.b[0]["c.d"]`` into ``("a", "b", 0, "c.d")``.

    Raises:
        ValueError: the path is empty or malformed; the message says where and why.
    """
    if not path:
        raise ValueError("the path is empty; write it like 'a.b[0].c'")
    keys: list[PathKey] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "[":
            match = _BRACKET.match(path, pos)
            if match is None:
                raise ValueError(
                    f'bad bracket at character {pos}: use [0] for an index or ["key"] for a key'
                )
            if match["index"] is not None:
                keys.append(int(match["index"]))
            else:
                try:
                    keys.append(json.loads(f'"{match["quoted"]}"'))
                except ValueError:
                    raise ValueError(f"bad escape in the quoted key at character {pos}") from None
            pos = match.end()
            continue
        if keys:
            if path[pos] != ".":
                raise ValueError(f"expected '.' or '[' at character {pos}")
            pos += 1
        match = _NAME.match(path, pos)
        if match is None:
            raise ValueError(f"expected a key at character {pos}")
        keys.append(match.group())
        pos = match.end()
    return tuple(keys)


def format_path(keys: Sequence[PathKey]) -> str:
    """The path spelling of ``keys`` (odd keys quoted as ``["a.b"]``)."""
    out = ""
    for key in keys:
        if isinstance(key, int):
            out += f"[{key}]"
        elif _NAME.fullmatch(key):
            out += f".{key}" if out else key
        else:
            out += f"[{json.dumps(key, ensure_ascii=False)}]"
    return out
