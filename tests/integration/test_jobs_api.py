"""The jobs API: apply a workflow, start jobs idempotently, follow, list, cancel; OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.storage import Database
from tests.support import services as svc

WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "double"},
    "spec": {
        "input_schema": {"type": "object", "required": ["n"]},
        "steps": [
            {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
            {"id": "second", "kind": "service", "service": "inc"},
        ],
    },
}


class Client:
    def __init__(self, http: TestClient[Any, Any], tokens: dict[str, str]) -> None:
        self.http = http
        self.tokens = tokens

    async def call(
        self, method: str, path: str, account: str = "acme", **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[account]}", **kw.pop("headers", {})}
        resp = await self.http.request(method, path, headers=headers, **kw)
        return resp.status, await resp.json()


@pytest.fixture
async def client(db: Database) -> AsyncIterator[Client]:
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.2, admission_cache_s=0)
    tokens = {}
    for account in ("acme", "globex"):
        await platform.accounts.ensure_account(account)
        tokens[account] = await platform.accounts.issue_token(account, "ada")
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        yield Client(http, tokens)


async def test_apply_run_and_inspect_a_job(client: Client) -> None:
    status, applied = await client.call("POST", "/v1/workflows", json=WORKFLOW)
    assert status == 201
    assert (applied["name"], applied["version"]) == ("double", 1)
    status, again = await client.call("POST", "/v1/workflows", json=WORKFLOW)
    assert (status, again["version"], again["created"]) == (200, 1, False)

    status, job = await client.call(
        "POST", "/v1/workflows/double/jobs?wait=10", json={"input": {"n": 40}}
    )
    assert status == 201
    assert job["status"] == "succeeded"
    assert job["result"] == {"n": 42}
    status, shown = await client.call("GET", f"/v1/jobs/{job['id']}")
    assert status == 200
    assert [s["step_id"] for s in shown["steps"]] == ["first", "second"]
    assert shown["steps"][1]["input"] == {"n": 41}
    assert shown["steps"][1]["output"] == [{"n": 42}]


async def test_yaml_workflows_are_accepted(client: Client) -> None:
    status, applied = await client.call(
        "POST",
        "/v1/workflows",
        data=yaml.safe_dump(WORKFLOW),
        headers={"Content-Type": "application/yaml"},
    )
    assert status == 201
    assert applied["workflow"]["metadata"]["account"] == "acme"


async def test_idempotency_key_returns_the_same_job(client: Client) -> None:
    await client.call("POST", "/v1/workflows", json=WORKFLOW)
    headers = {"Idempotency-Key": "invoice-2026-11-001"}
    _, first = await client.call(
        "POST", "/v1/workflows/double/jobs", json={"input": {"n": 1}}, headers=headers
    )
    _, second = await client.call(
        "POST", "/v1/workflows/double/jobs", json={"input": {"n": 1}}, headers=headers
    )
    assert first["id"] == second["id"]
    _, page = await client.call("GET", "/v1/jobs?workflow=double")
    assert [j["id"] for j in page["items"]] == [first["id"]]


async def test_list_is_paginated_newest_first_and_scoped(client: Client) -> None:
    await client.call("POST", "/v1/workflows", json=WORKFLOW)
    ids = []
    for n in range(5):
        _, job = await client.call("POST", "/v1/workflows/double/jobs", json={"input": {"n": n}})
        ids.append(job["id"])
    _, page1 = await client.call("GET", "/v1/jobs?limit=2")
    _, page2 = await client.call("GET", f"/v1/jobs?limit=2&cursor={page1['next_cursor']}")
    _, page3 = await client.call("GET", f"/v1/jobs?limit=2&cursor={page2['next_cursor']}")
    seen = [j["id"] for p in (page1, page2, page3) for j in p["items"]]
    assert seen == list(reversed(ids))
    assert page3["next_cursor"] is None
    _, other = await client.call("GET", "/v1/jobs", account="globex")
    assert other["items"] == []
    status, _ = await client.call("GET", f"/v1/jobs/{ids[0]}", account="globex")
    assert status == 404


async def test_cancel(client: Client) -> None:
    slow = {
        **WORKFLOW,
        "metadata": {"name": "slowpoke"},
        "spec": {"steps": [{"id": "wait", "kind": "service", "service": "slow"}]},
    }
    await client.call("POST", "/v1/workflows", json=slow)
    _, job = await client.call(
        "POST", "/v1/workflows/slowpoke/jobs", json={"input": {"n": 1, "sleep": 1}}
    )
    status, cancelled = await client.call("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 200
    assert cancelled["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "status", "location"),
    [
        ({"input": {"x": 1}}, 422, "input"),  # misses the required n
        ({"inputs": {"n": 1}}, 422, "body.input"),
        ({"input": {"n": 1}, "extra": 1}, 422, "body.extra"),
    ],
)
async def test_bad_job_requests_name_the_problem(
    client: Client, body: dict[str, Any], status: int, location: str
) -> None:
    await client.call("POST", "/v1/workflows", json=WORKFLOW)
    got, error = await client.call("POST", "/v1/workflows/double/jobs", json=body)
    assert got == status
    assert error["error"]["problems"][0]["location"] == location


async def test_invalid_workflow_lists_every_problem(client: Client) -> None:
    bad = {
        **WORKFLOW,
        "spec": {
            "steps": [
                {"id": "first", "kind": "service", "service": "inc", "next": ["secnd"]},
                {"id": "second", "kind": "servise", "service": "inc"},
            ]
        },
    }
    status, error = await client.call("POST", "/v1/workflows", json=bad)
    assert status == 422
    assert error["error"]["code"] == "invalid_workflow"
    locations = [p["location"] for p in error["error"]["problems"]]
    assert "spec.steps[0].next[0]" in locations
    assert "spec.steps[1].kind" in locations
    assert any("did you mean 'second'" in p["message"] for p in error["error"]["problems"])


async def test_unknown_workflow_is_a_404(client: Client) -> None:
    status, error = await client.call("POST", "/v1/workflows/nope/jobs", json={"input": {}})
    assert status == 404
    assert "apply it first" in error["error"]["message"]


async def test_openapi_document_is_valid_and_public(client: Client) -> None:
    resp = await client.http.get("/v1/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    validate(document)
    assert {"/v1/workflows/{name}/jobs", "/v1/jobs/{job_id}", "/v1/services/{name}/calls"} <= set(
        document["paths"]
    )
