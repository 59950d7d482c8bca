"""Node-RED joins and http request nodes of an imported flow, on the step engine.

The differential test (tests/integration/nodered) compares them with a real Node-RED; these
tests hold what the engine itself promises: a join gets a job's messages in Node-RED's order,
a group left incomplete fails the job without reaching a catch, and an http request node goes
through the ``http`` service and its host policy.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from engines.step import NODERED_MSG_CONTENT_TYPE
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal
from services import BuiltinConfig, HttpService, nodered_node_service
from translators.nodered import from_nodered

ME = Principal(account_id="acme", user_id="ada")
MSG = {"content-type": NODERED_MSG_CONTENT_TYPE}


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """A loopback server answering ``/hello`` with the method and the x-name header."""

    async def hello(request: web.Request) -> web.Response:
        name = request.headers.get("x-name", "nobody")
        return web.json_response({"method": request.method, "hello": name})

    app = web.Application()
    app.router.add_route("*", "/hello", hello)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def platform_with(db: Database, http_allow: tuple[str, ...]) -> Platform:
    http = HttpService(BuiltinConfig(http_allow=http_allow)).service
    platform = Platform(
        db, [nodered_node_service(), http], workers=2, poll_interval_s=0.05, admission_cache_s=0
    )
    await platform.accounts.ensure_account("acme")
    return platform


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    async with await platform_with(db, ("127.0.0.1",)) as platform:
        yield platform


def flow_of(*nodes: dict[str, Any]) -> dict[str, Any]:
    """The workflow of a one-tab flow (a tab, then the nodes, each wired to the next)."""
    tab = {"id": "t", "type": "tab", "label": "Seq"}
    wired = []
    for n, node in enumerate(nodes):
        nxt = [[nodes[n + 1]["id"]]] if n + 1 < len(nodes) else [[]]
        wired.append({"z": "t", "x": n, "y": 0, "wires": nxt, **node})
    doc = from_nodered([tab, *wired]).workflows[0]
    body = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"].pop("engine", None)
    return body


SPLIT = {"id": "sp", "type": "split", "splt": ",", "spltType": "str", "arraySplt": 1}
SLOW_FIRST = {
    "id": "fn",
    "type": "function",
    "name": "slow first",
    # The first part's call ends last: the join still gets the parts in Node-RED's order.
    "func": "if (msg.parts.index === 0) { const t = Date.now(); while (Date.now() - t < 300) {} }\n"
    "msg.payload = msg.payload.toUpperCase();\nreturn msg;",
}


def join(**extra: Any) -> dict[str, Any]:
    return {"id": "jo", "type": "join", "mode": "custom", "build": "string", "joiner": "+", **extra}


@pytest.mark.timeout(60)
async def test_a_join_gets_the_jobs_messages_in_node_reds_order(fluxo: Platform) -> None:
    applied = await fluxo.jobs.apply(flow_of(SPLIT, SLOW_FIRST, join(count="")), ME)
    job = await fluxo.jobs.create(
        ME, applied.workflow.metadata.name, {"payload": "a,b,c"}, headers=MSG
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == "A+B+C"


@pytest.mark.timeout(60)
async def test_a_reduce_join_folds_the_parts_of_a_split(fluxo: Platform) -> None:
    reduce = join(mode="reduce", reduceExp="$A & payload", reduceInit="", reduceInitType="str")
    applied = await fluxo.jobs.apply(flow_of(SPLIT, SLOW_FIRST, reduce), ME)
    job = await fluxo.jobs.create(
        ME, applied.workflow.metadata.name, {"payload": "x,y,z"}, headers=MSG
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == "XYZ"


@pytest.mark.timeout(60)
async def test_a_group_left_incomplete_fails_the_job_and_reaches_no_catch(
    fluxo: Platform,
) -> None:
    catch = {"id": "ca", "type": "catch", "scope": None, "uncaught": False}
    tab = {"id": "t", "type": "tab", "label": "Seq"}
    nodes = [
        tab,
        {**SPLIT, "z": "t", "x": 0, "y": 0, "wires": [["jo"]]},
        {**join(count="2"), "z": "t", "x": 1, "y": 0, "wires": [[]]},
        {**catch, "z": "t", "x": 0, "y": 1, "wires": [["mark"]]},
        {
            "id": "mark",
            "type": "change",
            "z": "t",
            "x": 1,
            "y": 1,
            "wires": [[]],
            "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": "caught", "tot": "str"}],
        },
    ]
    body = (
        from_nodered(nodes).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    body["spec"].pop("engine", None)
    applied = await fluxo.jobs.apply(body, ME)
    name = applied.workflow.metadata.name
    whole = await fluxo.jobs.wait(
        ME, (await fluxo.jobs.create(ME, name, {"payload": "a,b"}, headers=MSG)).id, 20
    )
    assert whole.status == "succeeded", whole.error
    assert whole.result == "a+b"
    job = await fluxo.jobs.create(ME, name, {"payload": "a,b,c"}, headers=MSG)
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "failed"
    assert "a group is still incomplete" in str(done.error)
    assert not [s for s in done.steps or [] if s.step_id.startswith("mark")]


def request_node(**extra: Any) -> dict[str, Any]:
    base = {"id": "rq", "type": "http request", "method": "use", "url": "", "ret": "obj"}
    return {**base, "paytoqs": "ignore", "tls": "", "proxy": "", "authType": "", **extra}


@pytest.mark.timeout(60)
async def test_an_http_request_takes_url_method_and_headers_from_the_message(
    fluxo: Platform, server: str
) -> None:
    applied = await fluxo.jobs.apply(flow_of(request_node()), ME)
    message = {
        "payload": {"any": "body"},
        "url": f"{server}/hello",
        "method": "PATCH",
        "headers": {"X-Name": "ada"},
    }
    job = await fluxo.jobs.create(ME, applied.workflow.metadata.name, message, headers=MSG)
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == {"method": "PATCH", "hello": "ada"}
    [step] = done.steps or []
    [sent] = step.output
    assert sent["msg"]["statusCode"] == 200
    assert sent["msg"]["headers"]["content-type"].startswith("application/json")


@pytest.mark.timeout(60)
async def test_an_http_request_obeys_the_host_policy(db: Database, server: str) -> None:
    async with await platform_with(db, ()) as platform:  # loopback not allowed
        applied = await platform.jobs.apply(flow_of(request_node()), ME)
        message = {"payload": "", "url": f"{server}/hello", "method": "GET"}
        job = await platform.jobs.create(ME, applied.workflow.metadata.name, message, headers=MSG)
        done = await platform.jobs.wait(ME, job.id, 20)
    assert done.status == "failed"
    assert "loopback" in str(done.error)


def unused_port() -> int:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def set_payload(node_id: str, to: str, tot: str) -> dict[str, Any]:
    rule = {"t": "set", "p": "payload", "pt": "msg", "to": to, "tot": tot}
    return {"id": node_id, "type": "change", "rules": [rule], "wires": [[]]}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("senderr", [False, True])
async def test_a_refused_http_request_is_reported_and_sent_on_as_node_red_does(
    fluxo: Platform, senderr: bool
) -> None:
    port = unused_port()
    url = f"http://127.0.0.1:{port}/hello"
    rq = request_node(ret="txt", senderr=senderr, wires=[["sent"]])  # the URL from msg.url
    sent = set_payload("sent", "payload", "msg")  # what the node sends on
    catch = {"id": "ca", "type": "catch", "scope": None, "uncaught": False, "wires": [["got"]]}
    got = set_payload("got", "error.message", "msg")  # what its catch gets
    applied = await fluxo.jobs.apply(flow_of(rq, sent, catch, got), ME)
    message = {"payload": 1, "url": url, "method": "GET"}
    job = await fluxo.jobs.create(ME, applied.workflow.metadata.name, message, headers=MSG)
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    error = f"RequestError: connect ECONNREFUSED 127.0.0.1:{port}"
    by_step = {s.step_id: s for s in done.steps or []}
    [reported] = by_step["change-got"].output  # the step ids the import gives the nodes
    assert reported["msg"]["payload"] == error
    if senderr:  # to the catch only
        assert "change" not in by_step
    else:
        [on] = by_step["change"].output
        assert on["msg"]["payload"] == f"{error} : {url}"
        assert on["msg"]["statusCode"] == "ECONNREFUSED"
    assert by_step["http-request"].attempt == 1  # Node-RED makes one attempt
