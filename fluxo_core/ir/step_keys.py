"""Step keys: which execution of a step a record is, spelled alike on every engine.

A step runs once per token that reaches it, so its executions are told apart by a key made from
the step id: ``enrich[2]`` for the item 2 of a split (or the output 2 of a 1 -> N step), one
``[i]`` per level, and ``notify<priority`` for a step with several predecessors reached from the
execution ``priority`` (the target of an ``on_error: goto`` always names the failed execution,
``rescue<doomed``, without ``[i]`` of its own). The token of the output ``j`` of a 1 -> N step
``fan`` comes from the execution ``fan~j``.

A key's *origin* (:func:`key_origin`) is its part from its first ``<`` (empty without one): the
path that made the execution distinct from the other executions of its step at its levels. Each
step after a merging step, or after a goto's target, inherits it, so the two tokens that leave
``d<b`` and ``d<c`` stay apart (``e<b``, ``e<c``) instead of both being ``e`` (one execution,
whose call the gateway would record once, and a job waiting forever for the other). The rule,
for a token from the execution ``key`` (for the output ``j`` of a 1 -> N step, the execution of
the step, ``fan``, whose levels gain ``[j]`` and whose ``fan~j`` a merging step names) that
reaches step ``target`` (:func:`merging_steps` tells which steps name where it came from):

- by a goto: ``target<key``;
- to a merging step (not from a split): ``target`` + ``[i]`` per level + ``<key``;
- otherwise (a split's items included): ``target`` + ``[i]`` per level (the item's level
  included) + the origin of ``key`` (of the split's execution for its items);
- a join's execution: the join id + ``[i]`` per level around its split + the origin of the
  split's execution (of the 1 -> N step's, for a join of its outputs).

What holds: two executions of one step differ in their levels or in their origins, so their
keys differ (a merging step's executions name those they came from, which differ), and a
step with no merging step and no goto's target before it keys its executions as before (its
origin is empty). A join gathers the branches of one execution of its split: each fan-out level
keeps the origin of the execution that fanned out (the step engine in its frames, Node-RED in
``fluxo.origins``, Argo as the branch template's ``origin`` parameter), so two executions of a
split after a merging step have a join execution each (``gather<b``, ``gather<c``), whatever
steps lie between the split and its join; and the steps after the join inherit that origin.

Packet ids allow neither brackets, ``<`` nor ``~`` (see :mod:`fluxo_core.ir.packet`), and an
engine that names its calls only by packet id (Argo: ``<job id>:<key>:<retry>``) writes the key
in id-safe characters: ``.2`` for ``[2]``, ``/`` for ``<`` and ``_`` for ``~``. Step ids hold none
of these (they are DNS labels), so the spelling reads back exactly, origins included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["key_from_id", "key_in_id", "key_origin", "merging_steps"]

_INDEX = re.compile(r"\[([0-9]+)\]")
_ID_INDEX = re.compile(r"\.([0-9]+)")


def key_origin(key: str) -> str:
    """The path ``key`` inherits to the steps after it: its part from its first ``<``, empty
    without one: ``e[0]<d<b`` -> ``<d<b``, ``enrich[2]`` -> ``""``."""
    at = key.find("<")
    return key[at:] if at >= 0 else ""


def key_in_id(key: str) -> str:
    """``key`` in the characters a packet id allows: ``notify[0]<priority[0]`` ->
    ``notify.0/priority.0``, ``each<fan~1`` -> ``each/fan_1``."""
    return _INDEX.sub(r".\1", key).replace("<", "/").replace("~", "_")


def key_from_id(text: str) -> str:
    """The step key :func:`key_in_id` wrote: ``notify.0/priority.0`` -> ``notify[0]<priority[0]``."""
    return _ID_INDEX.sub(r"[\1]", text).replace("/", "<").replace("_", "~")


def merging_steps(steps: Iterable[Any]) -> set[str]:
    """The ids of the steps whose keys name the execution a token came from (``<key``): those
    with several predecessors, joins excepted. A predecessor is a step whose ``next`` (a
    switch: whose cases or default) names the step, counted once; an ``on_error: goto`` is no
    edge here (a goto's target always names the failed execution)."""
    listed = list(steps)
    indegree = dict.fromkeys((step.id for step in listed), 0)
    for step in listed:
        if step.kind == "switch":
            targets = [t for case in step.cases for t in case.next] + list(step.default)
        else:
            targets = list(getattr(step, "next", []))
        for target in dict.fromkeys(targets):
            indegree[target] = indegree.get(target, 0) + 1
    joins = {step.id for step in listed if step.kind == "join"}
    return {step_id for step_id, n in indegree.items() if n > 1 and step_id not in joins}
