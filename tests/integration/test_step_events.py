"""Node-RED status and complete nodes on the step engine (no Node-RED needed): the statuses a
function sets and the messages it completes reach the status and complete steps watching it,
within the job, and no others; a watched debug node shows a status only when it changes (within
one workflow version: a new version starts it afresh, as a deploy does on Node-RED)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engines.step import NODERED_MSG_CONTENT_TYPE
from fluxo.control.platform import Platform
from fluxo_core.ir import ENTRY_HEADER
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.nodered_context import NodeRedContextStore
from nodered_semantics.context import STATE_KEY
from tests.support.nodered_platform import nodered_platform
from translators.nodered import from_nodered

ME = Principal(account_id="acme", user_id="ada")
FLOW = Path(__file__).resolve().parents[1] / "data" / "nodered" / "status-complete.json"
MSG = {"content-type": NODERED_MSG_CONTENT_TYPE}


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    async with nodered_platform(db) as platform:
        yield platform


async def _run(
    fluxo: Platform, inject: str, payload: Any, flow: list[dict[str, Any]] | None = None
) -> dict[str, list[Any]]:
    """What each native step sent (``{node id: [msg, ...]}``) for one inject's job (of
    ``flow``, by default the status-complete flow, applied first: a new version if it changed)."""
    imp = from_nodered(flow or json.loads(FLOW.read_text()), name="events")
    (workflow,) = imp.workflows
    await fluxo.jobs.apply(_doc(flow), ME)
    entry = next(t.entry for t in imp.triggers if t.node_id == inject)
    assert entry is not None
    job = await fluxo.jobs.create(
        ME,
        workflow.metadata.name,
        {"payload": payload},
        headers={**MSG, ENTRY_HEADER: entry},
    )
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    steps = {s.id: s for s in workflow.spec.steps}
    sent: dict[str, list[Any]] = {}
    for state in done.steps or []:
        node = str(getattr(steps[state.step_id], "config", {}).get("id"))
        for item in state.output or []:
            if int(item["port"]) >= 0:
                sent.setdefault(node, []).append(item["msg"])
    return sent


def _doc(flow: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The workflow of ``flow`` (the status-complete flow) for the step engine."""
    imp = from_nodered(flow or json.loads(FLOW.read_text()), name="events")
    doc = imp.workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    return doc


@pytest.mark.timeout(60)
async def test_status_and_complete_steps_get_the_events_of_what_they_watch(
    fluxo: Platform,
) -> None:
    sent = await _run(fluxo, "sc0in1", "red")
    status = {"fill": "red", "shape": "ring", "text": "disconnected"}
    source = {"id": "sc0f", "type": "function", "name": "show status"}
    # the whole tab's status node and the one listing the function both get its status
    assert [m["payload"] for m in sent["sc0c1"]] == [{**status, "source": source}]
    assert [m["payload"] for m in sent["sc0c2"]] == [{**status, "source": source}]
    # the complete node: the function's message as its body left it, and the debug node's
    assert sorted(m["payload"] for m in sent["sc0c3"]) == ["SEEN RED < sc0d1", "seen red < sc0f"]


@pytest.mark.timeout(60)
async def test_a_node_outside_a_listed_scope_is_not_reported(fluxo: Platform) -> None:
    sent = await _run(fluxo, "sc0in5", "x")
    text = {
        "text": "text only",
        "source": {"id": "sc0g", "type": "function", "name": "other status"},
    }
    assert [m["payload"] for m in sent["sc0c1"]] == [text]  # the whole tab's
    assert "sc0c2" not in sent  # the status node listing sc0f only
    assert "sc0c3" not in sent  # nor the complete node


@pytest.mark.timeout(60)
async def test_a_debug_node_shows_a_status_only_when_it_changes(fluxo: Platform) -> None:
    first = await _run(fluxo, "sc0in6", "shown")
    assert [m["payload"]["text"] for m in first["sc0c1"]] == ["shown"]
    again = await _run(fluxo, "sc0in7", "shown")  # the same status: Node-RED sets none
    assert "sc0c1" not in again
    other = await _run(fluxo, "sc0in8", 42)
    assert [m["payload"]["text"] for m in other["sc0c1"]] == ["42"]


@pytest.mark.timeout(60)
async def test_a_new_version_shows_the_same_debug_status_again(fluxo: Platform) -> None:
    """The last status is the debug node's state for one workflow version: a deploy starts the
    node afresh on Node-RED (``oldState`` forgotten), so a new version shows it again."""
    first = await _run(fluxo, "sc0in6", "shown")
    assert [m["payload"]["text"] for m in first["sc0c1"]] == ["shown"]
    assert "sc0c1" not in await _run(fluxo, "sc0in7", "shown")  # within one version: once
    renamed = [
        {**n, "name": "renamed"} if n.get("id") == "sc0g" else n
        for n in json.loads(FLOW.read_text())
    ]  # another node changed: a new version of the workflow
    again = await _run(fluxo, "sc0in6", "shown", renamed)
    assert [m["payload"]["text"] for m in again["sc0c1"]] == ["shown"]
    assert "sc0c1" not in await _run(fluxo, "sc0in7", "shown", renamed)
    # kept as the node's state, tagged with the version; no context of its own
    doc = _doc(renamed)
    applied = await fluxo.jobs.apply(doc, ME)  # the same: its version
    name = doc["metadata"]["name"]
    kept = await NodeRedContextStore(fluxo.db).get("acme", name, "node:sc0d2")
    assert kept.data == {
        STATE_KEY: {
            "status": '{"fill":"grey","shape":"dot","text":"shown"}',
            "version": applied.version,
        }
    }


@pytest.mark.timeout(60)
async def test_a_status_set_before_a_function_fails_is_reported(fluxo: Platform) -> None:
    sent = await _run(fluxo, "sc0in10", "boom")
    source = {"id": "sc0h", "type": "function", "name": "fails"}
    failing = {"fill": "red", "shape": "dot", "text": "failing", "source": source}
    assert [m["payload"] for m in sent["sc0c1"]] == [failing]
    assert [m["error"]["message"] for m in sent["sc0cat"]] == ["Error: boom"]


@pytest.mark.timeout(60)
async def test_a_watched_debug_node_still_ends_its_branch(fluxo: Platform) -> None:
    flow: list[dict[str, Any]] = [
        {"id": "t", "type": "tab", "label": "Watched"},
        {"id": "i", "type": "inject", "z": "t", "wires": [["d"]]},
        {"id": "d", "type": "debug", "z": "t", "name": "", "wires": []},
        {"id": "c", "type": "complete", "z": "t", "scope": ["d"], "wires": [["f"]]},
        {"id": "f", "type": "function", "z": "t", "func": "return null;", "wires": [[]]},
    ]
    doc = from_nodered(flow).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    await fluxo.jobs.apply(doc, ME)
    job = await fluxo.jobs.create(ME, "watched", {"payload": "hi"}, headers=MSG)
    done = await fluxo.jobs.wait(ME, job.id, 20)
    assert done.status == "succeeded", done.error
    assert done.result == "hi"  # what reached the debug node, as when it was no step
    assert {s.step_id for s in done.steps or []} == {"debug", "complete", "function"}


@pytest.mark.timeout(60)
async def test_a_status_nodes_message_arrives_without_a_payload(fluxo: Platform) -> None:
    """Node-RED's status node sends ``{status}`` only: a function after it sees no payload
    (not ``null``)."""
    sent = await _run(fluxo, "sc0in1", "red")
    assert [m["payload"] for m in sent["sc0sp"]] == [
        {"type": "undefined", "has": False, "isNull": False, "text": "disconnected",
         "from": "sc0f"}
    ]  # fmt: skip


@pytest.mark.timeout(60)
async def test_a_status_set_before_a_failure_arrives_without_a_payload(fluxo: Platform) -> None:
    sent = await _run(fluxo, "sc0in10", "boom")
    # the whole tab's status node sends it on as it got it: without a payload
    assert [("payload" in m, m["status"]["text"]) for m in sent["sc0sall"]] == [(False, "failing")]


@pytest.mark.timeout(60)
async def test_a_completed_message_without_a_payload_arrives_without_one(
    fluxo: Platform,
) -> None:
    sent = await _run(fluxo, "sc0in11", "gone")
    assert [m["payload"] for m in sent["sc0cf"]] == [
        {"type": "undefined", "has": False, "isNull": False, "topic": "no payload",
         "from": "sc0np"}
    ]  # fmt: skip
