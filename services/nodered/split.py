"""The ``split`` node (Node-RED 4, ``17-split.js``): one message in, one message per part
out, each with ``msg.parts`` (``id``, ``index``, ``count``, ``type``, and ``ch``, ``len`` or
``key`` as the join node needs them to rebuild the value).

A string splits at a separator (``spltType: str``) or into chunks (``len``); an array into
chunks of ``arraySplt`` items (single items when 1); an object into its values (``parts.key``
names each, and ``addname`` copies it into a message property). Any other value (a number, a
boolean, null) is dropped, as Node-RED drops it. In streaming mode a string's last piece is
kept (the node's state, :mod:`services.nodered.state`) to start the next message's string, and
the pieces go out with indexes counting on across messages and no ``count``; Buffers are
refused beforehand by :func:`nodered_semantics.support.node_problem`.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import UNDEFINED
from services.nodered.common import (
    Sent,
    node_error,
    property_text,
    read_property,
    write_property,
)

__all__ = ["run_split", "split_separator"]


def split_separator(text: Any) -> str:
    """The string separator as the node prepares it (escapes read, ``\\n`` when empty)."""
    raw = str(text or "\\n")
    for escape, char in (("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"), ("\\f", "\f"), ("\\0", "\0")):
        raw = raw.replace(escape, char)
    return raw.replace("\\e", "e")  # JavaScript reads the unknown escape "\e" as "e"


def _parse_int(value: Any) -> int:
    """``parseInt`` of a length :func:`nodered_semantics.support.node_problem` found valid."""
    found = re.match(r"\s*\+?(\d+)", str(value))
    return int(found.group(1)) if found else 1


def run_split(
    node: Mapping[str, Any], msg: dict[str, Any], state: dict[str, Any] | None = None
) -> Sent:
    """``state``: what a streaming split keeps between messages (the remainder of the last
    string, the next index, :mod:`services.nodered.state`), changed in place."""
    prop = property_text(node.get("property"))
    value = read_property(node, msg, prop)
    if value is UNDEFINED:
        return []
    if node.get("stream") and isinstance(value, str):
        if state is None:
            raise node_error(node, "a streaming split carries a remainder to the next message")
        return _stream(node, msg, prop, value, state)
    parts = _new_parts(msg, prop)
    pieces: list[tuple[Any, dict[str, Any]]]
    if isinstance(value, str):
        parts["type"] = "string"
        if node.get("spltType", "str") == "len":
            size = _parse_int(node.get("splt"))
            parts.update(ch="", len=size)
            chunks = [value[i : i + size] for i in range(0, len(value), size)]
            # An empty string still goes out, as the (empty) last chunk of a count of 0.
            pieces = [(chunk, {"count": len(chunks)}) for chunk in chunks or [""]]
        else:
            separator = split_separator(node.get("splt"))
            parts["ch"] = separator
            pieces = [(piece, {}) for piece in value.split(separator)]
    elif isinstance(value, list):
        size = _parse_int(node.get("arraySplt", 1))
        parts.update(type="array", len=size)
        chunks_of = [value[i : i + size] for i in range(0, len(value), size)]
        pieces = [(chunk[0] if size == 1 else chunk, {}) for chunk in chunks_of]
    elif isinstance(value, dict):
        parts["type"] = "object"
        pieces = [(item, {"key": key}) for key, item in value.items()]
    else:  # numbers, booleans and null: Node-RED sends nothing
        return []
    sent: Sent = []
    addname = str(node.get("addname") or "")
    for index, (piece, extra) in enumerate(pieces):
        out = copy.deepcopy(msg)
        write_property(node, out, prop, piece)
        if addname and "key" in extra:
            write_property(node, out, property_text(addname), extra["key"])
        out["parts"].update({"index": index, "count": len(pieces), **extra})
        sent.append((0, out))
    return sent


def _new_parts(msg: dict[str, Any], prop: str) -> dict[str, Any]:
    """The ``parts`` of the pieces ``msg`` splits into, set on ``msg`` (which loses its
    ``_msgid``): an existing ``msg.parts`` is pushed onto a stack, so a join of this split
    restores it."""
    parts: dict[str, Any] = {"parts": msg["parts"]} if "parts" in msg else {}
    parts["id"] = uuid.uuid4().hex[:16]
    if prop != "payload":
        parts["property"] = prop
    msg.pop("_msgid", None)
    msg["parts"] = parts
    return parts


def _stream(
    node: Mapping[str, Any], msg: dict[str, Any], prop: str, value: str, state: dict[str, Any]
) -> Sent:
    """A string split in streaming mode (``17-split.js``): the remainder kept from the last
    message goes first; every piece but the last goes out (a length split also sends a last
    piece of full length), indexes counting on from the last message's; the rest is kept."""
    value = str(state.get("remainder", "")) + value
    index = int(state.get("index", 0))
    parts = _new_parts(msg, prop)
    parts["type"] = "string"
    pieces: list[str]
    if node.get("spltType", "str") == "len":
        size = _parse_int(node.get("splt"))
        parts.update(ch="", len=size)
        chunks = [value[i : i + size] for i in range(0, len(value), size)]
        pieces, remainder = chunks[:-1], (chunks[-1] if chunks else "")
        if len(remainder) == size:
            pieces, remainder = chunks, ""
    else:
        separator = split_separator(node.get("splt"))
        parts["ch"] = separator
        *pieces, remainder = value.split(separator)
    sent: Sent = []
    for piece in pieces:
        out = copy.deepcopy(msg)
        write_property(node, out, prop, piece)
        out["parts"]["index"] = index
        index += 1
        sent.append((0, out))
    state["remainder"] = remainder
    state["index"] = index
    return sent
