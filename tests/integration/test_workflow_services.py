"""Workflows as services, on SQLite and PostgreSQL: a workflow of account ``pub`` published as
a Service and called from a step-engine workflow of account ``acme``.

The caller's step gets the child job's result (an array: 1 -> N outputs); the caller pays the
service's price, the publisher pays the calls inside the child job, and the child job names the
caller's job, step and call. A cycle is refused at apply; the depth header stops a chain at run
time; a child's failure is the step's failure with the child's step; a block of the publisher
blocks the caller's job without telling it the publisher's reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.billing import money_text
from fluxo.control.platform import Platform
from fluxo.control.workflow_services import DEPTH_HEADER, MAX_DEPTH
from fluxo_core.errors import PermissionDeniedError, ValidationError
from fluxo_core.storage import Database, Principal, Role
from fluxo_core.storage.tables import jobs, usage_records
from service_runtime import Outputs, Price, service
from tests.support import services as svc
from tests.support.fluxo_process import run_fluxo

pytestmark = pytest.mark.timeout(90)

ADMIN = Principal(account_id="default", user_id="admin")
PUB = Principal(account_id="pub", user_id="pat")
ACME = Principal(account_id="acme", user_id="ada")


def workflow(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"engine": "step", "steps": steps, **spec},
    }


def published(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "workflow": {"name": target, "account": "pub"},
            "price": {"perCall": "0.25", "currency": "EUR"},
            "visibility": {"scope": "public"},
            **spec,
        },
    }


# The publisher's workflow: two priced steps (0.001 EUR each), the second one 1 -> N.
DOUBLE = workflow(
    "double",
    [
        {"id": "bump", "kind": "service", "service": "inc", "next": ["spread"]},
        {"id": "spread", "kind": "service", "service": "fan-out"},
    ],
    input_schema={"type": "object", "required": ["items"]},
)
FAILING = workflow(
    "failing",
    [
        {"id": "ok", "kind": "service", "service": "inc", "next": ["boom"]},
        {"id": "boom", "kind": "service", "service": "broken"},
    ],
)


def caller(service: str) -> dict[str, Any]:
    return workflow(
        "buyer",
        [
            {"id": "buy", "kind": "service", "service": service, "next": ["after"]},
            {"id": "after", "kind": "service", "service": "echo"},
        ],
    )


@pytest.fixture
async def fluxo(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Platform]:
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    platform = Platform(db, svc.SERVICES, workers=2, poll_interval_s=0.1)
    for account in ("acme", "pub", "default"):
        await platform.accounts.ensure_account(account)
    async with platform:
        yield platform


async def usage(db: Database) -> list[dict[str, Any]]:
    u = usage_records
    query = sa.select(
        u.c.account_id, u.c.service, u.c.job_id, u.c.step_id, u.c.amount_micros, u.c.call_id
    ).order_by(u.c.id)
    return [dict(r._mapping) for r in await db.read(lambda c: c.execute(query).all())]


async def children(db: Database) -> list[dict[str, Any]]:
    j = jobs
    query = sa.select(
        j.c.id,
        j.c.account_id,
        j.c.workflow,
        j.c.status,
        j.c.parent_job_id,
        j.c.parent_step_id,
        j.c.parent_call_id,
        j.c.via_service,
    ).where(j.c.parent_call_id.is_not(None))
    return [dict(r._mapping) for r in await db.read(lambda c: c.execute(query).all())]


async def test_a_published_workflow_answers_a_step_engine_caller_and_each_account_pays_its_part(
    fluxo: Platform,
) -> None:
    await fluxo.jobs.apply(DOUBLE, PUB)
    applied = await fluxo.resources.apply(ADMIN, published("doubler", "double"))
    assert [c["status"] for c in applied.document["status"]["conditions"]] == ["True"]
    [info] = [i for i in await fluxo.runtime.catalog.list() if i.name == "doubler"]
    assert info.input_schema == {"type": "object", "required": ["items"]}  # the workflow's
    assert info.to_dict()["price"]["per_call"] == "0.25"

    await fluxo.jobs.apply(caller("doubler"), ACME)
    job = await fluxo.jobs.create(ACME, "buyer", {"items": ["a", "b"]})
    done = await fluxo.jobs.wait(ACME, job.id, 60)
    assert done.status == "succeeded", done.error
    # The child's two results are two output packets of the step: echo ran once for each.
    assert sorted(done.result, key=lambda r: r["index"]) == [
        {"item": "a", "index": 0},
        {"item": "b", "index": 1},
    ]

    [child] = await children(fluxo.db)
    assert child["account_id"] == "pub"
    assert (child["workflow"], child["status"], child["via_service"]) == (
        "double",
        "succeeded",
        "doubler",
    )
    assert (child["parent_job_id"], child["parent_step_id"]) == (job.id, "buy")

    entries = await usage(fluxo.db)
    caller_side = [
        (e["account_id"], e["service"], e["step_id"], e["amount_micros"])
        for e in entries
        if e["job_id"] == job.id
    ]
    assert sorted(caller_side) == sorted(
        [
            ("acme", "doubler", "buy", 250_000),
            ("acme", "echo", "after", 1_000),
            ("acme", "echo", "after", 1_000),
        ]
    )
    [bought] = [e for e in entries if e["service"] == "doubler"]
    assert bought["call_id"] == child["parent_call_id"]
    inside = [
        (e["account_id"], e["service"], e["amount_micros"])
        for e in entries
        if e["job_id"] == child["id"]
    ]
    # inc (0.001) and fan-out (0.01 per call + 0.002 per item, two items): the publisher's cost.
    assert sorted(inside) == [("pub", "fan-out", 14_000), ("pub", "inc", 1_000)]


async def test_a_failing_child_fails_the_callers_step_naming_the_childs_step(
    fluxo: Platform,
) -> None:
    await fluxo.jobs.apply(FAILING, PUB)
    await fluxo.resources.apply(ADMIN, published("fails", "failing"))
    await fluxo.jobs.apply(caller("fails"), ACME)
    job = await fluxo.jobs.create(ACME, "buyer", {"n": 1})
    done = await fluxo.jobs.wait(ACME, job.id, 60)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["step"] == "buy"
    assert done.error["context"]["child_step"] == "boom"
    assert "at step 'boom'" in done.error["message"]
    # The failed call is not billed to the caller (the price policy bills successes only).
    assert [e for e in await usage(fluxo.db) if e["service"] == "fails"] == []


async def test_a_cycle_of_workflow_services_is_refused_at_apply_naming_it(
    fluxo: Platform,
) -> None:
    # ping calls the service "pong-svc", whose workflow pong calls "ping-svc": publishing
    # ping as ping-svc closes the cycle.
    await fluxo.jobs.apply(
        workflow("pong", [{"id": "p", "kind": "service", "service": "echo"}]), PUB
    )
    await fluxo.resources.apply(ADMIN, published("pong-svc", "pong"))
    await fluxo.jobs.apply(
        workflow("ping", [{"id": "call", "kind": "service", "service": "pong-svc"}]), PUB
    )
    await fluxo.resources.apply(ADMIN, published("ping-svc", "ping"))  # no cycle yet
    # A new version of pong (published as latest) calling ping-svc closes the cycle.
    with pytest.raises(ValidationError) as info:
        await fluxo.jobs.apply(
            workflow("pong", [{"id": "call", "kind": "service", "service": "ping-svc"}]), PUB
        )
    assert (
        "service pong-svc -> workflow pong -> service ping-svc -> workflow ping -> service pong-svc"
        in info.value.message
    )
    # Published pinned to version 1 instead, pong may change: publishing it as "latest" again
    # (a Service apply) is what names the cycle then.
    await fluxo.resources.apply(
        ADMIN,
        published("pong-svc", "pong")
        | {
            "spec": {
                **published("pong-svc", "pong")["spec"],
                "workflow": {"name": "pong", "version": 1, "account": "pub"},
            }
        },
    )
    await fluxo.jobs.apply(
        workflow("pong", [{"id": "call", "kind": "service", "service": "ping-svc"}]), PUB
    )
    with pytest.raises(ValidationError) as info:
        await fluxo.resources.apply(ADMIN, published("pong-svc", "pong"))
    assert "service pong-svc -> workflow pong -> service ping-svc" in info.value.message


async def test_the_depth_header_stops_a_chain_of_workflow_services(fluxo: Platform) -> None:
    await fluxo.jobs.apply(DOUBLE, PUB)
    await fluxo.resources.apply(ADMIN, published("doubler", "double"))
    await fluxo.jobs.apply(caller("doubler"), ACME)
    deep = await fluxo.jobs.create(
        ACME, "buyer", {"items": ["a"]}, headers={DEPTH_HEADER: str(MAX_DEPTH)}
    )
    done = await fluxo.jobs.wait(ACME, deep.id, 60)
    assert done.status == "failed"
    assert done.error is not None
    assert "over the limit" in done.error["message"]
    assert await children(fluxo.db) == []  # no child job started


async def test_a_block_of_the_publisher_blocks_the_caller_without_its_reason(
    fluxo: Platform,
) -> None:
    await fluxo.jobs.apply(DOUBLE, PUB)
    await fluxo.resources.apply(ADMIN, published("doubler", "double"))
    await fluxo.jobs.apply(caller("doubler"), ACME)
    await fluxo.blocks.place(ADMIN, kind="account", account="pub", reason="unpaid invoice 42")
    job = await fluxo.jobs.create(ACME, "buyer", {"items": ["a"]})
    done = await fluxo.jobs.wait(ACME, job.id, 60)
    assert done.status == "blocked"
    assert done.error is not None
    assert done.error["step"] == "buy"
    assert "unavailable" in done.error["message"]
    assert "unpaid" not in str(done.error)
    assert done.error.get("block_reason") is None


ITEMS_SCHEMA = {"type": "object", "required": ["items"]}


@service("py-doubler", input_schema=ITEMS_SCHEMA, price=Price(per_call="0.25"))
async def py_doubler(payload: dict[str, Any]) -> Outputs:
    """What workflow ``double`` computes, as Python: one output per item."""
    return Outputs({"item": item, "index": i} for i, item in enumerate(payload["items"]))


def shape(value: Any) -> Any:
    """A JSON value with its scalars replaced by their types: what a client parses."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


async def test_a_published_workflow_and_a_python_service_answer_the_same_http_shapes(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXO_TEST_EFFECTS", str(tmp_path / "effects.log"))
    platform = Platform(db, [*svc.SERVICES, py_doubler], workers=2, poll_interval_s=0.1)
    for account in ("acme", "pub", "default"):
        await platform.accounts.ensure_account(account)
    async with platform:
        await platform.jobs.apply(DOUBLE, PUB)
        await platform.resources.apply(ADMIN, published("doubler", "double"))
        token = await platform.accounts.issue_token("acme", "ada")
        headers = {"Authorization": f"Bearer {token}"}
        answers: dict[str, list[tuple[int, Any]]] = {}
        async with TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http:
            listed = await (await http.get("/v1/services", headers=headers)).json()
            by_name = {i["name"]: i for i in listed["items"]}
            assert shape(by_name["doubler"]) == shape(by_name["py-doubler"])
            assert by_name["doubler"]["input_schema"] == by_name["py-doubler"]["input_schema"]
            for name in ("doubler", "py-doubler"):
                answers[name] = []
                for body in ({"items": ["a", "b"]}, {"wrong": 1}):
                    response = await http.post(
                        f"/v1/services/{name}/calls?wait=30",
                        json={"payload": body},
                        headers=headers,
                    )
                    answers[name].append((response.status, await response.json()))
        (ok_wf, bad_wf), (ok_py, bad_py) = answers["doubler"], answers["py-doubler"]
        assert ok_wf[0] == ok_py[0] == 200, (ok_wf, ok_py)
        assert shape(ok_wf[1]) == shape(ok_py[1])
        payloads = [[p["payload"] for p in ok[1]["result"]] for ok in (ok_wf, ok_py)]
        assert payloads[0] == payloads[1] == [{"item": "a", "index": 0}, {"item": "b", "index": 1}]
        assert bad_wf[0] == bad_py[0] == 422
        assert shape(bad_wf[1]) == shape(bad_py[1])
        assert bad_wf[1]["error"]["code"] == bad_py[1]["error"]["code"]
        assert bad_wf[1]["error"]["message"].replace("doubler@1", "X") == bad_py[1]["error"][
            "message"
        ].replace("py-doubler@1", "X")


async def test_the_margin_report_is_the_ledger_sums_and_only_the_publishers(
    fluxo: Platform,
) -> None:
    await fluxo.jobs.apply(DOUBLE, PUB)
    await fluxo.resources.apply(ADMIN, published("doubler", "double"))
    await fluxo.jobs.apply(caller("doubler"), ACME)
    for n in (1, 3):
        job = await fluxo.jobs.create(ACME, "buyer", {"items": ["x"] * n})
        done = await fluxo.jobs.wait(ACME, job.id, 60)
        assert done.status == "succeeded", done.error["message"] if done.error else None
    period = datetime.fromtimestamp(fluxo.clock.time(), UTC).strftime("%Y-%m")
    report = await fluxo.workflow_services.margin(PUB, period)
    entries = await usage(fluxo.db)
    child_ids = {c["id"] for c in await children(fluxo.db)}
    revenue = sum(e["amount_micros"] for e in entries if e["service"] == "doubler")
    cost = sum(e["amount_micros"] for e in entries if e["job_id"] in child_ids)
    assert (revenue, cost) == (500_000, 2 * 1_000 + 2 * 10_000 + 4 * 2_000)
    assert report == {
        "period": period,
        "items": [
            {
                "service": "doubler",
                "currency": "EUR",
                "calls": 2,
                "revenue": money_text(revenue),
                "cost": money_text(cost),
                "margin": money_text(revenue - cost),
            }
        ],
    }
    # The caller publishes nothing: its report is empty; a member may not read one.
    assert (await fluxo.workflow_services.margin(ACME, period))["items"] == []
    with pytest.raises(PermissionDeniedError):
        await fluxo.workflow_services.margin(
            Principal(account_id="pub", user_id="m", role=Role.MEMBER), period
        )


def test_fluxo_billing_margin_prints_the_report_of_the_local_database(tmp_path: Path) -> None:
    async def publish_and_buy() -> dict[str, Any]:
        db = Database(f"sqlite:///{tmp_path / 'fluxo.db'}")
        await db.migrate()
        platform = Platform(db, svc.SERVICES, workers=2, poll_interval_s=0.1)
        for account in ("acme", "pub", "default"):
            await platform.accounts.ensure_account(account)
        try:
            async with platform:
                await platform.jobs.apply(DOUBLE, PUB)
                await platform.resources.apply(ADMIN, published("doubler", "double"))
                await platform.jobs.apply(caller("doubler"), ACME)
                job = await platform.jobs.create(ACME, "buyer", {"items": ["x", "y"]})
                assert (await platform.jobs.wait(ACME, job.id, 60)).status == "succeeded"
                period = datetime.fromtimestamp(platform.clock.time(), UTC).strftime("%Y-%m")
                return await platform.workflow_services.margin(PUB, period)
        finally:
            await db.close()

    report = asyncio.run(publish_and_buy())
    shown = run_fluxo(
        "billing", "margin", "--account", "pub", "--period", report["period"], "-o", "json",
        home=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == report
    assert report["items"][0]["revenue"] == "0.25"
    table = run_fluxo("billing", "margin", "--account", "pub", home=tmp_path)
    assert table.returncode == 0, table.stderr
    [line] = [row for row in table.stdout.splitlines() if row.startswith("doubler")]
    assert line.split() == ["doubler", "EUR", "1", "0.25", "0.015", "0.235"]


async def test_cancelling_the_callers_job_cancels_the_child(fluxo: Platform) -> None:
    await fluxo.jobs.apply(
        workflow("waits", [{"id": "hold", "kind": "service", "service": "slow"}]), PUB
    )
    await fluxo.resources.apply(ADMIN, published("waiter", "waits"))
    await fluxo.jobs.apply(caller("waiter"), ACME)
    job = await fluxo.jobs.create(ACME, "buyer", {"n": 1, "sleep": 2})

    async def child_started() -> list[dict[str, Any]]:
        while not (found := await children(fluxo.db)):
            await asyncio.sleep(0.05)
        return found

    [child] = await asyncio.wait_for(child_started(), 30)
    cancelled = await fluxo.jobs.cancel(ACME, job.id)
    assert cancelled.status == "cancelled"
    [child] = await children(fluxo.db)
    assert child["status"] == "cancelled"
    assert child["account_id"] == "pub"


async def test_a_private_published_workflow_is_neither_listed_nor_callable_by_others(
    fluxo: Platform,
) -> None:
    await fluxo.jobs.apply(DOUBLE, PUB)
    await fluxo.resources.apply(
        ADMIN, published("private-doubler", "double", visibility={"scope": "account"})
    )
    await fluxo.resources.apply(
        ADMIN,
        published(
            "shared-doubler", "double", visibility={"scope": "accounts", "accounts": ["acme"]}
        ),
    )
    tokens = {
        who: await fluxo.accounts.issue_token(who, "someone") for who in ("acme", "pub", "default")
    }
    async with TestClient(TestServer(create_app(fluxo, max_packet_bytes=65536))) as http:
        listed = {}
        for who, token in tokens.items():
            answer = await http.get("/v1/services", headers={"Authorization": f"Bearer {token}"})
            listed[who] = {i["name"] for i in (await answer.json())["items"]} & {
                "private-doubler",
                "shared-doubler",
            }
        response = await http.post(
            "/v1/services/private-doubler/calls?wait=30",
            json={"payload": {"items": ["a"]}},
            headers={"Authorization": f"Bearer {tokens['acme']}"},
        )
        assert response.status == 404, await response.text()
        assert "private-doubler" in (await response.json())["error"]["message"]
    assert listed == {
        "acme": {"shared-doubler"},
        "pub": {"private-doubler", "shared-doubler"},
        "default": set(),
    }
    # A step-engine caller of another account fails the step, and no child job starts.
    await fluxo.jobs.apply(caller("private-doubler"), ACME)
    job = await fluxo.jobs.create(ACME, "buyer", {"items": ["a"]})
    done = await fluxo.jobs.wait(ACME, job.id, 60)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["message"] == "no service named 'private-doubler'"
    assert await children(fluxo.db) == []


async def test_a_workflow_may_not_take_the_name_of_a_python_service(fluxo: Platform) -> None:
    await fluxo.jobs.apply(DOUBLE, PUB)
    with pytest.raises(ValidationError, match="'inc' is already published"):
        await fluxo.resources.apply(ADMIN, published("inc", "double"))
    [info] = [i for i in await fluxo.runtime.catalog.list() if i.name == "inc"]
    assert info.description != "workflow double as a service"


async def test_a_block_of_the_caller_stops_its_child_and_resume_buys_again(
    fluxo: Platform,
) -> None:
    await fluxo.jobs.apply(
        workflow("waits", [{"id": "hold", "kind": "service", "service": "slow"}]), PUB
    )
    await fluxo.resources.apply(ADMIN, published("waiter", "waits"))
    await fluxo.jobs.apply(caller("waiter"), ACME)
    job = await fluxo.jobs.create(ACME, "buyer", {"n": 1, "sleep": 2.5})

    async def child_started() -> list[dict[str, Any]]:
        while not (found := await children(fluxo.db)):
            await asyncio.sleep(0.05)
        return found

    await asyncio.wait_for(child_started(), 30)
    block = await fluxo.blocks.place(ACME, kind="workflow", target="buyer", reason="audit")
    stopped = await fluxo.jobs.wait(ACME, job.id, 30)
    assert stopped.status == "blocked"
    assert stopped.error is not None
    assert (stopped.error["step"], stopped.error["block_id"]) == ("buy", block.id)
    [first] = await children(fluxo.db)
    assert first["status"] == "cancelled"

    await fluxo.blocks.lift(ACME, block.id)
    await fluxo.job_control.resume(ACME, job.id)
    done = await fluxo.jobs.wait(ACME, job.id, 60)
    assert done.status == "succeeded", done.error
    assert done.result == {"n": 1, "done": True}
    assert sorted(c["status"] for c in await children(fluxo.db)) == ["cancelled", "succeeded"]
    # The caller paid once: for the call that answered.
    assert [e["amount_micros"] for e in await usage(fluxo.db) if e["service"] == "waiter"] == [
        250_000
    ]
