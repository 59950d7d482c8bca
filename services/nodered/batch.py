"""The ``batch`` node (Node-RED 4, ``19-batch.js``) in count and concatenate modes, over the
messages that reached it in one job (in Node-RED's delivery order, see
:mod:`engines.step._nodered`).

In count mode it sends a sequence of ``count`` messages (each with ``msg.parts`` ``id``, ``index`` and
``count``; an existing ``msg.parts`` is updated, not replaced) whenever it holds that many, and
keeps the last ``overlap`` ones to start the next sequence (those are sent as copies). With
``honourParts`` the last message of an incoming sequence sends what it holds early.
``msg.reset`` drops what it holds.

In concatenate mode it gathers the sequences (``msg.parts`` with ``id``, ``index`` and
``count``) of the messages whose ``msg.topic`` is one of its topics, and once the oldest
sequence of every topic is complete sends them one after the other, in the order of the
topics, as one new sequence (copies). A message of such a topic without ``msg.parts`` fails the
node, as Node-RED reports it.

What the node still holds at the job's end (a batch short of ``count``, the overlap of the last
batch, sequences waiting for the other topics) is its state (:mod:`services.nodered.state`):
the step engine keeps it durably and the node starts from it on the next job's messages, as
Node-RED starts the batch of the messages a later inject brings with it. Interval mode is
refused beforehand by :func:`nodered_semantics.support.node_problem`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodered_semantics.js import UNDEFINED, js_strict_equal, js_string
from nodered_semantics.support import batch_sizes
from services.nodered.common import Sent, node_error

__all__ = ["run_batch"]


def run_batch(
    node: Mapping[str, Any], messages: list[dict[str, Any]], state: dict[str, Any] | None = None
) -> Sent:
    """Every message the node sends for ``messages`` (each a copy it may change), in order.

    ``state``: what the node held after the messages of earlier jobs, which it starts from and
    leaves what it holds now in (changed in place); None: it starts empty and what it holds at
    the end is dropped."""
    if node.get("mode") == "concat":
        concatenation = _Concatenation(node)
        if state is not None:
            concatenation.restore(state.get("pending") or {})
        concatenated = concatenation.run(messages)
        if state is not None:
            state["pending"] = concatenation.kept()
        return concatenated
    count, overlap = (int(n) for n in batch_sizes(node))
    honour_parts = bool(node.get("honourParts"))
    queue: list[dict[str, Any]] = list((state or {}).get("queue") or [])
    sent: Sent = []
    for msg in messages:
        if "reset" in msg:
            queue = []
            continue
        end_of_parts = False
        parts = msg.get("parts")
        if honour_parts and "parts" in msg and isinstance(parts, dict):
            index = parts.get("index")
            if isinstance(index, int | float) and not isinstance(index, bool):
                end_of_parts = js_strict_equal(index + 1, parts.get("count"))
        queue.append(msg)
        if len(queue) == count or end_of_parts:
            sent.extend(_sequence(queue, clone=overlap > 0))
            queue = queue[-overlap:] if overlap else []
    if state is not None:
        state["queue"] = copy.deepcopy(queue)
    return sent


def _sequence(queue: list[dict[str, Any]], *, clone: bool) -> Sent:
    """``send_msgs``: the queue as one sequence, named after its first message's ``_msgid``."""
    sequence_id = queue[0].get("_msgid") or uuid.uuid4().hex[:16]
    sent: Sent = []
    for index, held in enumerate(queue):
        msg = copy.deepcopy(held) if clone else held
        parts = msg.get("parts")
        if not isinstance(parts, dict):
            parts = msg["parts"] = {}
        parts.update(id=sequence_id, index=index, count=len(queue))
        sent.append((0, msg))
    return sent


@dataclass
class _Topic:
    """``pending[topic]``: the topic's sequences by ``parts.id``, oldest first."""

    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)

    def complete(self) -> bool:
        if not self.ids:
            return False
        first = self.ids[0]
        return js_strict_equal(self.counts.get(first, UNDEFINED), len(self.groups[first]))


class _Concatenation:
    """The concatenate mode: the node's input handler, message by message."""

    def __init__(self, node: Mapping[str, Any]) -> None:
        self.node = node
        given = node.get("topics") or []
        self.topics = [t.get("topic", UNDEFINED) for t in given if isinstance(t, Mapping)]
        self.pending: dict[str, _Topic] = {}
        self.sent: Sent = []

    def restore(self, pending: Mapping[str, Any]) -> None:
        """Start from what :meth:`kept` gave after an earlier job."""
        for topic, held in pending.items():
            self.pending[topic] = _Topic(
                {k: list(v) for k, v in held["groups"].items()},
                dict(held["counts"]),
                list(held["ids"]),
            )

    def kept(self) -> dict[str, Any]:
        """The sequences held now, as JSON."""
        return {
            topic: {"groups": held.groups, "counts": held.counts, "ids": held.ids}
            for topic, held in self.pending.items()
            if held.ids
        }

    def run(self, messages: list[dict[str, Any]]) -> Sent:
        for msg in messages:
            if "reset" in msg:
                self.pending = {}
            else:
                self.receive(msg)
        return self.sent

    def receive(self, msg: dict[str, Any]) -> None:
        topic = msg.get("topic", UNDEFINED)
        if not any(js_strict_equal(topic, t) for t in self.topics):
            return
        parts = msg.get("parts")
        if not (isinstance(parts, dict) and {"id", "index", "count"} <= parts.keys()):
            raise node_error(self.node, "Message missing msg.parts property")
        pending = self.pending.setdefault(js_string(topic), _Topic())
        group_id = js_string(parts["id"])
        if group_id not in pending.groups:
            pending.groups[group_id] = []
            pending.ids.append(group_id)
        pending.groups[group_id].append(msg)
        pending.counts.setdefault(group_id, parts["count"])
        self.concatenate()

    def concatenate(self) -> None:
        """``try_concat``: the oldest sequence of each topic, in the order of the topics (a
        topic listed twice gives its oldest sequence twice and drops two)."""
        keys = [js_string(t) for t in self.topics]
        if not all(k in self.pending and self.pending[k].complete() for k in keys):
            return
        queue = [m for k in keys for m in self.pending[k].groups[self.pending[k].ids[0]]]
        for k in keys:
            pending = self.pending[k]
            if pending.ids:
                dropped = pending.ids.pop(0)
                del pending.groups[dropped]
                pending.counts.pop(dropped, None)
        self.sent.extend(_sequence(queue, clone=True))
