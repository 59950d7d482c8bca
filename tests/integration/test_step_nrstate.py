"""Node state on the step engine: what a Node-RED core node keeps between messages (a csv header
sent once, a streaming split's remainder, a batch's held messages, a function's setup run once)
is kept durably per account, workflow and node, for one workflow version.

On Node-RED that state lives in the running node: it outlives messages and jobs, and a deploy
starts the node afresh. Here it lives under ``_fluxo_state`` of the node's own context, written
with the step's result: two jobs one after the other share it, a new version starts afresh, and
concurrent jobs change it one after the other. Each test runs on SQLite and PostgreSQL. The
differential test (tests/integration/nodered) compares the shipped examples with a real Node-RED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engines.step import NODERED_MSG_CONTENT_TYPE
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.nodered_context import NodeRedContextStore
from nodered_semantics.context import STATE_KEY
from tests.support.nodered_platform import nodered_platform
from translators.nodered import from_nodered

pytestmark = pytest.mark.timeout(180)

ADA = Principal(account_id="acme", user_id="ada")
BOB = Principal(account_id="other", user_id="bob")
MSG = {"content-type": NODERED_MSG_CONTENT_TYPE}


def flow_of(*nodes: dict[str, Any]) -> list[dict[str, Any]]:
    """A tab: an inject wired to the first node, each node to the next, the last to a debug."""
    out: list[dict[str, Any]] = [
        {"id": "tab1", "type": "tab", "label": "State"},
        {"id": "in1", "type": "inject", "z": "tab1", "wires": [[nodes[0]["id"]]]},
    ]
    for node, after in zip(nodes, [*nodes[1:], {"id": "dbg"}], strict=True):
        out.append({**node, "z": "tab1", "wires": [[after["id"]]]})
    out.append({"id": "dbg", "type": "debug", "z": "tab1", "wires": []})
    return out


def imported(flow: list[dict[str, Any]], name: str) -> dict[str, Any]:
    doc = from_nodered(flow).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    doc["metadata"]["name"] = name
    return doc


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    async with nodered_platform(db) as platform:
        yield platform


async def sent(
    fluxo: Platform, name: str, msg: dict[str, Any], node: str, who: Principal = ADA
) -> list[Any]:
    """The payloads node ``node`` sent in a job of workflow ``name`` started with ``msg``."""
    job = await fluxo.jobs.create(who, name, msg, headers=MSG)
    done = await fluxo.jobs.wait(who, job.id, 60)
    assert done.status == "succeeded", done.error
    return payloads_of(done, node, who)


def payloads_of(done: Any, node: str, who: Principal = ADA) -> list[Any]:
    step_id = _STEPS[(who.account_id, f"{done.workflow}@{done.version}", node)]
    steps = [s for s in done.steps or [] if s.step_id == step_id]
    return [p["msg"].get("payload") for s in steps for p in s.output or [] if p["port"] >= 0]


_STEPS: dict[tuple[str, str, str], str] = {}  # (account, workflow, node id): its step's id


async def apply(
    fluxo: Platform, flow: list[dict[str, Any]], name: str, who: Principal = ADA
) -> int:
    doc = imported(flow, name)
    applied = await fluxo.jobs.apply(doc, who)
    for step in doc["spec"]["steps"]:
        if step.get("kind") == "native":
            _STEPS[(who.account_id, applied.ref, str(step["config"]["id"]))] = step["id"]
    return applied.version


CSV = {"id": "csv1", "type": "csv", "sep": ",", "hdrout": "once", "multi": "one", "ret": "\\n",
       "temp": "kind,price", "skip": "0", "strings": True}  # fmt: skip
HEADER = "kind,price\n"


async def test_a_csv_header_is_sent_once_per_version_until_reset(fluxo: Platform) -> None:
    await apply(fluxo, flow_of(CSV), "csv")
    row = {"payload": {"kind": "Apple", "price": 100}}
    assert await sent(fluxo, "csv", row, "csv1") == [HEADER + "Apple,100\n"]
    assert await sent(fluxo, "csv", row, "csv1") == ["Apple,100\n"]  # the next job: no header
    assert await sent(fluxo, "csv", {**row, "reset": 1}, "csv1") == [HEADER + "Apple,100\n"]
    assert await sent(fluxo, "csv", row, "csv1") == ["Apple,100\n"]
    # another account's workflow of the same name has a node of its own
    await apply(fluxo, flow_of(CSV), "csv", BOB)
    assert await sent(fluxo, "csv", row, "csv1", BOB) == [HEADER + "Apple,100\n"]
    # a new version is a new deployment: the node starts afresh, as on Node-RED
    version = await apply(fluxo, flow_of({**CSV, "name": "v2"}), "csv")
    assert await sent(fluxo, "csv", row, "csv1") == [HEADER + "Apple,100\n"]
    assert await sent(fluxo, "csv", row, "csv1") == ["Apple,100\n"]
    kept = await NodeRedContextStore(fluxo.db).get("acme", "csv", "node:csv1")
    assert kept.data == {STATE_KEY: {"header_sent": True, "version": version}}


async def test_concurrent_jobs_send_the_header_once(fluxo: Platform) -> None:
    await apply(fluxo, flow_of(CSV), "csv")
    jobs = [
        await fluxo.jobs.create(ADA, "csv", {"payload": {"kind": str(i), "price": i}}, headers=MSG)
        for i in range(6)
    ]
    done = await asyncio.gather(*(fluxo.jobs.wait(ADA, job.id, 90) for job in jobs))
    assert all(d.status == "succeeded" for d in done), [d.error for d in done]
    texts = [t for d in done for t in payloads_of(d, "csv1")]
    assert len(texts) == 6
    assert sum(t.startswith(HEADER) for t in texts) == 1, texts


SPLIT = {"id": "sp1", "type": "split", "splt": "\\n", "spltType": "str", "stream": True}


async def test_a_streaming_split_carries_its_remainder_to_the_next_job(fluxo: Platform) -> None:
    await apply(fluxo, flow_of(SPLIT), "split")
    assert await sent(fluxo, "split", {"payload": "a\nb"}, "sp1") == ["a"]
    assert await sent(fluxo, "split", {"payload": "c\nd\n"}, "sp1") == ["bc", "d"]
    assert await sent(fluxo, "split", {"payload": "e"}, "sp1") == []
    assert await sent(fluxo, "split", {"payload": "f\n"}, "sp1") == ["ef"]
    # arrays split whole, streaming or not
    assert await sent(fluxo, "split", {"payload": ["x", "y"]}, "sp1") == ["x", "y"]
    await apply(fluxo, flow_of({**SPLIT, "name": "v2"}), "split")
    await sent(fluxo, "split", {"payload": "g"}, "sp1")
    version = await apply(fluxo, flow_of({**SPLIT, "name": "v3"}), "split")
    assert await sent(fluxo, "split", {"payload": "h\ni"}, "sp1") == ["h"]  # no "g": afresh
    kept = await NodeRedContextStore(fluxo.db).get("acme", "split", "node:sp1")
    assert kept.data == {STATE_KEY: {"remainder": "i", "index": 1, "version": version}}


async def test_a_streaming_split_by_length(fluxo: Platform) -> None:
    await apply(fluxo, flow_of({**SPLIT, "splt": "3", "spltType": "len"}), "split")
    assert await sent(fluxo, "split", {"payload": "abcd"}, "sp1") == ["abc"]
    assert await sent(fluxo, "split", {"payload": "ef"}, "sp1") == ["def"]
    assert await sent(fluxo, "split", {"payload": "g"}, "sp1") == []


SEND_7 = {
    "id": "fn1",
    "type": "function",
    "outputs": 1,
    "func": "for (var x = 0; x < 7; x++) { node.send({payload: msg.payload + x}); }",
}
BATCH = {"id": "b1", "type": "batch", "mode": "count", "count": "5", "overlap": 0}


async def test_a_batch_keeps_what_it_holds_for_the_next_job(fluxo: Platform) -> None:
    await apply(fluxo, flow_of(SEND_7, BATCH), "batch")
    assert await sent(fluxo, "batch", {"payload": 0}, "b1") == [0, 1, 2, 3, 4]
    # 5 and 6 were held: the next job's batch starts with them, as on Node-RED
    assert await sent(fluxo, "batch", {"payload": 10}, "b1") == [5, 6, 10, 11, 12]
    held_13_to_16 = [13, 14, 15, 16, 20, 21, 22, 23, 24, 25]
    assert await sent(fluxo, "batch", {"payload": 20}, "b1") == held_13_to_16
    # a new version starts afresh: 26 is not held any more
    await apply(fluxo, flow_of(SEND_7, {**BATCH, "name": "v2"}), "batch")
    assert await sent(fluxo, "batch", {"payload": 30}, "b1") == [30, 31, 32, 33, 34]


async def test_a_batch_with_overlap_across_jobs(fluxo: Platform) -> None:
    await apply(fluxo, flow_of(SEND_7, {**BATCH, "overlap": "1"}), "batch")
    assert await sent(fluxo, "batch", {"payload": 0}, "b1") == [0, 1, 2, 3, 4]
    assert await sent(fluxo, "batch", {"payload": 10}, "b1") == [
        4,
        5,
        6,
        10,
        11,
        11,
        12,
        13,
        14,
        15,
    ]


COUNTER = {"id": "fn1", "type": "function", "outputs": 1,
           "func": "var n = global.get('count') + 1; global.set('count', n);\n"
                   "msg.payload = n; return msg;",
           "initialize": "global.set('count', 0);"}  # fmt: skip


async def test_function_setup_runs_once_per_version(fluxo: Platform) -> None:
    await apply(fluxo, flow_of(COUNTER), "counter")
    assert [await sent(fluxo, "counter", {"payload": 0}, "fn1") for _ in range(3)] == [
        [1],
        [2],
        [3],
    ]
    # a new version: its setup runs again (Node-RED runs it on deploy), once
    await apply(fluxo, flow_of({**COUNTER, "name": "v2"}), "counter")
    assert [await sent(fluxo, "counter", {"payload": 0}, "fn1") for _ in range(2)] == [[1], [2]]
    # global context is the account's: another account's setup and counts are its own
    await apply(fluxo, flow_of(COUNTER), "counter", BOB)
    assert await sent(fluxo, "counter", {"payload": 0}, "fn1", BOB) == [1]
    assert await sent(fluxo, "counter", {"payload": 0}, "fn1") == [3]


async def test_concurrent_jobs_run_the_setup_once(fluxo: Platform) -> None:
    await apply(fluxo, flow_of(COUNTER), "counter")
    jobs = [await fluxo.jobs.create(ADA, "counter", {"payload": 0}, headers=MSG) for _ in range(6)]
    done = await asyncio.gather(*(fluxo.jobs.wait(ADA, job.id, 90) for job in jobs))
    assert all(d.status == "succeeded" for d in done), [d.error for d in done]
    counts = sorted(n for d in done for n in payloads_of(d, "fn1"))
    assert counts == [1, 2, 3, 4, 5, 6]


async def test_the_body_waits_for_an_asynchronous_setup(fluxo: Platform) -> None:
    setup = (
        'global.set("message", "Initializing, World!");\n'
        "return new Promise((resolve) => { setTimeout(() => {\n"
        '  global.set("message", "Hello, World!"); resolve(); }, 1000); });'
    )
    node = {"id": "fn1", "type": "function", "outputs": 1, "initialize": setup,
            "func": "msg.payload = global.get('message'); return msg;"}  # fmt: skip
    await apply(fluxo, flow_of(node), "hello")
    assert await sent(fluxo, "hello", {"payload": 0}, "fn1") == ["Hello, World!"]
    assert await sent(fluxo, "hello", {"payload": 0}, "fn1") == ["Hello, World!"]


async def test_state_follows_the_order_of_a_jobs_messages(fluxo: Platform) -> None:
    """A csv node that keeps state takes a job's messages together, in Node-RED's order: the
    column names of a file's first line name the cells of the next ones, and a header sent once
    goes with the first row, however the calls of the steps before it end."""
    lines = {"id": "sp2", "type": "split", "splt": "\\n", "spltType": "str"}
    names = {"id": "csv2", "type": "csv", "sep": ",", "hdrin": True, "multi": "one", "temp": ""}
    await apply(fluxo, flow_of(lines, names), "file")
    text = {"payload": "kind,price\nApple,100\nOrange,120\nKiwi,90"}
    assert await sent(fluxo, "file", text, "csv2") == [
        {"kind": "Apple", "price": 100},
        {"kind": "Orange", "price": 120},
        {"kind": "Kiwi", "price": 90},
    ]
    rows = {"id": "sp3", "type": "split"}
    await apply(fluxo, flow_of(rows, CSV), "rows")
    items = [{"kind": k, "price": p} for k, p in (("Apple", 100), ("Orange", 120), ("Kiwi", 9))]
    assert await sent(fluxo, "rows", {"payload": items}, "csv1") == [
        HEADER + "Apple,100\n",
        "Orange,120\n",
        "Kiwi,9\n",
    ]
