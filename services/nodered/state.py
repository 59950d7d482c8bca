"""The state a core node keeps between messages, as the ``nodered-node`` service hands it to the
node and back (see :data:`nodered_semantics.context.STATE_KEY`).

Node-RED keeps such state in the running node (a csv node's "header sent", a streaming split's
remainder, a batch's held messages, "the function's setup ran", a debug node's last status):
it lasts from one message to the next, across jobs, until a deploy starts the node afresh. Here
it lives in the node's own context scope, which the caller (the step engine) keeps durably per
account, workflow and node and hands to every call; it is tagged with the workflow version it
was kept for, so the first call on a new version starts afresh, as the first message after a
deploy does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodered_semantics.context import STATE_KEY, ContextView, ContextWrite, keeps_state

__all__ = ["NodeState"]


@dataclass
class NodeState:
    """One call's state of a node: ``data`` to read and change (empty when the node starts
    afresh), ``kept`` False for a node that keeps none."""

    kept: bool
    version: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, node: Mapping[str, Any], view: ContextView, version: Any) -> NodeState:
        """The node's state in ``view`` (taken out of it: the node never sees the key)."""
        own = view.data.setdefault("node", {})
        held = own.pop(STATE_KEY, None)
        if not keeps_state(node):
            return cls(False)
        data: dict[str, Any] = {}
        if isinstance(held, dict) and held.get("version") == version:
            data = {k: v for k, v in held.items() if k != "version"}
        return cls(True, version, data, copy.deepcopy(data))

    def writes(self) -> list[ContextWrite]:
        """The write that keeps the state, if it changed in the call."""
        if not self.kept or self.data == self.before:
            return []
        return [ContextWrite("node", STATE_KEY, {**self.data, "version": self.version})]
