"""What ``fluxo import nodered`` writes: the engine each workflow gets (the step engine's own
check decides), where each node runs, and documents that validate as written."""

from __future__ import annotations

import json
from typing import Any

import yaml

from fluxo.cli._nodered_flows import import_file
from fluxo_core.ir import load_workflows_yaml


def node(
    nid: str, kind: str, wires: list[list[str]] | None = None, **config: Any
) -> dict[str, Any]:
    return {"id": nid, "type": kind, "z": "t1", "name": nid, "x": 100, "y": 40,
            "wires": wires if wires is not None else [[]], **config}  # fmt: skip


TAB = {"id": "t1", "type": "tab", "label": "Flow"}
FUNCTION = {"func": "msg.payload.n = 1;\nreturn msg;", "outputs": 1, "libs": []}
CHANGE = {"rules": [{"t": "set", "p": "payload.a", "pt": "msg", "to": "1", "tot": "num"}]}


def imported(nodes: list[dict[str, Any]]) -> Any:
    return import_file(json.dumps([TAB, *nodes]), name="flow")


def test_a_function_node_the_step_engine_runs_puts_the_workflow_on_it() -> None:
    result = imported(
        [node("fn", "function", [["ch"]], **FUNCTION), node("ch", "change", **CHANGE)]
    )
    choice = result.engines["flow"]
    assert (choice.engine, choice.why, choice.refused) == ("step", (), ())
    place = {p.node_id: p for p in result.placements}
    assert place["fn"].runs == "step engine and Node-RED"
    assert "runs only on Node-RED" not in place["fn"].why
    assert place["ch"].runs == "step engine and Node-RED"
    (text,) = result.yaml_texts().values()
    (workflow,) = load_workflows_yaml(text)  # what is written validates as it is
    assert workflow.spec.engine == "step"
    assert yaml.safe_load(text)["spec"]["source"] == {"format": "nodered", "file": "flow.flow.json"}


def test_a_cut_loop_keeps_the_workflow_off_the_step_engine_saying_why() -> None:
    result = imported(
        [node("a", "change", [["b"]], **CHANGE), node("b", "change", [["a"]], **CHANGE)]
    )
    choice = result.engines["flow"]
    assert choice.engine == "nodered"
    assert any("loops" in why for why in choice.why)
    (text,) = result.yaml_texts().values()
    document = yaml.safe_load(text)
    assert document["metadata"]["labels"]["fluxo.dev/nodered-dropped"] == "loop"
    assert document["spec"]["engine"] == "nodered"
    place = {p.node_id: p for p in result.placements}
    assert place["a"].runs == "step engine and Node-RED"  # the node runs; the loop does not
    assert "its workflow runs on Node-RED" in place["a"].why


def test_a_node_only_node_red_runs_is_placed_there_with_the_reason() -> None:
    result = imported([node("rbe", "rbe", [[]], func="rbe", gap="", start="", inout="out")])
    assert result.engines["flow"].engine == "nodered"
    place = {p.node_id: p for p in result.placements}
    assert place["rbe"].runs == "Node-RED only"
    assert place["rbe"].why


def test_a_workflow_no_engine_runs_as_imported_is_reported() -> None:
    # A catch scoped to a debug node: dropped by the import, so the generated flow lacks it.
    nodes = [
        node("c", "catch", [["fn"]], scope=["dbg"], uncaught=False),
        node("fn", "function", [["dbg"]], **{**FUNCTION, "libs": [{"var": "x", "module": "x"}]}),
        node("dbg", "debug", [], active=True),
    ]
    choice = imported(nodes).engines["flow"]
    assert choice.engine == "nodered"
    assert any("'dbg'" in problem for problem in choice.refused)
