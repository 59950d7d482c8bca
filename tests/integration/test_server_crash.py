"""A job survives SIGKILL of the all-in-one server and finishes after a restart, every service
effect and usage record exactly once."""

from __future__ import annotations

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
from fluxo_core.storage.tables import calls, usage_records
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


def start_server(home: Path, port: int, database_url: str, effects: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        FLUXO_HOME=str(home),
        FLUXO_PORT=str(port),
        FLUXO_DATABASE_URL=database_url,
        FLUXO_TEST_EFFECTS=str(effects),
        FLUXO_POLL_INTERVAL="0.2",
        FLUXO_LEASE_MARGIN_S="0.5",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxo_core.cli", "up", "--module", "tests.support.services"],
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
    server = start_server(tmp_path, port, database_url, effects)
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

    server = start_server(tmp_path, port, database_url, effects)
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
