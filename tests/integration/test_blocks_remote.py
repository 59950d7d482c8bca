"""Blocks on an external engine, through the HTTP gateway its flows call (the recording engine
of tests/integration/test_remote_engines.py): a refused call ends the job ``blocked``; resume
starts a new run whose repeated calls are answered from their results, billed once; a stopped
run's late failure report does not fail the new run; retry is the step engine's only."""

from __future__ import annotations

import pytest

from fluxo_core.errors import UnsupportedFeatureError
from tests.integration.test_remote_engines import (  # noqa: F401  (setup: the fixture)
    ACME,
    Setup,
    setup,
    until,
    usage_of,
)


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


async def test_retry_is_refused_for_a_job_of_an_external_engine(
    setup: Setup,  # noqa: F811
) -> None:
    job_id = await setup.started_job({"n": 1})
    failed = {"job_id": job_id, "status": "failed", "error": {"step": "second", "code": "x"}}
    failed["error"]["message"] = "broken"
    status, _ = await setup.post("/v1/engine-events", setup.engine_token, failed)
    assert status == 200
    with pytest.raises(UnsupportedFeatureError, match="step engine only"):
        await setup.platform.job_control.retry(ACME, job_id)
