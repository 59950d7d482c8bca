"""A flow calling its own ``http in`` endpoints (``http://localhost:1880/...``) on the step
engine: the call is answered in the job, by a copy of the endpoint's nodes, as Node-RED 4.1
answers it (routes with ``:params``, the query, the request headers, a posted body; the
``http response`` node's status, headers and payload as the ``http request`` node returns them).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engines.step import NODERED_MSG_CONTENT_TYPE, step_runnable
from fluxo.control.platform import Platform
from fluxo_core.ir import ENTRY_HEADER
from fluxo_core.storage import Database, Principal
from tests.support.nodered_platform import nodered_platform
from translators.nodered import from_nodered

ME = Principal(account_id="acme", user_id="ada")
MSG = {"content-type": NODERED_MSG_CONTENT_TYPE}
ROOT = "http://localhost:1880"


def _node(nid: str, kind: str, wires: list[str], **config: Any) -> dict[str, Any]:
    return {
        "id": nid,
        "type": kind,
        "z": "t",
        "name": nid,
        "x": 0,
        "y": 0,
        "wires": [wires],
        **config,
    }


def _fn(nid: str, code: str, wires: list[str]) -> dict[str, Any]:
    return _node(nid, "function", wires, func=code, outputs=1)


def _request(nid: str, url: str, method: str = "GET", ret: str = "obj") -> dict[str, Any]:
    return _node(nid, "http request", [], method=method, ret=ret, url=url, paytoqs="ignore")


def _endpoint(nid: str, method: str, url: str, wires: list[str]) -> dict[str, Any]:
    return _node(nid, "http in", wires, method=method, url=url, upload=False)


ECHO = """msg.payload = {params: msg.req.params, query: msg.req.query, body: msg.req.body,
  agent: msg.req.headers['user-agent'], type: msg.req.headers['content-type'] || null,
  method: msg.req.method, got: msg.payload, topic: msg.topic === undefined ? 'none' : msg.topic};
return msg;"""

FLOW: list[dict[str, Any]] = [
    {"id": "t", "type": "tab", "label": "Self"},
    # endpoints
    _endpoint("in-hello", "get", "/hello", ["page"]),
    _node(
        "page",
        "template",
        ["out"],
        field="payload",
        fieldType="msg",
        syntax="mustache",
        output="str",
        template="<h1>Hello {{req.query.name}}!</h1>",
    ),
    _endpoint("in-echo", "get", "/echo/:name/:rest?", ["echo"]),
    _endpoint("in-post", "post", "/echo", ["echo"]),
    _fn("echo", ECHO, ["out"]),
    _endpoint("in-made", "get", "/made", ["made"]),
    _fn(
        "made",
        "msg.statusCode = 201; msg.headers = {'x-made': 'yes'}; msg.payload = 42; return msg;",
        ["out"],
    ),
    _node("out", "http response", [], statusCode="", headers={}),
    # callers: each inject starts its own request
    _node("i-hello", "inject", ["r-hello"], props=[{"p": "payload"}]),
    _request("r-hello", f"{ROOT}/hello?name=Nick", ret="txt"),
    _node("i-echo", "inject", ["r-echo"], props=[{"p": "payload"}]),
    _request("r-echo", f"{ROOT}/Echo/N%C3%AFck?a=1&a=2&b[c]=d+e"),
    _node("i-post", "inject", ["r-post"], props=[{"p": "payload"}]),
    _request("r-post", f"{ROOT}/echo", method="POST"),
    _node(
        "i-url",
        "inject",
        ["r-url"],
        props=[{"p": "payload"}, {"p": "url", "v": f"{ROOT}/made", "vt": "str"}],
    ),
    _request("r-url", "", ret="txt"),
]


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    async with nodered_platform(db) as platform:
        yield platform


async def _run(fluxo: Platform, flow: list[dict[str, Any]], inject: str, msg: dict[str, Any]):
    imp = from_nodered(flow)
    (workflow,) = imp.workflows
    assert step_runnable(workflow, imp.triggers) == (True, [])
    doc = workflow.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    await fluxo.jobs.apply(doc, ME)
    entry = next(t.entry for t in imp.triggers if t.node_id == inject)
    assert entry is not None
    job = await fluxo.jobs.create(ME, "self", msg, headers={**MSG, ENTRY_HEADER: entry})
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    return done


def _sent(done: Any, step: str) -> dict[str, Any]:
    """The message the step of node ``step`` sent (its one output; one step ran)."""
    (state,) = [s for s in done.steps or [] if s.step_id.split("-")[0] == step]
    (item,) = state.output
    msg: dict[str, Any] = item["msg"]
    return msg


@pytest.mark.timeout(60)
async def test_a_get_with_a_query_answers_with_the_endpoints_page(fluxo: Platform) -> None:
    done = await _run(fluxo, FLOW, "i-hello", {"payload": 1, "topic": "t1"})
    msg = _sent(done, "out")
    assert msg["payload"] == "<h1>Hello Nick!</h1>"
    assert msg["statusCode"] == 200
    assert msg["topic"] == "t1"  # the request node's message goes on, not the endpoint's
    assert msg["headers"]["content-type"] == "text/html; charset=utf-8"
    assert msg["headers"]["content-length"] == "20"
    assert "x-powered-by" not in msg["headers"]  # Node-RED turns it off
    assert msg["responseUrl"] == f"{ROOT}/hello?name=Nick"
    assert "req" not in msg
    assert "res" not in msg
    # The endpoint's own copy for the http in trigger is not what ran: a copy for this call.
    assert "page" not in {s.step_id for s in done.steps or []}


@pytest.mark.timeout(60)
async def test_route_parameters_query_and_headers_reach_the_endpoint(fluxo: Platform) -> None:
    flow = [dict(n) for n in FLOW]
    for n in flow:
        if n["id"] == "r-echo":
            n["headers"] = [
                {
                    "keyType": "other",
                    "keyValue": "User-Agent",
                    "valueType": "other",
                    "valueValue": "Node-RED",
                }
            ]
    done = await _run(fluxo, flow, "i-echo", {"payload": 5, "topic": "t2"})
    msg = _sent(done, "out")
    assert msg["statusCode"] == 200
    assert msg["headers"]["content-type"] == "application/json; charset=utf-8"
    assert msg["payload"] == {
        # decoded; the optional :rest absent; the route matched whatever the case
        "params": {"name": "Nïck"},
        "body": {},  # Node-RED's parsers leave a GET's body an empty object
        "query": {"a": ["1", "2"], "b": {"c": "d e"}},
        "agent": "Node-RED",
        "type": None,
        "method": "GET",
        "got": {"a": ["1", "2"], "b": {"c": "d e"}},  # a GET's payload is req.query
        "topic": "none",  # the endpoint's message is a new one
    }
    assert msg["topic"] == "t2"


@pytest.mark.timeout(60)
async def test_posted_text_and_json_are_the_endpoints_payload(fluxo: Platform) -> None:
    done = await _run(fluxo, FLOW, "i-post", {"payload": "Nick"})
    got = _sent(done, "out")["payload"]
    assert (got["got"], got["body"], got["type"], got["method"]) == ("Nick", "Nick", None, "POST")
    done = await _run(fluxo, FLOW, "i-post", {"payload": {"n": [1, 2]}})
    got = _sent(done, "out")["payload"]
    assert (got["got"], got["type"]) == ({"n": [1, 2]}, "application/json")


@pytest.mark.timeout(60)
async def test_status_headers_and_a_url_set_by_the_inject(fluxo: Platform) -> None:
    done = await _run(fluxo, FLOW, "i-url", {"payload": 0, "url": f"{ROOT}/made"})
    msg = _sent(done, "out")
    assert (msg["statusCode"], msg["payload"]) == (201, "42")
    assert msg["headers"]["x-made"] == "yes"
    assert msg["headers"]["content-length"] == "2"


def test_calls_that_cannot_be_answered_as_on_node_red_are_refused_saying_why() -> None:
    computed = [
        *FLOW,
        _node("i-fn", "inject", ["fn-url"], props=[{"p": "payload"}]),
        _fn("fn-url", f"msg.url = '{ROOT}/made'; return msg;", ["r-fn"]),
        _request("r-fn", ""),
    ]
    imp = from_nodered(computed)
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert any("msg.url at run time" in r and "r-fn" in r for r in reasons), reasons
    missing = [*FLOW, _node("i-x", "inject", ["r-x"]), _request("r-x", f"{ROOT}/nowhere")]
    imp = from_nodered(missing)
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    assert any("no http in node of the flow answers GET /nowhere" in r for r in reasons), reasons
    editor = [*FLOW, _node("i-f", "inject", ["r-f"]), _request("r-f", f"{ROOT}/flows")]
    imp = from_nodered(editor)
    assert any("Admin API" in r for r in step_runnable(imp.workflows[0], imp.triggers)[1])
    print(json.dumps(reasons))
