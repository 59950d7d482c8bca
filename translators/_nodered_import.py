"""Node-RED flow JSON -> IR workflows, a fidelity report and the source sidecar.

One workflow per tab, per subflow definition and per ``z`` of an old-format file (nodes whose tab
is not in the file). Within a workflow every flow node is one of:

* a **step**: mapped to an IR kind, or kept ``native`` with its whole configuration;
* a **trigger** (``inject``, ``http in``): not a step; its targets start the workflow;
* a **splice** (``junction``, ``link in``/``link out`` on the same tab): pure wiring, replaced
  by the IR edges it stands for;
* a **sink** (``debug``, ``comment``, ``http response``, disabled nodes): no IR counterpart.

The IR is acyclic with one start step; Node-RED flows may loop and start anywhere. So loops are
cut (the closing wire stays in the source only, and the report says so) and several entry points
get a synthetic ``start`` step (an identity transform) that fans out to all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from fluxo_core.errors import IRValidationError, ValidationError
from fluxo_core.ir import Workflow
from nodered_semantics.typed_values import constant_value
from translators._nodered_map import (
    STRUCTURAL,
    NodeMapping,
    is_flow_node,
    map_node,
    native_mapping,
    parse_flow,
    slug,
)
from translators._nodered_model import (
    FidelityReport,
    FidelityStatus,
    NodeFidelity,
    NodeRedImport,
    NodeRedSource,
    Trigger,
    WorkflowSource,
)

__all__ = ["DROPPED_LABEL", "import_flow"]

_SINKS = {
    "debug": "debug output: Fluxo records every step's input and output instead",
    "comment": "a comment: no behaviour",
    "http response": "answers the HTTP caller: the API trigger answers with the job's result",
}
SOURCE_LABEL = {"fluxo.dev/source": "nodered"}
DROPPED_LABEL = "fluxo.dev/nodered-dropped"
"""What the import could not express and Node-RED would do (``loop``: a wire closing a loop was
cut; ``entries``: several triggers that Node-RED starts apart now start together), as a
``.``-joined label value: an engine other than Node-RED refuses such a workflow."""


# --- one workflow --------------------------------------------------------------------------------


@dataclass
class _Member:
    node: dict[str, Any]
    role: str  # step | trigger | splice | sink
    reason: str = ""
    mapping: NodeMapping = field(default_factory=lambda: NodeMapping("none", [], ""))
    step_ids: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.node["id"])

    @property
    def entry(self) -> str:
        return self.step_ids[0]

    @property
    def exit(self) -> str:
        return self.step_ids[-1]


@dataclass
class _Container:
    id: str
    node: dict[str, Any] | None
    name: str = ""
    members: list[_Member] = field(default_factory=list)


def _flat(wires: Any) -> list[str]:
    if not isinstance(wires, list):
        return []
    return [t for port in wires if isinstance(port, list) for t in port if isinstance(t, str)]


def _ports(node: Mapping[str, Any]) -> list[list[str]]:
    wires = node.get("wires")
    if not isinstance(wires, list):
        return []
    return [
        [t for t in port if isinstance(t, str)] if isinstance(port, list) else [] for port in wires
    ]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class _Builder:
    """Builds one workflow from the members of one container."""

    def __init__(
        self, box: _Container, index: Mapping[str, dict[str, Any]], zof: Mapping[str, str]
    ):
        self.box = box
        self.index = index
        self.zof = zof
        self.by_id = {m.id: m for m in box.members}
        self.notes: list[str] = []
        self.dropped: set[str] = set()  # behaviour the IR lost (see DROPPED_LABEL)

    # -- wiring ---------------------------------------------------------------------------------

    def resolve(self, target: str, seen: set[str] | None = None) -> list[str]:
        """The step nodes a wire to ``target`` reaches, through junctions and links."""
        seen = set() if seen is None else seen
        if target in seen:
            return []
        seen.add(target)
        member = self.by_id.get(target)
        if member is None:
            if target not in self.index:
                self.notes.append(
                    f"workflow {self.box.name!r}: a wire goes to {target!r}, which is not in the file"
                )
            return []
        if member.role == "step":
            return [target]
        if member.role != "splice":
            return []
        node = member.node
        if node["type"] == "link out":
            found: list[str] = []
            for link in node.get("links") or []:
                found += self.resolve(link, seen)
            return found
        return [s for t in _flat(node.get("wires")) for s in self.resolve(t, seen)]

    def step_ports(self, member: _Member) -> list[list[str]]:
        if member.node["type"] == "link out":  # a native link out: its same-tab link targets
            links = [t for link in member.node.get("links") or [] for t in self.resolve(link)]
            return [_unique(links)]
        return [_unique(s for t in port for s in self.resolve(t)) for port in _ports(member.node)]

    # -- the workflow ---------------------------------------------------------------------------

    def build(self, subflow_out: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The workflow document and the step nodes that start it."""
        steps = [m for m in self.box.members if m.role == "step"]
        ports = {m.id: self.step_ports(m) for m in steps}
        succ = {m.id: _unique(t for port in ports[m.id] for t in port) for m in steps}
        pred_count = {m.id: 0 for m in steps}
        for targets in succ.values():
            for t in targets:
                pred_count[t] += 1
        triggered: list[str] = []
        for m in self.box.members:
            if m.role == "trigger":
                triggered += [s for t in _flat(m.node.get("wires")) for s in self.resolve(t)]
        if self.box.node is not None and self.box.node.get("type") == "subflow":
            for port in self.box.node.get("in") or []:
                for wire in port.get("wires") or [] if isinstance(port, Mapping) else []:
                    if isinstance(wire, Mapping) and isinstance(wire.get("id"), str):
                        triggered += self.resolve(wire["id"])
        triggered_set = set(triggered)
        roots = [m.id for m in steps if m.id in triggered_set or pred_count[m.id] == 0]
        back = self._back_edges([m.id for m in steps], succ, roots)

        for m in steps:
            self._fill_next(m, ports[m.id], back)
        self._resolve_joins(steps)

        bodies: list[dict[str, Any]] = []
        for m in steps:
            for sid, body in zip(m.step_ids, m.mapping.steps, strict=True):
                bodies.append({"id": sid, **body})
        entries = _unique(self.by_id[r].entry for r in roots)
        spec: dict[str, Any] = {}
        if len(entries) == 1:
            spec["start"] = entries[0]
        else:
            sources = sum(1 for m in self.box.members if m.role == "trigger")
            if len(entries) > 1 and sources > 1:
                self.dropped.add("entries")
                self.notes.append(
                    f"workflow {self.box.name!r} has {sources} entry points: the IR starts all "
                    "of them together (step 'start'); on Node-RED each trigger starts only its own nodes"
                )
            start = {
                "id": "start",
                "name": "Entry",
                "kind": "transform",
                "ops": [{"op": "jsonata", "expr": "$"}],
                "next": entries,
            }
            bodies.insert(0, start)
        if any(b["kind"] == "native" for b in bodies):
            spec["engine"] = "nodered"
        outs = _unique(
            self.by_id[s].exit
            for s in subflow_out
            if s in self.by_id and self.by_id[s].role == "step"
        )
        if len(outs) == 1:
            spec["output"] = outs[0]
        info = (self.box.node or {}).get("info")
        if isinstance(info, str) and info.strip():
            spec["description"] = info.strip()[:2000]
        spec["steps"] = bodies
        document = {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": self.box.name, "labels": self._labels()},
            "spec": spec,
        }
        return document, roots

    def _labels(self) -> dict[str, str]:
        labels = dict(SOURCE_LABEL)
        if self.dropped:
            labels[DROPPED_LABEL] = ".".join(sorted(self.dropped))
        return labels

    def _back_edges(
        self, order: list[str], succ: Mapping[str, list[str]], roots: list[str]
    ) -> set[tuple[str, str]]:
        """The wires that close a loop (depth-first from the roots, in file order)."""
        state: dict[str, int] = {}
        back: set[tuple[str, str]] = set()
        for root in [*roots, *order]:
            if root in state:
                continue
            if root not in roots:
                roots.append(root)  # a loop nothing leads into: enter it here
            state[root] = 1
            stack = [(root, iter(succ[root]))]
            while stack:
                node, it = stack[-1]
                for target in it:
                    if state.get(target) == 1:
                        back.add((node, target))
                    elif target not in state:
                        state[target] = 1
                        stack.append((target, iter(succ[target])))
                        break
                else:
                    state[node] = 2
                    stack.pop()
        if back:
            self.dropped.add("loop")
        for src, dst in sorted(back):
            self.notes.append(
                f"workflow {self.box.name!r}: the wire {src} -> {dst} closes a loop; the IR is acyclic, "
                "so it stays in the Node-RED source only"
            )
        return back

    def _fill_next(self, m: _Member, ports: list[list[str]], back: set[tuple[str, str]]) -> None:
        mapping = m.mapping
        live = [[self.by_id[t].entry for t in port if (m.id, t) not in back] for port in ports]
        for body, nxt in zip(mapping.steps[:-1], m.step_ids[1:], strict=True):
            body["next"] = [nxt]
        if mapping.switch_ports is not None:
            body = mapping.steps[-1]
            cases = body["cases"]
            for port, slot in enumerate(mapping.switch_ports):
                targets = live[port] if port < len(live) else []
                if slot == "default":
                    body["default"] = targets
                else:
                    cases[int(slot)]["next"] = targets
            empty = [i for i, case in enumerate(cases) if not case["next"]]
            stops = any(
                any(case["next"] for case in cases[i + 1 :]) or body["default"] for i in empty
            )
            if stops and body["mode"] == "first":
                m.mapping = native_mapping(
                    m.node,
                    "a rule without wires stops the message in Node-RED, which an IR case cannot say",
                )
            elif len(empty) == len(cases):
                m.mapping = native_mapping(m.node, "none of its rules is wired")
            else:
                body["cases"] = [case for case in cases if case["next"]]
                return
        if m.mapping.kind == "native":
            m.step_ids = [m.exit]
        m.mapping.steps[-1]["next"] = _unique(t for port in live for t in port)

    def _resolve_joins(self, steps: list[_Member]) -> None:
        """Pair every auto join with the innermost split upstream of it, or keep it native."""
        graph: dict[str, list[str]] = {}
        kind: dict[str, str] = {}
        for m in steps:
            for sid, body in zip(m.step_ids, m.mapping.steps, strict=True):
                graph[sid] = list(body.get("next", []))
                kind[sid] = body["kind"]

        def reach(start: str) -> set[str]:
            seen, todo = {start}, [start]
            while todo:
                for t in graph.get(todo.pop(), []):
                    if t not in seen:
                        seen.add(t)
                        todo.append(t)
            return seen

        reached = {sid: reach(sid) for sid, k in kind.items() if k == "split"}
        claimed: dict[str, str] = {}
        for m in steps:
            if not m.mapping.join:
                continue
            ups = [s for s, seen in reached.items() if m.exit in seen]
            inner = [s for s in ups if not any(o != s and o in reached[s] for o in ups)]
            if len(inner) != 1 or inner[0] in claimed:
                why = (
                    "no split upstream of it maps to the IR"
                    if not inner
                    else f"split {inner[0]!r} is already joined by {claimed[inner[0]]!r}"
                    if len(inner) == 1
                    else f"several splits lead to it ({', '.join(inner)})"
                )
                nxt = m.mapping.steps[-1]["next"]
                m.mapping = native_mapping(
                    m.node, f"an automatic join pairs with its split, but {why}"
                )
                m.mapping.steps[-1]["next"] = nxt
                continue
            claimed[inner[0]] = m.exit
            m.mapping.steps[-1]["split"] = inner[0]


# --- the whole file ------------------------------------------------------------------------------


def _config_users(nodes: list[dict[str, Any]], configs: set[str]) -> dict[str, int]:
    users = dict.fromkeys(configs, 0)
    for node in nodes:
        for key, value in node.items():
            if key in ("id", "z", "g", "wires", "links", "scope"):
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, str) and v in users and v != node["id"]:
                    users[v] += 1
    return users


def _trigger(member: _Member, workflow: str, starts: list[str]) -> tuple[Trigger, str]:
    node = member.node
    name = node.get("name") or None
    if node["type"] == "http in":
        method, path = str(node.get("method", "get")).upper(), str(node.get("url", ""))
        reason = f"http in {method} {path} -> API trigger; the HTTP answer is the job's result"
        return Trigger(
            "api", workflow, member.id, name, tuple(starts), method=method, path=path
        ), reason
    ok, payload = constant_value(node.get("payload"), node.get("payloadType", "date"))
    if not ok or node.get("payloadType", "date") == "date":
        payload = None
    props = node.get("props")
    sets = (
        tuple(str(p.get("p")) for p in props if isinstance(p, dict) and p.get("p"))
        if isinstance(props, list)
        else ("payload", "topic")
    )
    once = bool(node.get("once"))
    crontab = str(node.get("crontab") or "").strip()
    repeat = str(node.get("repeat") or "").strip()
    if crontab:
        reason = f"inject on schedule {crontab!r} -> cron trigger"
        return Trigger(
            "cron",
            workflow,
            member.id,
            name,
            tuple(starts),
            schedule=crontab,
            once=once,
            payload=payload,
            sets=sets,
        ), reason
    interval = constant_value(repeat, "num")[1] if repeat else None
    if isinstance(interval, int | float) and interval > 0:
        reason = f"inject every {interval} s -> cron trigger (interval)"
        return Trigger(
            "cron",
            workflow,
            member.id,
            name,
            tuple(starts),
            interval_s=float(interval),
            once=once,
            payload=payload,
            sets=sets,
        ), reason
    reason = "inject -> manual trigger" + (" (also fired once on deploy)" if once else "")
    return Trigger(
        "manual", workflow, member.id, name, tuple(starts), once=once, payload=payload, sets=sets
    ), reason


def import_flow(data: Any, *, name: str = "flow") -> NodeRedImport:
    """See :func:`translators.nodered.from_nodered`."""
    nodes = parse_flow(data)
    index = {str(n["id"]): n for n in nodes}
    boxes: dict[str, _Container] = {}
    for node in nodes:
        if node["type"] in ("tab", "subflow"):
            boxes[node["id"]] = _Container(node["id"], node)
    for node in nodes:
        if is_flow_node(node):
            z = str(node.get("z") or "")
            if z not in boxes:
                boxes[z] = _Container(z, None)
    first: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node["type"] in ("tab", "subflow"):
            first.setdefault(node["id"], i)
        elif is_flow_node(node):
            first.setdefault(str(node.get("z") or ""), i)
    containers = sorted(boxes.values(), key=lambda b: first[b.id])

    taken: set[str] = set()

    def unique_name(base: str) -> str:
        base = base or "flow"
        candidate, n = base, 2
        while candidate in taken:
            suffix = f"-{n}"
            candidate = base[: 63 - len(suffix)].strip("-") + suffix
            n += 1
        taken.add(candidate)
        return candidate

    fallback = slug(name) or "flow"
    for box in containers:
        if box.node is None:
            box.name = unique_name(fallback)
        elif box.node["type"] == "tab":
            box.name = unique_name(slug(box.node.get("label")) or fallback)
        else:
            box.name = unique_name(slug("subflow-" + str(box.node.get("name") or box.id)))
    subflows = {
        b.id: b.name for b in containers if b.node is not None and b.node["type"] == "subflow"
    }

    entries: dict[str, NodeFidelity] = {}
    owner: dict[str, str] = {}
    zof = {str(n["id"]): str(n.get("z") or "") for n in nodes}

    def record(
        node: Mapping[str, Any],
        workflow: str | None,
        status: FidelityStatus,
        target: str | None,
        reason: str,
    ) -> None:
        label = node.get("name") or node.get("label") or ""
        entries[node["id"]] = NodeFidelity(
            node["id"], node["type"], str(label), workflow, status, target, reason
        )

    # classify flow nodes
    for node in nodes:
        if not is_flow_node(node):
            continue
        box = boxes[str(node.get("z") or "")]
        kind = node["type"]
        if node.get("d") is True:
            member = _Member(node, "sink", "disabled in Node-RED: it passes no messages")
        elif kind in _SINKS:
            member = _Member(node, "sink", _SINKS[kind])
        elif kind in ("inject", "http in"):
            member = _Member(node, "trigger")
        elif kind == "junction":
            member = _Member(
                node, "splice", "a junction only joins wires: its wires became IR edges"
            )
        elif kind == "link in":
            member = _Member(
                node,
                "splice",
                "a link in only continues wires: its links became IR edges "
                "(links from other tabs start this workflow)",
            )
        elif (
            kind == "link out"
            and node.get("mode", "link") == "link"
            and all(zof.get(str(t)) == box.id for t in node.get("links") or [])
        ):
            member = _Member(
                node, "splice", "a link out only continues wires: its links became IR edges"
            )
        elif kind == "link out":
            member = _Member(
                node,
                "step",
                mapping=native_mapping(node, "links to another tab or returns to a link call"),
            )
        else:
            member = _Member(node, "step", mapping=map_node(node, subflows))
        box.members.append(member)

    workflows: list[Workflow] = []
    triggers: list[Trigger] = []
    notes: list[str] = []
    sources: dict[str, WorkflowSource] = {}
    # Each container's own node and the nodes on it, in file order (one pass, not one per box).
    container_ids = {box.id for box in containers}
    by_container: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        z = str(node.get("z") or "")
        by_container.setdefault(z, []).append(node)
        if node["id"] in container_ids and node["id"] != z:
            by_container.setdefault(node["id"], []).append(node)
    for box in containers:
        # step ids: readable, unique in the workflow
        used = {"start"}
        for member in box.members:
            if member.role != "step":
                continue
            base = slug(member.node.get("name") or member.node["type"], limit=40) or "step"
            sid = base if base not in used else f"{base}-{slug(member.id, limit=14) or 'n'}"
            n = 2
            while sid in used:
                sid = f"{base}-{n}"
                n += 1
            used.add(sid)
            count = len(member.mapping.steps)
            member.step_ids = [f"{sid}-request", sid] if count == 2 else [sid]
            used.update(member.step_ids)
        builder = _Builder(box, index, zof)
        subflow_out: list[str] = []
        if box.node is not None and box.node["type"] == "subflow":
            for port in box.node.get("out") or []:
                for wire in port.get("wires") or [] if isinstance(port, Mapping) else []:
                    if isinstance(wire, Mapping) and isinstance(wire.get("id"), str):
                        subflow_out.append(wire["id"])
        document, _roots = builder.build(subflow_out)
        try:
            workflow = Workflow.model_validate(document)
        except (IRValidationError, pydantic.ValidationError) as exc:
            raise ValidationError(
                f"the import of {box.name!r} produced an invalid workflow; this is a bug of the "
                f"Node-RED translator, please report it with the flow: {exc}",
                workflow=box.name,
            ) from exc
        workflows.append(workflow)
        notes += builder.notes
        if box.node is None:
            notes.append(
                f"nodes with z={box.id!r} have no tab in the file (an old-format export): they "
                f"form workflow {box.name!r}; an export adds the tab"
            )
        # report and triggers
        if box.node is not None:
            what = "tab" if box.node["type"] == "tab" else "subflow (callable by its instances)"
            record(
                box.node,
                box.name,
                "mapped",
                f"workflow {box.name!r}",
                f"a {what} becomes a workflow",
            )
            owner[box.node["id"]] = box.name
        for member in box.members:
            owner[member.id] = box.name
            if member.role == "step":
                status: FidelityStatus = "native" if member.mapping.kind == "native" else "mapped"
                target = f"step {member.exit!r} ({member.mapping.kind})"
                record(member.node, box.name, status, target, member.mapping.reason)
            elif member.role == "trigger":
                starts = _unique(
                    builder.by_id[s].entry
                    for t in _flat(member.node.get("wires"))
                    for s in builder.resolve(t)
                )
                trigger, reason = _trigger(member, box.name, starts)
                triggers.append(trigger)
                record(member.node, box.name, "mapped", f"trigger {trigger.kind}", reason)
            else:
                record(member.node, box.name, "dropped", None, member.reason + "; kept for export")
        step_nodes = {sid: m.id for m in box.members for sid in m.step_ids}
        owned = tuple(
            n["id"]
            for n in by_container.get(box.id, ())
            if n["id"] == box.id or box.id != "" or is_flow_node(n)
        )
        for nid in owned:
            owner[nid] = box.name
        sources[box.name] = WorkflowSource(
            container=box.id,
            has_tab=box.node is not None,
            label=str((box.node or {}).get("label") or (box.node or {}).get("name") or box.name),
            imported=workflow,
            step_nodes=step_nodes,
            node_ids=owned,
        )

    # groups and config nodes
    configs = {n["id"] for n in nodes if not is_flow_node(n) and n["type"] not in STRUCTURAL}
    users = _config_users(nodes, configs)
    for node in nodes:
        if node["id"] in entries:
            continue
        workflow_name = owner.get(node["id"])
        if node["type"] == "group":
            record(
                node,
                workflow_name,
                "dropped",
                None,
                "a group only arranges nodes in the editor; kept for export",
            )
        else:
            count = users.get(node["id"], 0)
            record(
                node,
                workflow_name,
                "dropped",
                None,
                f"a configuration node ({count} user{'s' if count != 1 else ''}): no IR counterpart; "
                "kept for export",
            )
    report = FidelityReport(tuple(entries[n["id"]] for n in nodes), tuple(dict.fromkeys(notes)))
    source = NodeRedSource(tuple(nodes), sources, owner)
    return NodeRedImport(tuple(workflows), report, tuple(triggers), source)
