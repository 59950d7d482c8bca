"""The step engine end to end on SQLite and PostgreSQL: workflows run as durable jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fluxo.control.platform import Platform
from fluxo_core.errors import IRValidationError, PayloadSchemaError, UnsupportedFeatureError
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import usage_records
from services.transform import transform_service
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


async def run(fluxo: Platform, doc: dict[str, Any], payload: Any, **kw: Any) -> Any:
    applied = await fluxo.jobs.apply(doc, ME)
    job = await fluxo.jobs.create(ME, applied.workflow.metadata.name, payload, **kw)
    return await fluxo.jobs.wait(ME, job.id, 20)


async def call_ended(fluxo: Platform, job_id: str, timeout: float = 10.0) -> None:
    """Wait until every call made for the job has ended (succeeded or failed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        calls = await fluxo.jobs.store.calls(job_id, account_id=ME.account_id)
        if calls and all(c.status in ("succeeded", "failed") for c in calls):
            return
        if loop.time() > deadline:
            raise AssertionError(f"calls of job {job_id}: {[c.status for c in calls]}")
        await asyncio.sleep(0.02)


async def usage(db: Database) -> list[Any]:
    return list(await db.read(lambda c: c.execute(sa.select(usage_records)).all()))


async def test_linear_workflow(fluxo: Platform) -> None:
    doc = workflow(
        "linear",
        [
            {"id": "one", "kind": "service", "service": "inc", "next": ["two"]},
            {"id": "two", "kind": "service", "service": "inc", "next": ["three"]},
            {"id": "three", "kind": "service", "service": "inc"},
        ],
    )
    job = await run(fluxo, doc, {"n": 1})
    assert job.status == "succeeded", job.error
    assert job.result == {"n": 4}
    assert [s.step_id for s in job.steps] == ["one", "two", "three"]
    assert all(s.phase == "succeeded" for s in job.steps)
    assert job.steps[1].input == {"n": 2}
    calls = await usage(fluxo.db)
    assert sorted(u.step_id for u in calls) == ["one", "three", "two"]
    assert {u.job_id for u in calls} == {job.id}


async def test_switch_takes_one_branch(fluxo: Platform) -> None:
    doc = workflow(
        "route",
        [
            {
                "id": "route",
                "kind": "switch",
                "cases": [{"when": {"path": "total", "op": "gte", "value": 100}, "next": ["big"]}],
                "default": ["small"],
            },
            {
                "id": "big",
                "kind": "transform",
                "ops": [{"op": "set", "path": "size", "value": "big"}],
            },
            {
                "id": "small",
                "kind": "transform",
                "ops": [{"op": "set", "path": "size", "value": "small"}],
            },
        ],
    )
    big = await run(fluxo, doc, {"total": 250})
    small = await run(fluxo, doc, {"total": 5})
    assert big.result == {"total": 250, "size": "big"}
    assert small.result == {"total": 5, "size": "small"}
    assert {s.step_id for s in big.steps} == {"route", "big"}


async def test_fan_out_and_in_keeps_item_order(fluxo: Platform) -> None:
    doc = workflow(
        "fan",
        [
            {"id": "each", "kind": "split", "path": "items", "next": ["work"]},
            {"id": "work", "kind": "service", "service": "jitter", "next": ["gather"]},
            {"id": "gather", "kind": "join", "split": "each"},
        ],
    )
    items = [{"i": i} for i in range(6)]
    job = await run(fluxo, doc, {"items": items})
    assert job.status == "succeeded", job.error
    # Later items finish first (jitter), yet the join keeps the input order.
    assert job.result == [{"i": i, "seen": True} for i in range(6)]
    assert sorted(s.key for s in job.steps if s.step_id == "work") == [
        f"work[{i}]" for i in range(6)
    ]


async def test_fan_out_of_nothing_joins_at_once(fluxo: Platform) -> None:
    doc = workflow(
        "fan-empty",
        [
            {"id": "each", "kind": "split", "path": "items", "next": ["work"]},
            {"id": "work", "kind": "service", "service": "echo", "next": ["gather"]},
            {"id": "gather", "kind": "join", "split": "each"},
        ],
    )
    job = await run(fluxo, doc, {"items": []})
    assert job.status == "succeeded"
    assert job.result == []


async def test_one_to_many_outputs_each_feed_the_next_step(fluxo: Platform) -> None:
    doc = workflow(
        "many",
        [
            {"id": "explode", "kind": "service", "service": "fan-out", "next": ["bump"]},
            {
                "id": "bump",
                "kind": "transform",
                "ops": [{"op": "set", "path": "done", "value": True}],
            },
        ],
    )
    job = await run(fluxo, doc, {"items": ["a", "b", "c"]})
    assert job.status == "succeeded"
    assert job.result == [
        {"item": "a", "index": 0, "done": True},
        {"item": "b", "index": 1, "done": True},
        {"item": "c", "index": 2, "done": True},
    ]


async def test_step_retry_then_success(fluxo: Platform) -> None:
    doc = workflow(
        "retry",
        [
            {
                "id": "try",
                "kind": "service",
                "service": "once-broken",
                "retry": {"max_attempts": 3, "backoff_s": 0.05},
            }
        ],
    )
    job = await run(fluxo, doc, {"n": 7})
    assert job.status == "succeeded", job.error
    assert job.result == {"n": 7, "ok": True}
    (step,) = job.steps
    assert step.attempt == 2
    assert len(await usage(fluxo.db)) == 1  # the failed attempt is not billed


@pytest.mark.parametrize(
    ("retry", "runs"),
    [
        pytest.param(None, 4, id="no-step-retry:the-service-policy"),
        pytest.param({"max_attempts": 1}, 1, id="step-retry-1"),
        pytest.param({"max_attempts": 2, "backoff_s": 0.01}, 2, id="step-retry-2"),
    ],
)
async def test_a_step_retry_replaces_the_services_retry_policy(
    fluxo: Platform, retry: dict[str, Any] | None, runs: int
) -> None:
    # flaky's own RetryPolicy allows 4 attempts; a step that declares retry owns its attempts.
    step: dict[str, Any] = {"id": "try", "kind": "service", "service": "flaky"}
    if retry is not None:
        step["retry"] = retry
    job = await run(fluxo, workflow(f"flaky-{runs}", [step]), {"n": 1, "fail_times": 100})
    assert job.status == "failed"
    assert job.error["step"] == "try"
    assert svc.effects().count("try 1") == runs
    (shown,) = job.steps
    assert shown.attempt == (retry or {}).get("max_attempts", 1)


async def test_step_timeout_fails_the_job_and_names_the_step(fluxo: Platform) -> None:
    doc = workflow(
        "timeout",
        [{"id": "wait", "kind": "service", "service": "slow", "timeout_s": 0.3}],
    )
    job = await run(fluxo, doc, {"n": 1, "sleep": 2})
    assert job.status == "failed"
    assert job.error["step"] == "wait"
    assert "did not finish within 0.3s" in job.error["message"]


async def test_on_error_goto_handles_a_failure(fluxo: Platform) -> None:
    doc = workflow(
        "rescue",
        [
            {"id": "risky", "kind": "service", "service": "broken", "on_error": {"goto": "rescue"}},
            {
                "id": "rescue",
                "kind": "transform",
                "ops": [{"op": "set", "path": "rescued", "value": True}],
            },
        ],
    )
    job = await run(fluxo, doc, {"x": 1})
    assert job.status == "succeeded"
    assert job.result["rescued"] is True
    assert job.result["input"] == {"x": 1}
    assert "can never work" in job.result["error"]["message"]


async def test_cancel_stops_the_job_before_its_next_step(fluxo: Platform, tmp_path: Path) -> None:
    doc = workflow(
        "cancel",
        [
            {"id": "wait", "kind": "service", "service": "slow", "next": ["after"]},
            {"id": "after", "kind": "service", "service": "inc"},
        ],
    )
    await fluxo.jobs.apply(doc, ME)
    job = await fluxo.jobs.create(ME, "cancel", {"n": 1, "sleep": 0.5})
    cancelled = await fluxo.jobs.cancel(ME, job.id)
    assert cancelled.status == "cancelled"
    final = await fluxo.jobs.wait(ME, job.id, 3)
    assert final.status == "cancelled"
    # The slow call ends (its handler finishes, or the worker's admission refuses it), and its
    # answer reaches the engine after the cancel; it must be ignored. The engine takes its
    # queue in order, so once a job started after that answer is done, the answer was applied.
    await call_ended(fluxo, job.id)
    barrier = await run(
        fluxo, workflow("barrier", [{"id": "one", "kind": "service", "service": "inc"}]), {"n": 1}
    )
    assert barrier.status == "succeeded"
    again = await fluxo.jobs.get(ME, job.id)
    assert again.status == "cancelled"
    assert "after" not in {s.step_id for s in again.steps}


async def test_the_same_idempotency_key_returns_the_same_job(fluxo: Platform) -> None:
    doc = workflow("idem", [{"id": "one", "kind": "service", "service": "inc"}])
    await fluxo.jobs.apply(doc, ME)
    first = await fluxo.jobs.create(ME, "idem", {"n": 1}, idempotency_key="order-42")
    second = await fluxo.jobs.create(ME, "idem", {"n": 1}, idempotency_key="order-42")
    other = await fluxo.jobs.create(ME, "idem", {"n": 1}, idempotency_key="order-43")
    assert first.id == second.id != other.id
    await fluxo.jobs.wait(ME, first.id, 10)
    await fluxo.jobs.wait(ME, other.id, 10)
    assert len(await usage(fluxo.db)) == 2


async def test_reapplying_a_changed_workflow_makes_a_new_version(fluxo: Platform) -> None:
    steps = [{"id": "one", "kind": "service", "service": "inc"}]
    first = await fluxo.jobs.apply(workflow("versions", steps), ME)
    same = await fluxo.jobs.apply(workflow("versions", steps), ME)
    changed = await fluxo.jobs.apply(workflow("versions", [{**steps[0], "timeout_s": 5}]), ME)
    assert (first.version, same.version, changed.version) == (1, 1, 2)
    assert same.created is False


async def test_input_is_checked_against_the_input_schema(fluxo: Platform) -> None:
    doc = workflow(
        "typed",
        [{"id": "one", "kind": "service", "service": "inc"}],
        input_schema={
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer"}},
        },
    )
    await fluxo.jobs.apply(doc, ME)
    with pytest.raises(PayloadSchemaError) as info:
        await fluxo.jobs.create(ME, "typed", {"n": "one"})
    assert info.value.problems[0][0] == "input.n"


async def test_unknown_service_is_refused_at_apply(fluxo: Platform) -> None:
    doc = workflow("bad", [{"id": "one", "kind": "service", "service": "incc"}])
    with pytest.raises(IRValidationError) as info:
        await fluxo.jobs.apply(doc, ME)
    assert "spec.steps[0].service" in str(info.value)
    assert "inc" in str(info.value)  # did you mean


async def test_native_steps_the_step_engine_cannot_run_are_refused(fluxo: Platform) -> None:
    # The step engine interprets some Node-RED nodes (function, template, json, csv); any other
    # native node is refused when the workflow is applied, naming the step and the node type.
    mqtt = {"type": "mqtt out", "topic": "orders", "broker": "b1"}
    native = [{"id": "publish", "kind": "native", "engine": "nodered", "config": mqtt}]
    with pytest.raises(UnsupportedFeatureError, match=r"publish.*mqtt out"):
        await fluxo.jobs.apply(workflow("native", native), ME)
    # A native step of an engine that is not Node-RED can never run here: the IR says so.
    argo = [{"id": "raw", "kind": "native", "engine": "argo", "config": {}}]
    with pytest.raises(IRValidationError, match=r"spec.steps\[0\].engine: a native argo step"):
        await fluxo.jobs.apply(workflow("native", argo), ME)


async def test_parallel_branches_both_run(fluxo: Platform) -> None:
    doc = workflow(
        "parallel",
        [
            {"id": "start", "kind": "service", "service": "echo", "next": ["left", "right"]},
            {
                "id": "left",
                "kind": "transform",
                "ops": [{"op": "set", "path": "side", "value": "L"}],
            },
            {"id": "right", "kind": "service", "service": "inc"},
        ],
    )
    job = await run(fluxo, doc, {"n": 1})
    assert job.status == "succeeded"
    assert sorted(job.result, key=lambda r: str(r)) == sorted(
        [{"n": 1, "side": "L"}, {"n": 2}], key=lambda r: str(r)
    )


async def test_delay_step_waits_then_continues(fluxo: Platform) -> None:
    doc = workflow(
        "pause",
        [
            {"id": "nap", "kind": "delay", "seconds": 0.4, "next": ["after"]},
            {"id": "after", "kind": "service", "service": "inc"},
        ],
    )
    job = await run(fluxo, doc, {"n": 1})
    assert job.status == "succeeded"
    assert job.result == {"n": 2}
    nap, after = job.steps
    assert nap.step_id == "nap"
    assert (after.started_at - nap.started_at).total_seconds() >= 0.4


async def test_running_jobs_keep_their_version(fluxo: Platform) -> None:
    v1 = workflow(
        "evolve",
        [
            {"id": "wait", "kind": "service", "service": "slow", "next": ["mark"]},
            {"id": "mark", "kind": "transform", "ops": [{"op": "set", "path": "v", "value": 1}]},
        ],
    )
    await fluxo.jobs.apply(v1, ME)
    job = await fluxo.jobs.create(ME, "evolve", {"n": 1, "sleep": 0.5})
    v2 = workflow(
        "evolve",
        [
            {"id": "wait", "kind": "service", "service": "slow", "next": ["mark"]},
            {"id": "mark", "kind": "transform", "ops": [{"op": "set", "path": "v", "value": 2}]},
        ],
    )
    assert (await fluxo.jobs.apply(v2, ME)).version == 2
    old = await fluxo.jobs.wait(ME, job.id, 10)
    assert (old.version, old.result["v"]) == (1, 1)
    new = await run(fluxo, v2, {"n": 1, "sleep": 0})
    assert (new.version, new.result["v"]) == (2, 2)


# --- with: parameters of a service call ----------------------------------------------------------


@pytest.fixture
async def fluxo_transform(db: Database) -> AsyncIterator[Platform]:
    platform = Platform(db, [*svc.SERVICES, transform_service()], workers=1, poll_interval_s=0.2)
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform


WITH_STEPS: list[dict[str, Any]] = [
    {
        "id": "tag",
        "kind": "service",
        "service": "echo",
        "with": {
            "source": "web",
            "keep": {"over": [1, None]},
            "double": {"jsonata": "n * 2"},
            "same": {"jsonata": "$$.n = $.n"},
            "absent": {"jsonata": "no_such_field"},
            "n": {"jsonata": "n + 1"},
        },
    }
]


async def test_with_sets_static_values_and_expressions_on_the_call(fluxo: Platform) -> None:
    job = await run(fluxo, workflow("with-echo", WITH_STEPS), {"n": 3, "keep": 1, "absent": "a"})
    assert job.status == "succeeded", job.error
    # Every expression sees the step's input (n is 3 for double, though n itself is set to 4);
    # an expression yielding nothing leaves the field as it was.
    assert job.result == {
        "n": 4,
        "keep": {"over": [1, None]},
        "source": "web",
        "double": 6,
        "same": True,
        "absent": "a",
    }
    (step,) = job.steps
    assert step.input == {"n": 3, "keep": 1, "absent": "a"}  # the step's input, before with

    # An array input: each item gets the parameters.
    job = await run(fluxo, workflow("with-echo", WITH_STEPS), [{"n": 1}, {"n": 5, "keep": 0}])
    assert job.status == "succeeded", job.error
    assert [(r["n"], r["double"], r["source"]) for r in job.result] == [
        (2, 2, "web"),
        (6, 10, "web"),
    ]


async def test_with_configures_the_transform_service(fluxo_transform: Platform) -> None:
    ops = [
        {"op": "set", "path": "total", "expr": "qty * price"},
        {"op": "set", "path": "note", "value": None},
        {"op": "delete", "path": "qty"},
    ]
    steps = [{"id": "price", "kind": "service", "service": "transform", "with": {"ops": ops}}]
    job = await run(fluxo_transform, workflow("with-transform", steps), {"qty": 2, "price": 7})
    assert job.status == "succeeded", job.error
    assert job.result == {"price": 7, "total": 14, "note": None}


async def test_a_failing_parameter_fails_the_step_and_on_error_gets_its_input(
    fluxo: Platform,
) -> None:
    steps = [
        {
            "id": "tag",
            "kind": "service",
            "service": "echo",
            "with": {"n": {"jsonata": "$number(n)"}},
            "on_error": {"goto": "rescue"},
        },
        {"id": "rescue", "kind": "service", "service": "echo"},
    ]
    job = await run(fluxo, workflow("with-fails", steps), {"n": "not a number"})
    assert job.status == "succeeded", job.error
    assert job.result["input"] == {"n": "not a number"}
    assert job.result["step"] == "tag"
    (problem,) = job.result["error"]["problems"]
    assert problem["location"] == "spec.steps[tag].with.n"
    assert [(s.step_id, s.phase) for s in job.steps] == [("tag", "failed"), ("rescue", "succeeded")]
    assert [u.step_id for u in await usage(fluxo.db)] == ["rescue"]  # no call was made for tag
