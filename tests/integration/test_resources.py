"""Declarative resources on SQLite and PostgreSQL: versions, 409 on a stale apply (also with
two concurrent writers), located validation errors, controllers' status, account scoping, and
the same over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo.control.resources import ControllerRegistry, ResourceService
from fluxo_core.clock import ManualClock
from fluxo_core.errors import (
    AuthError,
    ConflictError,
    IRValidationError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from fluxo_core.storage import Database, Principal, Role, ServiceStore
from fluxo_core.storage.resources import ResourceStore, ResourceWrite
from fluxo_core.storage.users import UserStore
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

ACME = Principal(account_id="acme", user_id="ada")
GLOBEX = Principal(account_id="globex", user_id="gus")
ADMIN = Principal(account_id="default", user_id="admin")


def workflow(name: str = "greet", service: str = "echo", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name, **meta},
        "spec": {"steps": [{"id": "first", "kind": "service", "service": service}]},
    }


def quota(name: str = "monthly", calls: int = 100, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Quota",
        "metadata": {"name": name, **meta},
        "spec": {"kind": "calls", "limit": calls, "period": "month"},
    }


@dataclass
class World:
    platform: Platform
    clock: ManualClock


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    clock = ManualClock()
    platform = Platform(db, svc.SERVICES, workers=1, clock=clock)
    for account in ("default", "acme", "globex"):
        await platform.accounts.ensure_account(account)
    async with platform:
        yield World(platform, clock)


def conditions(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in document["status"]["conditions"]}


# --- versions and conflicts ----------------------------------------------------------------------


async def test_resource_version_grows_on_every_write_and_generation_only_with_the_spec(
    world: World,
) -> None:
    resources = world.platform.resources
    created = await resources.apply(ACME, quota())
    assert created.outcome == "created"
    meta = created.document["metadata"]
    # Stored (1), then its status written by the platform (2).
    assert (meta["resourceVersion"], meta["generation"]) == ("2", 1)

    again = await resources.apply(ACME, quota())
    assert again.outcome == "unchanged"
    assert again.document["metadata"]["resourceVersion"] == "2"

    labelled = await resources.apply(ACME, quota(labels={"team": "ops"}))
    assert labelled.outcome == "configured"
    assert labelled.document["metadata"]["generation"] == 1  # labels are not the spec
    assert int(labelled.document["metadata"]["resourceVersion"]) > 2

    changed = await resources.apply(ACME, quota(calls=200, labels={"team": "ops"}))
    assert changed.outcome == "configured"
    assert changed.document["metadata"]["generation"] == 2
    assert changed.document["status"]["observedGeneration"] == 2
    assert changed.document["metadata"]["uid"] == created.document["metadata"]["uid"]


async def test_a_stale_apply_is_refused_with_409_naming_both_versions_and_the_fix(
    world: World,
) -> None:
    resources = world.platform.resources
    first = await resources.apply(ACME, quota())
    read = first.document["metadata"]["resourceVersion"]
    # Someone else changes it after we read it.
    await resources.apply(ACME, quota(calls=5))
    stored = (await resources.get(ACME, "quota", "monthly"))["metadata"]["resourceVersion"]

    with pytest.raises(ConflictError) as caught:
        await resources.apply(ACME, quota(calls=7, resourceVersion=read))
    error = caught.value
    assert error.http_status == 409
    assert "quota/monthly" in error.message
    assert f"metadata.resourceVersion {read}" in error.message
    assert f"the stored one is {stored}" in error.message
    assert "get it again" in error.message
    assert (await resources.get(ACME, "quota", "monthly"))["spec"]["limit"] == 5

    # With the current version it applies.
    fresh = await resources.apply(ACME, quota(calls=7, resourceVersion=stored))
    assert fresh.outcome == "configured"


async def test_a_resource_version_for_a_resource_that_is_gone_is_a_conflict(world: World) -> None:
    with pytest.raises(ConflictError, match="does not exist"):
        await world.platform.resources.apply(ACME, quota(resourceVersion="3"))


async def test_two_concurrent_writers_of_the_same_version_one_wins_one_gets_409(
    db: Database, database_url: str
) -> None:
    """Two writers read version N and apply at once, each on its own database connection
    pool: exactly one is applied, the other is refused, never last-write-wins."""
    other = Database(database_url)
    try:
        stores = [ResourceStore(db), ResourceStore(other)]
        row, _ = await stores[0].apply("acme", ResourceWrite("Quota", "q", {"calls": 1}))
        read = str(row.resource_version)
        for round_ in range(5):
            writes = [
                store.apply(
                    "acme",
                    ResourceWrite("Quota", "q", {"calls": 10 * round_ + n}, resource_version=read),
                )
                for n, store in enumerate(stores)
            ]
            outcomes = await asyncio.gather(*writes, return_exceptions=True)
            won = [o for o in outcomes if not isinstance(o, BaseException)]
            lost = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(won) == 1, outcomes
            assert len(lost) == 1, outcomes
            assert isinstance(lost[0], ConflictError), lost[0]
            winner, outcome = won[0]
            assert outcome == "configured"
            stored = await stores[0].get("acme", "Quota", "q")
            assert stored.spec == winner.spec
            assert stored.resource_version == int(read) + 1
            read = str(stored.resource_version)
    finally:
        await other.close()


# --- validation ----------------------------------------------------------------------------------


async def test_bad_documents_are_refused_with_every_problem_located(world: World) -> None:
    resources = world.platform.resources
    bad_service = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Service",
        "metadata": {"name": "echo"},
        "spec": {"price": {"perCall": 0.1, "currency": "euro"}, "limits": {"maxAttempts": 0}},
    }
    with pytest.raises(ValidationError) as caught:
        await resources.apply(ADMIN, bad_service)
    where = {loc for loc, _ in caught.value.problems}
    assert where == {"spec.price.perCall", "spec.price.currency", "spec.limits.maxAttempts"}
    assert "quote it in YAML" in caught.value.message

    documents = [
        quota("fine"),
        {**quota("no-limit"), "spec": {"kind": "calls", "period": "day"}},
        {**quota("typo"), "spec": {"cals": 5}},
        {**quota("odd"), "kind": "Gizmo"},
        {**workflow(), "spec": {"steps": [{"id": "a", "kind": "service"}]}},
    ]
    with pytest.raises(ValidationError) as caught:
        await resources.apply_all(ACME, documents)
    problems = dict(caught.value.problems)
    assert "documents[1].spec.limit" in problems, problems
    assert "unknown field" in problems["documents[2].spec.cals"]
    assert "unknown kind" in problems["documents[3].kind"]
    assert any(loc.startswith("documents[4].spec.steps[0]") for loc in problems), problems
    assert "documents[0]" not in " ".join(problems)
    # Nothing was applied, not even the valid first document.
    assert await resources.list(ACME, "quotas") == []


async def test_a_workflow_naming_an_unknown_service_is_refused_before_it_is_stored(
    world: World,
) -> None:
    with pytest.raises(IRValidationError) as caught:
        await world.platform.resources.apply(ACME, workflow(service="ehco"))
    assert any("ehco" in message for _, message in caught.value.problems)
    assert await world.platform.resources.list(ACME, "wf") == []


async def test_status_in_an_applied_document_is_ignored_with_a_warning(world: World) -> None:
    forged = {
        **quota(),
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Forged"}]},
    }
    applied = await world.platform.resources.apply(ACME, forged)
    assert applied.warnings
    assert "ignored" in applied.warnings[0]
    assert conditions(applied.document) == {"Ready": ("True", "Enforced")}


async def test_what_get_returns_applies_again_unchanged(world: World) -> None:
    resources = world.platform.resources
    await resources.apply(ACME, workflow(labels={"team": "ops"}))
    document = await resources.get(ACME, "workflows", "greet")
    again = await resources.apply(ACME, document)
    assert again.outcome == "unchanged"


# --- controllers -----------------------------------------------------------------------------


async def test_a_workflow_resource_becomes_a_workflow_version_with_a_ready_status(
    world: World,
) -> None:
    resources = world.platform.resources
    applied = await resources.apply(ACME, workflow())
    assert conditions(applied.document) == {"Ready": ("True", "Applied")}
    assert applied.document["status"]["version"] == 1
    stored = await world.platform.workflows.get("acme", "greet")
    assert stored.version == 1

    changed = workflow(service="fan-out")
    applied = await resources.apply(ACME, changed)
    assert applied.document["status"]["version"] == 2
    assert (await world.platform.workflows.get("acme", "greet")).version == 2
    # The job path uses it.
    job = await world.platform.jobs.create(ACME, "greet", {"items": [1]})
    assert job.version == 2


async def test_a_quota_resource_is_the_quota_admission_enforces_until_it_is_deleted(
    world: World,
) -> None:
    quotas = world.platform.quotas
    applied = await world.platform.resources.apply(ACME, quota("monthly", calls=3))
    assert conditions(applied.document) == {"Ready": ("True", "Enforced")}
    stored = await quotas.get("acme", "monthly")
    assert (stored.kind, stored.limit, stored.spec.period) == ("calls", 3, "month")
    await world.platform.resources.apply(ACME, quota("monthly", calls=5))
    assert (await quotas.get("acme", "monthly")).limit == 5
    # The quota store's own rules, located under spec: a rate has no month.
    bad = {**quota("fast"), "spec": {"kind": "rate", "limit": 5, "period": "month"}}
    with pytest.raises(ValidationError) as caught:
        await world.platform.resources.apply(ACME, bad)
    assert [loc for loc, _ in caught.value.problems] == ["spec.period"], caught.value.problems
    await world.platform.resources.delete(ACME, "quota", "monthly")
    with pytest.raises(NotFoundError):
        await quotas.get("acme", "monthly")


def user(name: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "User",
        "metadata": {"name": name},
        "spec": {"email": f"{name}@example.com", "role": role},
    }


def block(name: str, kind: str, target: str, reason: str = "abuse") -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Block",
        "metadata": {"name": name},
        "spec": {"target": {"kind": kind, "name": target}, "reason": reason},
    }


async def test_a_block_resource_places_the_block_admission_enforces_until_it_is_deleted(
    world: World,
) -> None:
    platform = world.platform
    applied = await platform.resources.apply(ACME, block("stop-greet", "workflow", "greet"))
    assert conditions(applied.document) == {"Ready": ("True", "Placed")}
    first = applied.document["status"]["blockId"]
    [placed] = await platform.blocks.find(ACME, active_only=True)
    assert (placed.id, placed.kind, placed.target, placed.reason) == (
        first,
        "workflow",
        "greet",
        "abuse",
    )
    # The same spec again keeps the block; a new reason lifts it and places another.
    await platform.resources.apply(ACME, block("stop-greet", "workflow", "greet"))
    assert [b.id for b in await platform.blocks.find(ACME, active_only=True)] == [first]
    changed = await platform.resources.apply(
        ACME, block("stop-greet", "workflow", "greet", "fraud review")
    )
    second = changed.document["status"]["blockId"]
    [live] = await platform.blocks.find(ACME, active_only=True)
    assert (live.id, live.reason) == (second, "fraud review")
    assert second != first
    # A whole account only from the platform; an account's own token may not block itself.
    with pytest.raises(PermissionDeniedError):
        await platform.resources.apply(ACME, block("all", "account", "acme"))
    await platform.resources.delete(ACME, "block", "stop-greet")
    assert await platform.blocks.find(ACME, active_only=True) == []
    audit = [(e.block_id, e.action) for e in await platform.blocks.audit(ACME)]
    assert sorted(audit) == sorted(
        [(first, "place"), (first, "lift"), (second, "place"), (second, "lift")]
    )


async def test_a_user_resource_is_the_accounts_user_and_its_role(world: World) -> None:
    users = UserStore(world.platform.db, world.platform.accounts)
    accounts = world.platform.accounts
    applied = await world.platform.resources.apply(ACME, user("ada", "account-admin"))
    assert conditions(applied.document) == {"Ready": ("True", "Exists")}
    assert "no password yet" in applied.document["status"]["conditions"][0]["message"]
    assert (await users.get("acme", "ada")).role is Role.ACCOUNT_ADMIN
    token, _ = await accounts.create_token("acme", "ada", "ci")
    # A lower role: the user's tokens above it stop working at once.
    await world.platform.resources.apply(ACME, user("ada", "viewer"))
    assert (await users.get("acme", "ada")).role is Role.VIEWER
    with pytest.raises(AuthError):
        await accounts.authenticate(token)
    # Never above one's own role, and not from a member.
    with pytest.raises(PermissionDeniedError):
        await world.platform.resources.apply(ACME, user("eve", "platform-admin"))
    member = Principal(account_id="acme", user_id="bob", role=Role.MEMBER)
    with pytest.raises(PermissionDeniedError):
        await world.platform.resources.apply(member, user("mallory", "viewer"))
    assert await users.find("acme", "mallory") is None
    await world.platform.resources.delete(ACME, "user", "ada")
    assert await users.find("acme", "ada") is None


async def test_kinds_without_a_controller_are_stored_and_say_so(world: World) -> None:
    # An installation without the trigger controller (every kind has one in the platform).
    bare = ResourceService(world.platform.resources.store, ControllerRegistry())
    document = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "nightly"},
        "spec": {"workflow": "greet", "type": "cron", "schedule": "0 2 * * *"},
    }
    applied = await bare.apply(ACME, document)
    assert applied.outcome == "created"
    assert conditions(applied.document) == {"Accepted": ("False", "NoController")}
    message = applied.document["status"]["conditions"][0]["message"]
    assert document["kind"] in message


async def test_a_service_resource_sets_the_terms_in_force_and_reports_them_enforced(
    world: World,
) -> None:
    resources = world.platform.resources
    document = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Service",
        "metadata": {"name": "echo"},
        "spec": {"price": {"perCall": "0.25", "currency": "USD"}, "limits": {"maxAttempts": 2}},
    }
    applied = await resources.apply(ADMIN, document)
    assert conditions(applied.document) == {"Ready": ("True", "Enforced")}
    assert applied.document["status"]["versions"] == ["1"]
    info = await world.platform.runtime.catalog.resolve("echo")
    assert (info.price.per_call_micros, info.price.currency, info.max_attempts) == (
        250_000,
        "USD",
        2,
    )
    assert Decimal(info.price.per_call_micros) / 1_000_000 == Decimal("0.25")
    # What the code declares stays as it was: the terms are kept apart.
    row = await ServiceStore(world.platform.db).find("echo")
    assert row is not None
    assert (row.price_per_call_micros, row.currency, row.max_attempts) == (1_000, "EUR", 5)

    missing = {**document, "metadata": {"name": "no-such-service"}}
    applied = await resources.apply(ADMIN, missing)
    assert conditions(applied.document) == {"Ready": ("False", "NotPublished")}

    # Prices are platform-wide: no other account writes them; every account reads them.
    with pytest.raises(PermissionDeniedError, match="platform admin"):
        await resources.apply(ACME, document)
    assert (await resources.get(ACME, "svc", "echo"))["spec"]["price"]["perCall"] == "0.25"


async def test_accounts_are_the_platform_admins_and_an_account_reads_only_its_own(
    world: World,
) -> None:
    resources = world.platform.resources
    account = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Account",
        "metadata": {"name": "initech"},
        "spec": {"displayName": "Initech"},
    }
    applied = await resources.apply(ADMIN, account)
    assert conditions(applied.document) == {"Ready": ("True", "Exists")}
    # The account exists: a token can be issued for it.
    await world.platform.accounts.issue_token("initech", "peter")
    await resources.apply(ADMIN, {**account, "metadata": {"name": "acme"}})

    with pytest.raises(PermissionDeniedError):
        await resources.apply(ACME, {**account, "metadata": {"name": "acme"}})
    own = await resources.get(ACME, "account", "acme")
    assert own["metadata"]["account"] == "acme"
    with pytest.raises(NotFoundError):
        await resources.get(ACME, "account", "initech")
    assert [d["metadata"]["name"] for d in await resources.list(ACME, "accounts")] == ["acme"]
    names = [d["metadata"]["name"] for d in await resources.list(ADMIN, "accounts")]
    assert names == ["acme", "initech"]


async def test_resources_are_scoped_to_the_account(world: World) -> None:
    resources = world.platform.resources
    await resources.apply(GLOBEX, quota())
    with pytest.raises(NotFoundError):
        await resources.get(ACME, "quota", "monthly")
    with pytest.raises(NotFoundError):
        await resources.delete(ACME, "quota", "monthly")
    assert await resources.list(ACME, "quotas") == []
    with pytest.raises(ValidationError, match="belongs to account 'acme'"):
        await resources.apply(ACME, quota(account="globex"))
    # The same name in another account is another resource.
    mine = await resources.apply(ACME, quota(calls=1))
    assert mine.outcome == "created"
    assert (await resources.get(GLOBEX, "quota", "monthly"))["spec"]["limit"] == 100

    deleted = await resources.delete(ACME, "QUOTAS", "monthly")
    assert deleted["metadata"]["name"] == "monthly"
    with pytest.raises(NotFoundError):
        await resources.get(ACME, "quota", "monthly")
    assert (await resources.get(GLOBEX, "quota", "monthly"))["spec"]["limit"] == 100


# --- HTTP ------------------------------------------------------------------------------------


async def test_the_http_api_applies_gets_and_refuses_a_stale_version(world: World) -> None:
    token = await world.platform.accounts.issue_token("acme", "ada")
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(world.platform, max_packet_bytes=65536)
    async with TestClient(TestServer(app)) as http:
        stream = "\n---\n".join(json.dumps(d) for d in (workflow(), quota()))
        response = await http.post(
            "/v1/apply",
            data=stream,
            headers={**headers, "Content-Type": "application/yaml"},
        )
        assert response.status == 200, await response.text()
        items = (await response.json())["items"]
        assert [(i["kind"], i["outcome"]) for i in items] == [
            ("Workflow", "created"),
            ("Quota", "created"),
        ]

        response = await http.get("/v1/resources/wf/greet", headers=headers)
        document = await response.json()
        assert conditions(document) == {"Ready": ("True", "Applied")}

        response = await http.put(
            "/v1/resources/quotas/monthly", json=quota(calls=1), headers=headers
        )
        assert response.status == 200
        assert (await response.json())["outcome"] == "configured"
        response = await http.put(
            "/v1/resources/quota/weekly", json=quota("weekly"), headers=headers
        )
        assert response.status == 201

        stale = quota(calls=2, resourceVersion="1")
        response = await http.put("/v1/resources/quota/monthly", json=stale, headers=headers)
        assert response.status == 409
        body = await response.json()
        assert body["error"]["code"] == "conflict"
        assert body["error"]["context"]["stored_version"] != "1"

        response = await http.put("/v1/resources/quota/other", json=quota(), headers=headers)
        assert response.status == 422
        assert "metadata.name" in await response.text()

        response = await http.post(
            "/v1/apply",
            json={
                "documents": [quota("x"), {**quota("y"), "spec": {"kind": "calls", "limit": -1}}]
            },
            headers=headers,
        )
        assert response.status == 422
        problems = (await response.json())["error"]["problems"]
        assert problems[0]["location"] == "documents[1].spec.limit"

        response = await http.get("/v1/resources/gizmos", headers=headers)
        assert response.status == 422

        response = await http.delete("/v1/resources/quota/weekly", headers=headers)
        assert response.status == 200
        response = await http.get("/v1/resources/quota/weekly", headers=headers)
        assert response.status == 404
