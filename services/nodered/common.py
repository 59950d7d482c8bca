"""What the node kinds of the ``nodered-node`` service share: the messages a node sends
(:data:`Sent`), errors that name the node (:func:`node_error`), and reading and writing the msg
property a node is configured with, as ``RED.util`` does (:mod:`nodered_semantics.msg_paths`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fluxo_core.errors import ServiceError
from nodered_semantics.js import JSThrowError
from nodered_semantics.msg_paths import get_property, set_property

__all__ = [
    "Fail",
    "Sent",
    "node_error",
    "node_label",
    "property_text",
    "read_property",
    "write_property",
]

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


def property_text(prop: Any) -> str:
    """A node's msg property as written, without ``msg.``: ``payload`` when it is empty."""
    text = str(prop or "payload")
    return text[4:] if text.startswith("msg.") else text


def read_property(node: Mapping[str, Any], msg: Any, prop: str) -> Any:
    """``RED.util.getMessageProperty``; what JavaScript would throw fails naming the node."""
    try:
        return get_property(msg, prop)
    except JSThrowError as exc:
        raise node_error(node, f"cannot read msg.{prop}: {exc}") from exc


def write_property(node: Mapping[str, Any], msg: Any, prop: str, value: Any) -> None:
    """``RED.util.setMessageProperty`` (missing objects and arrays are created on the way)."""
    try:
        set_property(msg, prop, value)
    except JSThrowError as exc:
        raise node_error(node, f"cannot set msg.{prop}: {exc}") from exc
