"""Node-RED ``catch`` nodes as ``on_error: goto`` edges.

On Node-RED a node that fails on a message (a function that throws, a JSONata expression that
fails) hands a copy of the message, with ``msg.error`` added, to the catch nodes of its tab
whose scope holds it: every node of the tab (no scope) or the listed ones. Each such catch gets a
copy, in the tab's order, except that the first catch marked "uncaught only" is skipped when an
earlier catch already took the failure (Node-RED's ``Flow.handleError``).

Here each native step in a catch's scope gets ``on_error: {goto: <the catch>}`` (through an
identity step fanning out when several catches take its failures); the step engine hands the
catch step the failure ``{error, input, step, node}`` and the ``nodered-node`` service turns it
into Node-RED's message. Nodes a catch feeds get no goto: a second failure there fails the job
(Node-RED would catch it again, counting ``msg.error.source.count``); mapped steps in a scope
keep no goto either, and the import says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["catch_scopes", "catchers", "wire_catches"]


def _enabled_catches(nodes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [n for n in nodes if n.get("type") == "catch" and n.get("d") is not True]


def _in_scope(catch: Mapping[str, Any], node_id: str) -> bool:
    scope = catch.get("scope")
    if isinstance(scope, list):
        return node_id in scope
    return scope in (None, "") and node_id != catch.get("id")


def catch_scopes(nodes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``{node id: id of the first catch whose scope holds it}`` over the whole file."""
    by_tab: dict[str, list[Mapping[str, Any]]] = {}
    for catch in _enabled_catches(nodes):
        by_tab.setdefault(str(catch.get("z") or ""), []).append(catch)
    found: dict[str, str] = {}
    for node in nodes:
        nid = str(node.get("id"))
        for catch in by_tab.get(str(node.get("z") or ""), ()):
            if _in_scope(catch, nid):
                found.setdefault(nid, str(catch["id"]))
    return found


def catchers(node_id: str, catches: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The catch nodes (of one tab, in its order) that receive a failure of ``node_id``."""
    out: list[Mapping[str, Any]] = []
    handled = by_uncaught = False
    for catch in catches:
        if not _in_scope(catch, node_id):
            continue
        if catch.get("uncaught") in (True, "true") and not by_uncaught:
            if handled:
                continue
            by_uncaught = True
        out.append(catch)
        handled = True
    return out


def wire_catches(
    workflow: str, steps: Sequence[Any], succ: Mapping[str, list[str]], notes: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Give the steps in a catch's scope their ``on_error: goto``.

    Returns the fan-out steps to add and the keys of the catches some failure now goes to.

    ``steps``: the workflow's step members (``id``, ``key``, ``ctx``, ``node``, ``mapping``,
    ``entry``), in the tab's order; ``succ``: member key -> the member keys it feeds. Copies
    of another tab's nodes (brought in through links) go to the copies of that tab's catches.
    """
    members = {m.key: m for m in steps}
    # The catches of each tab, per link-call context (a copy of a tab's nodes has its own).
    catches: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
    for m in steps:
        if m.node.get("type") == "catch":
            catches.setdefault((str(m.node.get("z") or ""), m.ctx), []).append(m)
    if not catches:
        return [], []
    fed: set[str] = set()
    todo = [m.key for group in catches.values() for m in group]
    while todo:
        key = todo.pop()
        if key not in fed:
            fed.add(key)
            todo += succ.get(key, [])
    taken = {sid for m in steps for sid in m.step_ids}
    fanouts: dict[tuple[str, ...], str] = {}
    extra: list[dict[str, Any]] = []
    wired: set[str] = set()
    for m in steps:
        group = catches.get((str(m.node.get("z") or ""), m.ctx), [])
        by_node = {c.id: c for c in group}
        chosen = (
            []
            if m.key in fed
            else [by_node[str(c["id"])] for c in catchers(m.id, [c.node for c in group])]
        )
        if not chosen:
            continue
        if m.mapping.kind != "native":
            notes.append(
                f"workflow {workflow!r}: {m.node['type']} node {m.id} is in the scope of catch "
                f"{chosen[0].id} but maps to a {m.mapping.kind} step: its failure fails the "
                "job instead of reaching the catch"
            )
            continue
        wired.update(c.key for c in chosen)
        targets = tuple(members[c.key].entry for c in chosen)
        if len(targets) == 1:
            goto = targets[0]
        else:
            if targets not in fanouts:
                n = len(fanouts) + 1
                while f"caught-{n}" in taken:
                    n += 1
                sid = f"caught-{n}"
                taken.add(sid)
                fanouts[targets] = sid
                extra.append(
                    {
                        "id": sid,
                        "name": "To every catch",
                        "kind": "transform",
                        "ops": [{"op": "jsonata", "expr": "$"}],
                        "next": list(targets),
                    }
                )
            goto = fanouts[targets]
        for body in m.mapping.steps:
            body["on_error"] = {"goto": goto}
    return extra, sorted(wired)
