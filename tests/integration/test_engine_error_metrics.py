"""``fluxo_engine_errors_total``: the errors an external engine answers the control plane with,
by engine, operation (start, cancel) and error code, in the platform's scrape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fluxo.control.platform import Platform
from fluxo_core.engine import RunHandle
from fluxo_core.storage import Database, Principal
from tests.integration.test_remote_engines import (
    WORKFLOW,
    RecordingEngine,
    StartRefusedError,
    until,
)
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

ACME = Principal(account_id="acme", user_id="ada")


@dataclass
class UnreachableOnCancel(RecordingEngine):
    async def cancel(self, handle: RunHandle) -> None:
        raise StartRefusedError("the engine is away", retryable=True)


async def engine_errors(platform: Platform) -> dict[tuple[str, str, str], float]:
    found = {}
    for family in text_string_to_metric_families((await platform.metrics.scrape()).decode()):
        for sample in family.samples:
            if sample.name == "fluxo_engine_errors_total":
                labels = sample.labels
                found[labels["engine"], labels["operation"], labels["code"]] = sample.value
    return found


@pytest.fixture
async def world(db: Database) -> AsyncIterator[tuple[Platform, UnreachableOnCancel]]:
    engine = UnreachableOnCancel()
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        engines=("step", engine),
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(WORKFLOW, ACME)
        yield platform, engine


async def test_engine_errors_are_counted_by_engine_operation_and_code(
    world: tuple[Platform, UnreachableOnCancel],
) -> None:
    platform, engine = world
    assert await engine_errors(platform) == {}

    engine.failures, engine.retryable = 1, False
    failed = await platform.jobs.create(ACME, "remote", {"n": 1})

    async def status(job_id: str) -> str:
        return (await platform.jobs.get(ACME, job_id, steps=False)).status

    await until(lambda: status(failed.id), "failed")
    assert await engine_errors(platform) == {("nodered", "start", "refused"): 1.0}

    running = await platform.jobs.create(ACME, "remote", {"n": 2})
    transport = platform.runtime.transport
    await until(lambda: transport.depth("engine.nodered"), 0, timeout=15)
    assert [s.job_id for s in engine.started] == [running.id]
    # Cancelled in Fluxo all the same; the engine's answer is counted.
    assert (await platform.jobs.cancel(ACME, running.id)).status == "cancelled"
    assert await engine_errors(platform) == {
        ("nodered", "start", "refused"): 1.0,
        ("nodered", "cancel", "refused"): 1.0,
    }
