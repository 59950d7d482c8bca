"""A flow imported from Node-RED runs on the step engine: native nodes through nodered-node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from engines.step import NODERED_MSG_CONTENT_TYPE
from fluxo.control.platform import Platform
from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import usage_records
from services import FunctionLimits, nodered_node_service
from tests.support.processes import descendants
from translators.nodered import from_nodered

ME = Principal(account_id="acme", user_id="ada")

FLOW: list[dict[str, Any]] = [
    {"id": "tab1", "type": "tab", "label": "Greeter"},
    {"id": "in1", "type": "inject", "z": "tab1", "x": 0, "y": 0, "wires": [["fn1"]]},
    {
        "id": "fn1",
        "type": "function",
        "z": "tab1",
        "name": "route",
        "outputs": 2,
        "func": "msg.topic = 'hello';\n"
        "if (msg.payload.n > 10) { return [null, {payload: {big: msg.payload.n}}]; }\n"
        "msg.payload.n = msg.payload.n * 2; return [msg, null];",
        "x": 1,
        "y": 0,
        "wires": [["tpl1"], ["dbg1"]],
    },
    {
        "id": "tpl1",
        "type": "template",
        "z": "tab1",
        "name": "greet",
        "field": "payload",
        "fieldType": "msg",
        "syntax": "mustache",
        "output": "str",
        "template": "{{topic}} {{payload.who}}: {{payload.n}}",
        "x": 2,
        "y": 0,
        "wires": [["dbg1"]],
    },
    {"id": "dbg1", "type": "debug", "z": "tab1", "x": 3, "y": 0, "wires": []},
]


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    platform = Platform(
        db, [nodered_node_service()], workers=2, poll_interval_s=0.1, admission_cache_s=0
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform


def imported(flow: list[dict[str, Any]]) -> dict[str, Any]:
    """The first workflow of the import, set to the installation's default engine (step)."""
    doc = from_nodered(flow).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    return doc


@pytest.mark.timeout(60)
async def test_function_and_template_run_on_the_step_engine(fluxo: Platform) -> None:
    applied = await fluxo.jobs.apply(imported(FLOW), ME)
    assert [s.kind for s in applied.workflow.spec.steps] == ["native", "native"]
    job = await fluxo.jobs.create(ME, "greeter", {"who": "ada", "n": 3})
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    # port 0 went to the template, which saw msg.topic set by the function
    assert done.result == "hello ada: 6"
    route = next(s for s in done.steps or [] if s.step_id == "route")
    assert route.output == [
        {
            "port": 0,
            "msg": {"payload": {"who": "ada", "n": 6}, "topic": "hello", "_msgid": job.id[:16]},
        }
    ]
    # every node ran as a metered call of the nodered-node service
    rows = await fluxo.db.read(lambda c: c.execute(sa.select(usage_records)).all())
    assert sorted(r.step_id for r in rows if r.job_id == job.id) == ["greet", "route"]


@pytest.mark.timeout(60)
async def test_the_second_port_skips_the_template(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(FLOW), ME)
    job = await fluxo.jobs.create(ME, "greeter", {"who": "ada", "n": 50})
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == {"big": 50}  # port 1 is wired to no step: the branch ends there
    assert [s.step_id for s in done.steps or []] == ["route"]


@pytest.mark.timeout(60)
async def test_a_whole_message_with_a_string_payload(fluxo: Platform) -> None:
    flow: list[dict[str, Any]] = [
        {"id": "t", "type": "tab", "label": "Shout"},
        {
            "id": "f",
            "type": "function",
            "z": "t",
            "name": "shout",
            "func": "msg.payload = msg.topic + ':' + msg.payload.toUpperCase(); return msg;",
            "x": 0,
            "y": 0,
            "wires": [],
        },
    ]
    await fluxo.jobs.apply(imported(flow), ME)
    job = await fluxo.jobs.create(
        ME,
        "shout",
        {"payload": "hi", "topic": "t1"},
        headers={"content-type": NODERED_MSG_CONTENT_TYPE},
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == "t1:HI"


@pytest.mark.timeout(60)
async def test_a_failing_function_fails_the_job_naming_the_node(fluxo: Platform) -> None:
    flow = [dict(n) for n in FLOW]
    flow[2] = {**flow[2], "func": "throw new Error('no greeting today')"}
    await fluxo.jobs.apply(imported(flow), ME)
    job = await fluxo.jobs.create(ME, "greeter", {"who": "ada", "n": 3})
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "failed"
    assert done.error is not None
    assert "function node fn1 (route) failed: Error: no greeting today" in str(done.error)


async def test_deploy_refuses_a_node_the_step_engine_cannot_run(fluxo: Platform) -> None:
    flow = [dict(n) for n in FLOW]
    flow[3] = {**flow[3], "type": "exec", "command": "date", "wires": [["dbg1"], [], []]}
    with pytest.raises(UnsupportedFeatureError, match="exec node tpl1") as caught:
        await fluxo.jobs.apply(imported(flow), ME)
    assert caught.value.context["step"] == "greet"
    assert caught.value.context["node_type"] == "exec"


@pytest.mark.timeout(120)
async def test_catastrophic_regexes_fail_their_jobs_and_leave_no_process_behind(
    db: Database,
) -> None:
    """QuickJS does not interrupt its regular-expression engine: the sandbox's parent kills the
    child at the wall-clock limit, so each job fails in time and the worker keeps serving."""
    platform = Platform(
        db,
        [nodered_node_service(limits=FunctionLimits(time_s=0.1))],
        workers=2,
        poll_interval_s=0.1,
        admission_cache_s=0,
    )
    await platform.accounts.ensure_account("acme")
    redos = [dict(n) for n in FLOW]
    redos[2] = {
        **redos[2],
        "func": "msg.topic = 'hello';\n"
        "if (/^(a+)+$/.test(msg.payload.who)) { return [null, msg]; }\n"
        "msg.payload.n = 1; return [msg, null];",
    }
    async with platform:
        await platform.jobs.apply(imported(redos), ME)
        warm = await platform.jobs.create(ME, "greeter", {"who": "ada", "n": 1})
        assert (await platform.jobs.wait(ME, warm.id, 20)).status == "succeeded"
        before = descendants()
        jobs = [
            await platform.jobs.create(ME, "greeter", {"who": "a" * 34 + "b", "n": 1})
            for _ in range(20)
        ]
        for job in jobs:
            done = await platform.jobs.wait(ME, job.id, 60)
            assert done.status == "failed"
            assert (
                "function node fn1 (route): the code ran longer than its time limit of 0.1 s"
                in (str(done.error))
            ), done.error
        after = await platform.jobs.create(ME, "greeter", {"who": "grace", "n": 2})
        done = await platform.jobs.wait(ME, after.id, 20)
        assert done.status == "succeeded", done.error
        assert done.result == "hello grace: 1"
        # at most the sandbox's two children besides what ran before: none of the 20 is left
        assert len(descendants() - before) <= 1


def _countdown(start: int) -> list[dict[str, Any]]:
    """A loop through a junction: a function counts payload.n down to 0, once per pass."""
    return [
        {"id": "t", "type": "tab", "label": "Countdown"},
        {"id": "j", "type": "junction", "z": "t", "x": 1, "y": 1, "wires": [["f"]]},
        {
            "id": "f",
            "type": "function",
            "z": "t",
            "name": "down",
            "func": "msg.payload.n -= 1;\nreturn msg.payload.n > 0 ? [null, msg] : [msg, null];",
            "outputs": 2,
            "x": 1,
            "y": 1,
            "wires": [["fin"], ["j"]],
        },
        {
            "id": "fin",
            "type": "change",
            "z": "t",
            "name": "finish",
            "rules": [{"t": "set", "p": "payload.done", "pt": "msg", "to": "true", "tot": "bool"}],
            "x": 1,
            "y": 1,
            "wires": [[]],
        },
        {"id": "i", "type": "inject", "z": "t", "x": 1, "y": 1, "wires": [["j"]],
         "payload": f'{{"n": {start}}}', "payloadType": "json"},
    ]  # fmt: skip


@pytest.mark.timeout(60)
async def test_a_loop_runs_its_passes_and_fails_clearly_past_the_bound(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(_countdown(5)), ME)
    job = await fluxo.jobs.create(ME, "countdown", {"n": 5})
    done = await fluxo.jobs.wait(ME, job.id, 30)
    assert done.status == "succeeded", done.error
    assert done.result == {"n": 0, "done": True}
    job = await fluxo.jobs.create(ME, "countdown", {"n": 40})
    done = await fluxo.jobs.wait(ME, job.id, 30)
    assert done.status == "failed"
    assert "more than 16 times" in str(done.error)
