"""The ``batch`` node (Node-RED 4, ``19-batch.js``) in count mode, over the messages that
reached it in one job (in Node-RED's delivery order, see :mod:`engines.step._nodered`).

It sends a sequence of ``count`` messages (each with ``msg.parts`` ``id``, ``index`` and
``count``; an existing ``msg.parts`` is updated, not replaced) whenever it holds that many, and
keeps the last ``overlap`` ones to start the next sequence (those are sent as copies). With
``honourParts`` the last message of an incoming sequence sends what it holds early.
``msg.reset`` drops what it holds.

The job's end is where the step engine differs: what the node still holds then (a batch short
of ``count``, the overlap of the last batch) is dropped, while Node-RED keeps it to start the
batch of the messages a later inject brings. Failing the job instead (as a join's incomplete
group does) would also drop the complete batches Node-RED sends at once, since a call's outputs
go on only when it succeeds. Interval and concatenate modes are refused beforehand by
:func:`nodered_semantics.support.node_problem`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import js_strict_equal
from nodered_semantics.support import batch_sizes
from services.nodered.common import Sent

__all__ = ["run_batch"]


def run_batch(node: Mapping[str, Any], messages: list[dict[str, Any]]) -> Sent:
    """Every message the node sends for ``messages`` (each a copy it may change), in order."""
    count, overlap = (int(n) for n in batch_sizes(node))
    honour_parts = bool(node.get("honourParts"))
    queue: list[dict[str, Any]] = []
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
