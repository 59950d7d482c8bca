"""IR workflows -> Node-RED flow JSON: generated flows, and imported flows merged back.

**Generated** (a workflow authored in Fluxo): one tab; an ``http in`` entry the engine posts the
job's input packet to; per step the nodes below; bookkeeping function nodes that count the
messages in flight; a completion report and an uncaught-error ``catch`` that report the job's
outcome to Fluxo.

=================  ===================================================================
step               nodes
=================  ===================================================================
service, workflow  function (packet) -> http request (gateway) -> function (result,
                   retries with a delay node, on_error); a catch on the http request
switch             switch (JSONata rules; ``otherwise`` for default)
transform          change (one JSONata rule per op)
split / join       function (items) -> split / join -> function (gather)
delay              delay
native             the kept node itself
=================  ===================================================================

**Merged** (a workflow imported from Node-RED, given its :class:`NodeRedSource`): every node
whose steps are unchanged goes back verbatim, with its id, position and wires; a step edited in
Fluxo is rendered anew under the id of its node; steps added in Fluxo get new nodes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fluxo_core.ir import ENTRY_HEADER, NativeStep, Step, Workflow
from translators import _nodered_js as js
from translators._nodered_map import is_flow_node
from translators._nodered_model import (
    NodeRedOptions,
    NodeRedSource,
    WorkflowSource,
    flow_key,
    json_copy,
    stable_id,
)
from translators._nodered_refs import carry_references
from translators._nodered_render import (
    COLUMN,
    ROW,
    X0,
    Y0,
    Ids,
    RenderContext,
    Rendered,
    catch_node,
    function_node,
    http_request_node,
    label,
    ordered,
    render_step,
    successors,
)

__all__ = ["export_flows", "export_workflow", "generate"]

# --- the generated flow --------------------------------------------------------------------------


def _columns(workflow: Workflow) -> dict[str, int]:
    """The longest distance of each step from the start (the IR is acyclic)."""
    steps = workflow.spec.steps_by_id()
    depth = {sid: 0 for sid in steps}
    indegree = {sid: 0 for sid in steps}
    for step in steps.values():
        for t in successors(step):
            indegree[t] += 1
    ready = [sid for sid in steps if indegree[sid] == 0]
    while ready:
        sid = ready.pop(0)
        for t in successors(steps[sid]):
            depth[t] = max(depth[t], depth[sid] + 1)
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    return depth


def workflow_key(workflow: Workflow) -> str:
    """What generated ids derive from: ``account/name@version`` (:func:`flow_key`)."""
    return flow_key(workflow.metadata.account, workflow.ref or workflow.metadata.name)


def entry_path(workflow: Workflow, options: NodeRedOptions) -> str:
    return options.entry_path(workflow.metadata.account, workflow.ref or workflow.metadata.name)


def generate(workflow: Workflow, options: NodeRedOptions) -> list[dict[str, Any]]:
    """The Node-RED flow of a workflow authored in Fluxo (no source): see the module docstring."""
    key = workflow_key(workflow)
    tab_id = stable_id(key, "tab")
    ctx = RenderContext(workflow, options, bookkeeping=True)
    steps = workflow.spec.steps

    def ids_of(step_id: str) -> Ids:
        return lambda role: stable_id(key, "step", step_id, role)

    def own(role: str) -> str:
        return stable_id(key, "flow", role)

    rendered = {step.id: render_step(step, ids_of(step.id), ctx) for step in steps}
    carry_references(
        steps, {sid: r.nodes for sid, r in rendered.items()}, lambda sid: ids_of(sid)("main")
    )
    columns = _columns(workflow)
    width = {c: 0 for c in set(columns.values())}
    for sid, r in rendered.items():
        chain = sum(1 for n in r.nodes if "_below" not in n)
        width[columns[sid]] = max(width[columns[sid]], chain)
    x_of: dict[int, int] = {}
    x = X0 + 2 * COLUMN
    for c in sorted(width):
        x_of[c] = x
        x += width[c] * COLUMN + 60
    rows: dict[int, int] = {}
    for step in steps:
        c = columns[step.id]
        row = rows.get(c, 0)
        y = Y0 + row * ROW
        cx, below = x_of[c], 0
        for node in rendered[step.id].nodes:
            if node.pop("_below", None):
                node["x"], node["y"] = x_of[c] + below * COLUMN, y + ROW // 2
                below += 1
            else:
                node["x"], node["y"] = cx, y
                cx += COLUMN
        rows[c] = row + (2 if below else 1)
    last_x = x
    bottom = Y0 + max(rows.values(), default=1) * ROW + ROW

    path = entry_path(workflow, options)
    tab = {
        "id": tab_id,
        "type": "tab",
        "label": key,  # the account too: one Node-RED shows the tabs of every account
        "disabled": False,
        "info": workflow.spec.description or "",
        "env": [],
    }
    entry = {
        "id": own("entry"),
        "type": "http in",
        "name": f"job of {workflow.metadata.name}",
        "url": path,
        "method": "post",
        "upload": False,
        "skipBodyParsing": False,
        "swaggerDoc": "",
        "x": X0,
        "y": Y0,
    }
    # A job may name its entry (a step the start step leads to) in its ENTRY_HEADER: the start
    # function sends it there, as the step engine starts there (an imported multi-trigger tab).
    start_step = workflow.spec.steps_by_id()[workflow.spec.start_id]
    entries = list(dict.fromkeys(getattr(start_step, "next", None) or []))
    start = function_node(
        own("start"),
        "start job",
        js.start_code(workflow.ref, workflow.spec.start_id, entries, ENTRY_HEADER),
        outputs=2 + len(entries),
    )
    start.update(
        x=X0 + COLUMN,
        y=Y0,
        outputLabels=["answer", "job", *(f"job from {e}" for e in entries)],
    )
    accepted = {
        "id": own("accepted"),
        "type": "http response",
        "name": "accepted",
        "statusCode": "",
        "headers": {},
        "x": X0 + COLUMN,
        "y": Y0 + ROW // 2,
        "wires": [],
    }
    entry["wires"] = [[start["id"]]]
    start["wires"] = [
        [accepted["id"]],
        [rendered[workflow.spec.start_id].entry],
        *([rendered[e].entry] for e in entries),
    ]
    cancel_in = {
        **entry,
        "id": own("cancel"),
        "name": f"cancel a job of {workflow.metadata.name}",
        "url": path + "/cancel",
        "y": bottom,
        "wires": [[own("cancel-fn")]],
    }
    cancel_fn = function_node(own("cancel-fn"), "cancel job", js.cancel_code())
    cancel_fn.update(x=X0 + COLUMN, y=bottom, wires=[[own("cancel-answer")]])
    cancel_answer = {
        **accepted,
        "id": own("cancel-answer"),
        "name": "cancelled",
        "x": X0 + 2 * COLUMN,
        "y": bottom,
    }

    token_env = options.token_envs(workflow.metadata.account)
    report_url = options.fluxo_url.rstrip("/") + options.events_path
    record_result = workflow.spec.output is None
    done = function_node(
        own("done"), "end of a branch", js.end_code(record=record_result, token_env=token_env)
    )
    discard = function_node(
        own("discard"), "branch ends (no result)", js.end_code(record=False, token_env=token_env)
    )
    record = function_node(own("record"), "job result", js.record_code())
    report = http_request_node(own("report"), "report to Fluxo", report_url)
    done.update(x=last_x, y=Y0, wires=[[report["id"]]])
    discard.update(x=last_x, y=Y0 + ROW, wires=[[report["id"]]])
    record.update(x=last_x, y=Y0 + 2 * ROW, wires=[])
    report.update(x=last_x + COLUMN, y=Y0 + ROW // 2, wires=[[]])
    node_steps = {str(n["id"]): step.id for step in steps for n in rendered[step.id].nodes}
    failed_catch = catch_node(own("catch"), "job failed", None, uncaught=True)
    failed = function_node(own("failed"), "report failure", js.failed_code(node_steps, token_env))
    failed_catch.update(x=X0 + 3 * COLUMN, y=bottom, wires=[[failed["id"]]])
    failed.update(x=X0 + 4 * COLUMN, y=bottom, wires=[[report["id"]]])

    extra: list[dict[str, Any]] = []
    for step in steps:
        r = rendered[step.id]
        by_id = {str(n["id"]): n for n in r.nodes}
        for out in r.outs:
            node = by_id[out.node]
            ports = node.setdefault("wires", [])
            while len(ports) <= out.port:
                ports.append([])
            targets = [rendered[s].entry for s in out.steps]
            targets += [
                rendered[t.removeprefix("@join:")].exit if t.startswith("@join:") else t
                for t in out.raw
            ]
            if out.end == "result":
                targets.append(done["id"])
            elif out.end == "discard":
                targets.append(discard["id"])
            wired: list[str] = []
            if out.routed and step.id == workflow.spec.output:
                wired.append(record["id"])  # first: recorded before the branch can end the job
            if len(targets) > 1:
                fan = function_node(
                    stable_id(key, "step", step.id, f"fan-{out.node}-{out.port}"),
                    label(step, f"fan out x{len(targets)}"),
                    js.fanout_code(len(targets) - 1),
                )
                fan.update(x=node["x"] + COLUMN // 2, y=node["y"] + ROW // 3, wires=[targets])
                extra.append(fan)
                wired.append(fan["id"])
            else:
                wired += targets
            ports[out.port] = list(dict.fromkeys(ports[out.port] + wired))
    nodes: list[dict[str, Any]] = [tab, entry, start, accepted]
    for step in steps:
        nodes += rendered[step.id].nodes
    nodes += extra
    nodes += [
        done,
        discard,
        record,
        report,
        cancel_in,
        cancel_fn,
        cancel_answer,
        failed_catch,
        failed,
    ]
    for node in nodes:
        if node is not tab:
            node["z"] = tab_id
            node.setdefault("wires", [])
    # The deploy mark: a digest of everything else in the flow (the fluxo URL and token
    # variables included), answered by the cancel entry, so a start waits for THIS flow.
    digest = hashlib.sha256(json.dumps(nodes, sort_keys=True).encode()).hexdigest()[:16]
    cancel_fn["func"] = js.cancel_code(digest)
    return [ordered(node) for node in nodes]


# --- imported flows: verbatim where unchanged ----------------------------------------------------


def _config_refs(node: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    found: list[str] = []
    for key, value in node.items():
        if key in ("id", "z", "g", "wires", "links", "scope"):
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v in configs and v != node.get("id"):
                found.append(v)
    return found


def _dependencies(
    own: Iterable[Mapping[str, Any]], source: NodeRedSource, done: set[str]
) -> set[str]:
    """Ids of the shared config nodes and subflows (with their nodes) that ``own`` needs."""
    by_id = source.by_id
    configs = {
        nid: n
        for nid, n in by_id.items()
        if not is_flow_node(n) and n["type"] not in ("tab", "subflow", "group")
    }
    by_container = {ws.container: name for name, ws in source.workflows.items()}
    needed: set[str] = set()
    todo = list(own)
    while todo:
        node = todo.pop()
        refs = _config_refs(node, configs)
        kind = str(node.get("type", ""))
        if kind.startswith("subflow:"):
            workflow = by_container.get(kind.removeprefix("subflow:"))
            if workflow is not None:
                refs += list(source.workflows[workflow].node_ids)
        for ref in refs:
            if ref not in needed and ref not in done and ref in by_id:
                needed.add(ref)
                todo.append(by_id[ref])
    return needed


def _tab_for(ws: WorkflowSource, workflow: Workflow) -> dict[str, Any]:
    return {
        "id": ws.container or stable_id(workflow.metadata.name, "tab"),
        "type": "tab",
        "label": ws.label,
        "disabled": False,
        "info": "",
        "env": [],
    }


class _Merger:
    """One imported workflow back to its nodes, with the steps edited in Fluxo rendered anew.

    ``merge`` returns ``{anchor node id: nodes}``: each source node of the workflow maps to what
    replaces it (itself, its re-rendered chain, or nothing when its step was removed); nodes of
    steps added in Fluxo hang under the key ``""`` (placed after the workflow's last node).
    """

    def __init__(
        self, workflow: Workflow, ws: WorkflowSource, source: NodeRedSource, options: NodeRedOptions
    ):
        self.workflow = workflow
        self.ws = ws
        self.by_id = source.by_id
        self.ctx = RenderContext(workflow, options, bookkeeping=False)
        self.current = workflow.spec.steps_by_id()
        self.imported = ws.imported.spec.steps_by_id()
        self.node_steps: dict[str, list[str]] = {}
        for sid, nid in ws.step_nodes.items():
            self.node_steps.setdefault(nid, []).append(sid)

    def reached(self, target: str, seen: set[str] | None = None) -> set[str]:
        """The (entry) steps a wire to ``target`` reaches through junctions and links."""
        seen = set() if seen is None else seen
        node = self.by_id.get(target)
        if node is None or target in seen:
            return set()
        seen.add(target)
        if target in self.node_steps:
            return {self.node_steps[target][0]}
        kind = node["type"]
        if kind == "link out":
            return {s for link in node.get("links") or [] for s in self.reached(str(link), seen)}
        if kind in ("junction", "link in"):
            return {
                s
                for port in node.get("wires") or []
                for t in port
                for s in self.reached(str(t), seen)
            }
        return set()

    def merge(self) -> dict[str, list[dict[str, Any]]]:
        ws = self.ws
        changed: dict[str, list[Step]] = {}  # node id -> its steps, one of them edited in Fluxo
        removed: set[str] = set()
        for nid, sids in self.node_steps.items():
            if sids[-1] not in self.current:
                removed.add(nid)
            elif any(self.current.get(s) != self.imported.get(s) for s in sids):
                changed[nid] = [self.current[s] for s in sids if s in self.current]
        # a step neither from a node nor imported is new; the synthetic start is never a node
        added = [
            s
            for s in self.workflow.spec.steps
            if s.id not in ws.step_nodes and s.id not in self.imported
        ]
        fresh: dict[str, Rendered] = {}
        for nid, steps in changed.items():
            original = self.by_id[nid]
            x, y = original.get("x", 0), original.get("y", 0)
            for n, step in enumerate(steps):

                def ids(role: str, nid: str = nid, n: int = n, sid: str = step.id) -> str:
                    if role == "main" and n == 0:
                        return nid  # wires into the node keep landing on it
                    return stable_id(ws.container, nid, sid, role)

                r = render_step(step, ids, self.ctx)
                x = self._place(r, x, y)
                fresh[step.id] = r
            if "g" in original:
                fresh[steps[0].id].nodes[0]["g"] = original["g"]
        ys = [self.by_id[n].get("y", 0) for n in ws.node_ids if n in self.by_id]
        top = max((y for y in ys if isinstance(y, int | float)), default=0)
        for i, step in enumerate(added):

            def new_ids(role: str, sid: str = step.id) -> str:
                return stable_id(ws.container, "added", sid, role)

            r = render_step(step, new_ids, self.ctx)
            self._place(r, X0, top + (i + 1) * ROW)
            fresh[step.id] = r
        for nid, steps in changed.items():
            for step in steps:
                last = self.by_id[nid] if step is steps[-1] else None
                self._wire(step, fresh[step.id], fresh, last)
        for step in added:
            self._wire(step, fresh[step.id], fresh, None)

        out: dict[str, list[dict[str, Any]]] = {}
        for nid in ws.node_ids:
            if nid in removed:
                out[nid] = []
            elif nid in changed:
                out[nid] = [ordered(n) for step in changed[nid] for n in fresh[step.id].nodes]
            else:
                node = json_copy(self.by_id[nid])
                if removed and isinstance(node.get("wires"), list):
                    node["wires"] = [
                        [t for t in port if t not in removed] if isinstance(port, list) else port
                        for port in node["wires"]
                    ]
                out[nid] = [node]
        out[""] = [ordered(n) for step in added for n in fresh[step.id].nodes]
        return out

    def _place(self, r: Rendered, x: Any, y: Any) -> float:
        """Lay the rendered nodes out from (x, y); returns the x after the chain."""
        x = x if isinstance(x, int | float) else 0
        y = y if isinstance(y, int | float) else 0
        cx, below = x, 0
        for node in r.nodes:
            if node.pop("_below", None):
                node["x"], node["y"] = x + below * COLUMN, y + ROW // 2
                below += 1
            else:
                node["x"], node["y"] = cx, y
                cx += COLUMN
            if self.ws.container:
                node["z"] = self.ws.container
            node.setdefault("wires", [])
        return float(cx)

    def _entry(self, sid: str, fresh: Mapping[str, Rendered]) -> str | None:
        if sid in fresh:
            return fresh[sid].entry
        return self.ws.step_nodes.get(sid)

    def _wire(
        self,
        step: Step,
        r: Rendered,
        fresh: Mapping[str, Rendered],
        original: Mapping[str, Any] | None,
    ) -> None:
        """Wires from the IR; each port keeps the original's other targets (debug, links ...)."""
        by_id = {str(n["id"]): n for n in r.nodes}
        old = original.get("wires") if original is not None else None
        old_ports: list[Any] = old if isinstance(old, list) else []
        native = isinstance(step, NativeStep)
        for out in r.outs:
            node = by_id[out.node]
            ports = node["wires"]
            while len(ports) <= out.port:
                ports.append([])
            raws: list[str] = []
            for raw in out.raw:
                if not raw.startswith("@join:"):
                    raws.append(raw)
                elif (join := fresh.get(raw.removeprefix("@join:"))) is not None:
                    raws.append(join.exit)  # an unchanged join gets nothing: Node-RED's way
            if out.node != r.exit or not old_ports:
                targets = [e for s in out.steps if (e := self._entry(s, fresh)) is not None]
                ports[out.port] = list(dict.fromkeys(ports[out.port] + targets + raws))
                continue
            # the step's own output: keep what the original wired besides steps, port by port
            wanted = set(out.steps)
            old_range = range(len(old_ports)) if native else [out.port]
            placed: set[str] = set()
            for p in old_range:
                if p >= len(old_ports) or not isinstance(old_ports[p], list):
                    continue
                while len(ports) <= p:
                    ports.append([])
                kept: list[str] = []
                for t in old_ports[p]:
                    reach = {self.node_steps[t][0]} if t in self.node_steps else self.reached(t)
                    if reach and not reach <= wanted:
                        continue  # leads to a step that is no longer next
                    kept.append(t)
                    placed |= reach
                ports[p] = list(dict.fromkeys(ports[p] + kept))
            rest = [
                e for s in out.steps if s not in placed and (e := self._entry(s, fresh)) is not None
            ]
            ports[out.port] = list(dict.fromkeys(ports[out.port] + rest + raws))


def _merged(
    workflow: Workflow, ws: WorkflowSource, source: NodeRedSource, options: NodeRedOptions
) -> dict[str, list[dict[str, Any]]]:
    """``{source node id: its replacement}`` (``""``: nodes of steps added in Fluxo)."""
    if workflow.spec == ws.imported.spec:
        verbatim = {nid: [json_copy(source.by_id[nid])] for nid in ws.node_ids}
        return {**verbatim, "": []}
    return _Merger(workflow, ws, source, options).merge()


def _assemble(
    replacements: Mapping[str, Mapping[str, list[dict[str, Any]]]],
    source: NodeRedSource,
    given: Mapping[str, Workflow],
    *,
    explicit_tabs: bool,
    keep: Callable[[str], bool],
) -> list[dict[str, Any]]:
    """The source's nodes in file order, each replaced by its workflow's version."""
    out: list[dict[str, Any]] = []
    last: dict[str, int] = {}
    for node in source.nodes:
        nid = str(node["id"])
        owner = source.owner.get(nid)
        if owner is None or owner not in replacements:
            if keep(nid):
                out.append(json_copy(node))
            continue
        ws = source.workflows[owner]
        if owner not in last and explicit_tabs and not ws.has_tab:
            out.append(_tab_for(ws, given[owner]))
        out += replacements[owner].get(nid, [])
        last[owner] = len(out)
    for owner in sorted(last, key=lambda o: -last[o]):  # insert from the end: indexes hold
        out[last[owner] : last[owner]] = replacements[owner].get("", [])
    return out


def export_workflow(
    workflow: Workflow, *, source: NodeRedSource | None, options: NodeRedOptions
) -> list[dict[str, Any]]:
    """One workflow's deployable flow: generated, or merged with its source (plus the config
    nodes and subflows it uses, and a tab when the source had none)."""
    ws = source.workflows.get(workflow.metadata.name) if source is not None else None
    if source is None or ws is None:
        return generate(workflow, options)
    name = workflow.metadata.name
    replacements = {name: _merged(workflow, ws, source, options)}
    own = [n for nodes in replacements[name].values() for n in nodes]
    deps = _dependencies(own, source, {str(n["id"]) for n in own})
    return _assemble(
        replacements, source, {name: workflow}, explicit_tabs=True, keep=deps.__contains__
    )


def export_flows(
    workflows: Sequence[Workflow],
    *,
    source: NodeRedSource | None,
    options: NodeRedOptions,
    explicit_tabs: bool,
) -> list[dict[str, Any]]:
    """Several workflows as one flow file: the source's order, shared nodes once, workflows
    without a source generated after it."""
    if source is None:
        return [n for w in workflows for n in generate(w, options)]
    given = {w.metadata.name: w for w in workflows}
    replacements = {
        name: _merged(w, source.workflows[name], source, options)
        for name, w in given.items()
        if name in source.workflows
    }
    out = _assemble(replacements, source, given, explicit_tabs=explicit_tabs, keep=lambda _: True)
    for name, workflow in given.items():
        if name not in source.workflows:
            out += generate(workflow, options)
    if explicit_tabs:
        orphans = [n for n in out if is_flow_node(n) and not n.get("z")]
        if orphans:
            tab_id = stable_id("flow", "tab")
            tab = {"id": tab_id, "type": "tab", "label": "flow", "disabled": False, "info": ""}
            out.insert(0, {**tab, "env": []})
            for node in orphans:
                node["z"] = tab_id
    return out
