"""Imported workflows keep their Node-RED source with their versions, and the step engine
refuses what an import dropped; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from fluxo.control.platform import Platform
from fluxo_core.errors import IRValidationError, UnsupportedFeatureError, ValidationError
from fluxo_core.ir import workflow_document
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import workflow_sources, workflows
from tests.support import services as svc
from translators.nodered import DROPPED_LABEL, from_nodered

ACME = Principal(account_id="acme", user_id="ada")
FLOW: list[dict[str, Any]] = [
    {"id": "t1", "type": "tab", "label": "Loop"},
    {"id": "a", "type": "change", "z": "t1", "name": "a", "x": 100, "y": 40,
     "rules": [{"t": "set", "p": "payload.a", "pt": "msg", "to": "1", "tot": "num"}],
     "wires": [["b"]]},
    {"id": "b", "type": "change", "z": "t1", "name": "b", "x": 300, "y": 40,
     "rules": [{"t": "set", "p": "payload.b", "pt": "msg", "to": "2", "tot": "num"}],
     "wires": [["a"]]},
]  # fmt: skip

# Two triggers inside a subflow, each starting only its own node on Node-RED: a job of the
# subflow's workflow would start both (a tab's triggers name their own entries instead).
TWO_TRIGGERS: list[dict[str, Any]] = [
    {"id": "t1", "type": "subflow", "name": "Two", "in": [], "out": []},
    {"id": "i1", "type": "inject", "z": "t1", "x": 100, "y": 40, "wires": [["a"]]},
    {"id": "i2", "type": "inject", "z": "t1", "x": 100, "y": 80, "wires": [["b"]]},
    {"id": "a", "type": "change", "z": "t1", "name": "a", "x": 300, "y": 40,
     "rules": [{"t": "set", "p": "payload.a", "pt": "msg", "to": "1", "tot": "num"}],
     "wires": [[]]},
    {"id": "b", "type": "change", "z": "t1", "name": "b", "x": 300, "y": 80,
     "rules": [{"t": "set", "p": "payload.b", "pt": "msg", "to": "2", "tot": "num"}],
     "wires": [[]]},
]  # fmt: skip


def document(name: str, steps: list[dict[str, Any]], source: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"steps": steps}
    if source is not None:
        spec["source"] = source
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }


STEP = {"id": "one", "kind": "transform", "ops": [{"op": "set", "path": "x", "value": 1}]}
EDITED = {"id": "one", "kind": "transform", "ops": [{"op": "set", "path": "x", "value": 2}]}


@pytest.fixture
async def platform(db: Database) -> AsyncIterator[Platform]:
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.2, admission_cache_s=0)
    await platform.accounts.ensure_account("acme")
    async with platform:
        yield platform


async def _rows(platform: Platform, table: sa.Table) -> int:
    return int(
        await platform.db.read(lambda c: c.scalar(sa.select(sa.func.count()).select_from(table)))
    )


async def test_a_source_is_stored_once_and_named_by_every_version(platform: Platform) -> None:
    sent = {"file": "loop.flow.json", "flow": FLOW}
    first = await platform.jobs.apply(document("wf", [STEP], sent), ACME)
    digest = hashlib.sha256(orjson.dumps(FLOW)).hexdigest()
    stored = (await platform.jobs.workflows.get("acme", "wf")).workflow.spec.source
    assert stored is not None
    assert (stored.file, stored.sha256, stored.flow) == ("loop.flow.json", digest, None)
    assert await platform.jobs.workflows.source("acme", digest) == orjson.dumps(FLOW)
    # An edit is a new version naming the same flow, stored once.
    second = await platform.jobs.apply(document("wf", [EDITED], sent), ACME)
    again = await platform.jobs.apply(document("wf", [STEP], sent), ACME)
    assert (first.version, second.version, again.version, again.created) == (1, 2, 1, False)
    assert await _rows(platform, workflow_sources) == 1
    # The digest alone names it once stored: an apply need not send the flow again.
    named = {"file": "loop.flow.json", "sha256": digest}
    third = await platform.jobs.apply(document("wf", [{**STEP, "id": "two"}], named), ACME)
    assert third.version == 3
    # Another flow is another version, even with the same steps.
    other = {"file": "loop.flow.json", "flow": FLOW[:2]}
    assert (await platform.jobs.apply(document("wf", [STEP], other), ACME)).version == 4


async def test_a_source_never_sent_or_not_matching_its_digest_is_refused(
    platform: Platform,
) -> None:
    never = {"file": "x.flow.json", "sha256": "0" * 64}
    with pytest.raises(IRValidationError, match="has not sent"):
        await platform.jobs.apply(document("wf", [STEP], never), ACME)
    wrong = {"file": "x.flow.json", "sha256": "0" * 64, "flow": FLOW}
    with pytest.raises(ValidationError, match="changed since"):
        await platform.jobs.apply(document("wf", [STEP], wrong), ACME)
    assert (await _rows(platform, workflows), await _rows(platform, workflow_sources)) == (0, 0)


async def test_the_step_engine_refuses_a_workflow_whose_import_dropped_a_behaviour(
    platform: Platform,
) -> None:
    imported = from_nodered(TWO_TRIGGERS)
    (workflow,) = imported.workflows
    assert workflow.metadata.labels[DROPPED_LABEL] == "entries"
    body = workflow_document(workflow)
    body["spec"]["engine"] = "step"
    with pytest.raises(UnsupportedFeatureError, match="several triggers"):
        await platform.jobs.apply(body, ACME)
    assert await _rows(platform, workflows) == 0
    # Through the resources: stored as a resource with the reason, but no version.
    applied = await platform.resources.apply(ACME, body)
    ready = applied.document["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "Unsupported")
    assert "several triggers" in ready["message"]
    assert await _rows(platform, workflows) == 0
