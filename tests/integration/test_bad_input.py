"""Bad and hostile input over HTTP: bounded parsing, a 4xx naming the field for every input, and
nothing stored that cannot be read back. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import common as api_common
from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal
from tests.support import services as svc
from tests.unit.test_documents import alias_bomb

LIMIT = 64 * 1024
WORKFLOW: dict[str, Any] = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "double"},
    "spec": {
        "steps": [
            {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
            {"id": "second", "kind": "service", "service": "inc"},
        ]
    },
}


class Api:
    def __init__(self, http: TestClient[Any, Any], platform: Platform, token: str) -> None:
        self.http = http
        self.platform = platform
        self.token = token

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        resp = await self.http.request(method, path, headers=headers, **kw)
        return resp.status, await resp.json()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        max_packet_bytes=LIMIT,
    )
    await platform.accounts.ensure_account("acme")
    token = await platform.accounts.issue_token("acme", "ada")
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=LIMIT))) as http,
    ):
        yield Api(http, platform, token)


def problems(body: Any) -> list[str]:
    return [p["location"] for p in body["error"]["problems"]]


# --- bounded parsing ------------------------------------------------------------------------------


async def test_a_yaml_alias_bomb_is_refused_and_nothing_is_stored(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/v1/workflows",
        data=alias_bomb(),
        headers={"Content-Type": "application/yaml"},
    )
    assert status == 422
    assert body["error"]["code"] == "document_too_complex"
    assert "aliases" in body["error"]["message"]
    status, listed = await api.call("GET", "/v1/workflows")
    assert (status, listed) == (200, {"items": []})


@pytest.mark.parametrize("levels", [200, 3000])
async def test_deep_documents_are_a_422_without_a_traceback(
    api: Api, levels: int, caplog: pytest.LogCaptureFixture
) -> None:
    deep_json = "[" * levels + "]" * levels
    deep_yaml = "- " * levels + "x\n"
    with caplog.at_level(logging.ERROR):
        status, body = await api.call(
            "POST", "/v1/services/echo/calls", data=f'{{"payload": {{"a": {deep_json}}}}}'
        )
        assert (status, body["error"]["code"]) == (422, "document_too_complex")
        status, body = await api.call(
            "POST", "/v1/workflows", data=deep_yaml, headers={"Content-Type": "application/yaml"}
        )
        assert (status, body["error"]["code"]) == (422, "document_too_complex")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_large_document_is_parsed_off_the_event_loop(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one large body is being parsed, /livez answers: the parse holds a thread of its
    own pool, not the loop. (Parsed on the loop, this parse would block until the test timed
    out waiting for the probe.) The liveness probe, not readiness: readiness also asks the
    database, whose answer on a loaded machine is not what this test is about."""
    release = threading.Event()
    started = threading.Event()
    real_parse = api_common.parse_yaml

    def slow_parse(*args: Any, **kw: Any) -> Any:
        started.set()
        release.wait(timeout=30)
        return real_parse(*args, **kw)

    monkeypatch.setattr(api_common, "parse_yaml", slow_parse)
    big = yaml.safe_dump(
        {**WORKFLOW, "spec": {**WORKFLOW["spec"], "description": "x" * 1500}}
    ) + "".join(f"# {'padding ' * 10}\n" for _ in range(1000))
    assert len(big) > api_common.INLINE_BYTES
    apply = asyncio.create_task(
        api.call("POST", "/v1/workflows", data=big, headers={"Content-Type": "application/yaml"})
    )
    try:
        await asyncio.wait_for(asyncio.to_thread(started.wait, 10), 15)
        health = await asyncio.wait_for(api.http.get("/livez"), 10)
        assert health.status == 200
        assert not apply.done()
    finally:
        release.set()
    status, _ = await apply
    assert status == 201


# --- every input a 4xx naming the field ------------------------------------------------------------


async def test_a_lone_surrogate_in_a_payload_is_a_422_naming_its_path(api: Api) -> None:
    status, body = await api.call(
        "POST", "/v1/services/echo/calls", data=b'{"payload": {"name": "ab\\ud800"}}'
    )
    assert status == 422
    assert problems(body) == ["body.payload.name"]


async def test_a_bearer_token_with_bytes_that_are_not_ascii_is_a_401(api: Api) -> None:
    host, port = api.http.server.host, api.http.server.port
    reader, writer = await asyncio.open_connection(host, port)
    for raw in (b"Bearer " + api.token.encode() + b"\xff", b"Bearer \xc3\xa9t\xc3\xa9"):
        writer.write(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: " + raw + b"\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        assert status_line.split()[1] == b"401", status_line
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    writer.close()


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/v1/workflows/double/jobs", None),  # the control: it works
        ("/v1/workflows/double@abc/jobs", "workflow version"),
        ("/v1/workflows/double@1@2/jobs", "workflow version"),
        ("/v1/workflows/double@99999999999999999999/jobs", "workflow version"),
        ("/v1/workflows/double@/jobs", "workflow version"),
    ],
)
async def test_workflow_references_that_are_not_versions_are_a_422(
    api: Api, path: str, location: str | None
) -> None:
    await api.call("POST", "/v1/workflows", json=WORKFLOW)
    status, body = await api.call("POST", path, json={"input": {"n": 1}})
    if location is None:
        assert status == 201
    else:
        assert status == 422
        assert problems(body) == [location]


@pytest.mark.parametrize(
    ("query", "location"),
    [
        ("/v1/workflows/double?version=abc", "query.version"),
        ("/v1/workflows/double?version=99999999999999999999", "query.version"),
        ("/v1/workflows/double?version=%C2%B2", "query.version"),
        ("/v1/jobs?limit=%C2%B2", "query.limit"),
        ("/v1/jobs?limit=99999999999999999999", "query.limit"),
        ("/v1/jobs?status=AAA", "query.status"),
        ("/v1/jobs?workflow=a%00b", "query.workflow"),
        ("/v1/jobs/a%00b", "path"),
    ],
)
async def test_query_values_that_are_not_numbers_or_statuses_are_refused(
    api: Api, query: str, location: str
) -> None:
    await api.call("POST", "/v1/workflows", json=WORKFLOW)
    status, body = await api.call("GET", query)
    assert status in (400, 422)
    assert problems(body) == [location]
    if location == "query.status":
        assert "queued, running, succeeded, failed, cancelled" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"input": "s"}, "input"),
        ({"input": 5}, "input"),
        ({"input": None}, "input"),
        ({"input": [1, 2]}, "input[0]"),
        ({"input": {"n": 1}, "headers": ["a"]}, "body.headers"),
        ({"input": {"n": 1}, "headers": {"a": 1}}, "body.headers"),
        ({"input": {"n": 1}, "headers": {"bad name": "x"}}, "headers"),
    ],
)
async def test_job_input_and_headers_of_the_wrong_shape_are_a_422(
    api: Api, body: dict[str, Any], location: str
) -> None:
    await api.call("POST", "/v1/workflows", json=WORKFLOW)
    status, answer = await api.call("POST", "/v1/workflows/double/jobs", json=body)
    assert status == 422, answer
    assert location in problems(answer)


async def test_a_job_input_over_the_packet_limit_is_refused_by_the_control_plane(
    api: Api,
) -> None:
    """Every way a job comes in (the CLI's local client calls this directly) meets the limit."""
    await api.call("POST", "/v1/workflows", json=WORKFLOW)
    who = Principal(account_id="acme", user_id="ada")
    from fluxo_core.errors import PayloadTooLargeError

    with pytest.raises(PayloadTooLargeError, match="FLUXO_MAX_PACKET_BYTES"):
        await api.platform.jobs.create(who, "double", {"n": 1, "blob": "x" * LIMIT})
    with pytest.raises(PayloadTooLargeError):
        await api.platform.jobs.create_many(who, "double", [{"n": 1}, {"blob": "x" * LIMIT}])


# --- nothing stored that cannot be read back -----------------------------------------------------


async def test_a_set_op_with_a_null_value_is_stored_as_written(api: Api) -> None:
    workflow = {
        **WORKFLOW,
        "metadata": {"name": "nulls"},
        "spec": {
            "steps": [
                {
                    "id": "t",
                    "kind": "transform",
                    "ops": [{"op": "set", "path": "x", "value": None}],
                    "next": ["s"],
                },
                {"id": "s", "kind": "service", "service": "echo"},
            ]
        },
    }
    status, _ = await api.call("POST", "/v1/workflows", json=workflow)
    assert status == 201
    status, listed = await api.call("GET", "/v1/workflows")
    assert status == 200
    (item,) = listed["items"]
    assert item["workflow"]["spec"]["steps"][0]["ops"] == [
        {"op": "set", "path": "x", "value": None}
    ]
    status, job = await api.call(
        "POST", "/v1/workflows/nulls/jobs?wait=10", json={"input": {"x": 1, "y": 2}}
    )
    assert (status, job["status"], job["result"]) == (201, "succeeded", {"x": None, "y": 2})


async def test_an_account_id_the_ir_refuses_is_not_stored(api: Api) -> None:
    await api.platform.accounts.ensure_account("ACME Corp")
    token = await api.platform.accounts.issue_token("ACME Corp", "ada")
    status, body = await api.call(
        "POST", "/v1/workflows", json=WORKFLOW, headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 422
    assert problems(body) == ["metadata.account"]
    status, listed = await api.call(
        "GET", "/v1/workflows", headers={"Authorization": f"Bearer {token}"}
    )
    assert (status, listed) == (200, {"items": []})


# --- lists carry summaries ------------------------------------------------------------------------


async def test_job_lists_carry_summaries_and_the_job_page_its_packets(api: Api) -> None:
    await api.call("POST", "/v1/workflows", json=WORKFLOW)
    _, job = await api.call(
        "POST", "/v1/workflows/double/jobs?wait=10", json={"input": {"n": 1, "blob": "x" * 1000}}
    )
    _, page = await api.call("GET", "/v1/jobs")
    (item,) = page["items"]
    assert item["id"] == job["id"]
    assert item["status"] == "succeeded"
    assert "input" not in item
    assert "result" not in item
    _, shown = await api.call("GET", f"/v1/jobs/{job['id']}")
    assert shown["input"] == {"n": 1, "blob": "x" * 1000}


# --- health that means something ------------------------------------------------------------------


async def test_livez_and_readyz_answer_without_a_token(api: Api) -> None:
    for path in ("/livez", "/readyz", "/v1/health"):
        resp = await api.http.get(path)
        assert resp.status == 200
    body = await (await api.http.get("/readyz")).json()
    assert body == {"status": "ok", "checks": {"database": "ok", "transport": "ok"}}


async def test_readyz_is_a_503_naming_a_database_that_does_not_answer(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = asyncio.Event()  # never set: a database that stopped answering

    async def ping() -> None:
        await frozen.wait()

    monkeypatch.setattr(api.platform.db, "ping", ping)
    monkeypatch.setattr("fluxo.api.app.READY_TIMEOUT_S", 0.2)
    for path in ("/readyz", "/v1/health"):
        resp = await api.http.get(path)
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"].startswith("no answer within")
    live = await api.http.get("/livez")
    assert live.status == 200


async def test_a_version_written_in_the_document_is_replaced_by_the_assigned_one(api: Api) -> None:
    # The fuzzer found it: a document may carry any version (an exported one carries its
    # own); the step engine's check before storing read it as a number and answered 500.
    workflow = {**WORKFLOW, "metadata": {"name": "carried", "version": "05_V2f-S3Y0"}}
    status, applied = await api.call("POST", "/v1/workflows", json=workflow)
    assert status == 201, applied
    assert applied["workflow"]["metadata"]["version"] != "05_V2f-S3Y0"
    status, job = await api.call("POST", "/v1/workflows/carried/jobs?wait=10", json={"input": {}})
    assert (status, job["status"]) == (201, "succeeded")
