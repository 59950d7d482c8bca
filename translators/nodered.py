"""IR <-> Node-RED flow JSON: pure functions (no I/O, clock or randomness).

::

    from_nodered(flow_json) -> NodeRedImport(workflows, report, triggers, source)
    to_nodered(workflow, source=None, options=NodeRedOptions()) -> [node, ...]
    to_nodered_flows(workflows, source=None) -> [node, ...]       # several workflows, one file
    check_flow(nodes) -> [(location, message), ...]                # before any deploy

**Export of a workflow authored in Fluxo** (no source): one explicit tab per workflow; node ids
derived from the workflow (``account/name@version``, :func:`flow_key`) and step ids, so a
redeploy changes nothing that did not change and two accounts' workflows of the same name never
share a node; steps laid out left to right by their distance from the start. The engine posts
the job's input packet (``{job_id, workflow, actor, trace_id, payload, headers}``) to the entry
``http in`` at ``{entry_root}/{account}/{name}/{version}`` (:meth:`NodeRedOptions.entry_path`;
``.../cancel`` forgets a job). Every service
step is an ``http request`` to ``{fluxo_url}/v1/services/{service}/calls?wait=N`` carrying the
packet (job id, step id, actor), so admission, billing and observation pass the shared runtime as
on the step engine; retries (a ``delay`` loop), timeouts (``?wait``) and ``on_error`` follow the
step engine. Switch -> ``switch`` (JSONata rules), transform -> ``change`` (JSONata), split/join
-> ``split``/``join``, delay -> ``delay``. Function nodes count the messages in flight; when none
is left the job is reported to ``{fluxo_url}{events_path}`` as
``{job_id, workflow, status: "succeeded", result: [payloads]}``; an error no step handles reaches
an uncaught ``catch`` and is reported as ``{job_id, workflow, status: "failed", error: {step,
code, message, node}}``. The API token is read from the environment, never written into the
flow: ``{token_env}_{ACCOUNT}`` for a workflow of an account, else ``token_env``
(:meth:`NodeRedOptions.token_envs`), so one Node-RED holds one engine token per account.

**Import** (:func:`from_nodered`): any flow file (an editor export, ``flows.json``, the Admin
API's ``{flows, rev}``, old-format files without tab nodes, subflows, groups, links, junctions,
config nodes) becomes one workflow per tab, per subflow and per tab-less ``z``. Node mapping:

====================  ==========================================================================
node                  IR
====================  ==========================================================================
tab, subflow          a workflow (a subflow instance becomes a ``workflow`` step calling it)
inject, http in       a trigger (cron with the crontab or interval, manual, API)
change                transform (rules on msg.payload; JSONata kept, run on the payload)
switch                switch (rules on msg.payload or JSONata; otherwise -> default)
template              transform (constant text or JSON; mustache ``{{payload.x}}`` -> JSONata)
json                  transform (object already; ``$string`` of a payload field)
split / join (auto)   split / join (paired with the innermost split upstream)
delay (fixed)         delay
http request          transform (describe the request) + the ``http`` service
junction, link in/out dropped: their wires become IR edges
debug, comment,       dropped (no behaviour a job needs); disabled nodes too
http response
group, config nodes   dropped (editor layout, settings)
everything else       ``native``: the whole node kept as the step's config (runs on Node-RED)
====================  ==========================================================================

A node that only partly fits (a change rule on ``msg.topic``, a rate-limiting delay, a join by
count) is kept native rather than approximated; the :class:`FidelityReport` lists every node with
its status (mapped / native / dropped) and the reason.

**Round trip.** The IR keeps only what it can express (its models forbid extra fields), so the
import also returns a :class:`NodeRedSource`: the file as read. ``to_nodered_flows(imp.workflows,
source=imp.source, explicit_tabs=False) == flow`` for any flow (same nodes, ids, types,
configuration, wires, positions, order); with ``explicit_tabs=True`` (the default, what a deploy
needs) an old-format file also gets the tab its nodes' ``z`` names. Steps edited in Fluxo are
detected by comparing with the imported workflow: their nodes are rendered anew under the same
ids and positions, the rest goes back verbatim. Without the source, an imported workflow exports
like any other (its native steps as kept nodes).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fluxo_core.errors import Problem
from fluxo_core.ir import Workflow
from translators._nodered_export import export_flows, export_workflow
from translators._nodered_import import DROPPED_LABEL, import_flow
from translators._nodered_js import MARK_LINE
from translators._nodered_map import FLOW_LIMITS, is_flow_node
from translators._nodered_model import (
    FidelityReport,
    FidelityStatus,
    NodeFidelity,
    NodeRedImport,
    NodeRedOptions,
    NodeRedSource,
    Trigger,
    WorkflowSource,
    flow_key,
    stable_id,
)

__all__ = [
    "DROPPED_LABEL",
    "FLOW_LIMITS",
    "FidelityReport",
    "FidelityStatus",
    "NodeFidelity",
    "NodeRedImport",
    "NodeRedOptions",
    "NodeRedSource",
    "Trigger",
    "WorkflowSource",
    "check_flow",
    "deploy_mark",
    "flow_key",
    "from_nodered",
    "stable_id",
    "to_nodered",
    "to_nodered_flows",
]


def deploy_mark(nodes: Sequence[Mapping[str, Any]]) -> str | None:
    """The digest a generated flow's cancel entry answers with (``flow``), or None for a flow
    without one (an imported file deployed as it is)."""
    for node in nodes:
        if node.get("type") == "function":
            found = MARK_LINE.search(str(node.get("func", "")))
            if found and found.group(1):
                return found.group(1)
    return None


def to_nodered(
    workflow: Workflow,
    *,
    source: NodeRedSource | None = None,
    options: NodeRedOptions | None = None,
) -> list[dict[str, Any]]:
    """The Node-RED flow (a list of nodes) that runs ``workflow``; deployable as one tab.

    Args:
        workflow: the workflow to export.
        source: the sidecar of an import (:attr:`NodeRedImport.source`); when it holds the
            workflow, its original nodes come back (verbatim where the steps are unchanged) with
            the config nodes and subflows they use.
        options: where the flow reaches Fluxo (generated flows only).

    Raises:
        UnsupportedFeatureError: a native step of another engine, or a native node without an
            output port that the workflow routes onward.
    """
    with _collector_paused():
        return export_workflow(workflow, source=source, options=options or NodeRedOptions())


def to_nodered_flows(
    workflows: Sequence[Workflow],
    *,
    source: NodeRedSource | None = None,
    options: NodeRedOptions | None = None,
    explicit_tabs: bool = True,
) -> list[dict[str, Any]]:
    """Several workflows as one flow file, e.g. every workflow of an import back to its file.

    With ``source``: the file's order, each node replaced by its workflow's version (nodes of
    workflows not given are left out; config nodes no workflow owns stay). ``explicit_tabs``
    adds a tab where the file had none (old-format exports); without it the output of an
    unchanged import equals the input exactly.
    """
    with _collector_paused():
        return export_flows(
            workflows,
            source=source,
            options=options or NodeRedOptions(),
            explicit_tabs=explicit_tabs,
        )


def from_nodered(flow_json: Any, *, name: str = "flow") -> NodeRedImport:
    """Read a Node-RED flow into IR workflows, triggers, a fidelity report and the source.

    Args:
        flow_json: the flow: JSON text (str or bytes), a decoded array of nodes, or
            ``{"flows": [...], "rev": ...}`` as the Admin API returns it.
        name: the workflow name for nodes without a tab (old-format files).

    Raises:
        MalformedRequestError: the text is not JSON.
        ValidationError: it is not a flow (not an array of nodes with ids and types, or
            duplicate ids); the problems name each bad node.
    """
    with _collector_paused():
        return import_flow(flow_json, name=name)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one import or export.

    Both build tens of thousands of dicts and models that all stay alive until the call returns,
    so the collector's passes (triggered by allocation counts) find nothing to free and cost
    about half of the time of a 5,000-node import. Reference counting still frees everything as
    usual; the collector resumes (if it was on) when the call ends, whatever happens.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_flow(
    nodes: Sequence[Mapping[str, Any]], *, known_types: Iterable[str] | None = None
) -> list[Problem]:
    """What Node-RED would accept silently but run wrongly (it validates almost nothing).

    Checks: every node has an id and a type; ids are unique (Node-RED keeps the last); every
    wire, link, catch/status/complete scope and group reference names an existing node; every
    flow node has a ``z`` naming a tab or subflow in the list (else it never starts) and
    ``x``/``y``; subflow instances name a subflow in the list; with ``known_types`` (from the
    Admin API's ``GET /nodes``), every type is installed (an unknown type stops all flows).

    Returns:
        ``(location, message)`` pairs; empty when the flow is fine.
    """
    problems: list[Problem] = []
    ids: dict[str, int] = {}
    for i, node in enumerate(nodes):
        nid = node.get("id") if isinstance(node, Mapping) else None
        where = f"flow[{i}]"
        if not isinstance(nid, str) or not nid:
            problems.append((f"{where}.id", "a node needs a string id"))
            continue
        if not isinstance(node.get("type"), str) or not node.get("type"):
            problems.append((f"{where}.type", f"node {nid!r} needs a type"))
        if nid in ids:
            problems.append(
                (
                    f"{where}.id",
                    f"duplicate id {nid!r} (also flow[{ids[nid]}]): Node-RED keeps "
                    "only the last one; give each node its own id",
                )
            )
        else:
            ids[nid] = i
    by_id = {nid: nodes[i] for nid, i in ids.items()}
    containers = {nid for nid, n in by_id.items() if n.get("type") in ("tab", "subflow")}
    known = set(known_types) if known_types is not None else None
    for i, node in enumerate(nodes):
        if not isinstance(node, Mapping) or not isinstance(node.get("id"), str):
            continue
        where, nid, kind = f"flow[{i}]", node["id"], str(node.get("type", ""))
        label = f"{kind} {nid!r}"
        if kind.startswith("subflow:") and kind.removeprefix("subflow:") not in containers:
            problems.append((f"{where}.type", f"{label}: its subflow is not in the flow"))
        elif (
            known is not None
            and kind not in known
            and kind not in ("tab", "subflow", "group")
            and not kind.startswith("subflow:")
        ):
            problems.append(
                (
                    f"{where}.type",
                    f"{label}: type {kind!r} is not installed in Node-RED (an "
                    "unknown type stops every flow): install its module or remove the node",
                )
            )
        wires = node.get("wires")
        if wires is not None and not (
            isinstance(wires, list) and all(isinstance(p, list) for p in wires)
        ):
            problems.append((f"{where}.wires", f"{label}: wires must be a list of lists of ids"))
        elif isinstance(wires, list):
            for p, port in enumerate(wires):
                for w, target in enumerate(port):
                    if target not in by_id:
                        problems.append(
                            (
                                f"{where}.wires[{p}][{w}]",
                                f"{label}: wire to {target!r}, which is "
                                "not in the flow (messages sent there are lost)",
                            )
                        )
        for key in ("links", "scope"):
            refs = node.get(key)
            if isinstance(refs, list):
                for r, ref in enumerate(refs):
                    if ref not in by_id:
                        problems.append(
                            (
                                f"{where}.{key}[{r}]",
                                f"{label}: {key} names {ref!r}, which is not in the flow",
                            )
                        )
        group = node.get("g")
        if group is not None and (group not in by_id or by_id[group].get("type") != "group"):
            problems.append((f"{where}.g", f"{label}: group {group!r} is not in the flow"))
        if is_flow_node(node):
            z = node.get("z")
            if not z:
                problems.append(
                    (
                        f"{where}.z",
                        f"{label}: no z: a node outside a tab never starts; set z to its tab",
                    )
                )
            elif z not in containers:
                problems.append(
                    (
                        f"{where}.z",
                        f"{label}: z {z!r} names no tab or subflow in the flow (it "
                        "never starts): emit the tab too",
                    )
                )
            for axis in ("x", "y"):
                if not isinstance(node.get(axis), int | float):
                    problems.append((f"{where}.{axis}", f"{label}: no {axis} position"))
    return problems
