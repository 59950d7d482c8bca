"""What the node kinds of the ``nodered-node`` service share: the messages a node sends
(:data:`Sent`), errors that name the node (:func:`node_error`), and message fields by an IR-style
path (``payload.a[0]``), as the template, json and csv nodes address them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from fluxo_core.errors import ServiceError
from fluxo_core.ir.paths import PathKey, parse_path
from nodered_semantics.js import UNDEFINED

__all__ = ["Fail", "Sent", "msg_get", "msg_path", "msg_set", "node_error", "node_label"]

Sent = list[tuple[int, dict[str, Any]]]


Fail = Callable[[Mapping[str, Any], str], ServiceError]


def node_label(node: Mapping[str, Any]) -> str:
    name = node.get("name")
    shown = f" ({name})" if isinstance(name, str) and name else ""
    return f"{node.get('type', 'node')} node {node.get('id', '?')!s}{shown}"


def node_error(node: Mapping[str, Any], what: str) -> ServiceError:
    return ServiceError(
        f"{node_label(node)}: {what}", retryable=False, node=str(node.get("id", "?"))
    )


def msg_path(node: Mapping[str, Any], text: Any) -> tuple[PathKey, ...]:
    raw = str(text or "payload").strip()
    if raw.startswith("msg."):
        raw = raw[4:]
    try:
        return tuple(parse_path(raw.replace("['", '["').replace("']", '"]')))
    except Exception as exc:  # parse_path raises ValueError-like errors for odd paths
        raise node_error(node, f"cannot read the property {text!r}: {exc}") from exc


def msg_get(msg: Any, path: tuple[PathKey, ...]) -> Any:
    value = msg
    for key in path:
        if isinstance(key, int) and isinstance(value, list) and 0 <= key < len(value):
            value = value[key]
        elif isinstance(value, dict) and str(key) in value:
            value = value[str(key)]
        else:
            return UNDEFINED
    return value


def msg_set(msg: dict[str, Any], path: tuple[PathKey, ...], value: Any) -> None:
    """``RED.util.setMessageProperty`` with ``createMissing``."""
    target: Any = msg
    for key, following in itertools.pairwise(path):
        nxt = target[key] if _has(target, key) else None
        if not isinstance(nxt, dict | list):
            nxt = [] if isinstance(following, int) else {}
            _put(target, key, nxt)
        target = nxt
    _put(target, path[-1], value)


def _has(target: Any, key: PathKey) -> bool:
    if isinstance(target, list):
        return isinstance(key, int) and 0 <= key < len(target)
    return isinstance(target, dict) and key in target


def _put(target: Any, key: PathKey, value: Any) -> None:
    if isinstance(target, list) and isinstance(key, int):
        while len(target) <= key:
            target.append(None)
        target[key] = value
    elif isinstance(target, dict):
        target[str(key)] = value
