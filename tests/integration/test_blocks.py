"""Blocks and job control on the step engine, on SQLite and PostgreSQL: a block stops in-flight
jobs at their next step, they end ``blocked``; once it is lifted, resume finishes them and the
ledger holds each step's call once. Retry of a failed job; pausing a workflow."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fluxo.control.platform import Platform
from fluxo_core.clock import ManualClock
from fluxo_core.errors import BlockedError, ConflictError, PermissionDeniedError
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.tables import usage_records
from service_runtime import CallRequest, Price, Service, service
from tests.support import services as svc

ME = Principal(account_id="acme", user_id="ada")
ADMIN = Principal(account_id="default", user_id="admin")


class Gate:
    """A service whose calls wait until the test opens the gate: jobs held in flight."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0
        self.arrived = asyncio.Event()
        self.expected = 1

    def service(self) -> Service:
        @service("gate", price=Price(per_call="0.01"), timeout_s=30.0)
        async def gate(payload: dict[str, Any]) -> dict[str, Any]:
            self.entered += 1
            if self.entered >= self.expected:
                self.arrived.set()
            await self.open.wait()
            return {**payload, "gated": True}

        return gate


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def fluxo(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> AsyncIterator[Platform]:
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    platform = Platform(db, [*svc.SERVICES, gate.service()], workers=4, poll_interval_s=0.2)
    for account in ("acme", "globex", "default"):
        await platform.accounts.ensure_account(account)
    async with platform:
        try:
            yield platform
        finally:
            gate.open.set()  # no handler left waiting at the gate when the workers stop


def workflow(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"engine": "step", "steps": steps},
    }


PIPELINE = workflow(
    "pipeline",
    [
        {"id": "wait", "kind": "service", "service": "gate", "next": ["add"]},
        {"id": "add", "kind": "service", "service": "inc", "next": ["again"]},
        {"id": "again", "kind": "service", "service": "inc"},
    ],
)


async def ledger(db: Database, job_ids: list[str]) -> Counter[tuple[str, str]]:
    """(job, step) -> how many usage records."""
    query = sa.select(usage_records.c.job_id, usage_records.c.step_id).where(
        usage_records.c.job_id.in_(job_ids)
    )
    rows = await db.read(lambda conn: conn.execute(query).all())
    return Counter((r.job_id, r.step_id) for r in rows)


async def test_a_block_stops_in_flight_jobs_at_their_next_step_and_resume_finishes_them(
    fluxo: Platform, gate: Gate
) -> None:
    await fluxo.jobs.apply(PIPELINE, ME)
    gate.expected = 3
    jobs = await fluxo.jobs.create_many(ME, "pipeline", [{"n": i} for i in range(3)])
    await asyncio.wait_for(gate.arrived.wait(), 20)  # every job is in its first step

    block = await fluxo.blocks.place(ME, kind="service", target="inc", reason="inc is down")
    gate.open.set()
    stopped = [await fluxo.jobs.wait(ME, job.id, 20) for job in jobs]

    assert {job.status for job in stopped} == {"blocked"}
    for job in stopped:
        assert job.error is not None
        assert (job.error["code"], job.error["block_id"], job.error["block_reason"]) == (
            "blocked",
            block.id,
            "inc is down",
        )
        assert job.error["step"] == "add"
        steps = {s.step_id: s.phase for s in (await fluxo.jobs.get(ME, job.id)).steps or []}
        assert steps == {"wait": "succeeded", "add": "blocked"}

    with pytest.raises(ConflictError, match=block.id):
        await fluxo.job_control.resume(ME, jobs[0].id)  # still blocked
    await fluxo.blocks.lift(ME, block.id)
    for job in jobs:
        resumed = await fluxo.job_control.resume(ME, job.id)
        assert resumed.status == "running"
    done = [await fluxo.jobs.wait(ME, job.id, 20) for job in jobs]
    assert [job.status for job in done] == ["succeeded"] * 3
    assert [job.result for job in done] == [{"n": i + 2, "gated": True} for i in range(3)]
    # Each step billed once: the gate did not run again, the refused call cost nothing.
    counts = await ledger(fluxo.db, [job.id for job in jobs])
    assert counts == Counter(
        {(job.id, step): 1 for job in jobs for step in ("wait", "add", "again")}
    )
    assert gate.entered == 3


async def test_a_workflow_block_refuses_new_jobs_and_names_the_block(fluxo: Platform) -> None:
    await fluxo.jobs.apply(PIPELINE, ME)
    block = await fluxo.blocks.place(ME, kind="workflow", target="pipeline", reason="audit")
    with pytest.raises(BlockedError, match="audit") as info:
        await fluxo.jobs.create(ME, "pipeline", {"n": 1})
    assert info.value.context["block_id"] == block.id
    await fluxo.blocks.lift(ME, block.id)
    job = await fluxo.jobs.create(ME, "pipeline", {"n": 1})
    assert job.status == "running"


async def test_an_account_block_needs_the_admin_and_only_the_admin_lifts_it(
    fluxo: Platform,
) -> None:
    with pytest.raises(PermissionDeniedError, match="admin"):
        await fluxo.blocks.place(ME, kind="account", reason="self")
    block = await fluxo.blocks.place(ADMIN, kind="account", account="acme", reason="unpaid")
    assert (block.account_id, block.target) == ("acme", "acme")
    assert [b.id for b in await fluxo.blocks.find(ME, active_only=True)] == [block.id]
    assert await fluxo.blocks.find(Principal("globex", "gus")) == []
    with pytest.raises(PermissionDeniedError, match="admin"):
        await fluxo.blocks.lift(ME, block.id)
    lifted = await fluxo.blocks.lift(ADMIN, block.id)
    assert (lifted.active, lifted.lifted_by) == (False, "default/admin")
    audit = await fluxo.blocks.audit(ME)
    assert [(e.action, e.actor) for e in audit] == [
        ("lift", "default/admin"),
        ("place", "default/admin"),
    ]


async def test_retry_continues_a_failed_job_from_its_failed_step(
    fluxo: Platform, gate: Gate
) -> None:
    flow = workflow(
        "fragile",
        [
            {"id": "first", "kind": "service", "service": "inc", "next": ["shaky"]},
            {"id": "shaky", "kind": "service", "service": "once-broken", "next": ["last"]},
            {"id": "last", "kind": "service", "service": "echo"},
        ],
    )
    await fluxo.jobs.apply(flow, ME)
    job = await fluxo.jobs.create(ME, "fragile", {"n": 5})
    failed = await fluxo.jobs.wait(ME, job.id, 20)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error["step"] == "shaky"

    retried = await fluxo.job_control.retry(ME, job.id)
    assert retried.status == "running"
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded"
    assert done.result == {"n": 6, "ok": True}
    counts = await ledger(fluxo.db, [job.id])
    # first and last billed once; once-broken has no price (nothing recorded for it).
    assert counts[(job.id, "first")] == 1
    assert counts[(job.id, "last")] == 1
    with pytest.raises(ConflictError, match="not failed"):
        await fluxo.job_control.retry(ME, job.id)


async def test_a_paused_workflow_queues_new_jobs_and_resume_starts_them(
    fluxo: Platform,
) -> None:
    flow = workflow("adder", [{"id": "one", "kind": "service", "service": "inc"}])
    await fluxo.jobs.apply(flow, ME)
    paused = await fluxo.job_control.pause_workflow(ME, "adder")
    assert paused.to_dict()["paused"] is True
    jobs = [await fluxo.jobs.create(ME, "adder", {"n": i}) for i in range(3)]
    assert {job.status for job in jobs} == {"queued"}
    for job in jobs:  # not started: no step ran
        assert (await fluxo.jobs.get(ME, job.id)).steps == []
    resumed = await fluxo.job_control.resume_workflow(ME, "adder")
    assert resumed.to_dict() == {"workflow": "adder", "paused": False, "jobs_started": 3}
    done = [await fluxo.jobs.wait(ME, job.id, 20) for job in jobs]
    assert [job.result for job in done] == [{"n": i + 1} for i in range(3)]


async def test_a_blocked_job_can_be_cancelled(fluxo: Platform, gate: Gate) -> None:
    await fluxo.jobs.apply(PIPELINE, ME)
    job = await fluxo.jobs.create(ME, "pipeline", {"n": 1})
    await asyncio.wait_for(gate.arrived.wait(), 20)
    await fluxo.blocks.place(ME, kind="user", target="ada", reason="left the company")
    gate.open.set()
    assert (await fluxo.jobs.wait(ME, job.id, 20)).status == "blocked"
    assert (await fluxo.jobs.cancel(ME, job.id)).status == "cancelled"


async def test_the_block_index_sees_another_process_block_within_its_cache_time(
    db: Database,
) -> None:
    from fluxo.control.blocks import BlockIndex

    clock = ManualClock()
    store = BlockStore(db, clock=clock)
    index = BlockIndex(store, cache_s=0.5, clock=clock)
    call = CallRequest("acme", "ada", "inc", "1", "j1", "add", "pipeline@1")
    await index.refresh()
    assert index.match(call) is None
    # Placed by another process: this index learns of it when its cache time is over.
    await store.place(
        block_id="b1", account_id="acme", kind="workflow", target="pipeline", reason="r",
        placed_by="acme/ada", ends_at=clock.time() + 10,
    )  # fmt: skip
    clock.advance(0.25)
    await index.refresh()
    assert index.match(call) is None
    clock.advance(0.25)
    await index.refresh()
    found = index.match(call)
    assert found is not None
    assert found.id == "b1"
    clock.advance(10)  # its end time passed
    assert index.match(call) is None
