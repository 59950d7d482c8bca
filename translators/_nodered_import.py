"""Node-RED flow JSON -> IR workflows, a fidelity report and the source sidecar.

One workflow per tab, per subflow definition and per ``z`` of an old-format file (nodes whose tab
is not in the file). Within a workflow every flow node is one of:

* a **step**: mapped to an IR kind, or kept ``native`` with its whole configuration;
* a **trigger** (``inject``, ``http in``): not a step; its targets start the workflow;
* a **splice** (``junction``, ``link in``/``link out`` on the same tab): pure wiring, replaced
  by the IR edges it stands for;
* a **sink** (``debug``, ``comment``, ``http response``, disabled nodes): no IR counterpart.

The IR is acyclic with one start step; Node-RED flows may loop and start anywhere. So loops are
unrolled to a bounded number of passes, and several entry points get a synthetic ``start`` step
leading to all of them: on a tab with several triggers a job names its trigger's entry (the job
header ``fluxo-entry``) and runs only what that trigger starts, as on Node-RED; otherwise (one
trigger feeding several nodes) the start step passes the message to all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from fluxo_core.errors import IRValidationError, ValidationError
from fluxo_core.ir import ENTRIES_LABEL, ENTRY_HEADER, Workflow
from nodered_semantics.events import (
    WATCHER_TYPES,
    completion_problem,
    emits_event,
    status_problem,
    watches,
)
from nodered_semantics.http_in import HTTP_ENDPOINT, HTTP_RESPONSE_TYPE
from nodered_semantics.network import ENDPOINT_KEY, NETWORK_IN, websocket_endpoint
from nodered_semantics.support import SUBFLOW_ENV
from nodered_semantics.typed_values import (
    SUBFLOW_ENV_TYPES,
    constant_value,
    subflow_env_values,
    typed_value_problem,
)
from translators._nodered_catch import catch_scopes, catchers, wire_catches
from translators._nodered_expr import literal
from translators._nodered_http import self_calls, with_self_call
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
MAX_LINK_CALL_DEPTH = 16  # link calls within link calls; deeper is a recursion, left out
MAX_COPIES = 20_000  # steps copied for link calls, subflow instances and loop passes
MAX_LOOP_PASSES = 16  # passes round loops (all loops of a path together) the import unrolls
LOOP = "loop"  # in a copy's context: one more pass round a loop
DROPPED_LABEL = "fluxo.dev/nodered-dropped"
"""What the import could not express and Node-RED would do (``loop``: a wire closing a loop was
cut; ``entries``: several triggers of a subflow, which Node-RED starts apart, now start
together; a tab's triggers each name their own entry instead), as a
``.``-joined label value: an engine other than Node-RED refuses such a workflow."""


# --- one workflow --------------------------------------------------------------------------------


@dataclass
class _Member:
    node: dict[str, Any]
    role: str  # step | trigger | splice | sink
    reason: str = ""
    mapping: NodeMapping = field(default_factory=lambda: NodeMapping("none", [], ""))
    step_ids: list[str] = field(default_factory=list)
    # A node brought in through links runs once per way in: its copy is keyed by the link calls
    # it runs within (``ctx``, outermost first); a node of the workflow's own tab outside any
    # call keeps its id as key.
    key: str = ""
    ctx: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.key = self.key or self.id

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
        self,
        box: _Container,
        index: Mapping[str, dict[str, Any]],
        classify: Callable[[dict[str, Any]], _Member],
        used: set[str],
        catches: Mapping[str, list[dict[str, Any]]],
        watchers: Mapping[str, list[dict[str, Any]]] | None = None,
    ):
        self.box = box
        # tab id -> its enabled status and complete nodes (nodered_semantics.events)
        self.watchers = watchers or {}
        self.index = index
        self.classify = classify
        self.used = used
        self.by_id = {m.key: m for m in box.members}
        self.own = set(self.by_id)
        self.borrowed: list[_Member] = []
        self.notes: list[str] = []
        self.catches = catches  # tab id -> its enabled catch nodes, in file order
        self.dropped: set[str] = set()  # behaviour the IR lost (see DROPPED_LABEL)
        self.trigger_entries: dict[str, str] = {}  # trigger node id -> the step a job names
        self.entry_count = 0  # the entries of a start step that a job's ENTRY_HEADER picks from

    # -- wiring ---------------------------------------------------------------------------------

    def member(self, nid: str, ctx: tuple[str, ...]) -> _Member | None:
        """The member node ``nid`` is within the link calls ``ctx``: the workflow's own, or a
        copy brought in through links (made on first use, with the catches it needs)."""
        if not ctx and nid in self.own:
            return self.by_id[nid]
        key = f"{nid}@{'|'.join(ctx)}"
        found = self.by_id.get(key)
        node = self.index.get(nid)
        if found is not None or node is None or not is_flow_node(node):
            return found
        env = self._subflow_env(ctx)
        copy = self.classify({**node, SUBFLOW_ENV: env} if env else node)
        copy.key, copy.ctx = key, ctx
        if copy.role == "sink" and node.get("type") == HTTP_RESPONSE_TYPE and self._caller(ctx):
            why = (
                "answers the http request node that called its endpoint: turns the answer into "
                "that node's message, on at its wires"
            )
            copy = _Member(copy.node, "step", mapping=native_mapping(copy.node, why))
            copy.key, copy.ctx = key, ctx
        if copy.role == "step":
            assign_step_ids(copy, self.used)
        self.by_id[key] = copy
        self.borrowed.append(copy)
        if copy.mapping.kind == "native":  # a failure here goes to the catches of its tab
            for catch in catchers(nid, self.catches.get(str(node.get("z") or ""), [])):
                self.member(str(catch["id"]), ctx)
        return copy

    def _subflow_env(self, ctx: tuple[str, ...]) -> dict[str, Any]:
        """The environment variables a node sees within the subflow instances of ``ctx``, as
        Node-RED resolves them: the innermost instance's first (its own values over its
        subflow's), then the instances around it; ``NR_SUBFLOW_NAME`` and ``NR_SUBFLOW_ID``
        name the innermost instance."""
        box = self.box.node
        env: dict[str, Any] = (
            subflow_env_values(box, {}, {}) if box is not None and box["type"] == "subflow" else {}
        )
        for key in ctx:
            instance = self.by_id[key].node if key != LOOP else None
            if instance is None or not str(instance["type"]).startswith("subflow:"):
                continue
            definition = self.index[str(instance["type"]).removeprefix("subflow:")]
            env = {**env, **subflow_env_values(definition, instance, env)}
            env["NR_SUBFLOW_NAME"] = instance.get("name") or ""
            env["NR_SUBFLOW_ID"] = instance["id"]
        return env

    def resolve(
        self, target: str, seen: set[Any] | None = None, ctx: tuple[str, ...] = ()
    ) -> list[str]:
        """The keys of the step members a wire to ``target`` reaches (within the link calls
        ``ctx``), through junctions, links, link calls and their returns."""
        seen = set() if seen is None else seen
        if (target, ctx) in seen:
            return []
        seen.add((target, ctx))
        member = self.member(target, ctx)
        if member is None:
            if target not in self.index:
                self.notes.append(
                    f"workflow {self.box.name!r}: a wire goes to {target!r}, which is not in the file"
                )
            return []
        if member.role == "step":
            return [member.key]
        if member.role != "splice":
            return []
        node = member.node
        kind = node["type"]
        if kind == "link out" and node.get("mode") == "return":
            calls = [
                i
                for i, k in enumerate(ctx)
                if k != LOOP and self.by_id[k].node["type"] == "link call"
            ]
            if not calls:  # nothing called it: Node-RED drops the message
                return []
            caller = self.by_id[ctx[calls[-1]]]
            parent = ctx[: calls[-1]]
            return [
                s for t in _flat(caller.node.get("wires")) for s in self.resolve(t, seen, parent)
            ]
        if kind == "link out":
            return [s for link in node.get("links") or [] for s in self.resolve(link, seen, ctx)]
        if kind == "link call":
            if self._too_many(ctx):
                return [self._too_deep(member).key]
            inner = (*ctx, member.key)
            return [s for link in node.get("links") or [] for s in self.resolve(link, seen, inner)]
        if kind.startswith("subflow:"):  # into this instance's copy of the subflow
            if self._too_many(ctx):
                return [self._too_deep(member).key]
            definition = self.index[kind.removeprefix("subflow:")]
            inner = (*ctx, member.key)
            found = [
                s
                for port in definition.get("in") or []
                for wire in _subflow_wires(port)
                for s in self.resolve(wire[0], seen, inner)
            ]
            for i, port in enumerate(definition.get("out") or []):
                if any(wire[0] == definition["id"] for wire in _subflow_wires(port)):
                    found += self._instance_port(member, i, seen, ctx)  # in straight to out
            return found
        return [s for t in _flat(node.get("wires")) for s in self.resolve(t, seen, ctx)]

    def _instance_port(
        self, instance: _Member, port: int, seen: set[Any] | None, ctx: tuple[str, ...]
    ) -> list[str]:
        """The steps output ``port`` of a subflow instance leads to (within ``ctx``)."""
        ports = _ports(instance.node)
        targets = ports[port] if port < len(ports) else []
        found = [s for t in targets for s in self.resolve(t, seen, ctx)]
        if instance.ctx:  # an instance within a subflow may feed that subflow's outputs
            found += self._subflow_outputs(instance).get(port, [])
        return found

    def _subflow_outputs(self, member: _Member) -> dict[int, list[str]]:
        """For a copy of a node inside a subflow instance: its ports wired to the subflow's
        outputs, and the steps those outputs lead to from the instance."""
        z = str(member.node.get("z") or "")
        inside = [
            i
            for i, k in enumerate(member.ctx)
            if k != LOOP and self.by_id[k].node["type"] == f"subflow:{z}"
        ]
        if not inside:
            return {}
        instance = self.by_id[member.ctx[inside[-1]]]
        parent = member.ctx[: inside[-1]]
        out: dict[int, list[str]] = {}
        for i, port in enumerate(self.index[z].get("out") or []):
            for nid, p in _subflow_wires(port):
                if nid == member.id:
                    out.setdefault(p, []).extend(self._instance_port(instance, i, None, parent))
        return out

    def _too_many(self, ctx: tuple[str, ...]) -> bool:
        """Whether a call or subflow instance within ``ctx`` is past the bounds on copies."""
        return (
            sum(k != LOOP for k in ctx) >= MAX_LINK_CALL_DEPTH or len(self.borrowed) >= MAX_COPIES
        )

    def _too_deep(self, call: _Member) -> _Member:
        """A link call or subflow instance past the bounds (nested too deep, a recursion, or
        too many copies): kept as a native step, which only Node-RED runs, so the step engine
        refuses the flow instead of cutting what the call runs."""
        key = f"{call.key}#deep"
        found = self.by_id.get(key)
        if found is not None:
            return found
        why = (
            f"calls nest deeper than {MAX_LINK_CALL_DEPTH} here (a recursion)"
            if sum(k != LOOP for k in call.ctx) >= MAX_LINK_CALL_DEPTH
            else f"the workflow holds {MAX_COPIES} copies of called nodes already"
        )
        self.notes.append(
            f"workflow {self.box.name!r}: {call.node['type']} node {call.id}: {why}; it stays a "
            "native step, which only Node-RED runs"
        )
        node = call.node
        if HTTP_ENDPOINT in node:  # a call of its own endpoint too deep: refused with why
            node = {**node, HTTP_ENDPOINT: {"refused": f"its endpoint's {why}"}}
        stub = _Member(node, "step", mapping=native_mapping(node, why))
        stub.key, stub.ctx = key, call.ctx
        assign_step_ids(stub, self.used)
        self.by_id[key] = stub
        self.borrowed.append(stub)
        return stub

    def _caller(self, ctx: tuple[str, ...]) -> _Member | None:
        """The innermost http request of ``ctx`` that calls the flow's own endpoint."""
        for key in reversed(ctx):
            found = self.by_id.get(key) if key != LOOP else None
            if found is not None and "id" in (found.node.get(HTTP_ENDPOINT) or {}):
                return found
        return None

    def _self_call_ports(self, member: _Member) -> list[list[str]] | None:
        """An http request calling the flow's own endpoint goes on into this call's copy of
        what its http in feeds; an http response within that copy goes on at the request's
        wires (None: neither)."""
        if member.node.get("type") == HTTP_RESPONSE_TYPE and member.ctx:
            caller = self._caller(member.ctx)
            if caller is None:
                return None
            parent = caller.ctx
            return [
                _unique(
                    s
                    for t in _flat(caller.node.get("wires"))
                    for s in self.resolve(t, None, parent)
                )
            ]
        endpoint = member.node.get(HTTP_ENDPOINT)
        if not isinstance(endpoint, Mapping) or "id" not in endpoint:
            return None
        if self._too_many(member.ctx):
            return [[self._too_deep(member).key]]
        http_in = self.index.get(str(endpoint["id"]))
        inner = (*member.ctx, member.key)
        return [
            _unique(
                s for t in _flat((http_in or {}).get("wires")) for s in self.resolve(t, None, inner)
            )
        ]

    def step_ports(self, member: _Member) -> list[list[str]]:
        if member.key.endswith("#bound"):
            return [[]]
        if not member.key.endswith("#deep"):
            called = self._self_call_ports(member)
            if called is not None:
                return called
        if member.key.endswith("#pass"):  # on along the junction's wires or the link's links
            node = member.node
            ahead = node.get("links") if node["type"] == "link out" else _flat(node.get("wires"))
            return [_unique(s for t in ahead or [] for s in self.resolve(t, None, member.ctx))]
        ports = _ports(member.node)
        outputs = self._subflow_outputs(member) if member.ctx else {}
        ports += [[] for _ in range(max(outputs, default=-1) + 1 - len(ports))]
        several = member.mapping.kind == "native" and sum(1 for port in ports if port) > 1
        wired = [
            _unique(
                [
                    s
                    for t in port
                    for s in (
                        self._passing(t, member.ctx)
                        if several
                        else self.resolve(t, None, member.ctx)
                    )
                ]
                + outputs.get(p, [])
            )
            for p, port in enumerate(ports)
        ]
        watching = self._watching(member)
        return [*wired, watching] if watching else wired

    def _watching(self, member: _Member) -> list[str]:
        """The status and complete steps a native step's events go to (an edge the step
        engine tells from its wires: nodered_semantics.events), within its link calls."""
        if member.mapping.kind != "native":
            return []
        node = member.node
        wired = set(_flat(node.get("wires")))
        found: list[str] = []
        for watcher in self.watchers.get(str(node.get("z") or ""), []):
            kind = str(watcher["type"])
            if str(watcher["id"]) in wired or not watches(watcher, node):
                continue
            if not emits_event(node, kind):
                continue
            target = self.member(str(watcher["id"]), member.ctx)
            if target is not None and target.role == "step":
                found.append(target.key)
        return found

    def unreported_events(self) -> None:
        """Mark the workflow when a status or complete node watches a node of the tab whose
        events no step reports (a trigger, a mapped step, a sink): the step engine refuses
        it, as its job would miss what Node-RED sends (DROPPED_LABEL)."""
        seen: set[str] = set()
        for m in [*self.box.members, *self.borrowed]:  # copies brought in through links too
            node = m.node
            if node.get("d") is True or (m.role == "step" and m.mapping.kind == "native"):
                continue
            if m.id in seen:
                continue
            seen.add(m.id)
            for watcher in self.watchers.get(str(node.get("z") or ""), []):
                if not watches(watcher, node):
                    continue
                kind = str(watcher["type"])
                problem = status_problem(node) if kind == "status" else completion_problem(node)
                if problem is None and emits_event(node, kind):
                    problem = f"its {m.mapping.kind} step does not report it"
                if problem is None:
                    continue
                self.dropped.add(kind)
                self.notes.append(
                    f"workflow {self.box.name!r}: {kind} node {watcher['id']} watches "
                    f"{node['type']} node {m.id}, but {problem}; the step engine would not send "
                    "what Node-RED sends to it"
                )

    def _passing(self, target: str, ctx: tuple[str, ...]) -> list[str]:
        """The steps a port of a native node with several ports reaches at ``target``: a
        junction or link out there becomes a native step passing messages on, so the engine
        can tell the ports apart by the node ids their steps carry."""
        member = self.member(target, ctx)
        if member is None or member.role != "splice":
            return self.resolve(target, None, ctx)
        kind = member.node["type"]
        if kind == "junction" or (kind == "link out" and member.node.get("mode") != "return"):
            key = f"{member.key}#pass"
            passing = self.by_id.get(key)
            if passing is None:
                why = f"a {kind} a port of a node with several outputs leads to: passes messages on"
                passing = _Member(member.node, "step", mapping=native_mapping(member.node, why))
                passing.key, passing.ctx = key, ctx
                assign_step_ids(passing, self.used)
                self.by_id[key] = passing
                self.borrowed.append(passing)
            return [passing.key]
        return self.resolve(target, None, ctx)

    # -- the workflow ---------------------------------------------------------------------------

    def build(self, subflow_out: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The workflow document and the step nodes that start it."""
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
        steps = [m for m in self.box.members if m.role == "step"]
        ports: dict[str, list[list[str]]] = {}
        steps = self._expand(steps, ports)
        # Loops are unrolled: the wire that closes one goes on to a copy of the loop for the
        # next pass, up to MAX_LOOP_PASSES; past that a step fails the job, saying so.
        unrolled: set[str] = set()
        for _ in range(MAX_LOOP_PASSES + 1):
            succ = self._successors(steps, ports)
            roots = self._roots(steps, succ, triggered_set)
            back = self._back_edges([m.key for m in steps], succ, roots)
            if not back:
                break
            for src, dst in sorted(back):
                unrolled.add(f"{self.by_id[src].id} -> {self.by_id[dst].id}")
                again = self._next_pass(self.by_id[dst]).key
                ports[src] = [[again if t == dst else t for t in port] for port in ports[src]]
            steps = self._expand(steps, ports)
        for wire in sorted(unrolled):
            self.notes.append(
                f"workflow {self.box.name!r}: the wire {wire} closes a loop: the loop is unrolled "
                f"to {MAX_LOOP_PASSES} passes; a message going round more often fails the job"
            )
        if unrolled:
            succ = self._successors(steps, ports)
        self.unreported_events()
        fanouts, catches = wire_catches(self.box.name, steps, succ, self.notes)
        if catches:
            roots = self._roots(steps, succ, triggered_set, catches)
            # A catch some failure goes to is entered that way only: visited first, so what
            # it feeds is not taken for a root, then dropped from the roots. (A catch no
            # failure goes to stays a root, which the step engine refuses.)
            back = self._back_edges([*catches, *(m.key for m in steps)], succ, roots)
            roots[:] = [r for r in roots if r not in catches]
        elif unrolled:
            roots = self._roots(steps, succ, triggered_set)
            back = self._back_edges([m.key for m in steps], succ, roots)

        for m in steps:
            self._fill_next(m, ports[m.key], back)
        self._resolve_joins(steps)

        bodies: list[dict[str, Any]] = []
        for m in steps:
            for sid, body in zip(m.step_ids, m.mapping.steps, strict=True):
                bodies.append({"id": sid, **body})
        bodies += fanouts
        entries = _unique(self.by_id[r].entry for r in roots)
        spec: dict[str, Any] = {}
        triggers = [m for m in self.box.members if m.role == "trigger"]
        in_subflow = self.box.node is not None and self.box.node.get("type") == "subflow"
        # A network in node (tcp/udp/websocket in) starts its own jobs, as a trigger does.
        listening = [m for m in steps if m.node.get("type") in NETWORK_IN and m.key in roots]
        if len(entries) == 1:
            spec["start"] = entries[0]
        elif len(entries) > 1 and len(triggers) + len(listening) > 1 and not in_subflow:
            bodies[:0] = self._entry_steps(triggers, entries)
        else:
            if len(entries) > 1 and len(triggers) > 1:  # a subflow's job starts at its input
                self.dropped.add("entries")
                self.notes.append(
                    f"workflow {self.box.name!r} has {len(triggers)} entry points: the IR starts all "
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

    def _entry_steps(self, triggers: list[_Member], roots: list[str]) -> list[dict[str, Any]]:
        """The start of a tab with several triggers: a job begins at the entry its
        ``ENTRY_HEADER`` names, as Node-RED runs only the nodes of the trigger that fired.

        A trigger's entry is the step it feeds, or a step fanning out to the steps it feeds
        (``self.trigger_entries``); the start step leads to every entry (the steps nothing
        feeds are entries of their own) and fails a job that names none, rather than start
        every trigger's nodes together."""
        bodies: list[dict[str, Any]] = []
        started: set[str] = set()
        for trigger in triggers:
            targets = _unique(
                self.by_id[s].entry
                for t in _flat(trigger.node.get("wires"))
                for s in self.resolve(t)
            )
            started.update(targets)
            if len(targets) == 1:
                self.trigger_entries[trigger.id] = targets[0]
            elif targets:
                sid = _free_id(
                    slug(f"entry-{trigger.node.get('name') or trigger.id}", limit=40), self.used
                )
                self.trigger_entries[trigger.id] = sid
                # A switch passes any payload on as it is (a transform must give an object).
                bodies.append(
                    {
                        "id": sid,
                        "name": f"Entry of {trigger.node['type']} {trigger.id}",
                        "kind": "switch",
                        "cases": [{"when": {"jsonata": "true"}, "next": targets}],
                    }
                )
        named = _unique(self.trigger_entries.values())
        why = (
            f"workflow {self.box.name!r} has {len(triggers)} triggers, and Node-RED starts only "
            f"the nodes of the one that fired: start the job at one entry with the header "
            f"{ENTRY_HEADER!r} naming its step ("
            + ", ".join(
                f"{t.node['type']} {t.id}: {self.trigger_entries[t.id]}"
                for t in triggers
                if t.id in self.trigger_entries
            )
            + ")"
        )
        self.notes.append(
            f"workflow {self.box.name!r} has {len(triggers)} entry points: a job begins at the "
            f"entry its header {ENTRY_HEADER!r} names (each trigger names its own), as Node-RED "
            "starts only the nodes of the trigger that fired"
        )
        start = {
            "id": "start",
            "name": "Entry",
            "kind": "transform",
            "ops": [{"op": "jsonata", "expr": f"$error({literal(why)})"}],
            "next": _unique([*named, *(r for r in roots if r not in started)]),
        }
        self.entry_count = len(start["next"])
        return [start, *bodies]

    def _expand(self, steps: list[_Member], ports: dict[str, list[list[str]]]) -> list[_Member]:
        """``steps`` with every copy their wires bring in; fills ``ports`` for the new ones."""
        done = 0
        while done < len(steps) or len(steps) < len(self._steps(steps)):
            steps = self._steps(steps)
            for m in steps[done:]:
                if m.key not in ports:
                    ports[m.key] = self.step_ports(m)  # may bring in more copies
                done += 1
        return steps

    @staticmethod
    def _successors(
        steps: list[_Member], ports: Mapping[str, list[list[str]]]
    ) -> dict[str, list[str]]:
        return {m.key: _unique(t for port in ports[m.key] for t in port) for m in steps}

    @staticmethod
    def _roots(
        steps: list[_Member],
        succ: Mapping[str, list[str]],
        triggered: set[str],
        catches: Iterable[str] = (),
    ) -> list[str]:
        """The steps a workflow starts at: those triggers feed and those nothing feeds."""
        fed = {t for targets in succ.values() for t in targets}
        skip = set(catches)
        return [
            m.key for m in steps if (m.key in triggered or m.key not in fed) and m.key not in skip
        ]

    def _next_pass(self, entry: _Member) -> _Member:
        """The copy of loop entry ``entry`` for the next pass round its loop (or, past the
        bound, a step that fails the job)."""
        if entry.ctx.count(LOOP) < MAX_LOOP_PASSES and len(self.borrowed) < MAX_COPIES:
            found = self.member(entry.id, (*entry.ctx, LOOP))
            assert found is not None  # entry's node is a flow node of the file
            return found
        key = f"{entry.key}#bound"
        bound = self.by_id.get(key)
        if bound is None:
            passes = entry.ctx.count(LOOP)
            limit = (
                f"unrolls loops to {MAX_LOOP_PASSES} passes"
                if passes >= MAX_LOOP_PASSES
                else f"copies at most {MAX_COPIES} steps into a workflow"
            )
            why = (
                f"a message went round the loop at node {entry.id} more than {passes} times: "
                f"the step engine {limit}; run the flow on the nodered engine"
            )
            body = {
                "kind": "transform",
                "name": "Loop bound",
                "ops": [{"op": "jsonata", "expr": f"$error({literal(why)})"}],
            }
            bound = _Member(entry.node, "step", mapping=NodeMapping("transform", [body], why))
            bound.key, bound.ctx = key, entry.ctx
            assign_step_ids(bound, self.used)
            self.by_id[key] = bound
            self.borrowed.append(bound)
        return bound

    def _steps(self, steps: list[_Member]) -> list[_Member]:
        """``steps`` and the step copies brought in since, in that order."""
        known = {m.key for m in steps}
        return steps + [m for m in self.borrowed if m.role == "step" and m.key not in known]

    def _labels(self) -> dict[str, str]:
        labels = dict(SOURCE_LABEL)
        if self.dropped:
            labels[DROPPED_LABEL] = ".".join(sorted(self.dropped))
        if self.entry_count:
            labels[ENTRIES_LABEL] = str(self.entry_count)
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
        return back

    def _fill_next(self, m: _Member, ports: list[list[str]], back: set[tuple[str, str]]) -> None:
        mapping = m.mapping
        live = [[self.by_id[t].entry for t in port if (m.key, t) not in back] for port in ports]
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
        # A native join reads msg.parts, which only Node-RED's split writes: a split leading
        # to one stays native too (unless an IR join pairs with it).
        native_joins = {
            m.exit for m in steps if m.mapping.kind == "native" and m.node.get("type") == "join"
        }
        for m in steps:
            if m.exit in reached and m.exit not in claimed and reached[m.exit] & native_joins:
                nxt = m.mapping.steps[-1]["next"]
                m.mapping = native_mapping(
                    m.node, "it leads to a join that reads msg.parts, which only the node writes"
                )
                m.mapping.steps[-1]["next"] = nxt


# --- the whole file ------------------------------------------------------------------------------


def _config_users(nodes: list[dict[str, Any]], configs: set[str]) -> dict[str, int]:
    users = dict.fromkeys(configs, 0)
    if not users:  # no configuration node: no value of any node to look at
        return users
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


def _free_id(base: str, used: set[str]) -> str:
    """``base`` or ``base-2``, ``base-3``... whichever is not in ``used`` (and now is)."""
    sid, n = base, 2
    while sid in used:
        sid = f"{base}-{n}"
        n += 1
    used.add(sid)
    return sid


def assign_step_ids(member: _Member, used: set[str]) -> None:
    """Readable step ids for a step member, unique in the workflow (``used``)."""
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


def _subflow_wires(port: Any) -> list[tuple[str, int]]:
    """The ``(node id, port)`` pairs of a subflow definition's input or output."""
    wires = port.get("wires") if isinstance(port, Mapping) else None
    return [
        (str(w["id"]), int(w.get("port") or 0))
        for w in wires or []
        if isinstance(w, Mapping) and isinstance(w.get("id"), str)
    ]


def _inlined_subflow(node: Mapping[str, Any], index: Mapping[str, dict[str, Any]]) -> str | None:
    """Why a subflow instance cannot run as a copy of its subflow's nodes, or None if it can."""
    definition = index.get(str(node["type"]).removeprefix("subflow:"))
    if definition is None or definition.get("type") != "subflow":
        return "its subflow definition is not in the file"
    for prop in [*(definition.get("env") or []), *(node.get("env") or [])]:
        kind = prop.get("type") if isinstance(prop, Mapping) else None
        if kind not in SUBFLOW_ENV_TYPES:
            return (
                f"its subflow property {prop.get('name') if isinstance(prop, Mapping) else prop!r}"
                f" is of type {kind!r}; a copy of its nodes can set {', '.join(SUBFLOW_ENV_TYPES)}"
            )
        problem = None if kind == "env" else typed_value_problem(prop.get("value"), kind)
        if problem is not None:
            return f"its subflow property {prop.get('name')!r}: {problem}"
    for port in definition.get("out") or []:
        for nid, _ in _subflow_wires(port):
            target = index.get(nid)
            if nid == definition["id"]:
                continue
            if target is None or target.get("type") in ("junction", "link in", "link out"):
                return f"an output of its subflow comes from {nid!r}, which is no step"
            if len(_ports(target)) > 1 and target.get("type") != "switch":
                # The step engine tells a native node's ports apart by the wires in its
                # configuration, which do not hold the subflow's outputs.
                return f"an output of its subflow comes from {nid!r}, a node with several outputs"
    return None


def _classify(
    node: dict[str, Any],
    subflows: Mapping[str, str],
    scoped: Mapping[str, str],
    index: Mapping[str, dict[str, Any]],
    watched: Collection[str] = (),
) -> _Member:
    """What one flow node is in its workflow (a fresh member each call: copies differ)."""
    kind = node["type"]
    not_inlined = (
        _inlined_subflow(node, index)
        if kind.startswith("subflow:") and node.get("d") is not True
        else "not an enabled subflow instance"
    )
    if not_inlined is None:
        return _Member(
            node,
            "splice",
            "a subflow instance: its subflow's nodes are copied into this workflow, one copy "
            "per instance, wired to the instance's wires",
        )
    if node.get("d") is True:
        return _Member(node, "sink", "disabled in Node-RED: it passes no messages")
    if kind == "debug" and str(node["id"]) in watched:
        return _Member(
            node,
            "step",
            mapping=native_mapping(
                node,
                "watched by a status or complete node: kept as a step reporting its status "
                "and completion to it",
            ),
        )
    if kind in _SINKS:
        return _Member(node, "sink", _SINKS[kind])
    if kind in ("inject", "http in"):
        return _Member(node, "trigger")
    if kind == "junction":
        return _Member(node, "splice", "a junction only joins wires: its wires became IR edges")
    if kind == "link in":
        return _Member(
            node,
            "splice",
            "a link in only continues wires: its links became IR edges "
            "(links from other tabs start this workflow)",
        )
    if kind == "link out" and node.get("mode") == "return":
        return _Member(
            node,
            "splice",
            "a return link out continues at the link call that called it: its copy of the "
            "called nodes is wired on to the call's wires",
        )
    if kind == "link out":
        return _Member(
            node,
            "splice",
            "a link out only continues wires: its links became IR edges (the nodes it reaches "
            "on other tabs are copied into this workflow)",
        )
    if kind == "link call" and node.get("linkType", "static") == "static":
        return _Member(
            node,
            "splice",
            "a link call runs the nodes of the link in it calls up to their return link out: "
            "this workflow holds a copy of them per call, wired on to the call's wires",
        )
    if kind.startswith("subflow:") and node.get("env"):  # a workflow call cannot pass env
        why = f"its subflow's nodes cannot be copied here: {not_inlined}; it runs on Node-RED"
        return _Member(node, "step", mapping=native_mapping(node, why))
    if kind in ("websocket in", "websocket out"):  # its config node, for the step engine
        endpoint = websocket_endpoint(node, index)
        node = {**node, ENDPOINT_KEY: endpoint} if endpoint is not None else node
    return _Member(node, "step", mapping=map_node(node, subflows, scoped.get(node["id"])))


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

    scoped = catch_scopes(nodes)
    catches_by_tab: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        if node["type"] == "catch" and node.get("d") is not True:
            catches_by_tab.setdefault(str(node.get("z") or ""), []).append(node)

    watchers_by_tab: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        if node["type"] in WATCHER_TYPES and node.get("d") is not True:
            watchers_by_tab.setdefault(str(node.get("z") or ""), []).append(node)
    # Debug nodes a status or complete node gets events of: steps, not sinks.
    watched = {
        str(node["id"])
        for node in nodes
        if node["type"] == "debug"
        and node.get("d") is not True
        and any(
            watches(w, node) and emits_event(node, str(w["type"]))
            for w in watchers_by_tab.get(str(node.get("z") or ""), [])
        )
    }

    # Delays an inject sends msg.reset or msg.flush: those act on the messages the delay holds,
    # which a delay step does not keep; kept as the node, whose state the step engine keeps.
    controlled = {
        target
        for node in nodes
        if node["type"] == "inject"
        and any(
            isinstance(p, dict) and p.get("p") in ("reset", "flush")
            for p in node.get("props") or []
        )
        for port in node.get("wires") or []
        for target in port
    }
    # http request nodes calling the flow's own http in endpoints: which one, or why not.
    calls_itself = self_calls(nodes)

    def classify(node: dict[str, Any]) -> _Member:
        if node["type"] == "delay" and node["id"] in controlled:
            why = "it receives msg.reset/msg.flush, which act on the messages it holds"
            return _Member(node, "step", mapping=native_mapping(node, why))
        return _classify(with_self_call(node, calls_itself), subflows, scoped, index, watched)

    # A subflow's own workflow: its nodes see the subflow's properties as an instance that sets
    # none would give them.
    template_env = {
        b.id: subflow_env_values(b.node, {}, {})
        for b in containers
        if b.node is not None and b.node["type"] == "subflow" and b.node.get("env")
    }
    for node in nodes:
        if is_flow_node(node):
            z = str(node.get("z") or "")
            env = template_env.get(z)
            boxes[z].members.append(classify({**node, SUBFLOW_ENV: env} if env else node))

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
            if member.role == "step":
                assign_step_ids(member, used)
        builder = _Builder(box, index, classify, used, catches_by_tab, watchers_by_tab)
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
                trigger = dataclasses.replace(trigger, entry=builder.trigger_entries.get(member.id))
                triggers.append(trigger)
                record(member.node, box.name, "mapped", f"trigger {trigger.kind}", reason)
            else:
                record(member.node, box.name, "dropped", None, member.reason + "; kept for export")
        step_nodes = {sid: m.id for m in [*box.members, *builder.borrowed] for sid in m.step_ids}
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
            step_calls={
                sid: calls
                for m in builder.borrowed
                if (calls := tuple(key.split("@")[0] for key in m.ctx if key != LOOP))
                for sid in m.step_ids
            },
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
