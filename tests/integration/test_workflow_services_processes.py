"""Workflow services across processes, on PostgreSQL: a Service applied in one process is
loaded by a ``fluxo worker`` (a subprocess), which serves its calls; the child job ends in the
first process, which completes the call. No process waits for a child job while it runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fluxo.control.platform import Platform
from fluxo_core.storage import Database
from fluxo_core.storage.tables import calls, jobs
from tests.integration.test_cli import REPO
from tests.integration.test_workflow_services import (
    ACME,
    ADMIN,
    DOUBLE,
    PUB,
    caller,
    children,
    published,
    usage,
)
from tests.support import services as svc

pytestmark = pytest.mark.timeout(120)


def start_worker(database_url: str, effects: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        FLUXO_DATABASE_URL=database_url,
        FLUXO_TEST_EFFECTS=str(effects),
        FLUXO_POLL_INTERVAL="0.2",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxo.cli", "worker", "--module", "tests.support.services"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc
    proc.kill()
    raise AssertionError("the worker did not start")


@pytest.fixture
async def pg(pg_schema_url: str) -> AsyncIterator[Database]:
    database = Database(pg_schema_url)
    await database.migrate()
    yield database
    await database.close()


async def test_a_worker_process_serves_the_calls_of_a_workflow_service_applied_elsewhere(
    pg: Database, pg_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(effects))
    platform = Platform(pg, svc.SERVICES, workers=2, poll_interval_s=0.1)
    # This process runs no loop of workflow services: only the worker process can serve
    # their calls. It runs the step engine, so the child jobs end here.
    platform.workflow_services.workers = 0
    for account in ("acme", "pub", "default"):
        await platform.accounts.ensure_account(account)
    worker = start_worker(pg_schema_url, effects)
    try:
        async with platform:
            await platform.jobs.apply(DOUBLE, PUB)
            # Applied after the worker started: it follows the stored Services.
            await platform.resources.apply(ADMIN, published("doubler", "double"))
            await platform.jobs.apply(caller("doubler"), ACME)
            created = [
                await platform.jobs.create(ACME, "buyer", {"items": [f"x{n}"] * (n + 1)})
                for n in range(5)
            ]
            done = [await platform.jobs.wait(ACME, job.id, 60) for job in created]
            assert [d.status for d in done] == ["succeeded"] * 5, [d.error for d in done]
            for n, record in enumerate(done):
                results = record.result if n else [record.result]
                assert sorted(r["index"] for r in results) == list(range(n + 1))
            assert platform.workflow_services._loops == []
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
        if worker.stdout is not None:
            worker.stdout.close()
    kids = await children(pg)
    assert len(kids) == 5
    assert all(k["status"] == "succeeded" and k["account_id"] == "pub" for k in kids)
    assert {k["parent_job_id"] for k in kids} == {job.id for job in created}
    # Each call answered once and billed once at the service's price.
    bought = [e for e in await usage(pg) if e["service"] == "doubler"]
    assert sorted(e["call_id"] for e in bought) == sorted(k["parent_call_id"] for k in kids)
    assert {e["amount_micros"] for e in bought} == {250_000}


async def call_and_child(db: Database, service: str) -> list[dict[str, Any]]:
    query = sa.select(calls.c.id, calls.c.status, jobs.c.status.label("child")).join(
        jobs, jobs.c.parent_call_id == calls.c.id
    )
    rows = await db.read(lambda c: c.execute(query.where(calls.c.service == service)).all())
    return [dict(r._mapping) for r in rows]


async def test_a_child_that_ends_where_no_workflow_service_runs_is_answered_by_the_sweep(
    pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job end hook is what answers at once; without it (a process that runs no workflow
    services ended the child) the call stays open until a sweep, which answers it once."""
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    platform = Platform(pg, svc.SERVICES, workers=2, poll_interval_s=0.1)
    services = platform.workflow_services
    services.sweep_s = 3600.0  # the test sweeps by hand
    for account in ("acme", "pub", "default"):
        await platform.accounts.ensure_account(account)
    async with platform:
        await platform.jobs.apply(DOUBLE, PUB)
        await platform.resources.apply(ADMIN, published("doubler", "double"))
        await platform.jobs.apply(caller("doubler"), ACME)
        pg.job_end_hooks.remove(services._on_jobs_ended)
        job = await platform.jobs.create(ACME, "buyer", {"items": ["a", "b"]})

        async def child_ended() -> list[dict[str, Any]]:
            while not (rows := await call_and_child(pg, "doubler")) or rows[0]["child"] != (
                "succeeded"
            ):
                await asyncio.sleep(0.05)
            return rows

        [row] = await asyncio.wait_for(child_ended(), 30)
        assert row["status"] == "queued"  # settled by the worker, not answered
        assert (await platform.jobs.get(ACME, job.id)).status == "running"
        assert await services.answer_ended() == 1
        assert await services.answer_ended() == 0  # once
        done = await platform.jobs.wait(ACME, job.id, 30)
        assert done.status == "succeeded", done.error
        pg.job_end_hooks.append(services._on_jobs_ended)
    assert [e["amount_micros"] for e in await usage(pg) if e["service"] == "doubler"] == [250_000]
