"""Dead letters can be listed and, once the cause is fixed, replayed exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fluxo.control.platform import Platform
from fluxo_core.errors import ServiceError
from fluxo_core.ir import Packet
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import calls, usage_records
from service_runtime import ServiceRuntime, service
from service_runtime.dead_letters import DeadLetters, JobLetters, Replay
from tests.support import services as svc

ACTOR = {"user": {"id": "u"}, "account": {"id": "acme"}}
REPO = Path(__file__).resolve().parents[2]


async def test_a_fixed_service_gets_its_dead_letters_again(db: Database) -> None:
    healthy = {"ok": False}

    @service("picky", inline=True)
    def picky(payload: dict[str, Any]) -> dict[str, Any]:
        if not healthy["ok"]:
            raise ServiceError("downstream rejects this", retryable=False)
        return {"done": payload["n"]}

    async with ServiceRuntime(db, [picky], workers=1, poll_interval_s=0.1) as rt:
        first = await rt.gateway.call(
            "picky", Packet.model_validate({"actor": ACTOR, "payload": {"n": 1}}), wait=10
        )
        assert first.status == "failed"
        letters = DeadLetters(db, rt.transport)
        (letter,) = await letters.list()
        assert (letter.queue, letter.message_id, letter.job_id) == (
            picky.input_queue,
            first.id,
            None,
        )
        assert "downstream rejects this" in (letter.error or "")

        healthy["ok"] = True
        assert await letters.replay(picky.input_queue) == Replay(picky.input_queue, 1)
        again = await rt.gateway.wait(first.id, 10)
        assert again.status == "succeeded"
        assert again.result
        assert again.result[0].payload == {"done": 1}
        assert await letters.list() == []
        # Nothing left: no second run.
        assert await letters.replay(picky.input_queue) == Replay(picky.input_queue, 0)
    usage = await db.read(lambda c: c.execute(sa.select(usage_records)).all())
    assert [u.call_id for u in usage] == [first.id]


FAN_OUT_TO_BROKEN = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "doomed"},
    "spec": {
        "engine": "step",
        "steps": [
            {"id": "each", "kind": "split", "path": "items", "next": ["send"]},
            {"id": "send", "kind": "service", "service": "broken", "next": ["gather"]},
            {"id": "gather", "kind": "join", "split": "each"},
        ],
    },
}
BROKEN_QUEUE = "svc.broken@1.in"


async def dead_letters_of_a_failed_job(db: Database) -> tuple[str, list[str], str]:
    """A job whose 5 step calls were dead-lettered (it failed), and a direct call that was:
    returns the job id, its calls' ids and the direct call's id."""
    me = Principal(account_id="acme", user_id="u")
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.1, admission_cache_s=0)
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(FAN_OUT_TO_BROKEN, me)
        job = await platform.jobs.create(me, "doomed", {"items": [{"i": i} for i in range(5)]})
        assert (await platform.jobs.wait(me, job.id, 20)).status == "failed"
        # The first failure fails the job; admission then refuses its other calls, which are
        # dead-lettered too. Wait until all 5 are.
        query = sa.select(calls.c.id).where(calls.c.job_id == job.id)
        for call_id in await db.read(lambda c: c.scalars(query).all()):
            assert (await platform.runtime.gateway.wait(call_id, 10)).status == "failed"
        direct = await platform.runtime.gateway.call(
            "broken", Packet.model_validate({"actor": ACTOR, "payload": {}}), wait=10
        )
        assert direct.status == "failed"
        letters = await DeadLetters(db, platform.runtime.transport).list(BROKEN_QUEUE)
        step_calls = sorted(x.message_id for x in letters if x.job_id == job.id)
        assert len(step_calls) == 5
        assert [x.message_id for x in letters if x.job_id is None] == [direct.id]
    return job.id, step_calls, direct.id


async def test_replay_keeps_the_dead_letters_of_a_failed_job_and_names_it(db: Database) -> None:
    job_id, step_calls, direct_id = await dead_letters_of_a_failed_job(db)
    async with ServiceRuntime(db, [], workers=0) as rt:
        letters = DeadLetters(db, rt.transport)
        replay = await letters.replay(BROKEN_QUEUE)
        assert replay == Replay(BROKEN_QUEUE, 1, (JobLetters(job_id, "failed", tuple(step_calls)),))
        # The job's letters stay dead, their calls failed: only the direct call went back.
        assert sorted(x.message_id for x in await letters.list(BROKEN_QUEUE)) == step_calls
        assert await rt.transport.depth(BROKEN_QUEUE) == 1
        statuses = await db.read(
            lambda c: dict(c.execute(sa.select(calls.c.id, calls.c.status)).all())
        )
    assert {statuses[i] for i in step_calls} == {"failed"}
    assert statuses[direct_id] == "queued"


async def test_fluxo_dlq_replay_says_which_jobs_it_kept_the_letters_of(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    job_id, _, _ = await dead_letters_of_a_failed_job(db)
    env = dict(os.environ, FLUXO_HOME=str(tmp_path), FLUXO_DATABASE_URL=database_url)
    result = subprocess.run(
        [sys.executable, "-m", "fluxo.cli", "dlq", "replay", BROKEN_QUEUE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == f"1 message(s) back on {BROKEN_QUEUE}\n"
    assert "kept 5 dead letter(s) of job steps" in result.stderr
    assert "run the job again" in result.stderr
    assert f"job {job_id} (failed): 5 message(s)" in result.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "fluxo.cli", "dlq", "list", "--queue", BROKEN_QUEUE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.stdout.count(f"job {job_id}") == 5, listed.stdout
