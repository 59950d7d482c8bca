"""The control plane follows what an engine declares: its locality and its lifecycle.

The same recording double is declared once ``external`` and once ``in_process``; nothing else
about it changes, so whatever the control plane does differently comes from the declaration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from fluxo.control.platform import Platform
from fluxo_core.engine import EngineCapabilities, RunHandle, RunStatus, StepState
from fluxo_core.storage import Database
from tests.integration.test_remote_engines import ACME, WORKFLOW, RecordingEngine, until
from tests.support import services as svc

KINDS = frozenset({"service", "switch", "transform", "split", "join", "delay"})


@dataclass
class InProcessEngine(RecordingEngine):
    """The double declared in-process: it would consume ``engine.nodered`` and keep its jobs'
    state itself, so it answers ``status`` (the external double refuses to)."""

    capabilities: EngineCapabilities = field(
        default_factory=lambda: EngineCapabilities(locality="in_process", step_kinds=KINDS)
    )

    async def status(self, handle: RunHandle) -> RunStatus:
        step = StepState(key="first", step_id="first", phase="running", attempt=1)
        return RunStatus(job_id=handle.job_id, phase="running", steps=[step])

    async def cancel(self, handle: RunHandle) -> None:
        self.cancelled.append(handle.run_id)


def _platform(db: Database, engine: RecordingEngine) -> Platform:
    return Platform(
        db, svc.SERVICES, workers=1, poll_interval_s=0.2, admission_cache_s=0, engines=[engine]
    )


@pytest.fixture
async def in_process(db: Database) -> AsyncIterator[tuple[Platform, InProcessEngine]]:
    engine = InProcessEngine()
    platform = _platform(db, engine)
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(WORKFLOW, ACME)
        yield platform, engine


async def test_an_engine_declared_external_is_started_by_the_runner(db: Database) -> None:
    engine = RecordingEngine()
    platform = _platform(db, engine)
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(WORKFLOW, ACME)
        job = await platform.jobs.create(ACME, "remote", {"n": 1})
        await until(lambda: _status(platform, job.id), "running")
        assert [s.job_id for s in engine.started] == [job.id]
        assert list(platform.jobs.remote.engines) == ["nodered"]


async def test_an_engine_declared_in_process_consumes_its_own_start_messages(
    in_process: tuple[Platform, InProcessEngine],
) -> None:
    platform, engine = in_process
    assert platform.jobs.remote.engines == {}, "the runner of external engines leaves it alone"
    job = await platform.jobs.create(ACME, "remote", {"n": 1})
    # Its starter returns None: the job's start waits on the engine's own queue.
    [start] = await platform.runtime.transport.claim(["engine.nodered"], limit=10, lease_s=30)
    assert orjson.loads(start.body)["job_id"] == job.id
    assert engine.started == []
    assert (await platform.jobs.get(ACME, job.id, steps=False)).status == "queued"


async def test_an_in_process_engine_reports_its_jobs_steps_and_cancels_them_itself(
    in_process: tuple[Platform, InProcessEngine],
) -> None:
    platform, engine = in_process
    job = await platform.jobs.create(ACME, "remote", {"n": 1})
    record = await platform.jobs.get(ACME, job.id)
    assert [(s.step_id, s.phase) for s in record.steps or []] == [("first", "running")]
    await platform.jobs.cancel(ACME, job.id)
    assert engine.cancelled == [job.id]  # its own cancel, not the runner's


async def test_the_platform_opens_every_engine_and_closes_it_once_stopped(db: Database) -> None:
    engine = RecordingEngine()
    platform = _platform(db, engine)
    await platform.start()
    assert engine.lifecycle == ["open"]
    await platform.stop()
    assert engine.lifecycle == ["open", "aclose"]


async def _status(platform: Platform, job_id: str) -> str:
    return (await platform.jobs.get(ACME, job_id, steps=False)).status
