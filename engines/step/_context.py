"""Node-RED context on the step engine: a durable store per workflow and account.

A native step whose node uses context (:func:`nodered_semantics.context.context_scopes`) gets
the scopes it uses in its call (``{"context": {"flow": {...}, ...}}``), read in the transaction
that makes the call; the version of each scope it read rides in the step's state. The
``nodered-node`` service hands back what the node wrote (a packet on port ``-2``), and the
transaction that takes the call's result writes it, together with the step's outcome:

* **writes commit with the step's result**, exactly once: a call delivered or run twice by the
  workers has one result, and a failed call writes nothing (on Node-RED a body that set context
  and then threw keeps what it set; here it does not);
* a node that wrote context is **run again** (a new attempt of its call, on the newer contents)
  when a scope it used changed since it read it: concurrent messages (other jobs of the workflow,
  branches of one job) change context one after the other, as on Node-RED's single thread; after
  :data:`MAX_CONTEXT_RERUNS` such reruns in a row the step fails, naming the scope. A node that
  only reads is not rerun: it read a consistent state, as if it had run earlier;
* **node state**: a core node that keeps state between messages on Node-RED (a csv header sent
  once, a streaming split's remainder, a batch's held messages, a function's setup run once, a
  watched debug node's last status) keeps it in its own ``node`` scope
  (:data:`nodered_semantics.context.STATE_KEY`), which its
  calls get with the workflow version (``"version"``): a new version starts it afresh, as a
  deploy does on Node-RED, and the rules above make concurrent jobs change it one at a time;
* **scopes**: ``flow`` context belongs to the workflow, ``node`` context to a node of the
  workflow (``node:<node id>``, shared by the copies an import made of the node for link calls
  and loop passes, as they are one node on Node-RED), ``global`` to the account. A value read is
  a copy (Node-RED's memory store hands out the stored object, which a body may change in place).

:func:`context_problems` says what of this a workflow cannot have: nodes of several tabs or
subflows using flow/node context in one workflow (Node-RED keeps their contexts apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxo_core.errors import ValidationError
from fluxo_core.ir import NativeStep, Workflow
from fluxo_core.storage import Transaction
from fluxo_core.storage.nodered_context import GLOBAL_WORKFLOW, ContextChange, NodeRedContextStore
from nodered_semantics.context import context_scopes, user_context_scopes

__all__ = [
    "MAX_CONTEXT_RERUNS",
    "READ_KEY",
    "RERUNS_KEY",
    "StepContext",
    "context_problems",
    "native_context_scopes",
]

MAX_CONTEXT_RERUNS = 50
READ_KEY = "nr_context"  # in a step's state: the version of each scope its call read
RERUNS_KEY = "nr_reruns"  # in a step's state: its calls made again on newer context, in a row


def native_context_scopes(workflow: Workflow) -> dict[str, list[str]]:
    """The context scopes each native Node-RED step of ``workflow`` uses, by step id."""
    found = {}
    for step in workflow.spec.steps:
        if isinstance(step, NativeStep) and step.engine == "nodered":
            scopes = context_scopes(step.config)
            if scopes:
                found[step.id] = sorted(scopes)
    return found


def context_problems(workflow: Workflow) -> list[str]:
    """Why the step engine would not keep ``workflow``'s context as Node-RED keeps it."""
    owners: dict[str, list[str]] = {}
    for step in workflow.spec.steps:
        if not isinstance(step, NativeStep) or step.engine != "nodered":
            continue
        if {"flow", "node"} & user_context_scopes(step.config):  # not its own state
            owners.setdefault(str(step.config.get("z") or ""), []).append(step.id)
    if len(owners) <= 1:
        return []
    listed = "; ".join(f"{z or '?'}: {', '.join(ids)}" for z, ids in sorted(owners.items()))
    return [
        "nodes of several tabs or subflows use flow/node context in one workflow "
        f"({listed}); Node-RED keeps each one's context apart, the step engine keeps one flow "
        "context per workflow; run it on Node-RED"
    ]


class StepContext:
    """The context store as one job's transitions use it, in their transaction."""

    def __init__(
        self, store: NodeRedContextStore, tx: Transaction, account_id: str, workflow: str
    ) -> None:
        self.store = store
        self.tx = tx
        self.account_id = account_id
        self.workflow = workflow

    def _where(self, step: NativeStep, scope: str) -> tuple[str, str]:
        if scope == "global":
            return (GLOBAL_WORKFLOW, "global")
        if scope == "node":
            return (self.workflow, f"node:{step.config.get('id', step.id)}")
        return (self.workflow, "flow")

    def load(
        self, step: NativeStep, scopes: list[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """The contents of ``scopes`` for the step's call, and the version of each."""
        where = {scope: self._where(step, scope) for scope in scopes}
        found = self.store.read(self.tx, self.account_id, where.values())
        return (
            {scope: found[key].data for scope, key in where.items()},
            {scope: found[key].version for scope, key in where.items()},
        )

    def save(
        self, step: NativeStep, read: Mapping[str, int], writes: list[Mapping[str, Any]]
    ) -> bool:
        """Write what the step's node wrote, if every scope it read is as it read it; False
        (nothing written) when one changed since. Nothing written, nothing checked."""
        if not writes:
            return True
        sets: dict[str, dict[str, Any]] = {}
        deletes: dict[str, list[str]] = {}
        for write in writes:
            scope, key = str(write.get("scope")), str(write.get("key"))
            if scope not in ("node", "flow", "global"):
                raise ValidationError(
                    f"step {step.id!r}: its node wrote to an unknown context scope {scope!r} "
                    "(node, flow and global exist)",
                    step=step.id,
                )
            if "value" in write:
                sets.setdefault(scope, {})[key] = write["value"]
            else:
                deletes.setdefault(scope, []).append(key)
        changes = []
        for scope in sorted(set(read) | set(sets) | set(deletes)):
            workflow, name = self._where(step, scope)
            changes.append(
                ContextChange(
                    workflow,
                    name,
                    read.get(scope),
                    sets.get(scope, {}),
                    tuple(deletes.get(scope, ())),
                )
            )
        return self.store.write(self.tx, self.account_id, changes)
