"""A Node-RED tab with several triggers on the step engine: a job names its trigger's entry
(header ``fluxo-entry``) and runs only what that trigger starts, as Node-RED does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engines.step import NODERED_MSG_CONTENT_TYPE
from fluxo.control.platform import Platform
from fluxo_core.ir import ENTRY_HEADER
from fluxo_core.storage import Database, Principal
from services import nodered_node_service
from translators.nodered import from_nodered

ME = Principal(account_id="acme", user_id="ada")
MSG = {"content-type": NODERED_MSG_CONTENT_TYPE}


def _fn(nid: str, code: str, wires: list[str]) -> dict[str, Any]:
    return {"id": nid, "type": "function", "z": "t", "name": nid, "func": code, "outputs": 1,
            "x": 0, "y": 0, "wires": [wires]}  # fmt: skip


FLOW: list[dict[str, Any]] = [
    {"id": "t", "type": "tab", "label": "Triggers"},
    {"id": "i1", "type": "inject", "z": "t", "x": 0, "y": 0, "wires": [["one"]]},
    {"id": "i2", "type": "inject", "z": "t", "x": 0, "y": 0, "wires": [["two", "three"]]},
    _fn("one", "msg.payload = 'one:' + msg.payload; return msg;", ["shared"]),
    _fn("two", "msg.payload = 'two:' + msg.payload; return msg;", ["shared"]),
    _fn("three", "msg.payload = 'three:' + msg.payload; return msg;", []),
    _fn("shared", "msg.payload = msg.payload + '!'; return msg;", []),
]


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    platform = Platform(
        db, [nodered_node_service()], workers=2, poll_interval_s=0.1, admission_cache_s=0
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform


async def _applied(fluxo: Platform) -> dict[str, str]:
    imp = from_nodered(FLOW)
    doc = imp.workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    await fluxo.jobs.apply(doc, ME)
    return {t.node_id: t.entry or "" for t in imp.triggers}


@pytest.mark.timeout(60)
async def test_a_job_runs_only_the_nodes_of_the_entry_it_names(fluxo: Platform) -> None:
    entries = await _applied(fluxo)
    job = await fluxo.jobs.create(
        ME, "triggers", {"payload": "x"}, headers={**MSG, ENTRY_HEADER: entries["i1"]}
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    assert sorted(s.step_id for s in done.steps or []) == ["one", "shared"]
    assert done.result == "one:x!"
    job = await fluxo.jobs.create(
        ME, "triggers", {"payload": "y"}, headers={**MSG, ENTRY_HEADER: entries["i2"]}
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    ran = sorted(s.step_id for s in done.steps or [])
    assert ran == sorted([entries["i2"], "two", "three", "shared"])
    assert sorted(done.result) == ["three:y", "two:y!"]


@pytest.mark.timeout(60)
async def test_a_job_naming_no_entry_or_another_step_fails_saying_which(
    fluxo: Platform,
) -> None:
    entries = await _applied(fluxo)
    job = await fluxo.jobs.create(ME, "triggers", {"payload": "x"}, headers=MSG)
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "failed"
    assert ENTRY_HEADER in str(done.error)
    assert entries["i1"] in str(done.error)
    assert [s.step_id for s in done.steps or []] == ["start"]  # no trigger's nodes ran
    job = await fluxo.jobs.create(
        ME, "triggers", {"payload": "x"}, headers={**MSG, ENTRY_HEADER: "shared"}
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "failed"
    assert "'shared', which is not an entry" in str(done.error)
    assert not done.steps
