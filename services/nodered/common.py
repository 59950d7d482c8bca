"""What the node kinds of the ``nodered-node`` service share: the messages a node sends
(:data:`Sent`), errors that name the node (:func:`node_error`), and reading and writing the msg
property a node is configured with, as ``RED.util`` does (:mod:`nodered_semantics.msg_paths`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fluxo_core.errors import ServiceError
from nodered_semantics.js import UNDEFINED, JSThrowError, js_strict_equal, js_string
from nodered_semantics.msg_paths import get_property, set_property
from nodered_semantics.support import UNFINISHED_SEQUENCE

__all__ = [
    "Fail",
    "Sent",
    "by_sequence",
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


def by_sequence(
    node: Mapping[str, Any],
    messages: list[dict[str, Any]],
    complete: Callable[[list[dict[str, Any]], Any], Sent],
    loose: Callable[[dict[str, Any]], Sent],
) -> Sent:
    """What a node that acts on whole sequences sends for ``messages`` (in delivery order):
    each message of a sequence is held in its group (``msg.parts.id``) until the group holds
    ``parts.count`` messages, then ``complete(group, count)`` answers for it; a message of no
    sequence gets ``loose(msg)`` at once. A group still short when the job has no more messages
    fails the call (:data:`UNFINISHED_SEQUENCE`): Node-RED would wait for another job's."""
    groups: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, Any] = {}
    sent: Sent = []
    for msg in messages:
        parts = msg.get("parts")
        if not (isinstance(parts, dict) and "id" in parts and "index" in parts):
            sent.extend(loose(msg))
            continue
        group_id = js_string(parts["id"])  # a key of a JavaScript object
        group = groups.setdefault(group_id, [])
        group.append(msg)
        if "count" in parts:
            counts[group_id] = parts["count"]
        if js_strict_equal(counts.get(group_id, UNDEFINED), len(group)):
            del groups[group_id]
            sent.extend(complete(group, counts[group_id]))
    if groups:
        held = ", ".join(f"{len(g)} message(s)" for g in groups.values())
        raise ServiceError(
            f"{node_label(node)}: a sequence is still incomplete when the job has no more "
            f"messages for it ({held}); Node-RED would wait for the rest, which another job "
            "brings: send whole sequences (msg.parts.count) within one job, or run the flow on "
            "the nodered engine",
            retryable=False,
            node=str(node.get("id", "?")),
            **{UNFINISHED_SEQUENCE: True},
        )
    return sent
