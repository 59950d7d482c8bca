"""Service output triggers (``queue`` with ``source: fluxo``), on SQLite and PostgreSQL: each
output message of a service's calls in the trigger's own account starts one job, and another
account's outputs of the same service (its output queue is shared) never do; an output read
again makes no second job; outputs made while no Fluxo read them start their jobs after a
restart (the read position is stored); an output no job can take goes to the dead-letter queue
with the reason, and the trigger goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from fluxo.control.platform import Platform
from fluxo.control.triggers.outputs import ServiceOutputSource, dead_queue
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.outputs import ServiceOutputStore
from tests.support import services as svc

pytestmark = pytest.mark.timeout(120)

ACME = Principal(account_id="acme", user_id="ada")
GLOBEX = Principal(account_id="globex", user_id="gus")


def workflow(name: str, service: str, input_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "engine": "step",
        "steps": [{"id": "only", "kind": "service", "service": service}],
    }
    if input_schema is not None:
        spec["input_schema"] = input_schema
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }


PRODUCE = workflow("produce", "fan-out")  # one output message per item
TAKE = workflow("take", "echo")
# Takes only an output whose item is a number: other outputs are refused for good.
STRICT = workflow(
    "strict",
    "echo",
    {
        "type": "object",
        "properties": {
            "output": {"type": "object", "properties": {"item": {"type": "number"}}},
        },
    },
)


def output_trigger(name: str = "on-items", workflow_name: str = "take") -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {
            "workflow": workflow_name,
            "type": "queue",
            "queue": {"source": "fluxo", "service": "fan-out", "pollIntervalS": 0.1},
        },
    }


def platform_on(db: Database, *, run_triggers: bool = True) -> Platform:
    return Platform(
        db,
        svc.SERVICES,
        workers=2,
        poll_interval_s=0.1,
        admission_cache_s=0,
        trigger_tick_s=0.2,
        run_triggers=run_triggers,
    )


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {value!r}")
        await asyncio.sleep(0.1)


async def trigger_jobs(platform: Platform, principal: Principal = ACME) -> list[Any]:
    page = await platform.jobs.list(principal)
    return [j for j in page.items if j.user_id.startswith("trigger:")]


async def produce(platform: Platform, principal: Principal, items: list[Any]) -> None:
    job = await platform.jobs.create(principal, "produce", {"items": items})
    assert (await platform.jobs.wait(principal, job.id, 20)).status == "succeeded"


async def results(platform: Platform, count: int) -> list[Any]:
    jobs = await eventually(lambda: _exactly(platform, count))
    done = [await platform.jobs.wait(ACME, j.id, 20) for j in jobs]
    assert all(j.status == "succeeded" for j in done), [j.error for j in done]
    return sorted((j.result for j in done), key=lambda r: orjson.dumps(r["output"]))


async def _exactly(platform: Platform, count: int) -> list[Any] | None:
    jobs = await trigger_jobs(platform)
    assert len(jobs) <= count, f"more trigger jobs than outputs: {len(jobs)} > {count}"
    return jobs if len(jobs) == count else None


async def apply_all(platform: Platform) -> None:
    await platform.accounts.ensure_account("acme")
    await platform.accounts.ensure_account("globex")
    for document in (PRODUCE, TAKE, STRICT):
        await platform.jobs.apply(document, ACME)
    await platform.jobs.apply(PRODUCE, GLOBEX)


async def test_each_output_in_the_account_starts_one_job_and_other_accounts_outputs_never_do(
    db: Database,
) -> None:
    platform = platform_on(db)
    async with platform:
        await apply_all(platform)
        result = await platform.resources.apply(ACME, output_trigger())
        assert result.document["status"]["conditions"][0]["reason"] == "Watching"
        # Another account's calls of the same service come first: none may start acme's job.
        await produce(platform, GLOBEX, ["globex-1", "globex-2", "globex-3"])
        await produce(platform, ACME, ["a", "b"])
        outputs = await results(platform, 2)
        assert [r["output"] for r in outputs] == [
            {"item": "a", "index": 0},
            {"item": "b", "index": 1},
        ]
        assert {r["service"] for r in outputs} == {"fan-out"}
        assert all(r["messageId"] and r["callId"] for r in outputs)
        jobs = await trigger_jobs(platform)
        assert {j.idempotency_key for j in jobs} == {
            f"trigger:on-items:out:{r['messageId']}" for r in outputs
        }
        assert await trigger_jobs(platform, GLOBEX) == []
        row = await platform.triggers.get(ACME, "on-items")
        assert (row.jobs_created, row.health) == (2, "connected")

        # Read again from the start (a restart's overlap, or a lost position): no second job.
        again = ServiceOutputSource(
            dataclasses.replace(row, cursor=0.0), ServiceOutputStore(platform.db)
        )
        assert await again.read_once(platform.triggers.sink(row)) == 2  # fired, deduplicated
        assert len(await trigger_jobs(platform)) == 2
        assert (await platform.triggers.get(ACME, "on-items")).jobs_created == 2
        # A later output of acme's still starts its job, and globex's still none.
        await produce(platform, GLOBEX, ["globex-4"])
        await produce(platform, ACME, ["c"])
        assert len(await results(platform, 3)) == 3
        assert await trigger_jobs(platform, GLOBEX) == []


async def test_outputs_made_while_no_fluxo_reads_them_start_their_jobs_after_a_restart(
    db: Database,
) -> None:
    first = platform_on(db)
    async with first:
        await apply_all(first)
        await first.resources.apply(ACME, output_trigger())
        await produce(first, ACME, [1])
        await results(first, 1)
    position = (await first.triggers.get(ACME, "on-items")).cursor
    assert position is not None
    # Jobs run, but no trigger reads their outputs: Fluxo's triggers are down.
    idle = platform_on(db, run_triggers=False)
    async with idle:
        await produce(idle, ACME, [2, 3])
        await produce(idle, GLOBEX, [4])
    second = platform_on(db)
    async with second:
        outputs = await results(second, 3)
        assert [r["output"]["item"] for r in outputs] == [1, 2, 3]
    moved = (await second.triggers.get(ACME, "on-items")).cursor
    assert moved is not None
    assert moved > position


async def test_an_output_no_job_can_take_goes_to_the_dead_letter_queue_with_the_reason(
    db: Database,
) -> None:
    platform = platform_on(db)
    async with platform:
        await apply_all(platform)
        await platform.resources.apply(ACME, output_trigger("strict-items", "strict"))
        await produce(platform, ACME, ["not a number", 7])
        [job] = await eventually(lambda: trigger_jobs(platform))
        done = await platform.jobs.wait(ACME, job.id, 20)
        assert done.result["output"] == {"item": 7, "index": 1}
        row = await platform.triggers.get(ACME, "strict-items")
        store = ServiceOutputStore(platform.db)
        [(message_id, reason, body)] = await eventually(lambda: store.buried(dead_queue(row)))
        assert "the job was refused" in (reason or "")
        assert orjson.loads(body)["payload"] == {"item": "not a number", "index": 0}
        assert orjson.loads(body)["id"] == message_id
        # Read again: buried once, and still one job.
        again = ServiceOutputSource(dataclasses.replace(row, cursor=0.0), store)
        await again.read_once(platform.triggers.sink(row))
        assert len(await store.buried(dead_queue(row))) == 1
        assert len(await trigger_jobs(platform)) == 1


async def test_the_calls_of_the_triggers_own_jobs_do_not_start_it_again(db: Database) -> None:
    platform = platform_on(db)
    async with platform:
        await apply_all(platform)
        document = output_trigger("on-echo")
        document["spec"]["queue"]["service"] = "echo"  # the service its own workflow calls
        await platform.resources.apply(ACME, document)
        done = await platform.jobs.create(ACME, "take", {"n": 1})
        assert (await platform.jobs.wait(ACME, done.id, 20)).status == "succeeded"
        [job] = await eventually(lambda: trigger_jobs(platform))
        assert (await platform.jobs.wait(ACME, job.id, 20)).result["output"] == {"n": 1}
        # Its job called echo too: had that output not been skipped, it would start a job too.
        later = await platform.jobs.create(ACME, "take", {"n": 2})
        assert (await platform.jobs.wait(ACME, later.id, 20)).status == "succeeded"
        await eventually(lambda: _exactly(platform, 2))
        row = await platform.triggers.get(ACME, "on-echo")
        source = ServiceOutputSource(row, ServiceOutputStore(platform.db))
        # Read again: ada's two outputs (deduplicated), and not the two of the trigger's jobs.
        assert await source.read_once(platform.triggers.sink(row)) == 2
        outputs = [r["output"] for r in await results(platform, 2)]
        assert outputs == [{"n": 1}, {"n": 2}]
