"""A workflow's graph as inline SVG, laid out in layers from the IR (a small Sugiyama layout).

The layout runs in named passes, each deterministic (ties break by the order steps are listed):

1. ``_edges``: the IR's links as drawn edges: ``next``, each switch case (labelled with its
   condition), the switch default, and ``on_error.goto`` (dashed). A workflow is acyclic over
   all of them (the IR refuses cycles), so they define a DAG.
2. ``_layers``: longest-path layering from the sources: every edge points down.
3. ``_dummies``: an edge spanning several layers gets one bend point per layer it crosses, so
   it is routed around the nodes in between (bounded: past ``MAX_BENDS`` in all, long edges are
   drawn straight).
4. ``_order``: barycentre sweeps, down then up, to reduce crossings.
5. ``_place``: x coordinates by isotonic regression (pool adjacent violators) towards the mean
   of each node's neighbours, keeping the order and a minimum gap: nodes never overlap.

:func:`render_graph` draws the result. Every node is a ``<g class="node ...">`` with
``data-step`` and, when step states are given, a ``state-<phase>`` class, so a job page can
recolour it live by changing the class; colours live in the console's stylesheet, not here.
Everything is O(steps + edges + bends) per pass; 500 steps lay out in milliseconds
(``bench/console_graph.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from markupsafe import Markup, escape

from fluxo_core.engine import StepState
from fluxo_core.ir import (
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    DelayStep,
    JoinStep,
    JsonataCondition,
    NativeStep,
    Not,
    OnErrorGoto,
    ServiceStep,
    SplitStep,
    Step,
    SwitchStep,
    Workflow,
    WorkflowCallStep,
)

__all__ = [
    "STATES",
    "GraphEdge",
    "GraphLayout",
    "GraphNode",
    "layout_graph",
    "render_graph",
    "step_phases",
]

STATES: Final = (
    "pending",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
    "blocked",
)
"""The step phases a node can be coloured by (``fluxo_core.engine.StepPhase``)."""
_PRECEDENCE: Final = (
    "failed",
    "blocked",
    "running",
    "waiting",
    "pending",
    "cancelled",
    "succeeded",
    "skipped",
)
"""Which phase a step shows when it ran several times (a branch per item of a split): the
first found here, so one failed branch shows, and a step is green only when all are done."""

NODE_W: Final = 224
NODE_H: Final = 52
BEND_W: Final = 16
H_GAP: Final = 28
LAYER_GAP: Final = 64
MARGIN: Final = 16
MAX_BENDS: Final = 4000
"""Bend points in all; past this a long edge is drawn straight, which keeps a huge graph's
layout linear instead of quadratic in its depth."""
SWEEPS: Final = 4
NAME_CHARS: Final = 28
DETAIL_CHARS: Final = 34
LABEL_CHARS: Final = 28
_OPS: Final = {
    "eq": "=",
    "ne": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": "in",
    "contains": "contains",
    "regex": "~",
}

Gettext = Callable[[str], str]

# Presentation attributes: the graph reads well on a page without static/graph.css; that
# stylesheet's rules (by class) take precedence, so a page can still recolour a node live.
_KIND_PAINT: Final = {
    "switch": ("#fef9c3", "#a16207"),
    "split": ("#e0e7ff", "#4338ca"),
    "join": ("#e0e7ff", "#4338ca"),
    "transform": ("#f1f5f9", "#64748b"),
    "native": ("#fce7f3", "#9d174d"),
}
_STATE_PAINT: Final = {
    "pending": ("#f8fafc", "#94a3b8"),
    "running": ("#dbeafe", "#1d4ed8"),
    "waiting": ("#dbeafe", "#1d4ed8"),
    "succeeded": ("#dcfce7", "#15803d"),
    "failed": ("#fee2e2", "#b91c1c"),
    "blocked": ("#ffedd5", "#c2410c"),
    "cancelled": ("#f1f5f9", "#94a3b8"),
    "skipped": ("#f1f5f9", "#94a3b8"),
}
_PLAIN: Final = ("#ffffff", "#64748b")
_EDGE_PAINT: Final = {
    "goto": ' stroke="#b91c1c" stroke-dasharray="6 4"',
    "default": ' stroke-dasharray="2 3"',
}


@dataclass(frozen=True, slots=True)
class GraphNode:
    """A step's box: its top-left corner and size in SVG user units."""

    step_id: str
    kind: str
    name: str
    detail: str
    layer: int
    x: float
    y: float
    width: float = NODE_W
    height: float = NODE_H


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """A drawn link: ``kind`` is next, case, default or goto; ``points`` its route."""

    source: str
    target: str
    kind: str
    label: str | None
    points: tuple[tuple[float, float], ...]
    fanout: bool = False


@dataclass(frozen=True, slots=True)
class GraphLayout:
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    width: float
    height: float


@dataclass(slots=True)
class _Vertex:
    """A node of the layered graph: a step, or a bend point of a long edge (``step`` None)."""

    key: str
    layer: int
    width: float
    step: Step | None = None
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    x: float = 0.0


@dataclass(slots=True)
class _Link:
    source: str
    target: str
    kind: str
    label: str | None
    route: list[str] = field(default_factory=list)  # the bend vertices, top to bottom


def layout_graph(workflow: Workflow, gettext: Gettext | None = None) -> GraphLayout:
    """Where each step and edge of ``workflow`` goes (see the module's passes)."""
    _ = gettext or _identity
    steps = workflow.spec.steps
    links = _edges(steps, _)
    layer_of = _layers(steps, links)
    vertices = {s.id: _Vertex(key=s.id, layer=layer_of[s.id], width=NODE_W, step=s) for s in steps}
    _dummies(vertices, links)
    rows = _order(vertices, [s.id for s in steps])
    _place(vertices, rows)

    left = min((v.x - v.width / 2 for v in vertices.values()), default=0.0)
    for v in vertices.values():  # x is a vertex's centre
        v.x += MARGIN - left
    width = max((v.x + v.width / 2 for v in vertices.values()), default=0.0) + MARGIN
    height = len(rows) * (NODE_H + LAYER_GAP) - LAYER_GAP + 2 * MARGIN

    def top(layer: int) -> float:
        return MARGIN + layer * (NODE_H + LAYER_GAP)

    nodes = tuple(
        GraphNode(
            step_id=s.id,
            kind=s.kind,
            name=s.name or s.id,
            detail=_detail(s, _),
            layer=vertices[s.id].layer,
            x=vertices[s.id].x - NODE_W / 2,
            y=top(vertices[s.id].layer),
        )
        for s in steps
    )
    edges = []
    for link in links:
        source, target = vertices[link.source], vertices[link.target]
        points = [(source.x, top(source.layer) + NODE_H)]
        for key in link.route:
            bend = vertices[key]
            points += [(bend.x, top(bend.layer)), (bend.x, top(bend.layer) + NODE_H)]
        points.append((target.x, top(target.layer)))
        edges.append(
            GraphEdge(
                source=link.source,
                target=link.target,
                kind=link.kind,
                label=link.label,
                points=tuple(points),
                fanout=isinstance(source.step, SplitStep),
            )
        )
    return GraphLayout(nodes=nodes, edges=tuple(edges), width=width, height=height)


def step_phases(steps: Iterable[StepState]) -> dict[str, str]:
    """The phase of each step of a job, from its executions (see ``_PRECEDENCE``)."""
    seen: dict[str, set[str]] = {}
    for state in steps:
        seen.setdefault(state.step_id, set()).add(state.phase)
    return {
        step_id: next((p for p in _PRECEDENCE if p in phases), "pending")
        for step_id, phases in seen.items()
    }


def render_graph(
    workflow: Workflow,
    step_states: Mapping[str, str] | Iterable[StepState] | None = None,
    *,
    gettext: Gettext | None = None,
    element_id: str | None = None,
) -> Markup:
    """The workflow's graph as an inline ``<svg>`` element.

    Args:
        workflow: the workflow version to draw.
        step_states: the phase of each step (a job page), or the job's step executions
            (folded by :func:`step_phases`); a step left out is ``pending``. Without it (a
            workflow page) nodes carry no state class.
        gettext: translates the few words the graph writes (``default``, ``on error``, ...).
        element_id: the ``id`` of the ``<svg>``, which prefixes its inner ids (two graphs on one
            page must differ); derived from the workflow's name when absent.
    """
    _ = gettext or _identity
    if step_states is not None and not isinstance(step_states, Mapping):
        step_states = step_phases(step_states)
    layout = layout_graph(workflow, gettext)
    base = element_id or f"graph-{workflow.metadata.name}"
    title = _("Workflow %(name)s: %(count)d steps") % {
        "name": workflow.metadata.name,
        "count": len(layout.nodes),
    }
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fluxo-graph" id="{escape(base)}" '
        'font-family="system-ui, sans-serif" '
        f'viewBox="0 0 {_n(layout.width)} {_n(layout.height)}" width="{_n(layout.width)}" '
        f'height="{_n(layout.height)}" role="img" aria-label="{escape(title)}" '
        f'aria-labelledby="{escape(base)}-title">',
        f'<title id="{escape(base)}-title">{escape(title)}</title>',
        f'<defs><marker id="{escape(base)}-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="10" markerHeight="10" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" class="arrow" fill="#64748b"/></marker></defs>',
        '<g class="edges">',
    ]
    for edge in layout.edges:
        out.append(_edge_svg(edge, f"{base}-arrow"))
    out.append('</g><g class="nodes">')
    start = workflow.spec.start_id
    for node in layout.nodes:
        state = None
        if step_states is not None:
            state = step_states.get(node.step_id, "pending")
            state = state if state in STATES else None  # never an unknown word as a class
        out.append(_node_svg(node, state, is_start=node.step_id == start))
    out.append("</g></svg>")
    return Markup("".join(out))


# --- pass 1: edges --------------------------------------------------------------------------


def _edges(steps: Sequence[Step], _: Gettext) -> list[_Link]:
    """The drawn edges, one per (source, target, kind); labels of parallel cases joined."""
    links: dict[tuple[str, str, str], _Link] = {}

    def add(source: str, target: str, kind: str, label: str | None) -> None:
        found = links.get((source, target, kind))
        if found is None:
            links[(source, target, kind)] = _Link(source, target, kind, label)
        elif label and found.label != label:
            found.label = f"{found.label} | {label}" if found.label else label

    for step in steps:
        if isinstance(step, SwitchStep):
            for case in step.cases:
                label = _condition_text(case.when)
                for target in case.next:
                    add(step.id, target, "case", label)
            for target in step.default:
                add(step.id, target, "default", _("default"))
        else:
            for target in step.next:
                add(step.id, target, "next", None)
        if isinstance(step.on_error, OnErrorGoto):
            add(step.id, step.on_error.goto, "goto", _("on error"))
    return list(links.values())


def _condition_text(condition: Condition) -> str:
    if isinstance(condition, Comparison):
        if condition.op == "exists":
            return f"{condition.path} ∃"
        if condition.op == "not_exists":
            return f"{condition.path} ∄"
        value = condition.value
        shown = (
            "[" + ", ".join(str(v) for v in value) + "]" if isinstance(value, list) else str(value)
        )
        return f"{condition.path} {_OPS[condition.op]} {shown}"
    if isinstance(condition, AllOf):
        return " and ".join(_condition_text(c) for c in condition.all)
    if isinstance(condition, AnyOf):
        return " or ".join(_condition_text(c) for c in condition.any)
    if isinstance(condition, Not):
        return f"not ({_condition_text(condition.not_)})"
    assert isinstance(condition, JsonataCondition)  # the union's last member, for mypy
    return condition.jsonata


# --- pass 2: layers -------------------------------------------------------------------------


def _layers(steps: Sequence[Step], links: Sequence[_Link]) -> dict[str, int]:
    """Longest-path layering: a step sits one layer below the lowest step leading to it."""
    index = {s.id: n for n, s in enumerate(steps)}
    downs: dict[str, list[str]] = {s.id: [] for s in steps}
    waiting = dict.fromkeys(index, 0)
    for link in links:
        downs[link.source].append(link.target)
        waiting[link.target] += 1
    layer = dict.fromkeys(index, 0)
    ready = sorted((sid for sid, n in waiting.items() if n == 0), key=index.__getitem__)
    seen = 0
    while ready:
        sid = ready.pop(0)
        seen += 1
        for target in downs[sid]:
            layer[target] = max(layer[target], layer[sid] + 1)
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
        ready.sort(key=index.__getitem__)
    if seen != len(steps):  # the IR refuses cycles; a hand-built model might not
        raise ValueError(f"workflow graph has a cycle among {len(steps) - seen} steps")
    return layer


# --- pass 3: bend points --------------------------------------------------------------------


def _dummies(vertices: dict[str, _Vertex], links: Sequence[_Link]) -> None:
    budget = MAX_BENDS
    for n, link in enumerate(links):
        source, target = vertices[link.source], vertices[link.target]
        span = target.layer - source.layer - 1
        previous = source
        if 0 < span <= budget:
            budget -= span
            for layer in range(source.layer + 1, target.layer):
                bend = _Vertex(key=f"\0{n}:{layer}", layer=layer, width=BEND_W)
                vertices[bend.key] = bend
                link.route.append(bend.key)
                previous.down.append(bend.key)
                bend.up.append(previous.key)
                previous = bend
        previous.down.append(target.key)
        target.up.append(previous.key)


# --- pass 4: order within layers ------------------------------------------------------------


def _order(vertices: Mapping[str, _Vertex], step_order: Sequence[str]) -> list[list[str]]:
    depth = max(v.layer for v in vertices.values()) + 1
    rows: list[list[str]] = [[] for _ in range(depth)]
    # Start from a depth-first order from the top, following each step's edges in the order they
    # are written: a switch's first case ends up leftmost.
    visited: set[str] = set()
    for root in step_order:
        if vertices[root].up or root in visited:
            continue
        stack = [root]
        while stack:
            key = stack.pop()
            if key in visited:
                continue
            visited.add(key)
            rows[vertices[key].layer].append(key)
            stack.extend(reversed(vertices[key].down))
    for key in step_order:  # unreachable from a source cannot happen in a DAG; kept total
        if key not in visited:
            rows[vertices[key].layer].append(key)
    position = {key: n for row in rows for n, key in enumerate(row)}
    for _sweep in range(SWEEPS):
        for n in range(1, depth):
            _sort_by_barycentre(rows[n], position, vertices, upward=True)
        for n in range(depth - 2, -1, -1):
            _sort_by_barycentre(rows[n], position, vertices, upward=False)
    for n in range(1, depth):
        _sort_by_barycentre(rows[n], position, vertices, upward=True)
    return rows


def _sort_by_barycentre(
    row: list[str], position: dict[str, int], vertices: Mapping[str, _Vertex], *, upward: bool
) -> None:
    def key(vertex_key: str) -> tuple[float, int]:
        vertex = vertices[vertex_key]
        near = vertex.up if upward else vertex.down
        here = position[vertex_key]
        if not near:
            return (float(here), here)
        return (sum(position[k] for k in near) / len(near), here)

    row.sort(key=key)
    for n, vertex_key in enumerate(row):
        position[vertex_key] = n


# --- pass 5: x coordinates ------------------------------------------------------------------


def _place(vertices: Mapping[str, _Vertex], rows: Sequence[list[str]]) -> None:
    for row in rows:
        x = 0.0
        for key in row:
            vertex = vertices[key]
            vertex.x = x + vertex.width / 2
            x += vertex.width + H_GAP
    order = list(range(len(rows)))
    for rounds in range(3):
        for n in order[1:] if rounds % 2 == 0 else reversed(order[:-1]):
            _pull(rows[n], vertices, upward=rounds % 2 == 0)
    for n in order[1:]:
        _pull(rows[n], vertices, upward=True)


def _pull(row: list[str], vertices: Mapping[str, _Vertex], *, upward: bool) -> None:
    """Move a row's vertices towards the mean x of their neighbours above (or below), in order
    and at least the gap apart: the least-squares placement, by pool adjacent violators."""
    desired: list[float] = []
    offsets: list[float] = []
    offset = 0.0
    for n, key in enumerate(row):
        vertex = vertices[key]
        if n:
            offset += (vertices[row[n - 1]].width + vertex.width) / 2 + H_GAP
        near = vertex.up if upward else vertex.down
        target = sum(vertices[k].x for k in near) / len(near) if near else vertex.x
        desired.append(target - offset)
        offsets.append(offset)
    # Blocks of (sum, count): the fitted sequence must be non-decreasing.
    blocks: list[list[float]] = []
    for value in desired:
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    n = 0
    for total, count in blocks:
        for _k in range(int(count)):
            vertices[row[n]].x = total / count + offsets[n]
            n += 1


# --- drawing --------------------------------------------------------------------------------


def _detail(step: Step, _: Gettext) -> str:
    if isinstance(step, ServiceStep):
        return f"service · {step.service}"
    if isinstance(step, WorkflowCallStep):
        return f"workflow · {step.workflow}"
    if isinstance(step, NativeStep):
        return f"native · {step.engine}"
    if isinstance(step, SplitStep):
        return f"split · {step.path}" if step.path else "split"
    if isinstance(step, JoinStep):
        return f"join ← {step.split}"
    if isinstance(step, DelayStep):
        return f"delay · {step.seconds:g} s"
    if isinstance(step, SwitchStep):
        mode = _("first match") if step.mode == "first" else _("every match")
        return f"switch · {mode}"
    return step.kind


def _node_svg(node: GraphNode, state: str | None, *, is_start: bool) -> str:
    classes = ["node", f"node-{node.kind}"]
    if state is not None:
        classes.append(f"state-{state}")
    if is_start:
        classes.append("node-start")
    w, h = node.width, node.height
    fill, stroke = _STATE_PAINT[state] if state else _KIND_PAINT.get(node.kind, _PLAIN)
    paint = f'fill="{fill}" stroke="{stroke}" stroke-width="{3 if is_start else 1.5}"'
    if node.kind == "switch":
        tip = 12
        shape = (
            f'<polygon class="shape" {paint} points="{_n(tip)},0 {_n(w - tip)},0 {_n(w)},{_n(h / 2)} '
            f'{_n(w - tip)},{_n(h)} {_n(tip)},{_n(h)} 0,{_n(h / 2)}"/>'
        )
    else:
        radius = h / 2 if node.kind in ("split", "join") else 6
        shape = f'<rect class="shape" {paint} width="{_n(w)}" height="{_n(h)}" rx="{_n(radius)}"/>'
    full = f"{node.name} ({node.step_id}): {node.detail}"
    return (
        f'<g class="{" ".join(classes)}" data-step="{escape(node.step_id)}" '
        f'transform="translate({_n(node.x)},{_n(node.y)})">'
        f"<title>{escape(full)}</title>{shape}"
        f'<text class="name" x="{_n(w / 2)}" y="21" text-anchor="middle" font-size="13" '
        'font-weight="600" fill="#0f172a">'
        f"{escape(_clip(node.name, NAME_CHARS))}</text>"
        f'<text class="detail" x="{_n(w / 2)}" y="39" text-anchor="middle" font-size="11" '
        'fill="#475569">'
        f"{escape(_clip(node.detail, DETAIL_CHARS))}</text></g>"
    )


def _edge_svg(edge: GraphEdge, marker: str) -> str:
    classes = ["edge", f"edge-{edge.kind}"]
    if edge.fanout:
        classes.append("edge-fanout")
    points = edge.points
    path = [f"M{_n(points[0][0])},{_n(points[0][1])}"]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 == x1:  # through a bend point: straight down
            path.append(f"L{_n(x1)},{_n(y1)}")
        else:
            mid = (y0 + y1) / 2
            path.append(f"C{_n(x0)},{_n(mid)} {_n(x1)},{_n(mid)} {_n(x1)},{_n(y1)}")
    parts = [
        f'<g class="{" ".join(classes)}" data-source="{escape(edge.source)}" '
        f'data-target="{escape(edge.target)}">',
        f'<path d="{" ".join(path)}" fill="none" stroke="#64748b" '
        f'stroke-width="{3.5 if edge.fanout else 1.5}"{_EDGE_PAINT.get(edge.kind, "")} '
        f'marker-end="url(#{escape(marker)})"/>',
    ]
    if edge.label:
        text = _clip(edge.label, LABEL_CHARS)
        # Just above where the first segment lands: a switch's cases land on different nodes
        # (or bend points) a node's width apart, so their labels do not overlap.
        x, y = points[1][0], points[1][1] - 20
        width = 6.2 * len(text) + 8
        parts.append(
            f"<title>{escape(edge.label)}</title>"
            f'<rect class="label-bg" fill="#ffffff" stroke="#cbd5e1" x="{_n(x - width / 2)}" y="{_n(y - 9)}" '
            f'width="{_n(width)}" height="16" rx="3"/>'
            f'<text class="label" x="{_n(x)}" y="{_n(y + 3)}" text-anchor="middle" '
            'font-size="11" fill="#334155">'
            f"{escape(text)}</text>"
        )
    parts.append("</g>")
    return "".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _n(value: float) -> str:
    """A coordinate as written: rounded to a tenth, without a trailing ``.0`` (stable output)."""
    rounded = round(value, 1)
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


def _identity(text: str) -> str:
    return text
