"""The test interpreter of Argo (``tests/support/argo_interpreter.py``) against Argo's documented
behaviour, so the engine tests built on it prove something about Argo.

Each case runs a small WorkflowTemplate + Workflow through the fake server's REST API; its HTTP
templates call an in-memory endpoint that records each request. The expected behaviour is Argo's
(docs: "DAG", "Conditionals", "Retries", "Exit handlers", "Variables: expression tags"; sources:
``workflow/controller/dag.go`` and ``workflow/executor/agent.go``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support.argo_interpreter import FakeArgoServer

pytestmark = pytest.mark.timeout(30)

TOKEN = "t"
API = "http://argo.test/api/v1"


@pytest.fixture
async def argo() -> AsyncIterator[FakeArgoServer]:
    server = FakeArgoServer(token=TOKEN, namespace="ns", time_scale=0.001)
    yield server
    await server.aclose()


Answer = Callable[[httpx.Request], httpx.Response]


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text=request.content.decode())


def http(name: str, *, condition: str | None = None, **extra: Any) -> dict[str, Any]:
    """An HTTP template posting its ``body`` input to ``http://svc/<name>``."""
    spec: dict[str, Any] = {
        "url": f"http://svc/{name}",
        "method": "POST",
        "body": "{{inputs.parameters.body}}",
    }
    if condition:
        spec["successCondition"] = condition
    return {
        "name": name,
        "inputs": {"parameters": [{"name": "body", "value": "-"}]},
        "http": spec,
        **extra,
    }


def task(name: str, template: str, body: str = "-", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "template": template,
        "arguments": {"parameters": [{"name": "body", "value": body}]},
        **extra,
    }


async def run(
    argo: FakeArgoServer, templates: list[dict[str, Any]], answer: Answer = ok, **spec: Any
) -> tuple[dict[str, Any], list[str]]:
    """Run a workflow of ``templates`` (entrypoint ``main``); the final document and the
    ``<path> <body>`` of every request its HTTP templates made, in order."""
    seen: list[str] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.path} {request.content.decode()}")
        return answer(request)

    await argo.gateway.aclose()
    argo.gateway = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    template = {
        "metadata": {"name": "wt"},
        "spec": {"entrypoint": "main", "templates": templates, **spec},
    }
    workflow = {"metadata": {"name": "wf"}, "spec": {"workflowTemplateRef": {"name": "wt"}}}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=argo.transport(), headers=headers) as client:
        created = await client.post(f"{API}/workflow-templates/ns", json={"template": template})
        assert created.status_code == 200, created.text
        started = await client.post(f"{API}/workflows/ns", json={"workflow": workflow})
        assert started.status_code == 200, started.text
    return await argo.wait_idle("wf"), seen


def nodes(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Nodes by display name."""
    return {n["displayName"]: n for n in document["status"]["nodes"].values()}


async def test_a_dag_task_runs_once_its_depends_hold_and_a_false_one_omits_it(
    argo: FakeArgoServer,
) -> None:
    main = {
        "name": "main",
        "dag": {
            "tasks": [
                task("a", "step", "a"),
                task("b", "step", "b", depends="a"),
                task("c", "step", "c", depends="a && b"),
                task("on-failure", "step", "x", depends="a.Failed"),
            ]
        },
    }
    document, seen = await run(argo, [main, http("step")])
    assert seen == ["/step a", "/step b", "/step c"]
    by_name = nodes(document)
    assert by_name["on-failure"]["phase"] == "Omitted"  # dag.go: depends false -> Omitted
    assert document["status"]["phase"] == "Succeeded"


async def test_when_false_skips_a_task_and_an_expression_tag_decides_it(
    argo: FakeArgoServer,
) -> None:
    main = {
        "name": "main",
        "dag": {
            "tasks": [
                task("big", "step", "big", when="{{=1 + 1 == 3}}"),
                task("small", "step", "small", when="{{=len('ab') == 2}}"),
            ]
        },
    }
    document, seen = await run(argo, [main, http("step")])
    assert seen == ["/step small"]
    assert nodes(document)["big"]["phase"] == "Skipped"
    assert document["status"]["phase"] == "Succeeded"


async def test_retry_strategy_runs_limit_plus_one_attempts_with_the_retries_variable(
    argo: FakeArgoServer,
) -> None:
    attempts: list[str] = []

    def fails_twice(request: httpx.Request) -> httpx.Response:
        attempts.append(request.content.decode())
        return httpx.Response(500 if len(attempts) <= 2 else 200, text="done")

    # `{{retries}}` is the attempt number from 0 (Argo's docs, "Retries").
    flaky = http("flaky", retryStrategy={"limit": 3, "retryPolicy": "Always"})
    flaky["http"]["body"] = "try {{retries}}"
    main = {"name": "main", "dag": {"tasks": [task("call", "flaky")]}}
    document, _ = await run(argo, [main, flaky], fails_twice)
    assert attempts == ["try 0", "try 1", "try 2"]  # it stopped at the first success
    retry = next(n for n in document["status"]["nodes"].values() if n["type"] == "Retry")
    assert (retry["phase"], len(retry["children"])) == ("Succeeded", 3)
    assert document["status"]["phase"] == "Succeeded"


async def test_a_failed_http_call_keeps_its_body_and_the_exit_handler_sees_the_failure(
    argo: FakeArgoServer,
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/report":
            return httpx.Response(200, text="ok")
        return httpx.Response(403, json={"error": {"code": "admission_denied"}})

    main = {"name": "main", "dag": {"tasks": [task("call", "step", "x")]}}
    report = http("report")
    report["http"]["body"] = "{{workflow.status}}"
    document, seen = await run(
        argo,
        [main, http("step", condition="response.statusCode == 200"), report],
        refuse,
        onExit="report",
    )
    assert seen == ["/step x", "/report Failed"]  # the exit handler runs last, with the status
    call = nodes(document)["call"]
    assert call["phase"] == "Failed"
    # agent.go: the response body is the node's result, whatever the status.
    assert json.loads(call["outputs"]["result"]) == {"error": {"code": "admission_denied"}}
    assert call["message"] == "successCondition 'response.statusCode == 200' evaluated false"
    assert document["status"]["phase"] == "Failed"


async def test_expression_tags_evaluate_expr_lang_in_arguments(argo: FakeArgoServer) -> None:
    main = {
        "name": "main",
        "dag": {
            "tasks": [
                task("first", "step", '{"n": 2}'),
                task(
                    "second",
                    "step",
                    "{{=toJson(map(fromJSON(tasks.first.outputs.result).n == 2 ? [1, 2] : [], "
                    "# * 10))}}",
                    depends="first",
                ),
            ]
        },
    }
    _, seen = await run(argo, [main, http("step")])
    assert seen == ['/step {"n": 2}', "/step [10,20]"]
