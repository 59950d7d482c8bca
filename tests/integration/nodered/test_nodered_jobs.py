"""Jobs on a real Node-RED, end to end, compared with the step engine.

One Fluxo (API on a loopback port, service workers, step engine, the remote-engine runner) and
the session's managed Node-RED. A workflow applied with ``spec.engine: nodered`` is deployed as
its own tab; each job is posted to the tab's entry, every service step calls Fluxo's gateway over
HTTP with the engine token, and the flow reports the end. The same workflow on the step engine
must give the same results and the same usage records.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiohttp import web

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ValidationError
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import usage_records, workflow_sources
from tests.support import services as svc
from tests.support.nodered import RunningNodeRed
from translators.nodered import from_nodered

ACME = Principal(account_id="acme", user_id="ada")
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SAMPLE_FLOW = EXAMPLES / "order-alerts.nodered.json"
SAMPLE_INPUT = EXAMPLES / "order-alerts.input.json"
STEPS = [
    {"id": "first", "kind": "service", "service": "inc", "next": ["route"]},
    {
        "id": "route",
        "kind": "switch",
        "cases": [{"when": {"path": "n", "op": "gt", "value": 10}, "next": ["big"]}],
        "default": ["small"],
    },
    {"id": "big", "kind": "service", "service": "inc", "next": ["bump"]},
    {
        "id": "bump",
        "kind": "transform",
        "ops": [{"op": "set", "path": "big", "value": True}],
        "next": ["last"],
    },
    {"id": "small", "kind": "service", "service": "echo", "next": ["last"]},
    {"id": "last", "kind": "service", "service": "inc"},
]

# A pause between two calls: time to block the account or cancel the job in between.
PAUSED = [
    {"id": "first", "kind": "service", "service": "inc", "next": ["wait"]},
    {"id": "wait", "kind": "delay", "seconds": 1.5, "next": ["second"]},
    {"id": "second", "kind": "service", "service": "inc"},
]


def workflow(name: str, engine: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"engine": engine, "steps": steps or STEPS},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Fluxo:
    platform: Platform
    url: str = ""
    tokens: dict[str, str] | None = None  # "acme", "globex" (users), "globex-engine"

    async def post(self, path: str, who: str, body: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {(self.tokens or {})[who]}"}
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.post(path, json=body, headers=headers)
        return response.status_code, response.json()

    async def run(self, workflow: str, payload: dict[str, Any], timeout: float = 30) -> Any:
        job = await self.platform.jobs.create(ACME, workflow, payload)
        return await self.platform.jobs.wait(ACME, job.id, timeout)

    async def usage(self, job_id: str) -> list[tuple[Any, ...]]:
        query = sa.select(
            usage_records.c.account_id,
            usage_records.c.service,
            usage_records.c.step_id,
            usage_records.c.units,
            usage_records.c.amount_micros,
        ).where(usage_records.c.job_id == job_id)
        rows = await self.platform.db.read(lambda c: c.execute(query).all())
        return sorted(tuple(r) for r in rows)


@pytest.fixture
async def fluxo(db: Database, nodered: RunningNodeRed) -> AsyncIterator[Fluxo]:
    port = free_port()
    config = FluxoConfig(
        home=nodered.managed.home.parent,  # the engine finds the managed login there
        database_url=db.url,
        public_url=f"http://127.0.0.1:{port}",
        nodered_url=nodered.url,
        engines=("step", "nodered"),
        http_allow=("127.0.0.1",),  # the inbound tests' mailbox and broker are on loopback
    )
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        engines=config.engines,
        config=config,
    )
    await platform.accounts.ensure_account("acme")
    await platform.accounts.ensure_account("globex")
    # One engine token per account: acme's flows send FLUXO_TOKEN, globex's FLUXO_TOKEN_GLOBEX.
    await platform.accounts.issue_token("acme", "node-red", engine="nodered", token=nodered.token)
    await platform.accounts.issue_token(
        "globex", "node-red", engine="nodered", token=nodered.globex_token
    )
    tokens = {
        "acme": await platform.accounts.issue_token("acme", "ada"),
        "globex": await platform.accounts.issue_token("globex", "gus"),
        "globex-engine": nodered.globex_token,
    }
    runner = web.AppRunner(create_app(platform, max_packet_bytes=1_048_576))
    async with platform:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield Fluxo(platform, config.gateway_url, tokens)
        finally:
            await runner.cleanup()


async def test_jobs_on_node_red_match_the_step_engine(fluxo: Fluxo) -> None:
    await fluxo.platform.jobs.apply(workflow("route-step", "step"), ACME)
    applied = await fluxo.platform.jobs.apply(workflow("route-nr", "nodered"), ACME)
    assert applied.version == 1
    for payload in ({"n": 1}, {"n": 20}, {"n": 5, "keep": "me"}):
        on_step = await fluxo.run("route-step", payload)
        on_nodered = await fluxo.run("route-nr", payload)
        assert on_step.status == "succeeded", on_step.error
        assert on_nodered.status == "succeeded", on_nodered.error
        assert on_nodered.result == on_step.result
        # The same calls, billed the same: service, step, units and amount per record.
        assert await fluxo.usage(on_nodered.id) == await fluxo.usage(on_step.id)
        shown = await fluxo.platform.jobs.get(ACME, on_nodered.id)
        assert [s.step_id for s in shown.steps or []] == [
            s.step_id
            for s in (await fluxo.platform.jobs.get(ACME, on_step.id)).steps or []
            if s.call_id is not None
        ]


# `with`: static values and JSONata, on an object and on each item of an array; a failing
# expression fails the step, and on_error continue hands its input on.
WITH_STEPS = [
    {
        "id": "tag",
        "kind": "service",
        "service": "echo",
        "with": {
            "source": "web",
            "keep": {"over": [1, None]},
            "double": {"jsonata": "n * 2"},
            "absent": {"jsonata": "no_such_field"},
            "n": {"jsonata": "n + 1"},
        },
        "next": ["risky"],
    },
    {
        "id": "risky",
        "kind": "service",
        "service": "echo",
        "with": {"bad": {"jsonata": "$number(source)"}},
        "on_error": "continue",
        "next": ["last"],
    },
    {"id": "last", "kind": "service", "service": "echo"},
]


async def test_with_sets_the_same_parameters_on_node_red_as_on_the_step_engine(
    fluxo: Fluxo,
) -> None:
    await fluxo.platform.jobs.apply(workflow("with-step", "step", WITH_STEPS), ACME)
    await fluxo.platform.jobs.apply(workflow("with-nr", "nodered", WITH_STEPS), ACME)
    expected_object = {
        "n": 4,
        "keep": {"over": [1, None]},
        "source": "web",
        "double": 6,
        "absent": "a",
    }
    for payload, expected in (
        ({"n": 3, "keep": 1, "absent": "a"}, expected_object),
        ([{"n": 1}, {"n": 5, "keep": 0}], None),
    ):
        on_step = await fluxo.run("with-step", payload)
        on_nodered = await fluxo.run("with-nr", payload)
        assert on_step.status == "succeeded", on_step.error
        assert on_nodered.status == "succeeded", on_nodered.error
        assert on_nodered.result == on_step.result
        if expected is not None:
            assert on_nodered.result == expected
        # risky failed before its call on both engines: no usage record for it.
        assert await fluxo.usage(on_nodered.id) == await fluxo.usage(on_step.id)
        assert [u[2] for u in await fluxo.usage(on_nodered.id)] == ["last", "tag"]


@pytest.mark.parametrize(
    ("retry", "runs"),
    [
        pytest.param(None, 4, id="no-step-retry:the-service-policy"),
        pytest.param({"max_attempts": 1}, 1, id="step-retry-1"),
        pytest.param({"max_attempts": 2, "backoff_s": 0.05}, 2, id="step-retry-2"),
    ],
)
async def test_a_step_retry_replaces_the_services_retry_policy_on_node_red(
    fluxo: Fluxo,
    retry: dict[str, Any] | None,
    runs: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # flaky's own RetryPolicy allows 4 attempts; the flow retries a step with retry itself.
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    step: dict[str, Any] = {"id": "try", "kind": "service", "service": "flaky"}
    if retry is not None:
        step["retry"] = retry
    await fluxo.platform.jobs.apply(workflow(f"flaky-nr-{runs}", "nodered", [step]), ACME)
    job = await fluxo.run(f"flaky-nr-{runs}", {"n": 1, "fail_times": 100})
    assert job.status == "failed"
    assert svc.effects().count("try 1") == runs


async def test_a_blocked_account_fails_the_job_at_its_next_service_step(fluxo: Fluxo) -> None:
    await fluxo.platform.jobs.apply(workflow("blocked-nr", "nodered", PAUSED), ACME)
    job = await fluxo.platform.jobs.create(ACME, "blocked-nr", {"n": 1})
    await until_steps(fluxo, job.id, 1)
    await fluxo.platform.accounts.set_blocked("acme", True, "unpaid invoice")
    ended = await fluxo.platform.jobs.wait(ACME, job.id, 30)
    assert ended.status == "failed"
    assert ended.error is not None
    assert ended.error["step"] == "second"
    assert "unpaid invoice" in ended.error["message"]
    assert [u[2] for u in await fluxo.usage(job.id)] == ["first"]


async def test_cancel_stops_the_run_at_its_next_call(fluxo: Fluxo) -> None:
    await fluxo.platform.jobs.apply(workflow("cancel-nr", "nodered", PAUSED), ACME)
    job = await fluxo.platform.jobs.create(ACME, "cancel-nr", {"n": 1})
    await until_steps(fluxo, job.id, 1)
    cancelled = await fluxo.platform.jobs.cancel(ACME, job.id)
    assert cancelled.status == "cancelled"
    # A job started after the cancel runs the same flow: its delay ends after the cancelled
    # job's, so once its second call is done, the cancelled job's second call came (and was
    # refused) or never will.
    later = await fluxo.run("cancel-nr", {"n": 2})
    assert later.status == "succeeded"
    assert [u[2] for u in await fluxo.usage(later.id)] == ["first", "second"]
    assert [u[2] for u in await fluxo.usage(job.id)] == ["first"]
    assert (await fluxo.platform.jobs.get(ACME, job.id, steps=False)).status == "cancelled"


async def test_a_flow_node_red_cannot_run_is_refused_before_it_is_deployed(
    fluxo: Fluxo, nodered: RunningNodeRed
) -> None:
    async with httpx.AsyncClient(base_url=nodered.url, headers=nodered.admin_headers) as client:
        before = (await client.get("/flows", headers={"Node-RED-API-Version": "v2"})).json()
    steps = [
        {
            "id": "odd",
            "kind": "native",
            "engine": "nodered",
            "config": {"type": "no-such-node", "name": "odd"},
        }
    ]
    with pytest.raises(ValidationError, match="no-such-node"):
        await fluxo.platform.jobs.apply(workflow("odd-nr", "nodered", steps), ACME)
    async with httpx.AsyncClient(base_url=nodered.url, headers=nodered.admin_headers) as client:
        after = (await client.get("/flows", headers={"Node-RED-API-Version": "v2"})).json()
    assert after["rev"] == before["rev"], "Node-RED must not have seen the flow"


async def test_an_apply_the_node_red_engine_refuses_stores_nothing(fluxo: Fluxo) -> None:
    """The version is stored before an external engine is deployed to; a refused deploy takes
    it back, and the source flow it brought, so nothing of the apply remains."""
    good = workflow("atomic-nr", "nodered")
    first = await fluxo.platform.jobs.apply(good, ACME)
    flow = [{"id": "n1", "type": "no-such-node", "z": "t", "x": 1, "y": 1, "wires": []}]
    bad = workflow(
        "atomic-nr",
        "nodered",
        [{"id": "odd", "kind": "native", "engine": "nodered", "config": flow[0]}],
    )
    bad["spec"]["source"] = {"file": "atomic.flow.json", "flow": flow}
    with pytest.raises(ValidationError, match="no-such-node"):
        await fluxo.platform.jobs.apply(bad, ACME)
    store = fluxo.platform.jobs.workflows
    assert (await store.get("acme", "atomic-nr")).version == first.version
    sources = await fluxo.platform.db.read(
        lambda c: c.execute(sa.select(workflow_sources.c.sha256)).all()
    )
    assert sources == []
    # Through the resources too: Ready=False with the engine's reason, and no version.
    applied = await fluxo.platform.resources.apply(ACME, bad)
    ready = applied.document["status"]["conditions"][0]
    assert (ready["status"], "no-such-node" in ready["message"]) == ("False", True)
    assert (await store.get("acme", "atomic-nr")).version == first.version


async def until_steps(fluxo: Fluxo, job_id: str, count: int, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await fluxo.platform.jobs.get(ACME, job_id)
        if len([s for s in job.steps or [] if s.phase == "succeeded"]) >= count:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} has not made {count} call(s): {job}")
        await asyncio.sleep(0.05)


GLOBEX = Principal(account_id="globex", user_id="gus")


async def test_two_accounts_share_one_node_red_each_with_its_own_engine_token(
    fluxo: Fluxo,
) -> None:
    await fluxo.platform.jobs.apply(workflow("tenant-acme", "nodered", PAUSED), ACME)
    await fluxo.platform.jobs.apply(workflow("tenant-globex", "nodered", PAUSED), GLOBEX)
    acme = await fluxo.platform.jobs.create(ACME, "tenant-acme", {"n": 1})
    globex = await fluxo.platform.jobs.create(GLOBEX, "tenant-globex", {"n": 10})
    acme_done = await fluxo.platform.jobs.wait(ACME, acme.id, 30)
    globex_done = await fluxo.platform.jobs.wait(GLOBEX, globex.id, 30)
    assert (acme_done.status, acme_done.result) == ("succeeded", {"n": 3}), acme_done.error
    assert (globex_done.status, globex_done.result) == ("succeeded", {"n": 12}), globex_done.error
    assert {u[0] for u in await fluxo.usage(acme.id)} == {"acme"}
    assert {u[0] for u in await fluxo.usage(globex.id)} == {"globex"}


def tagged(owner: str, *steps: dict[str, Any]) -> list[dict[str, Any]]:
    """``steps`` in a chain, then a transform setting ``owner``."""
    chain = [{**step, "next": [nxt["id"]]} for step, nxt in itertools.pairwise(steps)]
    chain.append({**steps[-1], "next": ["tag"]})
    tag = {
        "id": "tag",
        "kind": "transform",
        "ops": [{"op": "set", "path": "owner", "value": owner}],
    }
    return [*chain, tag]


async def test_two_accounts_workflows_of_one_name_run_apart_on_one_node_red(
    fluxo: Fluxo, nodered: RunningNodeRed
) -> None:
    inc = {"kind": "service", "service": "inc"}
    mine = workflow("shared-nr", "nodered", tagged("acme", {"id": "bump", **inc}))
    theirs = workflow(
        "shared-nr", "nodered", tagged("globex", {"id": "bump", **inc}, {"id": "again", **inc})
    )
    await fluxo.platform.jobs.apply(mine, ACME)
    await fluxo.platform.jobs.apply(theirs, GLOBEX)  # must leave acme's tab alone
    async with httpx.AsyncClient(base_url=nodered.url) as client:
        headers = {**nodered.admin_headers, "Node-RED-API-Version": "v2"}
        flows = (await client.get("/flows", headers=headers)).json()
    labels = {n["label"] for n in flows["flows"] if n["type"] == "tab"}
    assert {"acme/shared-nr@1", "globex/shared-nr@1"} <= labels

    acme = await fluxo.platform.jobs.create(ACME, "shared-nr", {"n": 1})
    globex = await fluxo.platform.jobs.create(GLOBEX, "shared-nr", {"n": 10})
    acme_done = await fluxo.platform.jobs.wait(ACME, acme.id, 30)
    globex_done = await fluxo.platform.jobs.wait(GLOBEX, globex.id, 30)

    assert (acme_done.status, acme_done.result) == ("succeeded", {"n": 2, "owner": "acme"}), (
        acme_done.error
    )
    assert (globex_done.status, globex_done.result) == (
        "succeeded",
        {"n": 12, "owner": "globex"},
    ), globex_done.error
    assert [(u[0], u[2]) for u in await fluxo.usage(acme.id)] == [("acme", "bump")]
    assert [(u[0], u[2]) for u in await fluxo.usage(globex.id)] == [
        ("globex", "again"),
        ("globex", "bump"),
    ]


async def test_another_accounts_tokens_cannot_touch_a_node_red_job(fluxo: Fluxo) -> None:
    await fluxo.platform.jobs.apply(workflow("guarded-nr", "nodered", PAUSED), ACME)
    job = await fluxo.platform.jobs.create(ACME, "guarded-nr", {"n": 1})
    await until_steps(fluxo, job.id, 1)
    packet = {
        "id": "nr-forged-1",
        "job_id": job.id,
        "step_id": "second",
        "payload": {"n": 100},
        "headers": {"fluxo-step-key": "second"},
    }
    # Globex's engine token: the job does not exist for it, whatever it tries.
    status, body = await fluxo.post("/v1/services/inc/calls?wait=5", "globex-engine", packet)
    assert status == 404, body
    ref = {**packet, "id": "nr-forged-2", "headers": {"fluxo-payload-ref": job.id}}
    status, body = await fluxo.post("/v1/services/inc/calls?wait=5", "globex-engine", ref)
    assert status == 404, body
    forged = {"job_id": job.id, "status": "succeeded", "result": [{"n": 999}]}
    for path in ("/v1/engine-events", f"/v1/jobs/{job.id}/engine-events"):
        status, body = await fluxo.post(path, "globex-engine", forged)
        assert status == 404, (path, body)
    # User tokens, of another account or of the job's own, never write a job's steps.
    for who in ("globex", "acme"):
        status, body = await fluxo.post("/v1/services/inc/calls?wait=5", who, packet)
        assert status == 422, (who, body)
        assert {p["location"] for p in body["error"]["problems"]} == {
            "body.job_id",
            "body.step_id",
            "body.headers.fluxo-step-key",
        }
    ended = await fluxo.platform.jobs.wait(ACME, job.id, 30)
    assert (ended.status, ended.result) == ("succeeded", {"n": 3}), ended.error
    assert [(s.step_id, s.input) for s in ended.steps or []] == [
        ("first", {"n": 1}),
        ("second", {"n": 2}),
    ]
    assert [u[2] for u in await fluxo.usage(job.id)] == ["first", "second"]


async def test_a_result_the_recorded_calls_did_not_produce_is_refused(fluxo: Fluxo) -> None:
    await fluxo.platform.jobs.apply(workflow("forged-nr", "nodered", PAUSED), ACME)
    job = await fluxo.platform.jobs.create(ACME, "forged-nr", {"n": 1})
    await until_steps(fluxo, job.id, 1)
    # The job's own engine token (the flows' FLUXO_TOKEN), reporting a result no call produced.
    fluxo.tokens = {**(fluxo.tokens or {}), "acme-engine": await engine_token(fluxo)}
    forged = {"job_id": job.id, "status": "succeeded", "result": [{"n": 999}]}
    status, body = await fluxo.post("/v1/engine-events", "acme-engine", forged)
    assert status == 409, body
    assert body["error"]["context"]["field"] == "body.result"
    assert (await fluxo.platform.jobs.get(ACME, job.id, steps=False)).status == "running"
    ended = await fluxo.platform.jobs.wait(ACME, job.id, 30)
    assert (ended.status, ended.result) == ("succeeded", {"n": 3}), ended.error


async def engine_token(fluxo: Fluxo) -> str:
    """A second engine token of acme (the flows' own is the session's FLUXO_TOKEN)."""
    return await fluxo.platform.accounts.issue_token("acme", "node-red-2", engine="nodered")


async def test_the_readme_sample_flow_runs_on_node_red_as_imported(fluxo: Fluxo) -> None:
    """The README tour: `fluxo import nodered examples/order-alerts.nodered.json`, then apply."""
    (imported,) = from_nodered(SAMPLE_FLOW.read_text()).workflows
    document = imported.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert document["spec"]["engine"] == "nodered"
    # A name of its own per test: the session's Node-RED is shared by every test's Fluxo, and the
    # other database's run deployed "order-alerts" there already (with its own gateway URL).
    name = f"order-alerts-{uuid.uuid4().hex[:8]}"
    document["metadata"]["name"] = name
    await fluxo.platform.jobs.apply(document, ACME)
    order = json.loads(SAMPLE_INPUT.read_text())
    result = await fluxo.run(name, order)
    assert result.status == "succeeded", result.error
    assert result.result == {
        **order,
        "total": 547.5,
        "lines": 2,
        "priority": "high",
        "message": "LARGE order SO-2001 from grace@example.com: 547.5 EUR in 2 line(s)",
    }
