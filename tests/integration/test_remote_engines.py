"""Jobs on external engines (Node-RED, Argo), as the control plane sees them.

The engine here is a recording test double named ``nodered``: it only records what Fluxo asks of
it, and the test plays the engine's part over HTTP with an engine token (the calls its flow would
make, the end report it would post). What is under test is Fluxo's side: the runner that deploys
and starts queued jobs, the gateway acting for a job as its account, refusal after cancel, the end
reports, and what engine tokens may and may not do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.engine import (
    Deployment,
    EngineCapabilities,
    RunHandle,
    RunStatus,
    StartRequest,
)
from fluxo_core.errors import FluxoError, UnsupportedFeatureError
from fluxo_core.ir import Packet, Workflow
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import usage_records
from tests.support import services as svc

WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "remote"},
    "spec": {
        "engine": "nodered",
        "steps": [
            {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
            {"id": "second", "kind": "service", "service": "inc"},
        ],
    },
}
ACME = Principal(account_id="acme", user_id="ada")


class StartRefusedError(FluxoError):
    code = "refused"


@dataclass
class RecordingEngine:
    """Records deploys, starts and cancels; ``failures`` start attempts fail first."""

    name: str = "nodered"
    capabilities: EngineCapabilities = field(
        default_factory=lambda: EngineCapabilities(
            locality="external",
            step_kinds=frozenset({"service", "switch", "transform", "split", "join", "delay"}),
        )
    )
    deployed: list[str] = field(default_factory=list)
    started: list[StartRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    failures: int = 0
    retryable: bool = True
    lifecycle: list[str] = field(default_factory=list)
    # What the run does before the start call returns (a flow that ends at once reports then).
    on_start: Callable[[StartRequest], Awaitable[None]] | None = None

    async def open(self) -> None:
        self.lifecycle.append("open")

    async def aclose(self) -> None:
        self.lifecycle.append("aclose")

    async def starter(self, account: str, workflow: str, version: int) -> None:
        return None

    async def deploy(self, workflow: Workflow) -> Deployment:
        if workflow.metadata.name == "unrunnable":
            raise UnsupportedFeatureError("this engine cannot run workflow unrunnable")
        self.deployed.append(f"{workflow.metadata.name}@{workflow.metadata.version}")
        return Deployment(workflow=workflow.metadata.name, engine=self.name)

    async def undeploy(self, workflow: str, *, account: str | None = None) -> None:
        return None

    async def start(self, request: StartRequest) -> RunHandle:
        if self.failures > 0:
            self.failures -= 1
            raise StartRefusedError("the engine is away", retryable=self.retryable)
        self.started.append(request)
        if self.on_start is not None:
            await self.on_start(request)
        return RunHandle(engine=self.name, job_id=request.job_id, run_id=f"run-{request.job_id}")

    async def status(self, handle: RunHandle) -> RunStatus:
        raise AssertionError("Fluxo reads a Node-RED job's status from its own records")

    async def cancel(self, handle: RunHandle) -> None:
        self.cancelled.append(handle.run_id)


@dataclass
class Setup:
    platform: Platform
    engine: RecordingEngine
    http: TestClient[Any, Any]
    user_token: str
    engine_token: str
    globex_user: str = ""  # a user token of another account
    globex_engine: str = ""  # an engine token (nodered) of another account

    async def post(self, path: str, token: str, body: Any) -> tuple[int, Any]:
        resp = await self.http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        return resp.status, await resp.json()

    async def get(self, path: str, token: str) -> tuple[int, Any]:
        resp = await self.http.get(path, headers={"Authorization": f"Bearer {token}"})
        return resp.status, await resp.json()

    async def started_job(self, payload: dict[str, Any]) -> str:
        job = await self.platform.jobs.create(ACME, "remote", payload)
        await until(lambda: self._status(job.id), "running")
        await self.start_recorded()
        return job.id

    async def start_recorded(self) -> None:
        """Wait until the start message is acked: a job is ``running`` BEFORE its start call
        (see fluxo/control/remote.py), the engine has it once the message is gone."""
        transport = self.platform.runtime.transport
        await until(lambda: transport.depth(f"engine.{self.engine.name}"), 0, timeout=15)

    async def _status(self, job_id: str) -> str:
        return (await self.platform.jobs.get(ACME, job_id, steps=False)).status

    def call_packet(self, job_id: str, step: str, payload: Any, **extra: Any) -> dict[str, Any]:
        """The packet a Node-RED flow posts for a step (actor as the engine received it)."""
        start = next(s for s in self.engine.started if s.job_id == job_id)
        return {
            "id": f"nr-{job_id}-{step}",
            "job_id": job_id,
            "step_id": step,
            "workflow": start.workflow,
            "actor": start.input.actor.model_dump(mode="json", exclude_none=True),
            "payload": payload,
            "headers": {"fluxo-step-key": step},
            **extra,
        }


async def until(probe: Any, expected: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await probe()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still {value!r}, expected {expected!r}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def setup(db: Database) -> AsyncIterator[Setup]:
    engine = RecordingEngine()
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        engines=("step", engine),
    )
    await platform.accounts.ensure_account("acme")
    await platform.accounts.ensure_account("ops")
    user_token = await platform.accounts.issue_token("acme", "ada")
    engine_token = await platform.accounts.issue_token("acme", "node-red", engine="nodered")
    await platform.accounts.ensure_account("globex")
    globex_user = await platform.accounts.issue_token("globex", "gus")
    globex_engine = await platform.accounts.issue_token("globex", "node-red", engine="nodered")
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        await platform.jobs.apply(WORKFLOW, ACME)
        yield Setup(platform, engine, http, user_token, engine_token, globex_user, globex_engine)


async def usage_of(db: Database, job_id: str) -> list[tuple[str, str, str]]:
    query = sa.select(
        usage_records.c.account_id, usage_records.c.user_id, usage_records.c.step_id
    ).where(usage_records.c.job_id == job_id)
    rows = await db.read(lambda c: c.execute(query).all())
    return sorted((r.account_id, r.user_id, r.step_id) for r in rows)


async def test_a_queued_job_is_deployed_and_started_once(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    assert setup.engine.deployed == ["remote@1"]
    [start] = setup.engine.started
    assert (start.job_id, start.workflow, start.input.payload) == (job_id, "remote@1", {"n": 1})
    assert start.input.account_id == "acme"
    record = await setup.platform.jobs.get(ACME, job_id)
    assert record.status == "running"
    assert record.started_at is not None
    second = await setup.started_job({"n": 2})
    assert setup.engine.deployed == ["remote@1"], "a deployed version is not deployed again"
    assert [s.job_id for s in setup.engine.started] == [job_id, second]


async def test_engine_calls_run_as_the_job_account_and_the_report_ends_the_job(
    setup: Setup,
) -> None:
    job_id = await setup.started_job({"n": 1})
    status, call = await setup.post(
        "/v1/services/inc/calls?wait=10",
        setup.engine_token,
        setup.call_packet(job_id, "first", {"n": 1}),
    )
    assert status == 200, call
    assert (call["status"], call["account_id"], call["job_id"]) == ("succeeded", "acme", job_id)
    assert call["result"][0]["payload"] == {"n": 2}
    status, call = await setup.post(
        "/v1/services/inc/calls?wait=10",
        setup.engine_token,
        setup.call_packet(job_id, "second", {"n": 2}),
    )
    assert status == 200, call
    assert await usage_of(setup.platform.db, job_id) == [
        ("acme", "ada", "first"),
        ("acme", "ada", "second"),
    ]

    report = {"job_id": job_id, "status": "succeeded", "result": [{"n": 3}]}
    status, body = await setup.post("/v1/engine-events", setup.engine_token, report)
    assert (status, body) == (200, {"id": job_id, "status": "succeeded"})
    job = await setup.platform.jobs.get(ACME, job_id)
    assert (job.status, job.result) == ("succeeded", {"n": 3})
    assert [(s.key, s.phase, s.input, s.output) for s in job.steps or []] == [
        ("first", "succeeded", {"n": 1}, [{"n": 2}]),
        ("second", "succeeded", {"n": 2}, [{"n": 3}]),
    ]
    # A repeated (or late, contradicting) report changes nothing.
    failed = {"job_id": job_id, "status": "failed", "error": {"code": "x", "message": "late"}}
    status, body = await setup.post("/v1/engine-events", setup.engine_token, failed)
    assert (status, body["status"]) == (200, "succeeded")


async def test_a_failure_report_keeps_the_engine_error(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    error = {"step": "second", "code": "admission_denied", "message": "account acme is blocked"}
    status, _ = await setup.post(
        f"/v1/jobs/{job_id}/engine-events",
        setup.engine_token,
        {"job_id": job_id, "status": "failed", "error": error},
    )
    assert status == 200
    job = await setup.platform.jobs.get(ACME, job_id)
    assert (job.status, job.error) == ("failed", error)


async def test_cancel_reaches_the_engine_and_the_gateway_refuses_further_calls(
    setup: Setup,
) -> None:
    job_id = await setup.started_job({"n": 1})
    job = await setup.platform.jobs.cancel(ACME, job_id)
    assert job.status == "cancelled"
    assert setup.engine.cancelled == [f"run-{job_id}"]
    status, body = await setup.post(
        "/v1/services/inc/calls?wait=10",
        setup.engine_token,
        setup.call_packet(job_id, "first", {"n": 1}),
    )
    assert status == 403
    assert "cancelled" in body["error"]["message"]
    assert await usage_of(setup.platform.db, job_id) == []


async def test_what_engine_and_user_tokens_may_not_do(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    report = {"job_id": job_id, "status": "succeeded", "result": []}
    # A user cannot end a job by posing as its engine.
    status, body = await setup.post("/v1/engine-events", setup.user_token, report)
    assert status == 403
    assert "engine" in body["error"]["message"]
    # An engine token reads nothing and lists nothing.
    for path in ("/v1/jobs", f"/v1/jobs/{job_id}", "/v1/services"):
        status, body = await setup.get(path, setup.engine_token)
        assert status == 403, path
    # It acts only for jobs of its own engine...
    step_job = await setup.platform.jobs.apply(
        {**WORKFLOW, "metadata": {"name": "local"}, "spec": {**WORKFLOW["spec"], "engine": "step"}},
        ACME,
    )
    local = await setup.platform.jobs.create(ACME, step_job.workflow.metadata.name, {"n": 1})
    status, body = await setup.post(
        "/v1/services/inc/calls", setup.engine_token, {"job_id": local.id, "payload": {"n": 1}}
    )
    assert status == 403
    assert "step" in body["error"]["message"]
    # ...and only with a job named.
    status, body = await setup.post(
        "/v1/services/inc/calls", setup.engine_token, {"payload": {"n": 1}}
    )
    assert status == 422
    assert body["error"]["problems"][0]["location"] == "body.job_id"
    # The packet cannot claim another account than the job's.
    packet = setup.call_packet(job_id, "first", {"n": 1})
    packet["actor"] = {"user": {"id": "eve"}, "account": {"id": "globex"}}
    status, _ = await setup.post("/v1/services/inc/calls", setup.engine_token, packet)
    assert status == 403


async def test_bad_reports_are_refused_with_their_location(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    cases = [
        ({"status": "succeeded"}, "body.job_id"),
        ({"job_id": job_id, "status": "done"}, "body.status"),
        ({"job_id": job_id, "status": "failed", "error": "boom"}, "body.error"),
    ]
    for body, location in cases:
        status, answer = await setup.post("/v1/engine-events", setup.engine_token, body)
        assert status == 422, body
        assert answer["error"]["problems"][0]["location"] == location
    assert (await setup.platform.jobs.get(ACME, job_id, steps=False)).status == "running"


async def test_a_payload_reference_brings_the_stored_job_input(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 41, "big": "x" * 1000})
    packet = setup.call_packet(job_id, "first", {}, headers={"fluxo-payload-ref": job_id})
    status, call = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, packet)
    assert status == 200, call
    assert call["result"][0]["payload"]["n"] == 42
    packet = setup.call_packet(job_id, "second", {}, headers={"fluxo-payload-ref": "nope"})
    status, body = await setup.post("/v1/services/inc/calls", setup.engine_token, packet)
    assert status == 404
    assert "fluxo-payload-ref" in body["error"]["message"]


async def test_a_start_that_fails_is_retried_then_fails_the_job(setup: Setup) -> None:
    setup.engine.failures = 1
    job = await setup.platform.jobs.create(ACME, "remote", {"n": 1})
    # Retried after a backoff (2 s for the first retry): the job still starts.
    await until(lambda: setup._status(job.id), "running", timeout=15)
    await setup.start_recorded()
    assert [s.job_id for s in setup.engine.started] == [job.id]

    setup.engine.failures, setup.engine.retryable = 1, False
    job = await setup.platform.jobs.create(ACME, "remote", {"n": 2})
    await until(lambda: setup._status(job.id), "failed")
    record = await setup.platform.jobs.get(ACME, job.id, steps=False)
    assert record.error is not None
    assert record.error["code"] == "engine_start_failed"
    assert "the engine is away" in record.error["message"]


async def test_a_job_cancelled_before_it_started_is_never_started(setup: Setup) -> None:
    await setup.platform.stop()  # nothing consumes the start message for now
    job = await setup.platform.jobs.create(ACME, "remote", {"n": 1})
    await setup.platform.jobs.cancel(ACME, job.id)
    await setup.platform.start()
    # The runner consumed the start message (acked: the queue is empty) and started nothing.
    transport = setup.platform.runtime.transport
    await until(lambda: transport.depth(f"engine.{setup.engine.name}"), 0)
    assert setup.engine.started == []
    assert (await setup.platform.jobs.get(ACME, job.id, steps=False)).status == "cancelled"


# --- tenant boundaries ---------------------------------------------------------------------------


async def test_an_engine_token_of_another_account_finds_none_of_its_jobs(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    packet = setup.call_packet(job_id, "first", {"n": 1})
    status, body = await setup.post("/v1/services/inc/calls?wait=10", setup.globex_engine, packet)
    # The same answer as for a job that does not exist: no hint that it does.
    status_none, body_none = await setup.post(
        "/v1/services/inc/calls?wait=10",
        setup.globex_engine,
        {**packet, "job_id": "no-such-job", "id": "nr-x"},
    )
    assert (status, status_none) == (404, 404), body
    assert body["error"]["code"] == body_none["error"]["code"] == "not_found"
    assert body["error"]["message"].replace(job_id, "ID") == body_none["error"]["message"].replace(
        "no-such-job", "ID"
    )
    forged = {"job_id": job_id, "status": "succeeded", "result": [{"n": 999}]}
    for path in ("/v1/engine-events", f"/v1/jobs/{job_id}/engine-events"):
        status, body = await setup.post(path, setup.globex_engine, forged)
        assert status == 404, (path, body)
    argo_style = {"engine": "argo", "event": "finished", "run": "x"}
    status, _ = await setup.post(
        f"/v1/jobs/{job_id}/engine-events", setup.globex_engine, argo_style
    )
    assert status == 404
    job = await setup.platform.jobs.get(ACME, job_id)
    assert (job.status, job.steps) == ("running", [])
    assert await usage_of(setup.platform.db, job_id) == []


async def test_a_payload_reference_names_only_the_calling_jobs_own_input(setup: Setup) -> None:
    mine = await setup.started_job({"n": 1})
    other = await setup.started_job({"n": 41, "secret": "of another job"})
    packet = setup.call_packet(mine, "first", {}, headers={"fluxo-payload-ref": other})
    status, body = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, packet)
    assert status == 404, body
    assert "of another job" not in str(body)
    assert (await setup.platform.jobs.get(ACME, mine)).steps == []
    # A user's token resolves no reference at all, not even to its own account's job.
    status, body = await setup.post(
        "/v1/services/inc/calls?wait=10",
        setup.user_token,
        {"payload": {}, "headers": {"fluxo-payload-ref": other}},
    )
    assert status == 422, body
    assert body["error"]["problems"][0]["location"] == "body.headers.fluxo-payload-ref"


async def test_a_user_token_never_attaches_a_call_to_a_job(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    fields = {
        "job_id": ("body.job_id", job_id),
        "step_id": ("body.step_id", "first"),
        "workflow": ("body.workflow", "remote@1"),
        "headers": ("body.headers.fluxo-step-key", {"fluxo-step-key": "first"}),
    }
    for token in (setup.globex_user, setup.user_token):  # another account's user, and its own
        for name, (location, value) in fields.items():
            body = {"payload": {"n": 5}, name: value}
            status, answer = await setup.post("/v1/services/inc/calls?wait=10", token, body)
            assert status == 422, (name, answer)
            assert [p["location"] for p in answer["error"]["problems"]] == [location]
    job = await setup.platform.jobs.get(ACME, job_id)
    assert job.steps == []
    assert await usage_of(setup.platform.db, job_id) == []


async def test_a_job_lists_only_calls_of_its_own_account(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    # A call row naming the job from another account (written past the API, in process).
    packet = Packet.model_validate(
        {
            "job_id": job_id,
            "step_id": "first",
            "actor": {"user": {"id": "gus"}, "account": {"id": "globex"}},
            "payload": {"n": 7},
            "headers": {"fluxo-step-key": "first"},
        }
    )
    record = await setup.platform.runtime.gateway.call("inc", packet, wait=10)
    assert record.status == "succeeded"
    assert (await setup.platform.jobs.get(ACME, job_id)).steps == []


async def test_a_reported_result_must_be_what_the_recorded_calls_produced(setup: Setup) -> None:
    job_id = await setup.started_job({"n": 1})
    for step, n in (("first", 1), ("second", 2)):
        packet = setup.call_packet(job_id, step, {"n": n})
        status, call = await setup.post(
            "/v1/services/inc/calls?wait=10", setup.engine_token, packet
        )
        assert (status, call["status"]) == (200, "succeeded")
    for forged in ([{"n": 999}], [{"n": 3}, {"n": 3}], [], {"n": 2}):
        report = {"job_id": job_id, "status": "succeeded", "result": forged}
        status, body = await setup.post("/v1/engine-events", setup.engine_token, report)
        assert status == 409, (forged, body)
        assert body["error"]["context"]["field"] == "body.result"
    assert (await setup.platform.jobs.get(ACME, job_id, steps=False)).status == "running"
    report = {"job_id": job_id, "status": "succeeded", "result": [{"n": 3.0}]}
    status, body = await setup.post("/v1/engine-events", setup.engine_token, report)
    assert (status, body["status"]) == (200, "succeeded")
    job = await setup.platform.jobs.get(ACME, job_id, steps=False)
    assert job.result == {"n": 3}


async def test_a_run_that_ends_before_its_start_call_returns_ends_the_job(setup: Setup) -> None:
    # A Node-RED flow without service calls ends in milliseconds: its report can arrive while
    # Fluxo still waits for the start call's answer. It was refused (409, "not running") and the
    # job stayed running for good.
    answers: list[tuple[int, Any]] = []

    async def report_at_once(request: StartRequest) -> None:
        report = {"job_id": request.job_id, "status": "succeeded", "result": []}
        answers.append(await setup.post("/v1/engine-events", setup.engine_token, report))

    setup.engine.on_start = report_at_once
    job = await setup.platform.jobs.create(ACME, "remote", {"n": 1})
    await until(lambda: setup._status(job.id), "succeeded")
    # The start message is acked once the start call returned and its run id is recorded.
    transport = setup.platform.runtime.transport
    await until(lambda: transport.depth(f"engine.{setup.engine.name}"), 0)
    assert [status for status, _ in answers] == [200], answers
    stored = await setup.platform.jobs.store.job(job.id)
    assert (stored.run_id, stored.started_at is not None) == (f"run-{job.id}", True)


async def test_a_job_not_yet_started_cannot_be_reported_succeeded(setup: Setup) -> None:
    await setup.platform.stop()  # nothing starts the job for now
    job = await setup.platform.jobs.create(ACME, "remote", {"n": 1})
    report = {"job_id": job.id, "status": "succeeded", "result": []}
    status, body = await setup.post("/v1/engine-events", setup.engine_token, report)
    assert status == 409, body
    assert (await setup.platform.jobs.get(ACME, job.id, steps=False)).status == "queued"
