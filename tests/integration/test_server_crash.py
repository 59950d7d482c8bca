"""Jobs survive SIGKILL of the all-in-one server and finish after a restart, every service
effect and usage record exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from fluxo_core.storage import Database
from fluxo_core.storage.tables import calls, jobs, usage_records
from tests.integration.test_cli import REPO, free_port

WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "crashy"},
    "spec": {
        "steps": [
            {"id": "first", "kind": "service", "service": "slow", "next": ["middle"]},
            {"id": "middle", "kind": "service", "service": "inc", "next": ["last"]},
            {"id": "last", "kind": "service", "service": "slow"},
        ]
    },
}


def start_server(
    home: Path, port: int, database_url: str, effects: Path, **settings: str
) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        FLUXO_HOME=str(home),
        FLUXO_PORT=str(port),
        FLUXO_DATABASE_URL=database_url,
        FLUXO_TEST_EFFECTS=str(effects),
        FLUXO_POLL_INTERVAL="0.2",
        PYTHONPATH=str(REPO),
        **settings,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxo.cli", "up", "--module", "tests.support.services"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "admin token" in line:
            return proc
        if not line:
            break
    proc.kill()
    raise AssertionError("the server did not start")


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_job_survives_sigkill_of_the_server(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
    try:
        token = (tmp_path / "admin.token").read_text().strip()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert http.post("/v1/workflows", json=WORKFLOW).status_code == 201
        job = http.post("/v1/workflows/crashy/jobs", json={"input": {"n": 1, "sleep": 1.0}}).json()
        # Kill the whole server while the first step's handler is running.
        wait_until(lambda: "start 1" in lines(effects), 30, "the first handler to start")
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        assert "end 1" not in lines(effects)
    finally:
        if server.poll() is None:
            server.kill()
        if server.stdout is not None:
            server.stdout.close()

    server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
    try:
        final = http.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
        if server.stdout is not None:
            server.stdout.close()
        http.close()

    assert final["status"] == "succeeded", final
    assert final["result"] == {"n": 2, "done": True}
    # The interrupted handler ran again; every step's effect was committed once.
    assert lines(effects).count("start 1") == 2  # `first`: killed mid-handler, then run again
    assert lines(effects).count("start 2") == 1  # `last` (after `middle` added one): once
    usage = await db.read(lambda c: c.execute(sa.select(usage_records)).all())
    assert sorted(u.step_id for u in usage) == ["first", "last", "middle"]
    assert {u.job_id for u in usage} == {job["id"]}
    done = await db.read(
        lambda c: c.scalar(
            sa.select(sa.func.count()).select_from(calls).where(calls.c.status == "succeeded")
        )
    )
    assert done == 3


NOTIFY_WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "notify-all"},
    "spec": {
        "steps": [
            {
                "id": "notify",
                "kind": "service",
                "service": "notify",
                "timeout_s": 10,
                "next": ["count"],
            },
            {"id": "count", "kind": "service", "service": "inc"},
        ]
    },
}
LOAD = 2_000


class Load:
    """Submits ``LOAD`` jobs over HTTP, a few at a time, as a careful client does: each with an
    idempotency key, so a job whose answer a crash cut off can be submitted again."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.accepted: dict[int, str] = {}  # n -> job id, for each 201 the client got
        self.todo = list(range(LOAD))

    async def submit(self, *, concurrency: int = 16) -> None:
        """Submit what is left to submit; stops at the first lost connection."""
        gone = False

        async def one() -> None:
            nonlocal gone
            while self.todo and not gone:
                n = self.todo.pop(0)
                try:
                    reply = await self.http.post(
                        "/v1/workflows/notify-all/jobs",
                        json={"input": {"n": n, "sleep": 0.1}},
                        headers={"Idempotency-Key": f"job-{n}"},
                    )
                except httpx.TransportError:
                    gone = True
                    self.todo.append(n)  # maybe created, maybe not: the key tells, later
                    return
                assert reply.status_code in (200, 201), reply.text
                self.accepted[n] = reply.json()["id"]

        await asyncio.gather(*(one() for _ in range(concurrency)))


async def job_counts(db: Database) -> dict[str, int]:
    query = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
    return dict(await db.read(lambda c: [tuple(r) for r in c.execute(query)]))  # type: ignore[arg-type]


async def unfinished_jobs(db: Database) -> set[str]:
    query = sa.select(jobs.c.id).where(jobs.c.status.in_(("queued", "running")))
    return set(await db.read(lambda c: c.scalars(query).all()))


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigkill_under_load_fails_no_job_and_bills_every_call_once(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    # The issue this guards: a call in flight at the crash stayed leased for its service's
    # timeout plus a margin (20 s), longer than its step's 10 s timeout, so its job failed
    # although the service had already sent its notification. Default lease settings here.
    effects = tmp_path / "effects.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port, database_url, effects)
    token = (tmp_path / "admin.token").read_text().strip()
    load = Load(url, token)
    try:
        assert (await load.http.post("/v1/workflows", json=NOTIFY_WORKFLOW)).status_code == 201
        submitting = asyncio.create_task(load.submit())
        # Kill the server while jobs arrive and notifications are being sent.
        deadline = time.monotonic() + 60
        while len(lines(effects)) < LOAD // 4:
            assert time.monotonic() < deadline, "the notifications did not start"
            assert not submitting.done() or submitting.exception() is None
            await asyncio.sleep(0.02)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
        await submitting
        before_kill = len(load.accepted)
        cut_off = await unfinished_jobs(db)

        server = start_server(tmp_path, port, database_url, effects)
        restarted = time.monotonic()
        submitting = asyncio.create_task(load.submit())  # the rest, after the restart
        recovered: float | None = None  # when the last job cut off by the kill succeeded
        deadline = time.monotonic() + 60
        while True:
            counts = await job_counts(db)
            assert set(counts) <= {"queued", "running", "succeeded"}, counts
            if recovered is None and not cut_off & await unfinished_jobs(db):
                recovered = time.monotonic() - restarted
            if submitting.done():
                submitting.result()  # raises what the client met
                assert not load.todo, f"{len(load.todo)} jobs could not be submitted"
                if counts == {"succeeded": LOAD}:
                    break
            assert time.monotonic() < deadline, f"jobs still unfinished: {counts}"
            await asyncio.sleep(0.1)
        finished = time.monotonic() - restarted
    finally:
        await load.http.aclose()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(20)
        if server.stdout is not None:
            server.stdout.close()

    # Every job succeeded, one per submission (a resubmitted one was not created twice).
    assert len(load.accepted) == LOAD
    assert await job_counts(db) == {"succeeded": LOAD}
    # The ledger equals the calls that succeeded: one record per call, two calls per job.
    billed = await db.read(
        lambda c: c.execute(sa.select(usage_records.c.call_id, usage_records.c.job_id)).all()
    )
    succeeded = await db.read(
        lambda c: c.scalar(
            sa.select(sa.func.count()).select_from(calls).where(calls.c.status == "succeeded")
        )
    )
    assert len(billed) == len({b.call_id for b in billed}) == succeeded == 2 * LOAD
    assert {b.job_id for b in billed} >= set(load.accepted.values())
    # Every notification was sent; those cut off by the kill were sent again (at least once).
    sent = [int(line.split()[1]) for line in lines(effects)]
    assert set(sent) >= set(load.accepted)
    print(
        f"\ncrash under load ({db.dialect}): {LOAD} jobs, {before_kill} accepted before the "
        f"SIGKILL, {len(cut_off)} running at the kill, {len(sent) - len(set(sent))} "
        f"notifications sent twice; those running at the kill all succeeded {recovered:.1f}s "
        f"after the restart, all {LOAD} jobs in {finished:.1f}s"
    )
