"""A Node-RED flow that talks to itself over a socket, on the step engine: a network out node
whose peer is an in node of the same workflow starts, once, a job at that in node's entry with
the message Node-RED's in node would send (engines.step._loopback)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from engines.step import NODERED_MSG_CONTENT_TYPE, step_runnable
from engines.step._loopback import GENERATION_HEADER, MAX_GENERATIONS, Spawn, start_loopback_jobs
from engines.step._run import ENGINE_QUEUE
from fluxo.control.platform import Platform
from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.ir import ENTRY_HEADER, Packet
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.jobs import JobStore
from tests.support.nodered_platform import nodered_platform
from translators.argo import to_argo
from translators.nodered import NodeRedImport, from_nodered

ME = Principal(account_id="acme", user_id="ada")
MSG = {"content-type": NODERED_MSG_CONTENT_TYPE}


def _flow(*nodes: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": "t", "type": "tab", "label": "Loop"},
        {"id": "inj", "type": "inject", "z": "t", "wires": [["out"]]},
        *({"z": "t", "wires": [], **n} for n in nodes),
    ]


TCP = _flow(
    {"id": "out", "type": "tcp out", "host": "localhost", "port": "1881", "beserver": "client",
     "base64": False, "end": True},
    {"id": "in", "type": "tcp in", "server": "server", "host": "", "port": "1881",
     "datamode": "stream", "datatype": "utf8", "newline": "\\n", "topic": "t1",
     "wires": [["mark"]]},
    {"id": "mark", "type": "function", "name": "mark", "outputs": 1,
     "func": "msg.payload = msg.topic + ':' + msg.payload + ':' + msg._session.type;\nreturn msg;"},
)  # fmt: skip


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    async with nodered_platform(db) as platform:
        yield platform


async def _apply(fluxo: Platform, flow: list[dict[str, Any]]) -> NodeRedImport:
    imp = from_nodered(flow)
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert ok, reasons
    doc = imp.workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    await fluxo.jobs.apply(doc, ME)
    return imp


@pytest.mark.timeout(60)
async def test_a_tcp_out_to_the_tcp_in_of_its_workflow_starts_a_job_per_line(
    fluxo: Platform,
) -> None:
    imp = await _apply(fluxo, TCP)
    entry = imp.triggers[0].entry
    assert entry == "tcp-out"
    job = await fluxo.jobs.create(
        ME, "loop", {"payload": "a\nb\nc"}, headers={**MSG, ENTRY_HEADER: entry}
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    children = await fluxo.jobs.store.children(job.id)
    assert len(children) == 3
    results = []
    for child in children:
        assert child.parent_step_id == "tcp-out"
        ended = await fluxo.jobs.wait(ME, child.job_id, 20)
        assert ended.status == "succeeded", ended.error
        assert [s.step_id for s in ended.steps or []] == ["tcp-in", "mark"]
        results.append(ended.result)
    # Two whole lines, and the rest when the connection ends (end: true), as Node-RED sends.
    assert sorted(results) == ["t1:a:tcp", "t1:b:tcp", "t1:c:tcp"]


@pytest.mark.timeout(60)
async def test_a_step_execution_starts_its_jobs_once(fluxo: Platform, db: Database) -> None:
    """The same sending execution applied again (a re-delivered transition, a retried batch)
    finds the jobs of the first and starts none."""
    await _apply(fluxo, TCP)
    job = await fluxo.jobs.create(
        ME, "loop", {"payload": "x"}, headers={**MSG, ENTRY_HEADER: "tcp-out"}
    )
    await fluxo.jobs.wait(ME, job.id, 20)
    store = JobStore(db)
    row = dataclasses.asdict(await store.job(job.id))
    source = Packet.model_validate_json(row["input"])
    ref = f"{row['workflow']}@{row['version']}"
    again = [
        (row, source, ref, Spawn("tcp-out", "tcp-out", 0, "tcp-in", {"payload": "x"})),
        (row, source, ref, Spawn("tcp-out", "tcp-out", 0, "tcp-in", {"payload": "x"})),
    ]
    starts = await db.transact(lambda tx: start_loopback_jobs(tx, store, ENGINE_QUEUE, again))
    assert starts == []  # the first run started it already
    assert len(await fluxo.jobs.store.children(job.id)) == 1
    other = [(row, source, ref, Spawn("tcp-out", "tcp-out", 1, "tcp-in", {"payload": "y"}))]
    starts = await db.transact(lambda tx: start_loopback_jobs(tx, store, ENGINE_QUEUE, other))
    assert len(starts) == 1
    assert orjson.loads(starts[0].body)["kind"] == "start"
    starts = await db.transact(lambda tx: start_loopback_jobs(tx, store, ENGINE_QUEUE, other))
    assert starts == []
    assert len(await fluxo.jobs.store.children(job.id)) == 2


def _reasons(flow: list[dict[str, Any]]) -> str:
    imp = from_nodered(flow)
    ok, reasons = step_runnable(imp.workflows[0], imp.triggers)
    assert not ok
    return "; ".join(reasons)


def test_a_peer_outside_the_workflow_is_refused_saying_why() -> None:
    outside = _flow(
        {"id": "out", "type": "tcp out", "host": "example.com", "port": "1881",
         "beserver": "client", "end": True},
        {"id": "in", "type": "tcp in", "server": "server", "port": "1881", "datamode": "single",
         "datatype": "utf8"},
    )  # fmt: skip
    reasons = _reasons(outside)
    assert "network service" in reasons
    assert "host policy" in reasons
    other_port = _flow(
        {"id": "out", "type": "udp out", "addr": "localhost", "port": "1882", "ipv": "udp4",
         "multicast": "false"},
        {"id": "in", "type": "udp in", "port": "1881", "ipv": "udp4", "multicast": "false",
         "datatype": "utf8"},
    )  # fmt: skip
    assert "no in node of this workflow" in _reasons(other_port)
    assert "no out node of this workflow" in _reasons(other_port)
    single_open = _flow(
        {"id": "out", "type": "tcp out", "host": "localhost", "port": "1881",
         "beserver": "client", "end": False},
        {"id": "in", "type": "tcp in", "server": "server", "port": "1881", "datamode": "single",
         "datatype": "utf8"},
    )  # fmt: skip
    assert "single mode" in _reasons(single_open)


def test_argo_refuses_a_loopback_flow_naming_its_network_step() -> None:
    """Argo runs no native Node-RED node: a flow talking to itself stays off it, saying which
    step (the Node-RED engine runs the original nodes, sockets and all)."""
    imp = from_nodered(TCP)
    with pytest.raises(UnsupportedFeatureError) as info:
        to_argo(imp.workflows[0], gateway_url="http://fluxo:8080", version=1)
    assert info.value.context["step"] in ("tcp-out", "tcp-in")


@pytest.mark.timeout(60)
async def test_the_jobs_of_a_paused_workflow_wait_queued(fluxo: Platform, db: Database) -> None:
    await _apply(fluxo, TCP)
    job = await fluxo.jobs.create(
        ME, "loop", {"payload": "x"}, headers={**MSG, ENTRY_HEADER: "tcp-out"}
    )
    await fluxo.jobs.wait(ME, job.id, 20)
    for child in await fluxo.jobs.store.children(job.id):  # what the job itself started
        await fluxo.jobs.wait(ME, child.job_id, 20)
    store, pauses = JobStore(db), BlockStore(db)
    row = dataclasses.asdict(await store.job(job.id))
    source = Packet.model_validate_json(row["input"])
    spawn = Spawn("tcp-out", "tcp-out", 5, "tcp-in", {"payload": "later"})
    await pauses.pause("acme", "loop", paused_by="acme/ada")
    sent = [(row, source, f"loop@{row['version']}", spawn)]
    starts = await db.transact(
        lambda tx: start_loopback_jobs(tx, store, ENGINE_QUEUE, sent, pauses)
    )
    assert starts == []  # no start: it waits for the workflow to be resumed
    waiting = await fluxo.jobs.store.children(job.id)
    statuses = await store.statuses(c.job_id for c in waiting)
    assert sorted(statuses.values()) == ["queued", "succeeded"]


LOOP = _flow(
    {"id": "out", "type": "tcp out", "host": "localhost", "port": "1881", "beserver": "client",
     "base64": False, "end": True},
    {"id": "in", "type": "tcp in", "server": "server", "host": "", "port": "1881",
     "datamode": "stream", "datatype": "utf8", "newline": "", "topic": "", "wires": [["out"]]},
)  # fmt: skip


@pytest.mark.timeout(60)
async def test_an_in_node_wired_back_to_its_out_node_stops_at_the_generation_limit(
    fluxo: Platform,
) -> None:
    """Each pass of the loop is a new job no interceptor admits: the chain ends, with the
    reason, at MAX_GENERATIONS jobs instead of starting jobs for ever."""
    imp = await _apply(fluxo, LOOP)
    entry = imp.triggers[0].entry
    near = str(MAX_GENERATIONS - 2)  # started as if 98 loopback jobs led to it
    job = await fluxo.jobs.create(
        ME, "loop", {"payload": "x"}, headers={**MSG, ENTRY_HEADER: entry, GENERATION_HEADER: near}
    )
    chain = [await fluxo.jobs.wait(ME, job.id, 20)]
    while True:
        children = await fluxo.jobs.store.children(chain[-1].id)
        if not children:
            break
        assert len(children) == 1
        chain.append(await fluxo.jobs.wait(ME, children[0].job_id, 20))
    assert [j.status for j in chain] == ["succeeded", "succeeded", "failed"]
    assert "starts no more" in str(chain[-1].error)
