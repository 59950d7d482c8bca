"""Node-RED's status and complete events: scopes, the messages, the import's wiring and what the
step engine refuses (nodered_semantics.events, the nodered-node service, the import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engines.step import step_runnable
from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.ir import Workflow
from nodered_semantics.events import (
    COMPLETE_PORT,
    STATUS_PORT,
    debug_status,
    inspect_value,
    scope_of,
    watches,
)
from nodered_semantics.js import UNDEFINED
from services.nodered.service import run_node_in_context
from translators.nodered import from_nodered, to_nodered_flows

EXAMPLES = (
    Path.home() / ".cache/fluxo/test-nodered/app/node_modules/@node-red/nodes/examples/common"
)


def _fn(nid: str, code: str, wires: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "id": nid,
        "type": "function",
        "z": "t",
        "name": extra.pop("name", nid),
        "func": code,
        "outputs": 1,
        "wires": [wires],
        **extra,
    }


def _inject(nid: str, to: str) -> dict[str, Any]:
    return {"id": nid, "type": "inject", "z": "t", "payload": "x", "wires": [[to]]}


def _debug(nid: str, **extra: Any) -> dict[str, Any]:
    return {"id": nid, "type": "debug", "z": "t", "wires": [], **extra}


def _steps_by_node(flow: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    imp = from_nodered(flow, name="ev")
    (workflow,) = imp.workflows
    by_node = {
        str(s.config.get("id")): s for s in workflow.spec.steps if getattr(s, "config", None)
    }
    return imp, by_node


# --- scopes ------------------------------------------------------------------------------------


def test_a_status_node_without_a_list_watches_its_whole_tab_only() -> None:
    status = {"id": "s", "type": "status", "z": "t", "scope": None, "wires": [[]]}
    assert watches(status, {"id": "f", "type": "function", "z": "t"})
    assert not watches(status, {"id": "g", "type": "function", "z": "other"})
    assert not watches(status, status)
    assert not watches({**status, "d": True}, {"id": "f", "type": "function", "z": "t"})


def test_a_complete_node_without_a_list_watches_nothing() -> None:
    complete = {"id": "c", "type": "complete", "z": "t", "scope": None, "wires": [[]]}
    assert scope_of(complete) == []
    assert not watches(complete, {"id": "f", "type": "function", "z": "t"})


def test_the_loop_guard_drops_wired_nodes_and_skips_the_entry_after_one() -> None:
    # Node-RED splices inside a counting loop: after "a" goes, "b" moves to its place unseen.
    watcher = {"id": "c", "type": "complete", "z": "t", "scope": ["a", "b", "x"]}
    watcher["wires"] = [["a", "b"]]
    assert scope_of(watcher) == ["b", "x"]
    assert scope_of({**watcher, "wires": [["x"]]}) == ["a", "b"]


# --- the messages ------------------------------------------------------------------------------


def test_a_function_reports_its_statuses_and_the_message_it_completed() -> None:
    node = _fn(
        "f",
        "node.status({fill: 'red', shape: 'ring', text: 42});\nnode.status('plain');\n"
        "msg.topic = 'changed';\nreturn {payload: 'new'};",
        [],
        name="",
    )
    sent, _ = run_node_in_context(
        node, {"payload": "in", "_msgid": "m1"}, events=["status", "complete"]
    )
    assert sent[0] == (0, {"payload": "new", "_msgid": "m1"})
    source = {"id": "f", "type": "function", "name": ""}
    assert sent[1:] == [
        (STATUS_PORT, {"status": {"fill": "red", "shape": "ring", "text": "42", "source": source}}),
        (STATUS_PORT, {"status": {"text": "plain", "source": source}}),
        (
            COMPLETE_PORT,
            {
                "payload": "in",
                "topic": "changed",
                "_msgid": "m1",
                "complete": {"source": source},
            },
        ),
    ]
    # Events only when asked: a call that wants none gets the messages only.
    plain, _ = run_node_in_context(node, {"payload": "in", "_msgid": "m1"})
    assert plain == [(0, {"payload": "new", "_msgid": "m1"})]


def test_a_failing_function_completes_nothing() -> None:
    node = _fn("f", "node.status('before');\nthrow new Error('no');", [])
    with pytest.raises(Exception, match="no"):
        run_node_in_context(node, {"payload": 1}, events=["complete"])


def test_a_debug_node_shows_a_status_only_when_it_changes() -> None:
    node = _debug("d", name="", tostatus=True, complete="payload")
    sent, writes = run_node_in_context(node, {"payload": "hello"}, events=["status"])
    status = {"fill": "grey", "shape": "dot", "text": "hello"}
    source = {"id": "d", "type": "debug", "name": ""}
    assert sent == [(STATUS_PORT, {"status": {**status, "source": source}})]
    (write,) = writes
    context = {"node": {write.key: write.value}}
    again, _ = run_node_in_context(node, {"payload": "hello"}, context=context, events=["status"])
    assert again == []
    other, _ = run_node_in_context(
        node, {"payload": "x" * 40}, context=context, events=["status", "complete"]
    )
    assert other[0][1]["status"]["text"] == "x" * 32 + "..."
    assert other[1] == (COMPLETE_PORT, {"payload": "x" * 40, "complete": {"source": source}})


def test_debug_status_reads_as_21_debug_js() -> None:
    node = {"id": "d", "type": "debug", "tostatus": True, "complete": "true"}
    assert debug_status(node, {"payload": 5}) == {"fill": "grey", "shape": "dot", "text": "5"}
    assert debug_status(node, {"payload": 1, "error": {"message": "bad"}})["fill"] == "red"
    # its own status coming back is ignored
    assert debug_status(node, {"status": {"source": {"id": "d"}}}) is None
    shown = {**node, "complete": "topic", "statusType": "msg", "statusVal": "payload.a"}
    assert debug_status(shown, {"payload": {"a": [1]}})["text"] == "[ 1 ]"
    assert debug_status({**node, "tostatus": False}, {"payload": 1}) is None


def test_inspect_value_follows_util_inspect_or_says_it_cannot() -> None:
    assert inspect_value(UNDEFINED) == "undefined"
    assert inspect_value({"a": 1, "b": "two", "c key": None}) == "{ a: 1, b: 'two', 'c key': null }"
    assert inspect_value([]) == "[]"
    assert inspect_value(-0.0) == "-0"
    with pytest.raises(ValueError, match="nested"):
        inspect_value({"a": {"b": 1}})
    with pytest.raises(ValueError, match="longer lists"):
        inspect_value(list(range(7)))


# --- the import and the step engine's verdict ---------------------------------------------------


def test_a_listed_status_node_gets_the_events_of_its_nodes_only() -> None:
    flow = [
        _inject("i", "f"),
        _inject("i2", "g"),
        _fn("f", "node.status('f');\nreturn msg;", ["d"]),
        _fn("g", "node.status('g');\nreturn msg;", ["d"]),
        _debug("d"),
        {"id": "s", "type": "status", "z": "t", "scope": ["f"], "wires": [["d"]]},
        {"id": "all", "type": "status", "z": "t", "scope": None, "wires": [["d"]]},
    ]
    imp, steps = _steps_by_node(flow)
    s, everything = steps["s"].id, steps["all"].id
    assert set(steps["f"].next) >= {s, everything}
    assert s not in steps["g"].next
    assert everything in steps["g"].next
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert ok, reasons


def test_a_status_node_watching_a_node_whose_status_is_not_reported_is_refused() -> None:
    flow = [
        _inject("i", "c"),
        {"id": "c", "type": "csv", "z": "t", "sep": ",", "temp": "a", "wires": [["d"]]},
        _debug("d"),
        {"id": "s", "type": "status", "z": "t", "scope": None, "wires": [["d"]]},
    ]
    imp = from_nodered(flow, name="ev")
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert any("status node s watches it" in r and "csv" in r for r in reasons), reasons


def test_a_complete_node_listing_a_node_it_cannot_follow_is_refused() -> None:
    flow = [
        _inject("i", "f"),
        _fn("f", "setTimeout(function () { node.done(); }, 1);\nnode.send(msg);", ["d"]),
        _debug("d"),
        {"id": "c", "type": "complete", "z": "t", "scope": ["f"], "wires": [["d"]]},
    ]
    imp = from_nodered(flow, name="ev")
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert any("node.done()" in r for r in reasons), reasons
    # a node without a step (the inject) reports no completion: the import says so
    flow[-1] = {"id": "c", "type": "complete", "z": "t", "scope": ["i"], "wires": [["d"]]}
    imp = from_nodered(flow, name="ev")
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert any("complete node" in r for r in reasons), reasons


def test_a_status_node_scoped_to_a_group_is_refused() -> None:
    flow = [
        _inject("i", "f"),
        _fn("f", "return msg;", []),
        {"id": "s", "type": "status", "z": "t", "scope": "group", "wires": [[]]},
    ]
    imp = from_nodered(flow, name="ev")
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert any("group" in r for r in reasons), reasons


@pytest.mark.parametrize(
    ("example", "watcher"),
    [
        ("complete/01 - Handle completion of node execution.json", "complete"),
        ("status/01 - Handle status message output.json", "status"),
    ],
)
def test_the_shipped_examples_run_on_the_step_engine(example: str, watcher: str) -> None:
    path = EXAMPLES / example
    if not path.is_file():
        pytest.skip(f"the node-red examples are not installed ({path})")
    imp, steps = _steps_by_node(json.loads(path.read_text()))
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert ok, reasons
    (watcher_step,) = [s for s in steps.values() if s.config.get("type") == watcher]
    (debug,) = [s for s in steps.values() if s.config.get("type") == "debug"]
    assert debug.next == [watcher_step.id]  # the watched debug node reports to it


def test_an_export_wires_no_event_and_a_generated_flow_refuses_a_watcher() -> None:
    flow = [
        {"id": "t", "type": "tab", "label": "T"},
        _inject("i", "f"),
        _fn("f", "node.status('s');\nreturn msg;", ["d"]),
        _debug("d"),
        {"id": "s", "type": "status", "z": "t", "scope": ["f"], "wires": [["d"]]},
    ]
    imp = from_nodered(flow, name="ev")
    (workflow,) = imp.workflows
    doc = workflow.model_dump(mode="json", by_alias=True, exclude_none=True)
    for step in doc["spec"]["steps"]:
        if step.get("config", {}).get("id") == "f":  # an edit: the node is rendered again
            step["config"]["func"] = "node.status('t');\nreturn msg;"
    edited = Workflow.model_validate(doc)
    nodes = {n["id"]: n for n in to_nodered_flows([edited], source=imp.source)}
    assert nodes["f"]["wires"] == [["d"]]  # its events are Node-RED's business, not a wire
    with pytest.raises(UnsupportedFeatureError, match="watches nodes by their ids"):
        to_nodered_flows([workflow])
