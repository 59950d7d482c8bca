"""The state core nodes keep between messages, as the ``nodered-node`` service hands it in and
back (``_fluxo_state`` of the node's own context, tagged with the workflow version)."""

from __future__ import annotations

from typing import Any

import pytest

from fluxo_core.errors import ServiceError
from nodered_semantics.context import STATE_KEY, context_scopes, keeps_state, user_context_scopes
from nodered_semantics.support import is_sequence_node, node_problem
from services.nodered.service import run_node_in_context, run_sequence_node_in_context


class Node:
    """One node's context across calls, as the step engine keeps it (writes applied)."""

    def __init__(self, node: dict[str, Any], version: int = 1) -> None:
        self.node = node
        self.version = version
        self.context: dict[str, dict[str, Any]] = {}

    def keep(self, writes: list[Any]) -> None:
        for write in writes:
            self.context.setdefault(write.scope, {})[write.key] = write.value

    def run(self, msg: dict[str, Any]) -> list[Any]:
        sent, writes = run_node_in_context(
            self.node, msg, context=self.context, version=self.version
        )
        self.keep(writes)
        return [m.get("payload") for _, m in sent]

    def run_all(self, messages: list[dict[str, Any]]) -> list[Any]:
        sent, writes = run_sequence_node_in_context(
            self.node, messages, context=self.context, version=self.version
        )
        self.keep(writes)
        return [m.get("payload") for _, m in sent]


CSV = {"id": "c1", "type": "csv", "sep": ",", "hdrout": "once", "ret": "\\n", "temp": "a,b"}


def test_which_nodes_keep_state() -> None:
    assert keeps_state(CSV)
    assert context_scopes(CSV) == {"node"}
    assert not keeps_state({**CSV, "hdrout": "all"})
    assert keeps_state({"type": "split", "stream": True})
    assert not keeps_state({"type": "split"})
    assert keeps_state({"type": "batch", "mode": "count"})
    assert not keeps_state({"type": "batch", "mode": "interval"})
    counter = {"type": "function", "func": "return msg;", "initialize": "global.set('n', 0);"}
    assert keeps_state(counter)
    assert context_scopes(counter) == {"node", "global"}
    assert not keeps_state({"type": "function", "func": "", "initialize": "var x = 1;"})
    # no longer refused: the step engine keeps their state
    assert node_problem(CSV) is None
    assert node_problem({**counter, "id": "f1"}) is None
    assert node_problem({"id": "s1", "type": "split", "stream": True}) is None
    batch = {"id": "b1", "type": "batch", "mode": "count", "count": "2"}
    assert node_problem(batch) is None


def test_csv_header_once_until_reset_and_per_version() -> None:
    csv = Node(CSV)
    row = {"payload": {"a": 1, "b": 2}}
    assert csv.run(dict(row)) == ["a,b\n1,2\n"]
    assert csv.run(dict(row)) == ["1,2\n"]
    assert csv.run({**row, "reset": True}) == ["a,b\n1,2\n"]
    assert csv.run({"reset": True}) == []  # a reset alone sends nothing
    assert csv.run(dict(row)) == ["a,b\n1,2\n"]
    csv.version = 2  # a new deployment
    assert csv.run(dict(row)) == ["a,b\n1,2\n"]
    assert csv.context["node"][STATE_KEY] == {"header_sent": True, "version": 2}


def test_streaming_split() -> None:
    split = Node({"id": "s1", "type": "split", "splt": ",", "stream": True})
    assert split.run({"payload": "a,b"}) == ["a"]
    sent, _ = run_node_in_context(split.node, {"payload": "c,d"}, context=split.context, version=1)
    assert [m["parts"] for _, m in sent] == [
        {"id": sent[0][1]["parts"]["id"], "type": "string", "ch": ",", "index": 1}
    ]  # no count: a stream has no end; the index counts on from the last message
    assert sent[0][1]["payload"] == "bc"
    split.version = 2
    assert split.run({"payload": "x,y"}) == ["x"]  # afresh: no "d" in front


def test_batch_keeps_what_it_holds() -> None:
    batch = Node({"id": "b1", "type": "batch", "mode": "count", "count": "3", "overlap": "0"})
    assert batch.run_all([{"payload": i} for i in range(4)]) == [0, 1, 2]
    assert batch.run_all([{"payload": 10}, {"payload": 11}]) == [3, 10, 11]
    assert batch.run_all([{"payload": 20}, {"reset": 1}, {"payload": 21}]) == []
    assert batch.context["node"][STATE_KEY]["queue"] == [{"payload": 21}]


def test_concatenating_batch_keeps_sequences_across_jobs() -> None:
    node = {"id": "b2", "type": "batch", "mode": "concat",
            "topics": [{"topic": "a"}, {"topic": "b"}]}  # fmt: skip
    batch = Node(node)

    def part(topic: str, seq: str, index: int) -> dict[str, Any]:
        parts = {"id": seq, "index": index, "count": 2}
        return {"topic": topic, "payload": f"{topic}{index}", "parts": parts}

    assert batch.run_all([part("a", "x", 0), part("a", "x", 1)]) == []
    assert batch.run_all([part("b", "y", 0), part("b", "y", 1)]) == ["a0", "a1", "b0", "b1"]


def test_function_setup_runs_once_per_version_and_its_state_is_hidden() -> None:
    fn = Node(
        {"id": "f1", "type": "function", "initialize": "global.set('n', 0);",
         "func": "global.set('n', global.get('n') + 1);"
                 "msg.payload = [global.get('n'), context.keys()]; return msg;"}
    )  # fmt: skip
    assert fn.run({"payload": 0}) == [[1, []]]
    assert fn.run({"payload": 0}) == [[2, []]]  # the setup did not run again
    fn.version = 2
    assert fn.run({"payload": 0}) == [[1, []]]


def test_a_failing_setup_fails_the_call_and_runs_again_next_time() -> None:
    fn = Node(
        {"id": "f1", "type": "function", "func": "return msg;",
         "initialize": "global.set('n', 0); if (!global.get('ok')) { throw new Error('no'); }"}
    )  # fmt: skip
    with pytest.raises(ServiceError, match="no"):
        fn.run({"payload": 0})
    assert STATE_KEY not in fn.context.get("node", {})
    fn.context["global"] = {"ok": True}
    assert fn.run({"payload": 0}) == [0]
    assert fn.context["node"][STATE_KEY] == {"setup": True, "version": 1}


def lines(*texts: str) -> list[dict[str, Any]]:
    """A sequence of CSV lines, as a split of a file's text sends them."""
    count = len(texts)
    return [{"payload": t, "parts": {"id": "f", "index": i, "count": count}} for i, t in
            enumerate(texts)]  # fmt: skip


def test_csv_column_names_from_a_sequences_first_line() -> None:
    node = {"id": "c2", "type": "csv", "sep": ",", "hdrin": True, "multi": "one", "temp": ""}
    assert keeps_state(node)
    assert is_sequence_node(node)  # it must see the lines in order
    csv = Node(node)
    assert [csv.run(m) for m in lines("a,b", "1,2", "3,4")] == [
        [],
        [{"a": 1, "b": 2}],
        [{"a": 3, "b": 4}],
    ]
    assert Node(node).run_all(lines("a,b", "1,2", "3,4")) == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    csv.version = 2  # afresh: the names of the last deployment are gone
    assert csv.run(lines("x,y", "5,6")[1]) == [{"col1": 5, "col2": 6}]


def test_csv_rows_of_a_sequence_joined_into_one_array() -> None:
    node = {"id": "c3", "type": "csv", "sep": ",", "hdrin": True, "multi": "mult", "temp": ""}
    csv = Node(node)
    assert csv.run_all(lines("a,b", "1,2", "3,4")[:2]) == []  # the last line in the next job
    assert csv.context["node"][STATE_KEY] == {
        "template": ["a", "b"],
        "good": True,
        "rows": [{"a": 1, "b": 2}],
        "version": 1,
    }
    assert csv.run_all(lines("a,b", "1,2", "3,4")[2:]) == [[{"a": 1, "b": 2}, {"a": 3, "b": 4}]]
    assert csv.context["node"][STATE_KEY] == {"template": ["a", "b"], "good": True, "version": 1}


def test_stateful_nodes_copied_per_subflow_instance_are_refused() -> None:
    """Node-RED keeps one state per instance of a subflow's node; the import's copies of it
    share the node's id, so the step engine refuses them rather than share the state."""
    from engines.step import step_runnable
    from translators.nodered import from_nodered

    for inner in (
        {"type": "function", "func": "return msg;", "initialize": "global.set('x', 0);"},
        CSV,
        {"type": "split", "stream": True},
        {"type": "batch", "mode": "count", "count": "2"},
    ):
        flow = [
            {"id": "sf1", "type": "subflow", "name": "S", "in": [{"wires": [{"id": "n1"}]}],
             "out": [{"wires": [{"id": "n1", "port": 0}]}]},
            {**inner, "id": "n1", "z": "sf1", "wires": [[]]},
            {"id": "tab1", "type": "tab", "label": "T"},
            {"id": "in1", "type": "inject", "z": "tab1", "wires": [["i1", "i2"]]},
            {"id": "i1", "type": "subflow:sf1", "z": "tab1", "wires": [["dbg"]]},
            {"id": "i2", "type": "subflow:sf1", "z": "tab1", "wires": [["dbg"]]},
            {"id": "dbg", "type": "debug", "z": "tab1", "wires": []},
        ]  # fmt: skip
        imp = from_nodered(flow)
        verdicts = [step_runnable(w, imp.triggers) for w in imp.workflows]
        assert not all(ok for ok, _ in verdicts), inner
        assert any("several steps of it" in r for _, rs in verdicts for r in rs), verdicts


def test_a_debug_nodes_last_status_is_node_state_kept_per_version() -> None:
    """A debug node showing values as its status sets one only when it changes (``oldState``
    in 21-debug.js); Node-RED forgets the last one on a deploy, so a new version shows it
    again. It is the node's state, no context of its own or anyone else's."""
    node = {"id": "d1", "type": "debug", "tostatus": True, "complete": "payload"}
    assert keeps_state(node)
    assert context_scopes(node) == {"node"}  # its state only: no user of node/flow context
    assert user_context_scopes(node) == set()
    assert not keeps_state({**node, "tostatus": False})
    assert context_scopes({**node, "tostatus": False}) == set()

    def shown(msg: dict[str, Any]) -> list[str]:
        sent, writes = run_node_in_context(
            node, msg, context=debug.context, version=debug.version, events=["status"]
        )
        debug.keep(writes)
        return [m["status"]["text"] for _, m in sent]

    debug = Node(node)
    debug.context["node"] = {"_status": '{"fill":"grey","shape":"dot","text":"hi"}'}  # before
    assert shown({"payload": "hi"}) == ["hi"]
    assert shown({"payload": "hi"}) == []  # the same status: none set
    assert debug.context["node"][STATE_KEY] == {
        "status": '{"fill":"grey","shape":"dot","text":"hi"}',
        "version": 1,
    }
    assert shown({"payload": 2}) == ["2"]
    assert shown({"payload": "hi"}) == ["hi"]  # changed back
    debug.version = 2  # a new version: afresh, the same status is shown again
    assert shown({"payload": "hi"}) == ["hi"]
    assert shown({"payload": "hi"}) == []


def test_a_debug_node_with_a_status_in_a_subflow_uses_no_shared_context() -> None:
    """Its last status is its own state: a debug node of a subflow showing statuses is no user
    of flow/node context beside the tab's (the step engine keeps one flow context per
    workflow, and refuses nodes of several tabs or subflows using it)."""
    from engines.step._context import context_problems
    from fluxo_core.ir import NativeStep
    from translators.nodered import from_nodered

    flow: list[dict[str, Any]] = [
        {"id": "t", "type": "tab", "label": "main"},
        {"id": "sf", "type": "subflow", "name": "s", "in": [{"wires": [{"id": "d"}]}], "out": []},
        {"id": "d", "type": "debug", "z": "sf", "tostatus": True, "wires": []},
        {"id": "s", "type": "status", "z": "sf", "scope": ["d"], "wires": [["g"]]},
        {"id": "g", "type": "function", "z": "sf", "func": "return msg;", "wires": [[]]},
        {"id": "i", "type": "inject", "z": "t", "wires": [["f"]]},
        {
            "id": "f",
            "type": "function",
            "z": "t",
            "func": "flow.set('n',1);return msg;",
            "wires": [["u"]],
        },
        {"id": "u", "type": "subflow:sf", "z": "t", "wires": []},
    ]
    workflow = from_nodered(flow, name="shows").workflows[0]  # the tab's (and the subflow's)
    kinds = [s.config.get("type") for s in workflow.spec.steps if isinstance(s, NativeStep)]
    assert "debug" in kinds
    assert context_problems(workflow) == []
