"""JobService on SQLite and PostgreSQL: creating jobs one by one and in batches, the workflow
cache, and admission as the workers of ``fluxo worker`` apply it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fluxo.control import Admission
from fluxo.control.platform import Platform, build_platform, build_worker_runtime
from fluxo_core.clock import ManualClock
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import (
    AdmissionDeniedError,
    NotFoundError,
    PayloadSchemaError,
    ValidationError,
)
from fluxo_core.ir import Packet
from fluxo_core.storage import AccountStore, Database, Principal
from fluxo_core.storage.jobs import JobRow, JobStore, JobSummaryRow, job_row
from fluxo_core.storage.workflows import WorkflowStore
from service_runtime import AdmitRequest, CallRequest, ServiceRuntime
from tests.support import services as svc

ME = Principal(account_id="acme", user_id="ada")


@pytest.fixture
async def fluxo(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Platform]:
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    platform = Platform(db, svc.SERVICES, workers=2, poll_interval_s=0.2, admission_cache_s=0)
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform


def workflow(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"engine": "step", "steps": steps, **spec},
    }


TWICE = workflow(
    "twice",
    [
        {"id": "one", "kind": "service", "service": "inc", "next": ["two"]},
        {"id": "two", "kind": "service", "service": "inc"},
    ],
    input_schema={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
)


async def test_create_many_runs_every_job(fluxo: Platform) -> None:
    await fluxo.jobs.apply(TWICE, ME)
    created = await fluxo.jobs.create_many(ME, "twice", [{"n": i} for i in range(25)])
    assert [job.input for job in created] == [{"n": i} for i in range(25)]
    assert len({job.id for job in created}) == 25
    # Started in the transaction that created them: each one's first call is already queued.
    assert {(job.status, job.workflow, job.version) for job in created} == {("running", "twice", 1)}
    first_steps = [(await fluxo.jobs.get(ME, job.id)).steps or [] for job in created]
    assert all(steps and steps[0].step_id == "one" for steps in first_steps)
    finished = [await fluxo.jobs.wait(ME, job.id, 20) for job in created]
    assert [job.status for job in finished] == ["succeeded"] * 25
    assert [job.result for job in finished] == [{"n": i + 2} for i in range(25)]


async def test_create_many_refuses_every_input_when_one_is_bad(fluxo: Platform) -> None:
    await fluxo.jobs.apply(TWICE, ME)
    with pytest.raises(PayloadSchemaError) as info:
        await fluxo.jobs.create_many(ME, "twice", [{"n": 1}, {"n": 2}, {"n": 3}, {"n": "x"}, {}])
    locations = [loc for loc, _ in info.value.problems]
    assert locations == ["inputs[3].n", "inputs[4]"]
    assert "2 of 5 inputs" in str(info.value)
    assert (await fluxo.jobs.list(ME)).items == []


async def test_create_many_honours_idempotency_keys(fluxo: Platform) -> None:
    await fluxo.jobs.apply(TWICE, ME)
    first = await fluxo.jobs.create(ME, "twice", {"n": 0}, idempotency_key="k0")
    batch = await fluxo.jobs.create_many(
        ME,
        "twice",
        [{"n": 0}, {"n": 1}, {"n": 1}, {"n": 5}],
        idempotency_keys=["k0", "k1", "k1", None],
    )
    assert batch[0].id == first.id  # used before the batch
    assert batch[1].id == batch[2].id  # used twice within the batch
    assert len({first.id, batch[1].id, batch[3].id}) == 3
    assert len((await fluxo.jobs.list(ME)).items) == 3
    for job in (first, batch[1], batch[3]):
        assert (await fluxo.jobs.wait(ME, job.id, 20)).status == "succeeded"
    with pytest.raises(ValidationError) as info:
        await fluxo.jobs.create_many(ME, "twice", [{"n": 1}], idempotency_keys=[])
    assert info.value.problems[0][0] == "idempotency_keys"


async def test_create_returns_the_job_as_stored(fluxo: Platform) -> None:
    await fluxo.jobs.apply(TWICE, ME)
    created = await fluxo.jobs.create(ME, "twice", {"n": 1}, headers={"x-trace": "t1"})
    assert created.status == "running"  # its first call committed with it
    assert created.started_at is not None
    assert created.steps is None
    stored = await fluxo.jobs.get(ME, created.id, steps=False)
    fields = {"status", "started_at", "finished_at", "result"}  # the engine may have moved on
    assert created.model_dump(exclude=fields) == stored.model_dump(exclude=fields)


async def test_a_job_that_ends_as_it_starts_is_returned_finished(fluxo: Platform) -> None:
    # Nothing to wait for: the transform runs in the creating transaction, and the record
    # returned is the finished job with its result, not a stale "running".
    doc = workflow(
        "stamp",
        [{"id": "stamp", "kind": "transform", "ops": [{"op": "set", "path": "ok", "value": True}]}],
    )
    await fluxo.jobs.apply(doc, ME)
    created = await fluxo.jobs.create(ME, "stamp", {"n": 1})
    assert (created.status, created.result) == ("succeeded", {"n": 1, "ok": True})
    (batched,) = await fluxo.jobs.create_many(ME, "stamp", [{"n": 2}])
    assert (batched.status, batched.result) == ("succeeded", {"n": 2, "ok": True})


async def test_a_repeated_idempotency_key_returns_the_same_job(fluxo: Platform) -> None:
    await fluxo.jobs.apply(TWICE, ME)
    first = await fluxo.jobs.create(ME, "twice", {"n": 1}, idempotency_key="order-7")
    await fluxo.jobs.wait(ME, first.id, 20)
    again = await fluxo.jobs.create(ME, "twice", {"n": 99}, idempotency_key="order-7")
    assert again.id == first.id
    assert again.input == {"n": 1}  # the first job, as it is now
    assert again.status == "succeeded"
    assert again.result == {"n": 3}
    assert len((await fluxo.jobs.list(ME)).items) == 1


async def test_concurrent_creates_with_one_key_make_one_job(fluxo: Platform) -> None:
    # On PostgreSQL the creates overlap: the one that loses the insert looks again and
    # answers with the winner's job; nothing of its own start remains.
    await fluxo.jobs.apply(TWICE, ME)
    made = await asyncio.gather(
        *(fluxo.jobs.create(ME, "twice", {"n": n}, idempotency_key="order-9") for n in range(6))
    )
    assert len({job.id for job in made}) == 1
    page = await fluxo.jobs.list(ME)
    assert [job.id for job in page.items] == [made[0].id]
    done = await fluxo.jobs.wait(ME, made[0].id, 20)
    assert done.status == "succeeded"
    steps = await fluxo.db.read(
        lambda conn: conn.exec_driver_sql("SELECT count(DISTINCT job_id) FROM job_steps").scalar()
    )
    assert steps == 1  # only the one job has steps


async def test_workflow_versions_are_cached_and_a_new_version_is_seen(fluxo: Platform) -> None:
    store = fluxo.workflows
    steps = [{"id": "one", "kind": "service", "service": "inc"}]
    await fluxo.jobs.apply(workflow("cached", steps), ME)
    first = await store.get("acme", "cached")
    assert await store.get("acme", "cached") is first
    assert await store.get("acme", "cached", 1) is first
    await fluxo.jobs.apply(workflow("cached", [{**steps[0], "timeout_s": 5}]), ME)
    newest = await store.get("acme", "cached")
    assert newest.version == 2
    assert newest.workflow.spec.steps[0].timeout_s == 5  # type: ignore[union-attr]
    assert await store.get("acme", "cached", 1) is first
    job = await fluxo.jobs.create(ME, "cached", {"n": 1})
    assert job.version == 2
    with pytest.raises(NotFoundError):
        await store.get("acme", "cached", 3)
    with pytest.raises(NotFoundError):
        await store.get("acme", "uncached")
    with pytest.raises(NotFoundError):
        await store.get("globex", "cached")  # another account's workflow is not shared


async def test_the_workflow_cache_is_bounded(fluxo: Platform) -> None:
    steps = [{"id": "one", "kind": "service", "service": "inc"}]
    await fluxo.jobs.apply(workflow("small", steps), ME)
    await fluxo.jobs.apply(workflow("small", [{**steps[0], "timeout_s": 5}]), ME)
    store = WorkflowStore(fluxo.db, cache_size=1)
    one = await store.get("acme", "small", 1)
    assert await store.get("acme", "small", 1) is one
    await store.get("acme", "small", 2)  # evicts version 1
    again = await store.get("acme", "small", 1)
    assert again is not one
    assert again.workflow == one.workflow


async def test_admission_caches_a_job_status_for_cache_s(fluxo: Platform) -> None:
    doc = workflow("sleepy", [{"id": "wait", "kind": "service", "service": "slow"}])
    await fluxo.jobs.apply(doc, ME)
    job = await fluxo.jobs.create(ME, "sleepy", {"n": 1, "sleep": 2})
    clock = ManualClock()
    admission = Admission(fluxo.accounts, cache_s=1.0, clock=clock)

    async def admit(call: CallRequest) -> None:
        request = AdmitRequest("worker", [call])
        await admission.admit(request)
        request.raise_refused()

    call = CallRequest(
        account_id="acme",
        user_id="ada",
        service="inc",
        version="1",
        job_id=job.id,
        step_id="next",
        workflow="sleepy@1",
    )
    await admit(call)
    assert (await fluxo.jobs.cancel(ME, job.id)).status == "cancelled"
    clock.advance(0.5)
    await admit(call)  # the status read half a cache time ago still holds
    clock.advance(0.5)  # the cached status expires at cache_s, not after
    with pytest.raises(AdmissionDeniedError, match="is cancelled"):
        await admit(call)


async def test_fluxo_worker_refuses_calls_of_a_blocked_account(
    db: Database, tmp_path: Path
) -> None:
    accounts = AccountStore(db)
    for account in ("acme", "globex"):
        await accounts.ensure_account(account)
    config = FluxoConfig(home=tmp_path, database_url="sqlite:///unused", poll_interval_s=0.2)
    worker = build_worker_runtime(config, db, svc.SERVICES, workers=1, batch_size=10, lease_s=1.0)

    def packet(account: str) -> Packet:
        actor = {"user": {"id": "ada"}, "account": {"id": account}}
        return Packet.model_validate({"actor": actor, "payload": {"hello": account}})

    # Submitted by another process (an API without admission, or one that admitted the calls
    # just before the block): only the worker can stop them now.
    async with ServiceRuntime(db, svc.SERVICES, workers=0, poll_interval_s=0.2) as api:
        blocked, allowed = await api.gateway.submit("echo", [packet("acme"), packet("globex")])
        await accounts.set_blocked("acme", True, "fraud review")
        async with worker:
            refused = await api.gateway.wait(blocked, 10)
            served = await api.gateway.wait(allowed, 10)
    assert refused.status == "failed"
    assert refused.error is not None
    assert refused.error["code"] == "admission_denied"
    assert "fraud review" in refused.error["message"]
    assert served.status == "succeeded"


async def test_the_composition_root_hands_its_clock_to_admission_and_jobs(
    db: Database, tmp_path: Path
) -> None:
    clock = ManualClock()
    config = FluxoConfig(home=tmp_path, database_url="sqlite:///unused", poll_interval_s=0.2)
    platform = build_platform(config, db, svc.SERVICES, workers=0, clock=clock)
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(
            workflow("clocked", [{"id": "one", "kind": "service", "service": "inc"}]), ME
        )
        job = await platform.jobs.create(ME, "clocked", {"n": 1})
        assert job.created_at.timestamp() == clock.time()
        await platform.accounts.set_blocked("acme", True, "fraud review")
        # Admission read the account as allowed a moment ago (on this clock): that holds for
        # its cache time, however long the machine took, and not a moment longer.
        assert platform.admission.cache_s == 0.5
        clock.advance(0.25)  # (binary fractions: the sums are exact)
        await platform.jobs.create(ME, "clocked", {"n": 2})
        clock.advance(0.25)
        with pytest.raises(AdmissionDeniedError, match="fraud review"):
            await platform.jobs.create(ME, "clocked", {"n": 3})


async def test_the_job_store_hands_typed_rows(fluxo: Platform) -> None:
    await fluxo.jobs.apply(TWICE, ME)
    job = await fluxo.jobs.create(ME, "twice", {"n": 1}, idempotency_key="k1")
    row = await fluxo.jobs.store.job(job.id, account_id="acme")
    assert isinstance(row, JobRow)
    assert (row.id, row.workflow, row.version, row.idempotency_key) == (job.id, "twice", 1, "k1")
    assert orjson.loads(row.input)["payload"] == {"n": 1}
    assert not hasattr(row, "__dict__")  # slotted: a row costs no per-instance dict
    (summary,), _ = await fluxo.jobs.store.page(
        "acme", workflow="twice", status=None, limit=1, cursor=None
    )
    assert type(summary) is JobSummaryRow  # a page never reads the packets
    assert summary.id == job.id


def test_a_job_row_maps_the_values_it_was_written_with() -> None:
    written = {
        "id": "j1",
        "account_id": "acme",
        "user_id": "ada",
        "workflow": "twice",
        "version": 1,
        "engine": "step",
        "status": "queued",
        "idempotency_key": None,
        "input": b"{}",
        "result": None,
        "error": None,
        "active": 0,
        "created_at": 1.0,
        "started_at": None,
        "finished_at": None,
    }
    row = job_row(written)
    assert row.run_id is None  # not written yet: the engine sets it when the job starts
    assert (row.id, row.status, row.input) == ("j1", "queued", b"{}")


async def test_the_job_store_writes_the_times_of_its_clock(fluxo: Platform) -> None:
    await fluxo.jobs.apply(
        workflow("timed", [{"id": "wait", "kind": "service", "service": "slow"}]), ME
    )
    job = await fluxo.jobs.create(ME, "timed", {"n": 1, "sleep": 5})
    clock = ManualClock(start=2_000_000_000.0)
    store = JobStore(fluxo.db, clock=clock)
    assert await fluxo.db.transact(lambda tx: store.cancel(tx, job.id))
    assert (await store.job(job.id)).finished_at == clock.time()
