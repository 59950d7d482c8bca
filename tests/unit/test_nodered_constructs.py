"""Node-RED constructs the step engine runs: how the import wires them, how the nodes behave.

The differential test (tests/integration/nodered/test_differential.py) compares whole flows
with a real Node-RED; these cases pin the rules on their own.
"""

from __future__ import annotations

from typing import Any

import pytest

from engines.step import step_runnable
from fluxo_core.errors import ServiceError
from services.nodered.service import run_node
from translators._nodered_catch import catchers
from translators.nodered import from_nodered


def _catch(cid: str, scope: Any = None, uncaught: bool = False) -> dict[str, Any]:
    return {"id": cid, "type": "catch", "z": "t", "scope": scope, "uncaught": uncaught}


def test_catchers_follow_node_reds_order_and_uncaught_rule() -> None:
    a, b, c = _catch("a", ["f"]), _catch("b", None, uncaught=True), _catch("c")
    assert [x["id"] for x in catchers("f", [a, b, c])] == ["a", "c"]
    assert [x["id"] for x in catchers("g", [a, b, c])] == ["b", "c"]
    # Node-RED skips only the first "uncaught" catch when the failure was handled already
    d = _catch("d", None, uncaught=True)
    assert [x["id"] for x in catchers("f", [a, b, d])] == ["a"]
    assert [x["id"] for x in catchers("g", [a, b, d])] == ["b", "d"]
    assert catchers("a", [a]) == []  # a catch is not in its own scope


def _fn(nid: str, wires: list[str], code: str = "return msg;") -> dict[str, Any]:
    return {"id": nid, "type": "function", "z": "t", "func": code, "outputs": 1,
            "x": 1, "y": 1, "wires": [wires]}  # fmt: skip


def _flow(*nodes: dict[str, Any]) -> list[dict[str, Any]]:
    inject = {"id": "i", "type": "inject", "z": "t", "x": 1, "y": 1, "wires": [["f"]]}
    return [{"id": "t", "type": "tab", "label": "T"}, inject, *nodes]


def _steps(flow: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    imp = from_nodered(flow, name="x")
    (workflow,) = imp.workflows
    doc = workflow.model_dump(mode="json", exclude_none=True)
    return {s["id"]: s for s in doc["spec"]["steps"]}


def test_a_failing_step_goes_to_its_catches() -> None:
    change = {"id": "c", "type": "change", "z": "t", "x": 1, "y": 1, "wires": [[]],
              "rules": [{"t": "set", "p": "payload.a", "pt": "msg", "to": "1", "tot": "num"}]}  # fmt: skip
    one = _flow(_fn("f", ["c"]), change, {**_catch("k1"), "x": 1, "y": 1, "wires": [["h"]]},
                _fn("h", []))  # fmt: skip
    steps = _steps(one)
    by_node = {s["config"]["id"]: s for s in steps.values() if s["kind"] == "native"}
    assert by_node["f"]["on_error"] == {"goto": by_node["k1"]["id"]}
    # a change in a catch's scope stays native: its failure names the node, as on Node-RED
    assert by_node["c"]["on_error"] == {"goto": by_node["k1"]["id"]}
    # what the catch feeds is not in its scope again, and the catch is no entry
    assert by_node["h"]["on_error"] == "fail"
    assert all(by_node["k1"]["id"] not in s.get("next", []) for s in steps.values())
    two = _flow(_fn("f", []), {**_catch("k1"), "x": 1, "y": 1, "wires": [[]]},
                {**_catch("k2", ["f"]), "x": 1, "y": 1, "wires": [[]]})  # fmt: skip
    steps = _steps(two)
    fan = steps["caught-1"]
    assert sorted(fan["next"]) == sorted(
        s["id"] for s in steps.values() if s.get("config", {}).get("type") == "catch"
    )
    assert next(s for s in steps.values() if s.get("config", {}).get("id") == "f")["on_error"] == {
        "goto": "caught-1"
    }


def test_a_body_reporting_errors_in_a_catch_scope_is_refused() -> None:
    flow = _flow(_fn("f", [], "done('bad'); return msg;"),
                 {**_catch("k"), "x": 1, "y": 1, "wires": [[]]})  # fmt: skip
    imp = from_nodered(flow, name="x")
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert "done(err)" in reasons[0]
    group = _flow(_fn("f", []), {**_catch("k", "group"), "x": 1, "y": 1, "wires": [[]]})
    imp = from_nodered(group, name="x")
    assert not step_runnable(imp.workflows[0], imp.triggers)[0]


def test_the_catch_node_builds_node_reds_error_message() -> None:
    failure = {
        "error": {"message": "function node f failed: Error: boom",
                  "context": {"nodered_message": "Error: boom"}},
        "input": {"n": 1},
        "step": "f",
        "node": {"id": "f", "type": "function", "name": "F"},
    }  # fmt: skip
    [(port, msg)] = run_node(_catch("k"), {"payload": failure, "topic": "t", "error": "old"})
    assert port == 0
    assert msg == {
        "payload": {"n": 1},
        "topic": "t",
        "_error": "old",
        "error": {
            "message": "Error: boom",
            "source": {"id": "f", "type": "function", "name": "F", "count": 1},
        },
    }
    with pytest.raises(ServiceError, match="catch node k"):
        run_node(_catch("k"), {"payload": {"n": 1}})


def test_a_function_reporting_an_error_sends_a_copy_to_the_catch() -> None:
    code = "msg.payload.step = 1; node.error('half way', msg); msg.payload.step = 2; return msg;"
    sent = run_node(_fn("f", [], code), {"payload": {"n": 1}})
    assert [(port, m.get("payload")) for port, m in sent if port >= 0] == [(0, {"n": 1, "step": 2})]
    [report] = [m for port, m in sent if port < 0]
    assert report["message"] == "half way"
    assert report["msg"]["payload"] == {"n": 1, "step": 1}
    # without a message node.error only logs, as on Node-RED
    assert [p for p, _ in run_node(_fn("f", [], "node.error('x'); return msg;"), {})] == [0]


def _link_flow() -> list[dict[str, Any]]:
    def node(nid: str, kind: str, z: str, wires: list[str], **more: Any) -> dict[str, Any]:
        return {"id": nid, "type": kind, "z": z, "x": 1, "y": 1, "wires": [wires], **more}

    def fn(nid: str, z: str, wires: list[str]) -> dict[str, Any]:
        return node(nid, "function", z, wires, func="return msg;", outputs=1)

    return [
        {"id": "A", "type": "tab", "label": "A"},
        {"id": "B", "type": "tab", "label": "B"},
        node("i", "inject", "A", ["c1"]),
        node("c1", "link call", "A", ["a1"], links=["in"], linkType="static"),
        fn("a1", "A", ["c2"]),
        node("c2", "link call", "A", ["a2"], links=["in"], linkType="static"),
        fn("a2", "A", []),
        node("in", "link in", "B", ["s"], links=[]),
        fn("s", "B", ["ret"]),
        node("ret", "link out", "B", [], mode="return", links=[]),
        node("dyn", "link call", "A", [], links=[], linkType="dynamic"),
    ]


def test_a_link_call_runs_a_copy_of_the_called_nodes_per_call() -> None:
    imp = from_nodered(_link_flow(), name="x")
    a = imp.workflows[0]
    source = imp.source.workflows[a.metadata.name]
    steps = {s.id: s for s in a.spec.steps}
    copies = sorted(sid for sid, nid in source.step_nodes.items() if nid == "s")
    assert len(copies) == 2  # one per call, each returning to its own caller
    by_call = {source.step_calls[sid]: sid for sid in copies}
    first, second = by_call[("c1",)], by_call[("c2",)]
    after = {nid: sid for sid, nid in source.step_nodes.items()}
    assert steps[first].model_dump()["next"] == [after["a1"]]
    assert steps[second].model_dump()["next"] == [after["a2"]]
    assert steps[after["a1"]].model_dump()["next"] == [second]
    # a dynamic link call (target from msg.target) is not inlined: the step engine refuses it
    assert imp.report.get("dyn").status == "native"
    assert imp.report.get("c1").status == "dropped"


def test_recursive_link_calls_stop_at_a_depth() -> None:
    flow = [
        {"id": "A", "type": "tab", "label": "A"},
        {"id": "i", "type": "inject", "z": "A", "x": 1, "y": 1, "wires": [["in"]]},
        {"id": "in", "type": "link in", "z": "A", "x": 1, "y": 1, "links": [], "wires": [["f"]]},
        {"id": "f", "type": "function", "z": "A", "func": "return msg;", "outputs": 1,
         "x": 1, "y": 1, "wires": [["c"]]},
        {"id": "c", "type": "link call", "z": "A", "links": ["in"], "linkType": "static",
         "x": 1, "y": 1, "wires": [[]]},
    ]  # fmt: skip
    imp = from_nodered(flow, name="x")
    assert any("nest deeper" in note for note in imp.report.notes)
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert "link call" in reasons[0]


def test_a_subflow_with_a_native_node_of_several_outputs_at_an_output_stays_native() -> None:
    flow = [
        {"id": "S", "type": "subflow", "name": "s", "in": [{"wires": [{"id": "f"}]}],
         "out": [{"wires": [{"id": "f", "port": 0}]}, {"wires": [{"id": "f", "port": 1}]}],
         "env": []},
        {**_fn("f", []), "z": "S", "outputs": 2, "wires": [[], []]},
        {"id": "t", "type": "tab", "label": "T"},
        {"id": "i", "type": "inject", "z": "t", "x": 1, "y": 1, "wires": [["inst"]]},
        {"id": "inst", "type": "subflow:S", "z": "t", "x": 1, "y": 1, "wires": [[], []]},
    ]  # fmt: skip
    imp = from_nodered(flow, name="x")
    # the step engine tells a native node's ports apart by its wires, which do not hold the
    # subflow's outputs: the instance is not inlined, and the step engine refuses it
    assert imp.report.get("inst").status != "dropped"  # a call of the subflow's workflow
    assert not step_runnable(imp.workflows[1], imp.triggers)[0]


def test_a_copy_of_another_tabs_node_fails_to_that_tabs_catch() -> None:
    flow = [
        {"id": "A", "type": "tab", "label": "A"},
        {"id": "B", "type": "tab", "label": "B"},
        {"id": "i", "type": "inject", "z": "A", "x": 1, "y": 1, "wires": [["o"]]},
        {"id": "o", "type": "link out", "z": "A", "x": 1, "y": 1, "links": ["in"], "wires": []},
        {"id": "in", "type": "link in", "z": "B", "x": 1, "y": 1, "links": ["o"],
         "wires": [["f"]]},
        {**_fn("f", ["h"]), "z": "B"},
        {**_fn("h", []), "z": "B"},
        {**_catch("kB"), "z": "B", "x": 1, "y": 1, "wires": [["h"]]},
        {**_catch("kA"), "z": "A", "x": 1, "y": 1, "wires": [[]]},
    ]  # fmt: skip
    imp = from_nodered(flow, name="x")
    a = imp.workflows[0]
    nodes = imp.source.workflows[a.metadata.name].step_nodes
    steps = {s.id: s.model_dump() for s in a.spec.steps}
    by_node: dict[str, list[str]] = {}
    for sid, nid in nodes.items():
        by_node.setdefault(nid, []).append(sid)
    (f,) = by_node["f"]
    (kb,) = by_node["kB"]
    # tab B's node, run in A's workflow, fails to (a copy of) tab B's catch, not to A's
    assert steps[f]["on_error"] == {"goto": kb}
    assert "kA" not in by_node or all(steps[s]["on_error"] == "fail" for s in by_node["kA"])
