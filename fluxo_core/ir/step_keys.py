"""Step keys: which execution of a step a record is, spelled alike on every engine.

A step runs once per token that reaches it, so its executions are told apart by a key made from
the step id: ``enrich[2]`` for the item 2 of a split (or the output 2 of a 1 -> N step), one
``[i]`` per level, and ``notify<priority`` for a step with several predecessors reached from the
execution ``priority`` (the target of an ``on_error: goto`` always names the failed execution).

Packet ids allow neither brackets nor ``<`` (see :mod:`fluxo_core.ir.packet`), and an engine
that names its calls only by packet id (Argo: ``<job id>:<key>:<retry>``) writes the key in
id-safe characters: ``.2`` for ``[2]`` and ``/`` for ``<``. Step ids hold neither (they are
DNS labels), so the spelling reads back exactly.
"""

from __future__ import annotations

import re

__all__ = ["key_from_id", "key_in_id"]

_INDEX = re.compile(r"\[([0-9]+)\]")
_ID_INDEX = re.compile(r"\.([0-9]+)")


def key_in_id(key: str) -> str:
    """``key`` in the characters a packet id allows: ``notify[0]<priority[0]`` ->
    ``notify.0/priority.0``."""
    return _INDEX.sub(r".\1", key).replace("<", "/")


def key_from_id(text: str) -> str:
    """The step key :func:`key_in_id` wrote: ``notify.0/priority.0`` -> ``notify[0]<priority[0]``."""
    return _ID_INDEX.sub(r"[\1]", text).replace("/", "<")
