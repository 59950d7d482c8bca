"""Node-RED context on the step engine: durable per workflow and account, written with the step.

Each test runs on SQLite and PostgreSQL (the ``db`` fixture). The differential test
(tests/integration/nodered, ``context.json``) compares the same semantics with a real Node-RED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fluxo.control.platform import Platform
from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.nodered_context import GLOBAL_WORKFLOW, NodeRedContextStore
from tests.support.nodered_platform import nodered_platform
from translators.nodered import from_nodered

pytestmark = pytest.mark.timeout(120)

ADA = Principal(account_id="acme", user_id="ada")
BOB = Principal(account_id="other", user_id="bob")

COUNTER = (
    "var n = (flow.get('count') || 0) + 1; flow.set('count', n);\n"
    "global.set('total', (global.get('total') || 0) + 1);\n"
    "context.set('last', msg.payload.tag);\n"
    "msg.payload = {n: n, total: global.get('total')}; return msg;"
)


def counter_flow(code: str = COUNTER) -> list[dict[str, Any]]:
    return [
        {"id": "tab1", "type": "tab", "label": "Counter"},
        {"id": "in1", "type": "inject", "z": "tab1", "x": 0, "y": 0, "wires": [["fn1"]]},
        {
            "id": "fn1",
            "type": "function",
            "z": "tab1",
            "name": "count",
            "func": code,
            "outputs": 1,
            "x": 1,
            "y": 0,
            "wires": [["dbg1"]],
        },
        {"id": "dbg1", "type": "debug", "z": "tab1", "x": 2, "y": 0, "wires": []},
    ]


def imported(flow: list[dict[str, Any]]) -> dict[str, Any]:
    doc = from_nodered(flow).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    return doc


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    async with nodered_platform(db) as platform:
        yield platform


async def run(fluxo: Platform, who: Principal, payload: Any) -> Any:
    job = await fluxo.jobs.create(who, "counter", payload)
    done = await fluxo.jobs.wait(who, job.id, 30)
    assert done.status == "succeeded", done.error
    return done.result


async def test_context_outlives_the_message_and_stays_in_its_account(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(counter_flow()), ADA)
    await fluxo.jobs.apply(imported(counter_flow()), BOB)
    assert [await run(fluxo, ADA, {"tag": t}) for t in "abc"] == [
        {"n": 1, "total": 1},
        {"n": 2, "total": 2},
        {"n": 3, "total": 3},
    ]
    # another account's workflow of the same name starts from nothing: neither the flow nor the
    # global context of the first account is visible to it
    assert await run(fluxo, BOB, {"tag": "z"}) == {"n": 1, "total": 1}
    store = NodeRedContextStore(fluxo.db)
    assert (await store.get("acme", "counter", "flow")).data == {"count": 3}
    assert (await store.get("acme", GLOBAL_WORKFLOW, "global")).data == {"total": 3}
    assert (await store.get("acme", "counter", "node:fn1")).data == {"last": "c"}
    assert (await store.get("other", "counter", "flow")).data == {"count": 1}
    assert (await store.get("other", "counter", "node:fn1")).data == {"last": "z"}
    # a new version of the workflow keeps its context, as a redeployed tab does on Node-RED
    await fluxo.jobs.apply(imported(counter_flow(COUNTER + "\n// v2")), ADA)
    assert await run(fluxo, ADA, {"tag": "d"}) == {"n": 4, "total": 4}


async def test_concurrent_messages_count_as_one_after_the_other(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(counter_flow()), ADA)
    jobs = [await fluxo.jobs.create(ADA, "counter", {"tag": str(i)}) for i in range(8)]
    done = await asyncio.gather(*(fluxo.jobs.wait(ADA, job.id, 60) for job in jobs))
    assert all(d.status == "succeeded" for d in done), [d.error for d in done]
    # every message saw its own count: none was lost to another writing at the same time
    assert sorted(d.result["n"] for d in done) == list(range(1, 9))
    store = NodeRedContextStore(fluxo.db)
    assert (await store.get("acme", "counter", "flow")).data == {"count": 8}
    assert (await store.get("acme", GLOBAL_WORKFLOW, "global")).data == {"total": 8}


async def test_a_failed_step_writes_no_context(fluxo: Platform) -> None:
    code = "flow.set('count', 99); if (msg.payload.fail) { throw new Error('no'); } return msg;"
    await fluxo.jobs.apply(imported(counter_flow(code)), ADA)
    job = await fluxo.jobs.create(ADA, "counter", {"fail": True})
    done = await fluxo.jobs.wait(ADA, job.id, 30)
    assert done.status == "failed"
    store = NodeRedContextStore(fluxo.db)
    assert (await store.get("acme", "counter", "flow")).version == 0
    await run(fluxo, ADA, {"fail": False})
    assert (await store.get("acme", "counter", "flow")).data == {"count": 99}


async def test_context_past_its_bound_fails_the_step_naming_the_scope(fluxo: Platform) -> None:
    step = next(e for e in fluxo.registry.engines() if e.name == "step")
    step.contexts.max_bytes = 200  # type: ignore[attr-defined]
    code = "flow.set('big', 'x'.repeat(msg.payload.size)); return msg;"
    await fluxo.jobs.apply(imported(counter_flow(code)), ADA)
    await run(fluxo, ADA, {"size": 10})
    job = await fluxo.jobs.create(ADA, "counter", {"size": 500})
    done = await fluxo.jobs.wait(ADA, job.id, 30)
    assert done.status == "failed"
    assert "flow context of workflow 'counter' would hold" in str(done.error)
    assert "over the limit of 200" in str(done.error)
    store = NodeRedContextStore(fluxo.db)
    assert (await store.get("acme", "counter", "flow")).data == {"big": "x" * 10}


async def test_flow_context_of_nodes_from_several_tabs_is_refused(fluxo: Platform) -> None:
    flow = [
        {"id": "tab1", "type": "tab", "label": "Counter"},
        {"id": "tab2", "type": "tab", "label": "Library"},
        {"id": "in1", "type": "inject", "z": "tab1", "x": 0, "y": 0, "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "func": "flow.set('a', 1); return msg;",
         "outputs": 1, "x": 1, "y": 0, "wires": [["call1"]]},
        {"id": "call1", "type": "link call", "z": "tab1", "links": ["lin"], "linkType": "static",
         "x": 2, "y": 0, "wires": [[]]},
        {"id": "lin", "type": "link in", "z": "tab2", "x": 0, "y": 0, "wires": [["fn2"]]},
        {"id": "fn2", "type": "function", "z": "tab2", "func": "flow.set('b', 1); return msg;",
         "outputs": 1, "x": 1, "y": 0, "wires": [["ret"]]},
        {"id": "ret", "type": "link out", "z": "tab2", "mode": "return", "x": 2, "y": 0,
         "wires": []},
    ]  # fmt: skip
    with pytest.raises(UnsupportedFeatureError, match="several tabs or subflows"):
        await fluxo.jobs.apply(imported(flow), ADA)
