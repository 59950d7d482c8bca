"""What ``fluxo import nodered`` writes: the engine each workflow gets (the step engine's own
check decides), where each node runs, and documents that validate as written."""

from __future__ import annotations

import json
from typing import Any

import yaml

from fluxo.cli._nodered_flows import dump_yaml, import_file
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


def test_a_loop_is_unrolled_so_the_workflow_stays_on_the_step_engine() -> None:
    # Loops are not cut any more: the import unrolls them to a bounded number of passes
    # (past it a step fails the job), so nothing Node-RED does is dropped.
    result = imported(
        [node("a", "change", [["b"]], **CHANGE), node("b", "change", [["a"]], **CHANGE)]
    )
    assert result.engines["flow"].engine == "step"
    (text,) = result.yaml_texts().values()
    document = yaml.safe_load(text)
    assert "fluxo.dev/nodered-dropped" not in document["metadata"]["labels"]
    assert any("unrolled" in note for note in result.result.report.notes)


def test_several_triggers_give_one_entry_each_and_stay_on_the_step_engine() -> None:
    # Node-RED starts each trigger's own nodes: a job names its trigger's entry.
    result = imported(
        [
            node("i1", "inject", [["a"]]),
            node("i2", "inject", [["b", "c"]]),
            node("a", "change", [[]], **CHANGE),
            node("b", "change", [[]], **CHANGE),
            node("c", "change", [[]], **CHANGE),
        ]
    )
    assert result.engines["flow"].engine == "step"
    (text,) = result.yaml_texts().values()
    document = yaml.safe_load(text)
    assert "fluxo.dev/nodered-dropped" not in document["metadata"]["labels"]
    steps = {s["id"]: s for s in document["spec"]["steps"]}
    entries = {t.node_id: t.entry for t in result.result.triggers}
    assert steps[entries["i1"]]["name"] == "a"
    fan = steps[entries["i2"]]  # a trigger feeding two nodes enters at a step feeding both
    assert sorted(steps[s]["name"] for s in fan["cases"][0]["next"]) == ["b", "c"]
    start = steps["start"]  # leads to the entries and fails a job that names none
    assert start["next"] == [entries["i1"], entries["i2"]]
    assert "fluxo-entry" in start["ops"][0]["expr"]
    assert start["ops"][0]["expr"].startswith("$error(")


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


def test_the_yaml_writer_writes_what_pyyamls_safe_dumper_writes() -> None:
    # dump_yaml makes the nodes of JSON values itself (for speed): the text must not change.
    shared = {"reused": [1, 2]}
    document = {
        "strings": ["y", "N", "no", "yes", "", "null", "~", "123", "1.5", "0x1f", "true",
                    "a\nb", "a\n", " lead", "trail ", "é 日本", "\t", "- x", ": x", "#x",
                    "'q'", '"d"', "*a", "&a", "!t", "%p", "@x", "2026-12-06", "<<", "=",
                    "x" * 200],
        "numbers": [0, -1, 2**63, 1.5, -0.0, float("inf"), 1e20, True, False, None],
        "empty": [{}, [], [[]], [{}]],
        "nested": {"k": [1, {"x": None, 3: "int key"}]},
        "twice": [shared, shared],
    }  # fmt: skip
    result = imported(
        [node("fn", "function", [["ch"]], **FUNCTION), node("ch", "change", **CHANGE)]
    )
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    for doc in [document, *result.documents.values()]:
        expected = yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True)
        assert dump_yaml(doc) == expected
    assert "&id001" in dump_yaml(document)  # the shared object, written once with an alias
