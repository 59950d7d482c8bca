"""The ``batch`` node (Node-RED 4, ``19-batch.js``) in count mode, over the messages that
reached it in one job (in Node-RED's delivery order, see :mod:`engines.step._nodered`).

It sends a sequence of ``count`` messages (each with ``msg.parts`` ``id``, ``index`` and
``count``; an existing ``msg.parts`` is updated, not replaced) whenever it holds that many, and
keeps the last ``overlap`` ones to start the next sequence (those are sent as copies). With
``honourParts`` the last message of an incoming sequence sends what it holds early.
``msg.reset`` drops what it holds.

What the job leaves held beyond the overlap (a batch still short of ``count``) is a failure
naming the node: Node-RED would wait for messages a later job brings, which this call cannot
see. The overlap kept after the job's last batch is dropped: on Node-RED it would start the
next job's first batch. Interval and concatenate modes are refused beforehand by
:func:`nodered_semantics.support.node_problem`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from fluxo_core.errors import ServiceError
from nodered_semantics.js import js_strict_equal
from nodered_semantics.support import UNFINISHED_SEQUENCE, batch_sizes
from services.nodered.common import Sent, node_label

__all__ = ["run_batch"]


def run_batch(node: Mapping[str, Any], messages: list[dict[str, Any]]) -> Sent:
    """Every message the node sends for ``messages`` (each a copy it may change), in order."""
    count, overlap = (int(n) for n in batch_sizes(node))
    honour_parts = bool(node.get("honourParts"))
    queue: list[dict[str, Any]] = []
    carried = 0  # how many of the queue's first messages are the overlap of a sent batch
    sent: Sent = []
    for msg in messages:
        if "reset" in msg:
            queue, carried = [], 0
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
            carried = len(queue)
    if len(queue) > carried:
        raise ServiceError(
            f"{node_label(node)}: {len(queue)} message(s) still wait for a batch of {count} "
            "when the job has no more messages for it; Node-RED would wait for later messages, "
            "which another job brings: send whole batches within one job, or run the flow on "
            "the nodered engine",
            retryable=False,
            node=str(node.get("id", "?")),
            **{UNFINISHED_SEQUENCE: True},
        )
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
