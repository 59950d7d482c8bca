"""The nodered-node service: one Node-RED node on one message, as Node-RED 4 runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engines.step import step_runnable
from fluxo_core.errors import ServiceError
from nodered_semantics.context import context_problem, context_scopes
from services import FunctionLimits, node_problem, nodered_node_service, run_node
from services.nodered.function import FunctionSandbox
from services.nodered.service import run_node_in_context
from tests.support.processes import descendants
from translators.nodered import from_nodered


def fn(code: str, **extra: Any) -> dict[str, Any]:
    return {"id": "f1", "type": "function", "name": "calc", "func": code, "outputs": 1, **extra}


def test_function_with_two_outputs_routes_by_port() -> None:
    code = (
        "if (msg.payload > 10) { return [null, {payload: 'big'}]; }\n"
        "return [[{payload: 'a'}, {payload: 'b'}], null];"
    )
    assert run_node(fn(code, outputs=2), {"payload": 50, "_msgid": "m1"}) == [
        (1, {"payload": "big", "_msgid": "m1"})
    ]
    small = run_node(fn(code, outputs=2), {"payload": 1, "_msgid": "m1"})
    assert [(port, m["payload"]) for port, m in small] == [(0, "a"), (0, "b")]


def test_function_keeps_the_other_msg_properties_and_return_null_sends_nothing() -> None:
    out = run_node(fn("msg.payload = msg.payload * 2; return msg;"), {"payload": 4, "topic": "t"})
    assert out == [(0, {"payload": 8, "topic": "t"})]
    assert run_node(fn("return null;"), {"payload": 1}) == []


def test_function_context_lives_for_the_call_only() -> None:
    code = (
        "var n = (context.get('n') || 0) + 1; context.set('n', n);\n"
        "flow.set('seen', true); return {payload: [n, flow.get('seen'), context.keys()]};"
    )
    first = run_node(fn(code), {"payload": None})
    second = run_node(fn(code), {"payload": None})
    assert first == second == [(0, {"payload": [1, True, ["n"]]})]
    # a caller may hand in the stores (the service's "context" input) and keep what it wrote
    sent, writes = run_node_in_context(fn(code), {"payload": None}, context={"node": {"n": 41}})
    assert sent[0][1]["payload"][0] == 42
    assert [w.as_json() for w in writes] == [
        {"scope": "node", "key": "n", "value": 42},
        {"scope": "flow", "key": "seen", "value": True},
    ]
    # ... which is how the step engine keeps context: a body that reads it runs there
    assert node_problem(fn(code)) is None
    assert context_scopes(fn(code)) == {"node", "flow"}


def test_function_context_paths_several_keys_callbacks_and_deletes() -> None:
    code = (
        "flow.set('user.name', 'ada'); flow.set(['a', 'b', 'c'], [1, 2]);\n"
        "flow.set('gone', undefined); context.flow.set('list[1]', 'x');\n"
        "global.get(['g', 'user.name'], function (err, g, none) {\n"
        "  node.send({payload: [g, none, flow.get('user.name'), flow.get('c'), flow.keys()]});\n"
        "});\nreturn null;"
    )
    given = {"flow": {"gone": 1, "keep": 2}, "global": {"g": "G"}}
    sent, writes = run_node_in_context(fn(code), {"payload": None}, context=given)
    keys = ["keep", "user", "a", "b", "c", "list"]
    assert sent == [(0, {"payload": ["G", None, "ada", None, keys]})]
    assert [w.as_json() for w in writes] == [
        {"scope": "flow", "key": "a", "value": 1},
        {"scope": "flow", "key": "b", "value": 2},
        {"scope": "flow", "key": "c", "value": None},
        {"scope": "flow", "key": "gone"},
        {"scope": "flow", "key": "list", "value": [None, "x"]},
        {"scope": "flow", "key": "user", "value": {"name": "ada"}},
    ]
    assert context_problem(fn("flow.get('n', 'file')")) is not None
    assert context_problem(fn("flow.set('#:(file)::n', 1)")) is not None
    assert context_problem(fn("flow.get(['a', 'b'], function () {})")) is None


def test_change_switch_and_template_use_context() -> None:
    rules = [
        {"t": "set", "p": "count", "pt": "flow", "to": "payload", "tot": "msg"},
        {"t": "move", "p": "topic", "pt": "msg", "to": "stash.t", "tot": "global"},
        {"t": "set", "p": "payload", "pt": "msg", "to": "limit", "tot": "flow"},
        {"t": "delete", "p": "old", "pt": "flow"},
    ]
    given = {"flow": {"limit": 3, "old": 1}}
    sent, writes = run_node_in_context(change(*rules), {"payload": 5, "topic": "t"}, context=given)
    assert sent == [(0, {"payload": 3})]
    assert [w.as_json() for w in writes] == [
        {"scope": "flow", "key": "count", "value": 5},
        {"scope": "flow", "key": "old"},
        {"scope": "global", "key": "stash", "value": {"t": "t"}},
    ]
    over = switch(
        {"t": "gt", "v": "limit", "vt": "flow"}, {"t": "else"}, property="n", propertyType="global"
    )
    low, high = (
        {"flow": {"limit": 1}, "global": {"n": 2}},
        {"flow": {"limit": 2}, "global": {"n": 2}},
    )
    assert [port for port, _ in run_node(over, {}, context=low)] == [0]
    assert [port for port, _ in run_node(over, {}, context=high)] == [1]
    tmpl = {
        "id": "t1",
        "type": "template",
        "field": "line",
        "fieldType": "flow",
        "template": "{{global.who.name}} #{{flow.n}}",
        "syntax": "mustache",
        "output": "str",
    }
    sent, writes = run_node_in_context(
        tmpl, {"payload": 1}, context={"flow": {"n": 7}, "global": {"who": {"name": "ada"}}}
    )
    assert sent == [(0, {"payload": 1})]
    assert [w.as_json() for w in writes] == [{"scope": "flow", "key": "line", "value": "ada #7"}]
    assert context_scopes(tmpl) == {"flow", "global"}


def test_function_env_and_clone_message() -> None:
    code = "var c = RED.util.cloneMessage(msg); c.payload = env.get('NR_NODE_ID') + env.get('X');"
    out = run_node(fn(code + " return c;"), {"payload": 1}, env={"X": "!"})
    assert out == [(0, {"payload": "f1!"})]


def test_function_time_limit() -> None:
    with pytest.raises(ServiceError, match=r"function node f1 \(calc\).*time limit") as caught:
        run_node(fn("while (true) {}"), {"payload": 1}, limits=FunctionLimits(time_s=0.2))
    assert caught.value.context == {"node": "f1", "limit": "time"}
    assert caught.value.retryable is False


def test_function_memory_limit() -> None:
    hog = "var a = []; while (true) { a.push([a.length, a.length + 1]); }"
    with pytest.raises(ServiceError, match="memory limit of 8 MiB") as caught:
        run_node(fn(hog), {"payload": 1}, limits=FunctionLimits(memory_bytes=8 << 20))
    assert caught.value.context["limit"] == "memory"


def test_function_errors_name_the_node() -> None:
    with pytest.raises(ServiceError, match=r"function node f1 \(calc\) failed: Error: nope"):
        run_node(fn("throw new Error('nope')"), {"payload": 1})
    with pytest.raises(ServiceError, match="require\\('fs'\\) is not available"):
        run_node(fn("const fs = require('fs'); return msg;"), {"payload": 1})
    with pytest.raises(ServiceError, match="external modules \\(lodash\\)"):
        run_node(fn("return msg;", libs=[{"var": "_", "module": "lodash"}]), {"payload": 1})


def test_template_mustache_escapes_like_mustache_js_and_prints_like_javascript() -> None:
    node = {
        "id": "t1",
        "type": "template",
        "field": "payload",
        "fieldType": "msg",
        "syntax": "mustache",
        "output": "str",
        "template": "{{topic}}: {{payload.name}} {{{payload.raw}}} {{payload.n}} "
        "{{#payload.items}}[{{.}}]{{/payload.items}}{{^payload.none}}none{{/payload.none}}",
    }
    msg = {"topic": "T", "payload": {"name": "<b>", "raw": "<i>", "n": 2.0, "items": [1, "a"]}}
    assert run_node(node, msg) == [(0, {"topic": "T", "payload": "T: &lt;b&gt; <i> 2 [1][a]none"})]


def test_template_parses_json_and_yaml_output_into_another_property() -> None:
    base = {"id": "t2", "type": "template", "fieldType": "msg", "syntax": "mustache"}
    as_json = {**base, "field": "out", "output": "json", "template": '{"v": "{{payload}}"}'}
    # strings are JSON-escaped for json output (a newline survives), and HTML-escaped as ever
    assert run_node(as_json, {"payload": "a\nb<"}) == [
        (0, {"payload": "a\nb<", "out": {"v": "a\nb&lt;"}})
    ]
    as_yaml = {**base, "field": "payload", "output": "yaml", "template": "k: {{payload}}"}
    assert run_node(as_yaml, {"payload": 3}) == [(0, {"payload": {"k": 3}})]


def test_json_both_directions() -> None:
    node = {"id": "j1", "type": "json", "property": "payload", "action": ""}
    assert run_node(node, {"payload": '{"a": [1, 2.0]}'}) == [(0, {"payload": {"a": [1, 2.0]}})]
    assert run_node(node, {"payload": {"a": 1.0}}) == [(0, {"payload": '{"a":1}'})]
    pretty = {**node, "action": "str", "pretty": True, "property": "data"}
    assert run_node(pretty, {"data": {"a": 1}}) == [(0, {"data": '{\n    "a": 1\n}'})]
    with pytest.raises(ServiceError, match=r"json node j1: msg\.payload is not JSON"):
        run_node(node, {"payload": "{nope"})
    schema = {"type": "object", "required": ["b"]}
    with pytest.raises(ServiceError, match="JSON Schema validation failed"):
        run_node(node, {"payload": '{"a": 1}', "schema": schema})


def test_csv_with_a_header_line_into_one_message_per_row() -> None:
    node = {"id": "c1", "type": "csv", "sep": ",", "hdrin": True, "multi": "one", "ret": "\\n"}
    out = run_node(node, {"payload": 'name,qty\nada,2\n"b,c",x\n', "_msgid": "m"})
    assert [m["payload"] for _, m in out] == [
        {"name": "ada", "qty": 2},
        {"name": "b,c", "qty": "x"},
    ]
    assert out[1][1]["parts"] == {"id": "m", "index": 1, "count": 2}
    assert out[0][1]["columns"] == "name,qty"


def test_csv_objects_to_text_with_a_header() -> None:
    node = {"id": "c2", "type": "csv", "sep": ",", "hdrout": "all", "ret": "\\n", "temp": ""}
    out = run_node(node, {"payload": [{"a": 1, "b": "x,y"}, {"a": 2, "b": 'q"'}]})
    assert out[0][1]["payload"] == 'a,b\n1,"x,y"\n2,"q"""\n'


def test_the_service_tags_each_message_with_its_port() -> None:
    service = nodered_node_service()
    out = service.handler(
        {"node": fn("return [msg, {payload: 2}];", outputs=2), "msg": {"payload": 1}}
    )
    assert out == [{"port": 0, "msg": {"payload": 1}}, {"port": 1, "msg": {"payload": 2}}]
    assert service.handler({"node": fn("return null;"), "msg": {"payload": 1}}) is None


def test_unsupported_node_types_are_refused_by_name() -> None:
    with pytest.raises(ServiceError, match="node x1: the 'exec' node type runs only on Node-RED"):
        run_node({"id": "x1", "type": "exec"}, {"payload": 1})


def test_step_runnable_names_the_step_and_node() -> None:
    flow = [
        {"id": "tab", "type": "tab", "label": "t"},
        {"id": "i", "type": "inject", "z": "tab", "x": 0, "y": 0, "wires": [["f"]]},
        fn("return msg;", z="tab", x=1, y=1, wires=[["e"]]) | {"id": "f"},
        {"id": "e", "type": "exec", "z": "tab", "x": 2, "y": 2, "wires": [[], [], []]},
    ]
    workflow = from_nodered(flow).workflows[0]
    ok, reasons = step_runnable(workflow)
    assert not ok
    assert len(reasons) == 1
    assert "(exec node e)" in reasons[0]
    assert "runs only on Node-RED" in reasons[0]


# --- process isolation ---------------------------------------------------------------------------


def test_a_dead_sandbox_process_fails_the_call_and_the_next_call_works() -> None:
    """QuickJS can segfault on some out-of-memory paths: the child dies, not the worker."""
    sandbox = FunctionSandbox(processes=1)
    spin = {"id": "spin", "type": "function", "func": "for (;;) {}", "outputs": 1}
    try:
        sandbox.run({"id": "warm", "type": "function", "func": "return msg;"}, {"payload": {}})
        pids = sandbox.pids()  # the child that will run the spinning body
        assert len(pids) == 1

        def kill_soon() -> None:
            threading.Event().wait(0.3)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)

        threading.Thread(target=kill_soon).start()
        with pytest.raises(ServiceError, match="sandbox process running it died") as info:
            sandbox.run(spin, {"payload": {}}, limits=FunctionLimits(time_s=5))
        assert info.value.retryable is False
        ok = {"id": "ok", "type": "function", "func": "msg.payload.x = 1; return msg;"}
        assert sandbox.run(ok, {"payload": {}}).outputs == [(0, {"payload": {"x": 1}})]
    finally:
        sandbox.close()


REDOS = {
    "id": "redos",
    "type": "function",
    "name": "validate",
    # QuickJS's regular-expression engine never checks its time limit: exponential backtracking
    "func": "msg.payload = /^(a+)+$/.test('a'.repeat(34) + 'b'); return msg;",
    "outputs": 1,
}


@pytest.mark.timeout(90)
def test_catastrophic_regexes_are_killed_by_the_parent_and_leave_no_process_behind() -> None:
    sandbox = FunctionSandbox(processes=1)
    limits = FunctionLimits(time_s=0.05)
    ok = {"id": "ok", "type": "function", "func": "msg.payload.x = 1; return msg;"}
    try:
        assert sandbox.run(ok, {"payload": {}}).outputs == [(0, {"payload": {"x": 1}})]
        before = descendants()  # the fork server and one warm child
        server = before - set(sandbox.pids())
        for _ in range(20):
            with pytest.raises(ServiceError, match=r"time limit of 0\.05 s") as info:
                sandbox.run(REDOS, {"payload": "x"}, limits=limits)
            assert "function node redos (validate)" in info.value.message
            assert "stopped after 0.55 s" in info.value.message
            assert (info.value.retryable, info.value.context) == (
                False,
                {"node": "redos", "limit": "time"},
            )
            # the child that ran it was killed and reaped before the call failed
            assert descendants() == server
        assert sandbox.run(ok, {"payload": {}}).outputs == [(0, {"payload": {"x": 1}})]
        assert len(descendants()) == len(before)
    finally:
        sandbox.close()


_DYING_WORKER = """
import os, sys, threading
from services.nodered.function import FunctionLimits, FunctionSandbox
from tests.support.processes import descendants

if __name__ == "__main__":
    sandbox = FunctionSandbox(processes=1)
    sandbox.run({"id": "warm", "type": "function", "func": "return msg;"}, {"payload": 1})
    node = {"id": "redos", "type": "function", "func": sys.argv[1]}
    limits = FunctionLimits(time_s=600)
    threading.Thread(target=sandbox.run, args=(node, {}), kwargs={"limits": limits}).start()
    print(" ".join(map(str, descendants())), flush=True)
    sys.stdin.readline()  # the test has read the pids: die as a SIGKILLed worker would
    os._exit(0)
"""


@pytest.mark.timeout(60)
def test_a_child_spinning_in_a_regex_dies_with_the_worker_that_started_it() -> None:
    """A worker that crashes mid-call cannot kill its child: the child must not outlive it."""
    body = REDOS["func"]
    with subprocess.Popen(
        [sys.executable, "-c", _DYING_WORKER, body],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as worker:
        assert worker.stdout is not None
        assert worker.stdin is not None
        started = {int(pid) for pid in worker.stdout.readline().split()}
        assert len(started) >= 2  # the fork server and the child (and the resource tracker)
        worker.stdin.write("\n")
        worker.stdin.flush()
        assert worker.wait(timeout=10) == 0
    deadline = time.monotonic() + 30
    while started & alive_pids() and time.monotonic() < deadline:
        threading.Event().wait(0.1)  # the kernel kills the orphans asynchronously
    assert not started & alive_pids()


def alive_pids() -> set[int]:
    return {int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()}


def test_errors_keep_their_details_across_the_process_boundary() -> None:
    sandbox = FunctionSandbox(processes=1)
    try:
        spin = {"id": "spin", "type": "function", "func": "for (;;) {}", "outputs": 1}
        with pytest.raises(ServiceError, match="time limit") as info:
            sandbox.run(spin, {"payload": {}}, limits=FunctionLimits(time_s=0.2))
        assert (info.value.retryable, info.value.context) == (
            False,
            {"node": "spin", "limit": "time"},
        )
    finally:
        sandbox.close()


# --- change, switch, range, sort (expected values checked against Node-RED 4.1's own nodes) -----


def change(*rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "c1",
        "type": "change",
        "name": "chg",
        "rules": [{"pt": "msg", **r} for r in rules],
    }


def only(sent: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    assert [port for port, _ in sent] == [0], sent
    return sent[0][1]


def test_change_sets_typed_values_on_nested_paths_creating_what_is_missing() -> None:
    node = change(
        {"t": "set", "p": "a.b[1].c", "to": "x", "tot": "str"},
        {"t": "set", "p": "n", "to": " 0x10 ", "tot": "num"},
        {"t": "set", "p": "flag", "to": "TRUE", "tot": "bool"},
        {"t": "set", "p": "j", "to": '{"k": [1, 2]}', "tot": "json"},
        {"t": "set", "p": "q['w e']", "to": "topic", "tot": "msg"},
        {"t": "set", "p": "payload[msg.topic]", "to": "1", "tot": "num"},
    )
    out = only(run_node(node, {"payload": {}, "topic": "t"}))
    assert out == {
        "payload": {"t": 1},
        "topic": "t",
        "a": {"b": [None, {"c": "x"}]},
        "n": 16,
        "flag": True,
        "j": {"k": [1, 2]},
        "q": {"w e": "t"},
    }
    # a property below a string cannot be set: the rule does nothing, the message goes on
    blocked = change({"t": "set", "p": "n.x", "to": "1", "tot": "str"})
    assert only(run_node(blocked, {"n": 5})) == {"n": 5}


def test_change_set_from_a_missing_property_deletes_and_msg_values_are_shared() -> None:
    missing = change({"t": "set", "p": "payload", "to": "nothing", "tot": "msg"})
    assert only(run_node(missing, {"payload": 1, "topic": "t"})) == {"topic": "t"}
    # without deep copy the two properties are one object, as in JavaScript
    shared = change(
        {"t": "set", "p": "payload", "to": "o", "tot": "msg"},
        {"t": "set", "p": "o.a", "to": "changed", "tot": "str"},
    )
    assert only(run_node(shared, {"o": {"a": 1}}))["payload"] == {"a": "changed"}
    copied = change(
        {"t": "set", "p": "payload", "to": "o", "tot": "msg", "dc": True},
        {"t": "set", "p": "o.a", "to": "changed", "tot": "str"},
    )
    assert only(run_node(copied, {"o": {"a": 1}}))["payload"] == {"a": 1}


def test_change_jsonata_sees_the_message_and_node_red_bindings() -> None:
    node = change(
        {"t": "set", "p": "payload", "to": "payload & ', World!'", "tot": "jsonata"},
        {"t": "set", "p": "count", "to": "$count(items)", "tot": "jsonata"},
        {"t": "set", "p": "legacy", "to": "msg.topic", "tot": "jsonata"},
        {
            "t": "set",
            "p": "who",
            "to": "$env('NR_NODE_ID') & '/' & $env('NR_NODE_NAME')",
            "tot": "jsonata",
        },
        {"t": "set", "p": "rem", "to": "2.5 % 2", "tot": "jsonata"},
        {"t": "set", "p": "topic", "to": "nothing", "tot": "jsonata"},  # undefined: deletes
    )
    out = only(run_node(node, {"payload": "Hello", "items": [1, 2], "topic": "t"}))
    assert out == {
        "payload": "Hello, World!",
        "items": [1, 2],
        "count": 2,
        "legacy": "t",
        "who": "c1/chg",
        "rem": 0.5,
    }
    bad = change({"t": "set", "p": "payload", "to": "$number('x') + 1", "tot": "jsonata"})
    with pytest.raises(ServiceError, match=r"change node c1 \(chg\): invalid JSONata"):
        run_node(bad, {"payload": 1})


def test_change_replaces_in_strings_numbers_and_booleans() -> None:
    def run(rule: dict[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
        return only(run_node(change({"t": "change", "p": "payload", **rule}), msg))

    text = {"payload": "Hello World hello"}
    assert run({"from": "hello", "fromt": "str", "to": "bye", "tot": "str"}, text)["payload"] == (
        "Hello World bye"
    )
    # regex with JavaScript replacement patterns; the whole string equal to `from` takes `to`'s type
    swapped = run(
        {"from": "(\\w+) (\\w+)", "fromt": "re", "to": "$2 $1 [$&] $$", "tot": "str"}, text
    )
    assert swapped["payload"] == "World Hello [Hello World] $ hello"
    assert run({"from": "Hello World hello", "fromt": "str", "to": "7", "tot": "num"}, text) == {
        "payload": 7
    }
    assert run({"from": "x*", "fromt": "re", "to": "-", "tot": "str"}, {"payload": "ab"}) == {
        "payload": "-a-b-"
    }
    # numbers and booleans are only replaced when equal to `from`
    assert run({"from": "42", "fromt": "num", "to": "X", "tot": "str"}, {"payload": 42}) == {
        "payload": "X"
    }
    assert run({"from": "4", "fromt": "num", "to": "X", "tot": "str"}, {"payload": 42}) == {
        "payload": 42
    }
    assert run(
        {"from": "true", "fromt": "bool", "to": "false", "tot": "bool"}, {"payload": True}
    ) == {"payload": False}
    # a string turned into "true" becomes the boolean when `to` is a boolean
    assert run(
        {"from": "yes", "fromt": "str", "to": "true", "tot": "bool"}, {"payload": "yes!"}
    ) == {"payload": "true!"}


def test_change_delete_and_move() -> None:
    msg = {"payload": {"a": [1, 2, 3]}, "topic": "t"}
    deleted = only(run_node(change({"t": "delete", "p": "payload.a[0]"}), msg))
    assert deleted == {"payload": {"a": [2, 3]}, "topic": "t"}  # an array element is spliced out
    moved = only(run_node(change({"t": "move", "p": "topic", "to": "payload", "tot": "msg"}), msg))
    assert moved == {"payload": "t"}
    down = change({"t": "move", "p": "payload", "to": "new.deep", "tot": "msg"})
    assert only(run_node(down, msg)) == {"topic": "t", "new": {"deep": {"a": [1, 2, 3]}}}
    up = change({"t": "move", "p": "payload.a", "to": "payload", "tot": "msg"})
    assert only(run_node(up, msg)) == {"payload": [1, 2, 3], "topic": "t"}


def test_change_old_format_and_problems() -> None:
    old = {
        "id": "c2",
        "type": "change",
        "action": "replace",
        "property": "payload",
        "to": "msg.topic",
    }
    assert only(run_node(old, {"payload": 1, "topic": "t"})) == {"payload": "t", "topic": "t"}
    assert node_problem(change({"t": "set", "p": "payload", "to": "x", "tot": "str"})) is None
    in_context = {"t": "set", "p": "n", "pt": "flow", "to": "x", "tot": "global"}
    assert node_problem(change(in_context)) is None
    reads = {
        "t": "set",
        "p": "p",
        "to": "$flowContext('n') + $globalContext('g')",
        "tot": "jsonata",
    }
    assert node_problem(change(reads)) is None
    assert context_scopes(change(reads)) == {"flow", "global"}
    got = run_node(change(reads), {}, context={"flow": {"n": 1}, "global": {"g": 2}})
    assert got == [(0, {"p": 3})]
    refused = {
        "context store 'file'": {"t": "set", "p": "#:(file)::n", "pt": "flow", "to": "1"},
        "environment variable HOME": {"t": "set", "p": "payload", "to": "HOME", "tot": "env"},
        "Date object or moment format": {"t": "set", "p": "p", "to": "YYYY", "tot": "date"},
        "does not parse": {"t": "set", "p": "p", "to": "{bad", "tot": "json"},
        "is NaN": {"t": "set", "p": "p", "to": "abc", "tot": "num"},
        "$moment": {"t": "set", "p": "p", "to": "$moment()", "tot": "jsonata"},
    }
    for reason, rule in refused.items():
        assert reason in (node_problem(change(rule)) or ""), reason


def switch(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    base = {"id": "s1", "type": "switch", "property": "payload", "propertyType": "msg"}
    return {**base, "rules": list(rules), "checkall": "true", "outputs": len(rules), **extra}


def ports(node: dict[str, Any], payload: Any) -> list[int]:
    return [port for port, _ in run_node(node, {"payload": payload, "topic": "t"})]


def test_switch_compares_as_javascript_does() -> None:
    eq10 = switch({"t": "eq", "v": "10", "vt": "num"})
    assert [ports(eq10, v) for v in (10, "10", " 10 ", "0xa", [10], 11, None)] == [
        [0],
        [0],
        [0],
        [0],
        [0],
        [],
        [],
    ]
    lt = switch({"t": "lt", "v": "10", "vt": "str"})
    assert [ports(lt, v) for v in ("9", "1000", 9, None, "abc")] == [[], [], [0], [0], []]
    between = switch({"t": "btwn", "v": "10", "vt": "num", "v2": "1", "v2t": "num"})
    assert [ports(between, v) for v in (1, 5, 10, 11, "5")] == [[0], [0], [0], [], [0]]
    topic = switch({"t": "eq", "v": "topic", "vt": "msg"})
    assert ports(topic, "t") == [0]


def test_switch_rule_kinds() -> None:
    rules = {
        "cont": ({"t": "cont", "v": "1", "vt": "num"}, [[1, 2], "x", 21]),
        "regex": ({"t": "regex", "v": "^a.c$", "vt": "str", "case": True}, ["ABC", "abcd", "a\nc"]),
        "true": ({"t": "true"}, [True, "true", 1]),
        "null": ({"t": "null"}, [None, 0, ""]),
        "empty": ({"t": "empty"}, ["", [], {}]),
        "nempty": ({"t": "nempty"}, [0, [0], {"a": 1}]),
        "istype json": ({"t": "istype", "v": "json", "vt": "json"}, ['{"a":1}', [1], {}]),
        "istype number": ({"t": "istype", "v": "number", "vt": "number"}, [1, "1", True]),
        "istype object": ({"t": "istype", "v": "object", "vt": "object"}, [{}, [], None]),
        "hask": ({"t": "hask", "v": "length", "vt": "str"}, ["abc", {"length": 1}, 5]),
        "jsonata_exp": ({"t": "jsonata_exp", "v": "payload % 2 = 1", "vt": "jsonata"}, [3, 4, 2.5]),
    }
    got = {name: [ports(switch(rule), v) for v in values] for name, (rule, values) in rules.items()}
    assert got == {
        "cont": [[0], [], [0]],
        "regex": [[0], [], []],
        "true": [[0], [], []],
        "null": [[0], [], []],
        "empty": [[0], [0], [0]],
        "nempty": [[], [0], [0]],
        "istype json": [[0], [0], []],
        "istype number": [[0], [], []],
        "istype object": [[0], [], []],
        "hask": [[0], [0], []],
        "jsonata_exp": [[0], [], []],
    }


def test_switch_otherwise_checkall_and_jsonata_property() -> None:
    rules = [
        {"t": "gt", "v": "0", "vt": "num"},
        {"t": "else"},
        {"t": "lt", "v": "5", "vt": "num"},
        {"t": "else"},
    ]
    every = switch(*rules)
    assert [ports(every, v) for v in (3, -1, 7)] == [[0, 2], [1, 2], [0, 3]]
    first = switch(*rules, checkall="false")
    assert [ports(first, v) for v in (3, -1, 7)] == [[0], [1], [0]]
    # Node-RED reads `n.checkall || "true"`: only the string "false" stops at the first match
    assert ports(switch(*rules, checkall=False), 3) == [0, 2]
    parity = switch(
        {"t": "true"}, {"t": "false"}, property="payload % 2 = 0", propertyType="jsonata"
    )
    assert [ports(parity, v) for v in (4, 3, "x")] == [[0], [1], []]
    # every port gets its own copy of the message
    sent = run_node(every, {"payload": 3})
    assert sent[0][1] == sent[1][1]
    assert sent[0][1] is not sent[1][1]


def test_switch_problems() -> None:
    assert node_problem(switch({"t": "eq", "v": "1", "vt": "num"})) is None
    refused = {
        "place in a sequence": switch({"t": "head", "v": "2", "vt": "num"}),
        "recreates message sequences": switch({"t": "else"}, repair=True),
        "context store 'memory'": switch({"t": "eq", "v": "#:(memory)::n", "vt": "flow"}),
        "previous message": switch({"t": "eq", "v": "", "vt": "prev"}),
        "unknown operator": switch({"t": "nope"}),
    }
    for reason, node in refused.items():
        assert reason in (node_problem(node) or ""), reason


def rng(action: str, *, rnd: bool = False, **extra: Any) -> dict[str, Any]:
    limits = {"minin": "0", "maxin": "10", "minout": "0", "maxout": "100"}
    return {"id": "r1", "type": "range", "action": action, "round": rnd, **limits, **extra}


def test_range_scale_clamp_roll_drop_and_round() -> None:
    def values(node: dict[str, Any], *inputs: Any) -> list[Any]:
        return [m["payload"] for v in inputs for _, m in run_node(node, {"payload": v})]

    assert values(rng("scale"), 5, "2.5", -5, 12, True, None) == [50, 25, -50, 120, 10, 0]
    assert values(rng("clamp"), -5, 12, 3) == [0, 100, 30]
    assert values(rng("roll"), 12, -1, 10) == [20, 90, 0]
    assert values(rng("drop"), -1, 5, 11) == [50]
    # rounding: maxout 9.5 floors to 9, Math.round(4.5) is 5
    assert values(rng("scale", rnd=True, maxout="9.5"), 5, 10, 0.5) == [5, 9, 0]
    # reversed input range: both ranges swap
    assert values(rng("scale", minin="10", maxin="0"), 2) == [80]
    # not a number: nothing is sent; no property: the message passes unchanged
    assert run_node(rng("scale"), {"payload": "x"}) == []
    assert run_node(rng("scale", property="p"), {"topic": "t"}) == [(0, {"topic": "t"})]
    with pytest.raises(ServiceError, match=r"range node r1: Cannot read properties of undefined"):
        run_node(rng("scale", property="p.q"), {"topic": "t"})  # Node-RED throws too
    assert "empty" in (node_problem(rng("scale", maxin="0")) or "")
    assert "not a finite number" in (node_problem(rng("scale", minout="x")) or "")


def sort_node(**extra: Any) -> dict[str, Any]:
    base = {"id": "o1", "type": "sort", "order": "ascending", "as_num": False}
    return {**base, "target": "payload", "targetType": "msg", "msgKeyType": "elem", **extra}


def test_sort_an_array_in_the_message() -> None:
    def sort(node: dict[str, Any], payload: Any) -> Any:
        return only(run_node(node, {"payload": payload}))["payload"]

    assert sort(sort_node(), [3, 1, 10, 2]) == [1, 2, 3, 10]
    assert sort(sort_node(), ["10", "9", "1"]) == ["1", "10", "9"]  # strings compare as text
    assert sort(sort_node(as_num=True), ["10", "9", "1"]) == ["1", "9", "10"]
    assert sort(sort_node(order="descending"), ["b", "a", "C"]) == ["b", "a", "C"]
    items = [{"price": 3, "name": "x"}, {"price": 1, "name": "y"}, {"price": 3, "name": "a"}]
    by_price = sort(sort_node(msgKey="price", msgKeyType="jsonata"), items)
    assert [i["name"] for i in by_price] == ["y", "x", "a"]  # stable
    key = '$substring("0000" & $string(price), -4) & name'
    assert [i["name"] for i in sort(sort_node(msgKey=key, msgKeyType="jsonata"), items)] == [
        "y",
        "a",
        "x",
    ]
    assert run_node(sort_node(), {"payload": "not an array"}) == []
    with pytest.raises(ServiceError, match="mix types"):
        run_node(sort_node(), {"payload": [1, "a"]})
    assert "message sequence" in (node_problem(sort_node(targetType="seq")) or "")
