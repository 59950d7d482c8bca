"""Blocks on an external engine, through the HTTP gateway its flows call (the recording engine
of tests/integration/test_remote_engines.py): a refused call ends the job ``blocked``; resume
starts a new run whose repeated calls are answered from their results, billed once; a stopped
run's late failure report does not fail the new run; retry starts a new run whose failed call
the gateway makes again, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydantic_core
import pytest

from fluxo_core.errors import ConflictError
from fluxo_core.ir import Packet
from service_runtime.interceptors import PreparedCall
from tests.integration.test_remote_engines import (  # noqa: F401  (setup: the fixture)
    ACME,
    Setup,
    setup,
    until,
    usage_of,
)
from tests.support import services as svc


async def test_a_refused_engine_call_blocks_the_job_and_resume_runs_it_again(
    setup: Setup,  # noqa: F811
) -> None:
    job_id = await setup.started_job({"n": 1})
    first = setup.call_packet(job_id, "first", {"n": 1})
    status, call = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, first)
    assert (status, call["status"]) == (200, "succeeded")
    block = await setup.platform.blocks.place(ACME, kind="service", target="inc", reason="outage")

    second = setup.call_packet(job_id, "second", {"n": 2})
    status, body = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, second)
    assert (status, body["error"]["code"]) == (403, "blocked")
    job = await setup.platform.jobs.get(ACME, job_id, steps=False)
    assert job.status == "blocked"
    assert job.error is not None
    assert (job.error["block_id"], job.error["step"]) == (block.id, "second")
    # The flow reports the failure it saw: the job stays blocked.
    refused = {"job_id": job_id, "status": "failed", "error": body["error"]}
    status, answer = await setup.post("/v1/engine-events", setup.engine_token, refused)
    assert (status, answer["status"]) == (200, "blocked")

    await setup.platform.blocks.lift(ACME, block.id)
    await setup.platform.job_control.resume(ACME, job_id)

    async def starts() -> int:
        return sum(1 for s in setup.engine.started if s.job_id == job_id)

    await until(starts, 2)
    await setup.start_recorded()
    rerun = setup.engine.started[-1]
    assert rerun.rerun is not None
    assert setup.engine.cancelled == [f"run-{job_id}"]  # the stopped run forgot the job first

    # A late report of the stopped run does not fail the new one.
    status, answer = await setup.post("/v1/engine-events", setup.engine_token, refused)
    assert (status, answer["status"]) == (200, "running")
    # The new run repeats the first call (same packet id: its stored result) and goes on.
    status, again = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, first)
    assert (status, again["id"], again["result"]) == (200, call["id"], call["result"])
    status, done = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, second)
    assert (status, done["status"]) == (200, "succeeded")
    report = {"job_id": job_id, "status": "succeeded", "result": [{"n": 3}]}
    status, answer = await setup.post("/v1/engine-events", setup.engine_token, report)
    assert (status, answer["status"]) == (200, "succeeded")
    assert await usage_of(setup.platform.db, job_id) == [
        ("acme", "ada", "first"),
        ("acme", "ada", "second"),
    ]


async def test_retry_makes_the_failed_call_again_once_and_answers_the_rest_from_results(
    setup: Setup,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(effects))
    job_id = await setup.started_job({"n": 1})
    first = setup.call_packet(job_id, "first", {"n": 1})
    status, call = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, first)
    assert (status, call["status"]) == (200, "succeeded")
    second = setup.call_packet(job_id, "second", {"n": 2})
    gate = "/v1/services/gated/calls?wait=10"
    status, broken = await setup.post(gate, setup.engine_token, second)
    assert (status, broken["status"]) == (200, "failed")
    failure = {"job_id": job_id, "status": "failed", "error": {"step": "second", "code": "x"}}
    failure["error"]["message"] = "the gate is closed"
    status, _ = await setup.post("/v1/engine-events", setup.engine_token, failure)
    assert status == 200

    for attempt in (1, 2):
        if attempt == 2:
            svc.open_gate()
        retried = await setup.platform.job_control.retry(ACME, job_id)
        assert retried.status == "queued"  # until the new run starts
        await until(lambda: runs(setup, job_id), attempt + 1)
        await setup.start_recorded()
        # The new run repeats both calls: the finished one is its stored result...
        status, again = await setup.post(
            "/v1/services/inc/calls?wait=10", setup.engine_token, first
        )
        assert (status, again["id"], again["result"]) == (200, call["id"], call["result"])
        # ...the failed one is its next attempt, made once though the packet comes twice.
        answers = await asyncio.gather(
            *(setup.post(gate, setup.engine_token, second) for _ in range(2))
        )
        assert [a[0] for a in answers] == [200, 200]
        assert answers[0][1]["id"] == answers[1][1]["id"] == f"{second['id']}@r{attempt}"
        assert effects.read_text().count("gated 2") == attempt + 1
        if attempt == 1:
            assert answers[0][1]["status"] == "failed"
            status, _ = await setup.post("/v1/engine-events", setup.engine_token, failure)
            assert status == 200
    assert answers[0][1]["status"] == "succeeded"
    report = {"job_id": job_id, "status": "succeeded", "result": [{"n": 2, "passed": True}]}
    status, answer = await setup.post("/v1/engine-events", setup.engine_token, report)
    assert (status, answer["status"]) == (200, "succeeded")
    # Each call that succeeded is billed once; the failed attempts are not billed.
    assert await usage_of(setup.platform.db, job_id) == [
        ("acme", "ada", "first"),
        ("acme", "ada", "second"),
    ]
    status, superseded = await setup.get(f"/v1/calls/{broken['id']}", setup.user_token)
    assert (status, superseded["retry_id"]) == (200, f"{second['id']}@r1")
    status, job = await setup.get(f"/v1/jobs/{job_id}", setup.user_token)
    assert status == 200
    assert [(s["key"], s["phase"], s["attempt"]) for s in job["steps"]] == [
        ("first", "succeeded", 1),
        ("second", "succeeded", 3),
    ]
    with pytest.raises(ConflictError, match="not failed"):
        await setup.platform.job_control.retry(ACME, job_id)


async def runs(setup: Setup, job_id: str) -> int:  # noqa: F811
    return sum(1 for s in setup.engine.started if s.job_id == job_id)


async def test_resume_makes_a_call_the_worker_refused_for_the_block_again(
    setup: Setup,  # noqa: F811
) -> None:
    job_id = await setup.started_job({"n": 1})
    block = await setup.platform.blocks.place(ACME, kind="service", target="inc", reason="outage")
    # A call the gateway admitted just before the block came: written without admission (as
    # an engine's transaction writes its calls), so the worker is the one that refuses it.
    second = Packet.model_validate(setup.call_packet(job_id, "second", {"n": 2}))
    gateway = setup.platform.runtime.gateway
    info = await gateway.catalog.resolve("inc")
    prepared = PreparedCall.of(second, pydantic_core.to_json(second))
    await setup.platform.db.transact(lambda tx: gateway.record_calls(tx, info, [prepared]))
    refused = await gateway.wait(second.id, 10)
    assert refused.status == "failed"
    assert refused.error is not None
    assert refused.error["code"] == "blocked"
    # The flow waiting on the call is answered that refusal, and the job ends blocked (what
    # the gateway route does with such an answer).
    await setup.platform.job_control.engine_call_blocked(job_id, "second", refused.error)
    assert (await setup.platform.jobs.get(ACME, job_id, steps=False)).status == "blocked"

    await setup.platform.blocks.lift(ACME, block.id)
    await setup.platform.job_control.resume(ACME, job_id)
    await until(lambda: runs(setup, job_id), 2)
    await setup.start_recorded()
    # The new run's call is made again instead of being answered the stored refusal.
    packet = setup.call_packet(job_id, "second", {"n": 2})
    status, done = await setup.post("/v1/services/inc/calls?wait=10", setup.engine_token, packet)
    assert (status, done["id"], done["status"]) == (200, f"{second.id}@r1", "succeeded")
    report = {"job_id": job_id, "status": "succeeded", "result": [{"n": 3}]}
    status, answer = await setup.post("/v1/engine-events", setup.engine_token, report)
    assert (status, answer["status"]) == (200, "succeeded")
    assert await usage_of(setup.platform.db, job_id) == [("acme", "ada", "second")]


async def test_retry_refuses_a_job_that_failed_outside_a_service_call(
    setup: Setup,  # noqa: F811
) -> None:
    job_id = await setup.started_job({"n": 1})
    failed = {"job_id": job_id, "status": "failed", "error": {"code": "x", "message": "lost"}}
    status, _ = await setup.post("/v1/engine-events", setup.engine_token, failed)
    assert status == 200
    status, body = await setup.post(f"/v1/jobs/{job_id}/retry", setup.user_token, {})
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert "before any step ran" in body["error"]["message"]
    assert (await setup.platform.jobs.get(ACME, job_id, steps=False)).status == "failed"
