"""The nodered-node service: one Node-RED node on one message, as Node-RED 4 runs it."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from engines.step import step_runnable
from fluxo_core.errors import ServiceError
from service_runtime.builtin import FunctionLimits, node_problem, nodered_node_service, run_node
from service_runtime.builtin.nodered_function import FunctionSandbox
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
    # a caller may hand in the stores (the service's "context" input)
    seeded = run_node(fn(code), {"payload": None}, context={"node": {"n": 41}})
    assert seeded[0][1]["payload"][0] == 42
    # ... and the step engine refuses a body that reads context, which would differ on Node-RED
    assert "context" in (node_problem(fn(code)) or "")


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
        pool = sandbox._ready_pool()
        pids = list(pool._processes)  # the child that will run the spinning body

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
