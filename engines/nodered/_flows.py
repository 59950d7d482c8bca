"""Pure helpers on Node-RED flow arrays: which nodes a workflow owns, and replacing them.

A workflow deploys as one tab (plus, for imported flows, the subflows and config nodes it uses).
The engine changes only those nodes and leaves every other tab exactly as it found it, so several
workflows (and flows people made in the editor) share one Node-RED.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["containers_of", "installed_types", "owned_nodes", "replace_owned", "tab_id_of"]

Node = Mapping[str, Any]


def tab_id_of(nodes: Sequence[Node]) -> str | None:
    """The id of the (first) tab of a translated flow."""
    for node in nodes:
        if node.get("type") == "tab" and isinstance(node.get("id"), str):
            return str(node["id"])
    return None


def containers_of(nodes: Iterable[Node]) -> set[str]:
    """The ids of the tabs and subflow definitions in ``nodes``."""
    return {
        str(n["id"])
        for n in nodes
        if n.get("type") in ("tab", "subflow") and isinstance(n.get("id"), str)
    }


def _is_owned(node: Node, ids: set[str], containers: set[str]) -> bool:
    return node.get("id") in ids or node.get("z") in containers


def owned_nodes(flows: Sequence[Node], ids: set[str], containers: set[str]) -> list[Node]:
    """The nodes of ``flows`` that belong to a workflow: listed by id, or inside its containers."""
    return [n for n in flows if _is_owned(n, ids, containers)]


def replace_owned(
    flows: Sequence[Node],
    nodes: Sequence[Node],
    *,
    ids: set[str],
    containers: set[str],
) -> list[Node] | None:
    """``flows`` with the owned nodes replaced by ``nodes``; None when that changes nothing.

    The new nodes take the place of the first old one (a redeployed tab keeps its position among
    the editor's tabs); a first deploy appends them. Every other node stays, in order.
    """
    current = owned_nodes(flows, ids, containers)
    if _same(current, nodes):
        return None
    out: list[Node] = []
    placed = False
    for node in flows:
        if _is_owned(node, ids, containers):
            if not placed:
                out.extend(nodes)
                placed = True
            continue
        out.append(node)
    if not placed:
        out.extend(nodes)
    return out


def _same(current: Sequence[Node], wanted: Sequence[Node]) -> bool:
    """Whether the deployed nodes equal the wanted ones (order aside: Node-RED keeps ours)."""
    if len(current) != len(wanted):
        return False
    by_id = {n.get("id"): n for n in current}
    return len(by_id) == len(current) and all(by_id.get(n.get("id")) == n for n in wanted)


def installed_types(listing: Any) -> set[str]:
    """The node types of the enabled node sets in a ``GET /nodes`` answer."""
    types: set[str] = set()
    if not isinstance(listing, list):
        return types
    for node_set in listing:
        if not isinstance(node_set, Mapping) or node_set.get("enabled") is False:
            continue
        for kind in node_set.get("types") or ():
            if isinstance(kind, str):
                types.add(kind)
    return types
