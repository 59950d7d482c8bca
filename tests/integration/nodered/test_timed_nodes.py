"""Trigger and delay nodes on the step engine: their state is the node's, across jobs, and what
they send later goes out by durable timers in the job that sent the message (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engines.step import NODERED_MSG_CONTENT_TYPE
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal
from services import nodered_node_service
from translators.nodered import from_nodered

ME = Principal(account_id="acme", user_id="ada")
WHOLE = {"content-type": NODERED_MSG_CONTENT_TYPE}

pytestmark = pytest.mark.timeout(90)


def platform(db: Database) -> Platform:
    return Platform(
        db, [nodered_node_service()], workers=2, poll_interval_s=0.05, admission_cache_s=0
    )


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    running = platform(db)
    await running.accounts.ensure_account("acme")
    async with running:
        yield running


def one_node(node: dict[str, Any], name: str) -> dict[str, Any]:
    """A workflow of one node (its messages are the job's results)."""
    flow = [
        {"id": "tab", "type": "tab", "label": name},
        {"z": "tab", "x": 0, "y": 0, "wires": [], **node},
    ]
    doc = from_nodered(flow).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    return doc


TRIGGER = {
    "id": "trig",
    "type": "trigger",
    "op1": "first",
    "op2": "second",
    "op1type": "str",
    "op2type": "str",
    "duration": "0.8",
    "units": "s",
    "extend": False,
    "bytopic": "all",
    "outputs": 1,
}


def sent(done: Any) -> list[Any]:
    """The payloads the node sent, in the order of its step executions."""
    out = []
    for step in sorted(done.steps or [], key=lambda s: s.key):
        if step.phase == "succeeded":
            out += [m["msg"]["payload"] for m in step.output or []]
    return out


async def run(fluxo: Platform, name: str, payload: Any, **msg: Any) -> str:
    job = await fluxo.jobs.create(ME, name, {"payload": payload, **msg}, headers=WHOLE)
    return job.id


async def test_a_trigger_sends_its_second_message_later_in_the_same_job(fluxo: Platform) -> None:
    await fluxo.jobs.apply(one_node(TRIGGER, "trig1"), ME)
    started = time.monotonic()
    done = await fluxo.jobs.wait(ME, await run(fluxo, "trig1", "go"), 20)
    assert done.status == "succeeded", done.error
    assert time.monotonic() - started >= 0.8
    assert sent(done) == ["first", "second"]


async def test_two_jobs_share_the_trigger_state(fluxo: Platform) -> None:
    # Two seconds: the second job's message reaches the trigger before it ends, even on a
    # loaded machine.
    await fluxo.jobs.apply(one_node({**TRIGGER, "duration": "2"}, "trig2"), ME)
    first = await run(fluxo, "trig2", "a")
    await asyncio.sleep(0.3)
    second = await run(fluxo, "trig2", "b")  # the trigger is blocked by the first job's message
    a, b = await fluxo.jobs.wait(ME, first, 20), await fluxo.jobs.wait(ME, second, 20)
    assert (a.status, b.status) == ("succeeded", "succeeded")
    assert sent(a) == ["first", "second"]
    assert sent(b) == []
    # Over: a third job starts again.
    third = await fluxo.jobs.wait(ME, await run(fluxo, "trig2", "c"), 20)
    assert sent(third) == ["first", "second"]


async def test_an_extending_trigger_sends_in_the_job_of_the_last_message(fluxo: Platform) -> None:
    watchdog = {**TRIGGER, "id": "dog", "op1type": "nul", "op2": "timeout", "extend": True}
    watchdog["duration"] = "2"
    await fluxo.jobs.apply(one_node(watchdog, "dog"), ME)
    first = await run(fluxo, "dog", "a")
    await asyncio.sleep(0.4)
    second = await run(fluxo, "dog", "b")
    a, b = await fluxo.jobs.wait(ME, first, 20), await fluxo.jobs.wait(ME, second, 20)
    assert sent(a) == []  # its timer was replaced by the second message's
    assert sent(b) == ["timeout"]


async def test_a_reset_message_cancels_what_another_job_waits_for(fluxo: Platform) -> None:
    await fluxo.jobs.apply(one_node({**TRIGGER, "duration": "2.5"}, "trig3"), ME)
    first = await run(fluxo, "trig3", "a")
    await asyncio.sleep(0.5)
    reset = await fluxo.jobs.wait(ME, await run(fluxo, "trig3", "r", reset=True), 20)
    a = await fluxo.jobs.wait(ME, first, 20)
    assert (a.status, reset.status) == ("succeeded", "succeeded")
    assert sent(a) == ["first"]
    assert sent(reset) == []


async def test_a_rate_limit_spaces_the_messages_of_several_jobs(fluxo: Platform) -> None:
    node = {
        "id": "rate",
        "type": "delay",
        "pauseType": "rate",
        "rate": "2",
        "nbRateUnits": "1",
        "rateUnits": "second",
        "drop": False,
        "timeout": "5",
        "timeoutUnits": "seconds",
    }
    await fluxo.jobs.apply(one_node(node, "rate"), ME)
    started = time.monotonic()
    ids = [await run(fluxo, "rate", n) for n in range(3)]
    finished, payloads = [], []
    for job_id in ids:
        done = await fluxo.jobs.wait(ME, job_id, 20)
        assert done.status == "succeeded", done.error
        finished.append(time.monotonic() - started)
        payloads += sent(done)
    # One at once, then one per half second, each in its own job, none lost.
    assert sorted(payloads) == [0, 1, 2]
    assert sorted(finished)[-1] >= 0.95


async def test_a_delay_by_msg_delay(fluxo: Platform) -> None:
    node = {"id": "dv", "type": "delay", "pauseType": "delayv", "timeout": "5"}
    await fluxo.jobs.apply(one_node(node, "dv"), ME)
    started = time.monotonic()
    done = await fluxo.jobs.wait(ME, await run(fluxo, "dv", "x", delay=600), 20)
    assert done.status == "succeeded"
    assert sent(done) == ["x"]
    assert 0.6 <= time.monotonic() - started < 4


async def test_a_waiting_message_survives_a_restart(db: Database) -> None:
    """The platform stops while the trigger's second message waits; a new one sends it."""
    first = platform(db)
    await first.accounts.ensure_account("acme")
    async with first:
        await first.jobs.apply(one_node({**TRIGGER, "duration": "1.5"}, "trig4"), ME)
        job_id = await run(first, "trig4", "go")

        async def waiting() -> bool:
            job = await first.jobs.get(ME, job_id)
            return any(s.phase == "waiting" for s in job.steps or [])

        deadline = time.monotonic() + 10
        while not await waiting():
            assert time.monotonic() < deadline, "the trigger's second message never waited"
            await asyncio.sleep(0.05)
    second = platform(db)
    async with second:
        done = await second.jobs.wait(ME, job_id, 20)
    assert done.status == "succeeded", done.error
    assert sent(done) == ["first", "second"]


async def test_a_flush_sends_what_another_job_holds_now(fluxo: Platform) -> None:
    node = {"id": "held", "type": "delay", "pauseType": "delayv", "timeout": "30"}
    await fluxo.jobs.apply(one_node(node, "held"), ME)
    started = time.monotonic()
    first = await run(fluxo, "held", "kept")
    await asyncio.sleep(0.5)
    flush = await fluxo.jobs.wait(ME, await run(fluxo, "held", None, flush=True), 20)
    a = await fluxo.jobs.wait(ME, first, 20)
    assert (a.status, flush.status) == ("succeeded", "succeeded")
    assert time.monotonic() - started < 15  # released, not waited out
    assert sent(a) == ["kept"]
    assert sent(flush) == [None]  # the flush message itself goes on


async def test_a_function_sends_what_its_timer_sends_when_it_is_due(fluxo: Platform) -> None:
    node = {
        "id": "fn",
        "type": "function",
        "func": "setTimeout(function () { node.send({payload: 'late'}); }, 700);\n"
        "return {payload: 'now'};",
        "outputs": 1,
    }
    await fluxo.jobs.apply(one_node(node, "fn"), ME)
    started = time.monotonic()
    done = await fluxo.jobs.wait(ME, await run(fluxo, "fn", 1), 20)
    assert done.status == "succeeded", done.error
    assert time.monotonic() - started >= 0.7
    assert sent(done) == ["now", "late"]


async def test_a_new_version_starts_the_trigger_afresh(fluxo: Platform) -> None:
    """As a deploy restarts the node on Node-RED: its blocked topics and timers are gone."""
    doc = one_node({**TRIGGER, "duration": "2"}, "trig5")
    await fluxo.jobs.apply(doc, ME)
    first = await run(fluxo, "trig5", "a")
    await asyncio.sleep(0.3)
    doc["spec"]["description"] = "deployed again"
    await fluxo.jobs.apply(doc, ME)
    b = await fluxo.jobs.wait(ME, await run(fluxo, "trig5", "b"), 20)
    a = await fluxo.jobs.wait(ME, first, 20)
    assert sent(b) == ["first", "second"]  # not blocked by the earlier version's message
    assert sent(a) == ["first"]  # its timer was the earlier deployment's
