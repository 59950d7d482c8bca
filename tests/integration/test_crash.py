"""A worker PROCESS killed with SIGKILL in the middle of its handlers loses and doubles nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from fluxo.control.platform import Platform
from fluxo_core.ir import Packet
from fluxo_core.storage import AccountStore, Database, Principal
from fluxo_core.storage.tables import calls, inbox, usage_records
from service_runtime import ServiceRuntime
from tests.support import services as svc

ACTOR = {"user": {"id": "u-1"}, "account": {"id": "acme"}}
REPO = Path(__file__).resolve().parents[2]


def start_worker(database_url: str, effects: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        FLUXO_DATABASE_URL=database_url,
        FLUXO_TEST_EFFECTS=str(effects),
        FLUXO_POLL_INTERVAL="0.2",
        PYTHONPATH=str(REPO),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fluxo.cli",
            "worker",
            "--module",
            "tests.support.services",
            "--lease",
            "0.5",
            "--batch-size",
            "4",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if os.environ.get("FLUXO_TEST_QUIET") else None,
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_sigkill_mid_handler_completes_every_call_exactly_once(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    total = 12
    # Worker processes check admission: the calling account must exist (and not be blocked).
    await AccountStore(db).ensure_account("acme")
    async with ServiceRuntime(db, svc.SERVICES, workers=0) as rt:  # gateway only, no workers
        ids = await rt.gateway.submit(
            "slow",
            [
                Packet.model_validate({"actor": ACTOR, "payload": {"n": i, "sleep": 0.6}})
                for i in range(total)
            ],
        )
        first = start_worker(database_url, effects)
        try:
            # Kill while handlers are running: some started, none of them finished.
            await wait_for(
                lambda: any(x.startswith("start") for x in lines(effects)),
                30,
                "the first handler to start",
            )
            assert not any(x.startswith("end") for x in lines(effects))
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        killed_mid_run = {x.split()[1] for x in lines(effects) if x.startswith("start")}
        assert killed_mid_run, "the kill must hit handlers in flight"

        second = start_worker(database_url, effects)
        try:
            records = [await rt.gateway.wait(call_id, 60) for call_id in ids]
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(15)
            except subprocess.TimeoutExpired:
                second.kill()

    assert [r.status for r in records] == ["succeeded"] * total
    # The killed handlers ran again (at-least-once execution) ...
    starts = [x.split()[1] for x in lines(effects) if x.startswith("start")]
    assert all(starts.count(n) == 2 for n in killed_mid_run)
    # ... but every effect is committed exactly once: results, inbox rows, usage records.
    usage = await db.read(lambda c: c.execute(sa.select(usage_records)).all())
    assert sorted(u.call_id for u in usage) == sorted(ids)
    assert sum(u.amount_micros for u in usage) == total * 500_000
    done = await db.read(
        lambda c: c.scalar(
            sa.select(sa.func.count()).select_from(calls).where(calls.c.status == "succeeded")
        )
    )
    assert done == total == len(usage)  # the ledger equals the completed calls
    applied = await db.read(lambda c: c.scalar(sa.select(sa.func.count()).select_from(inbox)))
    assert applied == total
    assert await rt.transport.depth("svc.slow@1.in") == 0
    assert await rt.transport.depth("svc.slow@1.out") == total


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_step_whose_worker_died_finishes_though_its_timeout_passed_meanwhile(
    db: Database, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step allows 2 s per run; its handler needs 0.8 s. Its worker dies mid-handler and the
    # next one starts only after those 2 s have passed: the step's timeout counts the handler's
    # runs, not the time the call waited for a worker, so the job still succeeds.
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(effects))
    # The engine runs here; the service runs in worker processes only.
    platform = Platform(db, svc.SERVICES, workers=0, poll_interval_s=0.2, admission_cache_s=0)
    await platform.accounts.ensure_account("acme")
    me = Principal(account_id="acme", user_id="u-1")
    steps = [{"id": "wait", "kind": "service", "service": "slow", "timeout_s": 2}]
    doc = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": "patient"},
        "spec": {"engine": "step", "steps": steps},
    }
    async with platform:
        await platform.jobs.apply(doc, me)
        job = await platform.jobs.create(me, "patient", {"n": 1, "sleep": 0.8})
        first = start_worker(database_url, effects)
        try:
            await wait_for(lambda: "start 1" in lines(effects), 30, "the handler to start")
            started = time.monotonic()
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        assert "end 1" not in lines(effects)
        # Nobody runs the call until the step's timeout has passed since the handler started.
        await asyncio.sleep(max(0.0, started + 2.5 - time.monotonic()))

        second = start_worker(database_url, effects)
        try:
            final = await platform.jobs.wait(me, job.id, 30)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(15)
            except subprocess.TimeoutExpired:
                second.kill()

    assert final.status == "succeeded", final.error
    assert final.result == {"n": 1, "done": True}
    assert lines(effects) == ["start 1", "start 1", "end 1"]
    usage = await db.read(lambda c: c.execute(sa.select(usage_records)).all())
    assert [u.job_id for u in usage] == [job.id]


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_handler_run_again_after_a_crash_gets_the_same_idempotency_key(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    # Handlers run at least once: the one killed mid-send sends again, and the outside world
    # can tell it is the same send by its key.
    effects = tmp_path / "effects.log"
    await AccountStore(db).ensure_account("acme")
    async with ServiceRuntime(db, svc.SERVICES, workers=0) as rt:  # gateway only, no workers
        ids = await rt.gateway.submit(
            "deliver",
            [
                Packet.model_validate({"actor": ACTOR, "payload": {"n": i, "sleep": 0.6}})
                for i in range(4)
            ],
        )
        first = start_worker(database_url, effects)
        try:
            await wait_for(lambda: lines(effects), 30, "the first send")
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        killed = {int(line.split()[1]) for line in lines(effects)}

        second = start_worker(database_url, effects)
        try:
            records = [await rt.gateway.wait(call_id, 60) for call_id in ids]
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(15)
            except subprocess.TimeoutExpired:
                second.kill()

    assert [r.status for r in records] == ["succeeded"] * 4
    sends: dict[int, list[tuple[str, int]]] = {}
    for line in lines(effects):
        _, n, key, attempt = line.split()
        sends.setdefault(int(n), []).append((key, int(attempt)))
    assert killed, "the kill must hit a send in flight"
    for n, runs in sends.items():
        # Every run of call n gave the outside world the call's id, each a later delivery
        # (a call claimed by the killed worker but not yet started runs once, as attempt 2).
        assert {key for key, _ in runs} == {ids[n]}
        attempts = [attempt for _, attempt in runs]
        assert attempts == sorted(set(attempts))
    assert all([a for _, a in sends[n]] == [1, 2] for n in killed)  # killed mid-send: twice
    assert [r.result[0].payload["key"] for r in records if r.result] == ids
