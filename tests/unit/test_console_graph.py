"""The workflow graph: goldens of the examples, and properties of any layout.

Goldens live in ``tests/golden/console``; ``FLUXO_REGENERATE=1`` rewrites them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxo.console.graph import STATES, GraphLayout, layout_graph, render_graph, step_phases
from fluxo_core.engine import StepState
from fluxo_core.ir import Workflow, load_workflows_yaml
from tests.support.golden import regenerate_requested

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "console"
EXAMPLES = ("order-intake", "lead-enrichment", "invoice-reminder")
SVG = "{http://www.w3.org/2000/svg}"


def _example(name: str) -> Workflow:
    return load_workflows_yaml((ROOT / "examples" / f"{name}.yaml").read_text())[0]


def _workflow(steps: list[dict[str, Any]], name: str = "w") -> Workflow:
    return Workflow.model_validate(
        {"apiVersion": "fluxo.dev/v1", "kind": "Workflow", "metadata": {"name": name},
         "spec": {"steps": steps}}
    )  # fmt: skip


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_graph_of_an_example_matches_its_golden(name: str) -> None:
    svg = str(render_graph(_example(name)))
    path = GOLDEN / f"{name}.svg"
    if regenerate_requested():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(svg + "\n")
    assert path.exists(), f"no golden file {path}: run with FLUXO_REGENERATE=1"
    assert svg + "\n" == path.read_text()


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_graph_is_well_formed_accessible_svg_with_each_step_once(name: str) -> None:
    workflow = _example(name)
    root = ET.fromstring(str(render_graph(workflow)))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert workflow.metadata.name in (root.get("aria-label") or "")
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.get("id") == root.get("aria-labelledby")
    drawn = [g.get("data-step") for g in root.iter(f"{SVG}g") if g.get("data-step")]
    assert sorted(drawn) == sorted(s.id for s in workflow.spec.steps)


def test_switch_cases_and_the_default_are_labelled_on_their_edges() -> None:
    root = ET.fromstring(str(render_graph(_example("order-intake"))))
    labels = {
        (g.get("data-source"), g.get("data-target")): "".join(
            t.text or "" for t in g.iter(f"{SVG}text")
        )
        for g in root.iter(f"{SVG}g")
        if g.get("data-source")
    }
    assert labels[("route", "review")] == "total_value ≥ 1000"
    assert labels[("route", "priority")].startswith("customer.tier in [gold")
    assert labels[("route", "standard")] == "default"
    assert labels[("parse", "enrich")] == ""


def test_split_and_join_are_drawn_as_such() -> None:
    svg = str(render_graph(_example("lead-enrichment")))
    assert re.search(r'class="node node-split[^"]*" data-step="each-lead"', svg)
    assert re.search(r'class="node node-join[^"]*" data-step="gather"', svg)
    assert "join ← each-lead" in svg
    # The branch a split fans out is drawn heavier.
    assert re.search(r'class="edge edge-next edge-fanout" data-source="each-lead"', svg)


def test_an_on_error_goto_edge_is_its_own_dashed_kind() -> None:
    workflow = _workflow(
        [
            {"id": "call", "kind": "service", "service": "crm", "next": ["done"],
             "on_error": {"goto": "apologise"}},
            {"id": "done", "kind": "service", "service": "mailer"},
            {"id": "apologise", "kind": "service", "service": "mailer"},
        ]
    )  # fmt: skip
    svg = str(render_graph(workflow))
    assert re.search(r'class="edge edge-goto" data-source="call" data-target="apologise"', svg)
    assert ">on error<" in svg


def test_states_colour_nodes_and_an_unknown_state_adds_no_class() -> None:
    workflow = _example("order-intake")
    svg = str(render_graph(workflow, {"parse": "succeeded", "enrich": "x onload=alert(1)"}))
    assert re.search(r'class="node node-service state-succeeded node-start" data-step="parse"', svg)
    assert re.search(r'class="node node-service" data-step="enrich"', svg)
    assert re.search(r'class="node node-service state-pending" data-step="notify"', svg)
    assert "onload" not in svg
    without = str(render_graph(workflow))
    assert not any(f"state-{s}" in without for s in STATES)


def test_names_are_escaped_and_long_ones_clipped_with_the_full_text_in_the_title() -> None:
    long = "<b>A very long step name that goes on</b> & on"
    svg = str(
        render_graph(_workflow([{"id": "a", "name": long, "kind": "service", "service": "s"}]))
    )
    assert "<b>" not in svg
    assert "&lt;b&gt;A very long step name th…" in svg
    assert "&lt;b&gt;A very long step name that goes on&lt;/b&gt; &amp; on (a)" in svg
    ET.fromstring(svg)


def test_the_words_of_the_graph_are_translated_by_the_gettext_given() -> None:
    words = {"default": "padrão", "Workflow %(name)s: %(count)d steps": "Fluxo %(name)s: %(count)d"}
    svg = str(render_graph(_example("order-intake"), gettext=lambda s: words.get(s, s)))
    assert ">padrão<" in svg
    assert 'aria-label="Fluxo order-intake: 8"' in svg


def test_two_graphs_on_a_page_have_distinct_ids() -> None:
    workflow = _example("order-intake")
    first = str(render_graph(workflow, element_id="one"))
    second = str(render_graph(workflow, element_id="two"))
    ids = re.findall(r' id="([^"]+)"', first) + re.findall(r' id="([^"]+)"', second)
    assert len(ids) == len(set(ids)) == 6
    assert "url(#one-arrow)" in first


# --- properties -----------------------------------------------------------------------------


@st.composite
def _dags(draw: st.DrawFn) -> Workflow:
    """A random valid workflow: every step reachable from the first, edges pointing forward."""
    count = draw(st.integers(min_value=1, max_value=40))
    targets: list[set[int]] = [set() for _ in range(count)]
    for n in range(1, count):
        targets[draw(st.integers(min_value=0, max_value=n - 1))].add(n)
    for n in range(count - 1):
        extra = draw(st.lists(st.integers(min_value=n + 1, max_value=count - 1), max_size=3))
        targets[n].update(extra)
    steps: list[dict[str, Any]] = []
    for n in range(count):
        after = [f"s{t}" for t in sorted(targets[n])]
        style = draw(st.sampled_from(["service", "switch", "goto"]))
        if style == "switch" and after:
            steps.append(
                {"id": f"s{n}", "kind": "switch", "default": after[-1:],
                 "cases": [{"when": {"path": "n", "op": "eq", "value": k}, "next": [t]}
                           for k, t in enumerate(after[:-1])] or
                          [{"when": {"path": "n", "op": "exists"}, "next": after[-1:]}]}
            )  # fmt: skip
        elif style == "goto" and len(after) > 1:
            steps.append(
                {"id": f"s{n}", "kind": "service", "service": "svc", "next": after[:-1],
                 "on_error": {"goto": after[-1]}}
            )  # fmt: skip
        else:
            steps.append({"id": f"s{n}", "kind": "service", "service": "svc", "next": after})
    return _workflow(steps)


def _overlaps(layout: GraphLayout) -> list[tuple[str, str]]:
    found = []
    boxes = sorted(layout.nodes, key=lambda n: (n.y, n.x))
    for n, a in enumerate(boxes):
        for b in boxes[n + 1 :]:
            if b.y >= a.y + a.height:
                break
            if a.x < b.x + b.width and b.x < a.x + a.width:
                found.append((a.step_id, b.step_id))
    return found


@settings(max_examples=60, deadline=None)
@given(_dags())
def test_any_workflow_lays_out_every_step_once_without_overlaps_and_edges_pointing_down(
    workflow: Workflow,
) -> None:
    layout = layout_graph(workflow)
    assert [n.step_id for n in layout.nodes] == [s.id for s in workflow.spec.steps]
    assert _overlaps(layout) == []
    layer = {n.step_id: n.layer for n in layout.nodes}
    for edge in layout.edges:
        assert layer[edge.target] > layer[edge.source]
        ys = [y for _, y in edge.points]
        assert ys == sorted(ys)
    for node in layout.nodes:
        assert node.x >= 0
        assert node.x + node.width <= layout.width
        assert node.y >= 0
        assert node.y + node.height <= layout.height
    assert render_graph(workflow) == render_graph(workflow)  # deterministic


def test_a_workflow_of_500_steps_lays_out_within_bounds() -> None:
    # A chain with a switch every tenth step that jumps far ahead, and gotos to the end: long
    # edges, many bend points. Its figure is in bench/console_graph.py; here, that it is sane.
    steps: list[dict[str, Any]] = []
    for n in range(500):
        after = [f"s{n + 1}"] if n < 499 else []
        if n % 10 == 0 and n + 50 < 500:
            steps.append(
                {"id": f"s{n}", "kind": "switch", "default": after,
                 "cases": [{"when": {"path": "x", "op": "gt", "value": n}, "next": [f"s{n + 50}"]}]}
            )  # fmt: skip
        elif n % 7 == 0 and n < 499:
            steps.append(
                {"id": f"s{n}", "kind": "service", "service": "svc", "next": after,
                 "on_error": {"goto": "s499"}}
            )  # fmt: skip
        else:
            steps.append({"id": f"s{n}", "kind": "service", "service": "svc", "next": after})
    layout = layout_graph(_workflow(steps))
    assert len(layout.nodes) == 500
    assert _overlaps(layout) == []
    svg = str(render_graph(_workflow(steps)))
    assert svg.count("data-step=") == 500


def _state(key: str, phase: str) -> StepState:
    return StepState(key=key, step_id=key.split("[")[0], phase=phase, attempt=1)  # type: ignore[arg-type]


def test_a_job_s_step_executions_fold_into_one_phase_per_step() -> None:
    states = [
        _state("each-lead", "succeeded"),
        _state("enrich[0]", "succeeded"),
        _state("enrich[1]", "running"),
        _state("score[0]", "succeeded"),
        _state("score[1]", "failed"),
        _state("gather", "skipped"),
    ]
    assert step_phases(states) == {
        "each-lead": "succeeded",
        "enrich": "running",
        "score": "failed",
        "gather": "skipped",
    }
    svg = str(render_graph(_example("lead-enrichment"), states))
    assert re.search(r'class="node node-service state-running" data-step="enrich"', svg)
    assert re.search(r'class="node node-transform state-failed" data-step="score"', svg)
    assert re.search(r'class="node node-transform state-pending[^"]*" data-step="prepare"', svg)
