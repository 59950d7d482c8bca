"""The terms a Service resource applies are the ones calls are priced and run by.

Real workers on SQLite and PostgreSQL: a platform admin applies a Service (price, limits), calls
go through the gateway to a worker, and the usage ledger and the calls' records show which terms
held. Restarting the process that publishes the service keeps the applied terms; deleting the
resource gives the code's back; a worker in another process sees a change once its copy of the
terms is a second old (a ManualClock moved, not a sleep).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.clock import ManualClock
from fluxo_core.errors import PermissionDeniedError, ServiceError
from fluxo_core.ir import Packet
from fluxo_core.storage import Database, Principal, Role, ServiceStore, ServiceTermsStore
from fluxo_core.storage.tables import service_terms, usage_records
from service_runtime import Price, RetryPolicy, ServiceRuntime, service
from service_runtime.terms import Applied, ServiceTerms

pytestmark = pytest.mark.timeout(60)

ADMIN = Principal(account_id="default", user_id="admin")
ACTOR = {"user": {"id": "u-1"}, "account": {"id": "acme"}}
FAST = RetryPolicy(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.02)


@service("priced", inline=True, price=Price(per_call="0.001"))
def priced(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@service("unreliable", retry=FAST)
async def unreliable(payload: dict[str, Any]) -> dict[str, Any]:
    raise ServiceError("the provider is down", retryable=True)


@service("sleepy", retry=FAST, timeout_s=30.0)
async def sleepy(payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(payload.get("sleep", 0)))
    return payload


SERVICES = [priced, unreliable, sleepy]


def service_doc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": spec,
    }


def ready(document: dict[str, Any]) -> tuple[str, str]:
    [condition] = [c for c in document["status"]["conditions"] if c["type"] == "Ready"]
    return condition["status"], condition["reason"]


async def platform_of(db: Database, clock: ManualClock, workers: int = 1) -> Platform:
    platform = Platform(db, SERVICES, workers=workers, poll_interval_s=0.05, clock=clock)
    for account in ("default", "acme"):
        await platform.accounts.ensure_account(account)
    return platform


@pytest.fixture
async def platform(db: Database) -> AsyncIterator[Platform]:
    async with await platform_of(db, ManualClock()) as running:
        yield running


async def call(platform: Platform, name: str, payload: dict[str, Any] | None = None) -> Any:
    packet = Packet.model_validate({"actor": ACTOR, "payload": payload or {"n": 1}})
    [call_id] = await platform.runtime.gateway.submit(name, [packet])
    record = await platform.runtime.gateway.wait(call_id, 30)
    assert record.done, f"call {call_id} of {name} did not finish"
    return record


async def billed(db: Database, name: str) -> list[tuple[int, str]]:
    """``(amount_micros, currency)`` of each charge of service ``name``, in order."""
    u = usage_records
    query = sa.select(u.c.amount_micros, u.c.currency).where(u.c.service == name).order_by(u.c.id)
    return [tuple(r) for r in await db.read(lambda c: c.execute(query).all())]  # type: ignore[misc]


async def test_an_applied_price_is_what_calls_are_billed_across_restarts_until_deleted(
    db: Database,
) -> None:
    clock = ManualClock()
    async with await platform_of(db, clock) as platform:
        await call(platform, "priced")  # the code's price: 0.001 EUR
        applied = await platform.resources.apply(
            ADMIN, service_doc("priced", {"price": {"perCall": "0.25", "currency": "USD"}})
        )
        assert ready(applied.document) == ("True", "Enforced")
        await call(platform, "priced")
    assert await billed(db, "priced") == [(1_000, "EUR"), (250_000, "USD")]

    # The process that runs the service starts again and publishes its code's terms: the
    # catalog row says 0.001 EUR again, the applied price still holds.
    async with await platform_of(db, clock) as platform:
        row = await ServiceStore(db).find("priced")
        assert row is not None
        assert (row.price_per_call_micros, row.currency) == (1_000, "EUR")
        await call(platform, "priced")
        [info] = [i for i in await platform.runtime.catalog.list() if i.name == "priced"]
        assert info.to_dict()["price"]["per_call"] == "0.25"
        assert info.to_dict()["terms"] == {
            "price": "applied",
            "max_attempts": "declared",
            "timeout_s": "declared",
        }

        await platform.resources.delete(ADMIN, "service", "priced")
        await call(platform, "priced")
        [info] = [i for i in await platform.runtime.catalog.list() if i.name == "priced"]
        assert info.to_dict()["terms"]["price"] == "declared"
    assert await billed(db, "priced") == [
        (1_000, "EUR"),
        (250_000, "USD"),
        (250_000, "USD"),
        (1_000, "EUR"),
    ]
    assert await ServiceTermsStore(db).all() == []


async def test_applied_limits_decide_attempts_and_timeouts(platform: Platform) -> None:
    # Declared: five attempts. Applied: two.
    await platform.resources.apply(ADMIN, service_doc("unreliable", {"limits": {"maxAttempts": 2}}))
    record = await call(platform, "unreliable")
    assert (record.status, record.attempts) == ("failed", 2)

    # Declared: 30 s a run. Applied: 0.2 s, and one attempt.
    await platform.resources.apply(
        ADMIN, service_doc("sleepy", {"limits": {"timeoutS": 0.2, "maxAttempts": 1}})
    )
    record = await call(platform, "sleepy", {"sleep": 2})
    assert (record.status, record.attempts) == ("failed", 1)
    assert "did not finish within 0.2s" in record.error["message"]
    [info] = [i for i in await platform.runtime.catalog.list() if i.name == "sleepy"]
    assert (info.timeout_s, info.max_attempts) == (0.2, 1)
    assert info.sources == {"price": "declared", "max_attempts": "applied", "timeout_s": "applied"}

    # A quick run is still within the applied timeout.
    record = await call(platform, "sleepy", {"sleep": 0})
    assert record.status == "succeeded"


async def test_terms_of_one_version_win_over_terms_of_every_version(platform: Platform) -> None:
    terms = ServiceTermsStore(platform.db)
    applied = await platform.resources.apply(
        ADMIN, service_doc("priced", {"version": "1", "price": {"perCall": "0.5"}})
    )
    assert ready(applied.document) == ("True", "Enforced")
    assert [(r.version, r.price_per_call_micros) for r in await terms.all()] == [("1", 500_000)]
    info = await platform.runtime.catalog.resolve("priced@1")
    assert info.price.per_call_micros == 500_000

    # Moved to every version: the row of version 1 goes, one row for all stays.
    await platform.resources.apply(
        ADMIN, service_doc("priced", {"price": {"perCall": "0.3"}, "limits": {"maxAttempts": 3}})
    )
    assert [(r.version, r.price_per_call_micros) for r in await terms.all()] == [(None, 300_000)]

    unknown = await platform.resources.apply(
        ADMIN, service_doc("priced", {"version": "9", "price": {"perCall": "0.5"}})
    )
    assert ready(unknown.document) == ("False", "NotPublished")
    # The resource no longer names a published version: the terms it set before go.
    assert await terms.all() == []
    info = await platform.runtime.catalog.resolve("priced@1")
    assert (info.price.per_call_micros, info.max_attempts) == (1_000, 5)


async def test_only_a_platform_admin_applies_or_deletes_terms(platform: Platform) -> None:
    document = service_doc("priced", {"price": {"perCall": "9"}})
    for who in (
        Principal(account_id="acme", user_id="ada"),  # another account's admin
        Principal(account_id="default", user_id="bob", role=Role.MEMBER),
    ):
        with pytest.raises(PermissionDeniedError, match="platform admin"):
            await platform.resources.apply(who, document)
    assert await ServiceTermsStore(platform.db).all() == []
    await call(platform, "priced")
    assert await billed(platform.db, "priced") == [(1_000, "EUR")]

    await platform.resources.apply(ADMIN, document)
    with pytest.raises(PermissionDeniedError, match="platform admin"):
        await platform.resources.delete(
            Principal(account_id="default", user_id="bob", role=Role.MEMBER), "service", "priced"
        )
    assert len(await ServiceTermsStore(platform.db).all()) == 1


async def test_a_worker_elsewhere_applies_a_change_once_its_terms_are_a_second_old(
    db: Database,
) -> None:
    """The workers run in another process (``fluxo worker``): nothing tells them of the apply;
    their copy of the terms is read again once it is a second old."""
    clock = ManualClock()
    async with (
        await platform_of(db, clock, workers=0) as platform,
        ServiceRuntime(db, SERVICES, workers=1, poll_interval_s=0.05, clock=clock),
    ):
        await call(platform, "priced")  # the worker has read the terms: none applied
        await platform.resources.apply(ADMIN, service_doc("priced", {"price": {"perCall": "0.2"}}))
        await call(platform, "priced")  # within the second: the old terms still
        clock.advance(1.0)
        await call(platform, "priced")
    assert await billed(db, "priced") == [(1_000, "EUR"), (1_000, "EUR"), (200_000, "EUR")]


async def test_the_http_api_applies_terms_as_a_platform_admin_and_lists_them_as_applied(
    platform: Platform,
) -> None:
    accounts = platform.accounts
    admin = await accounts.issue_token("default", "root", role=Role.PLATFORM_ADMIN)
    member = await accounts.issue_token("default", "bob", "member", role=Role.MEMBER)
    tenant = await accounts.issue_token("acme", "ada")
    document = service_doc("priced", {"price": {"perCall": "0.04", "perItem": "0.01"}})
    app = create_app(platform, max_packet_bytes=65536)
    async with TestClient(TestServer(app)) as http:
        for token in (member, tenant):
            response = await http.put(
                "/v1/resources/service/priced", json=document, headers=bearer(token)
            )
            assert response.status == 403, await response.text()
        response = await http.put(
            "/v1/resources/service/priced", json=document, headers=bearer(admin)
        )
        assert response.status == 201, await response.text()
        assert ready((await response.json())["resource"]) == ("True", "Enforced")

        # Every account reads the terms in force, and where they come from.
        response = await http.get("/v1/services", headers=bearer(tenant))
        [listed] = [i for i in (await response.json())["items"] if i["name"] == "priced"]
        assert listed["price"]["per_call"] == "0.04"
        assert listed["price"]["per_item"] == "0.01"
        assert listed["terms"] == {
            "price": "applied",
            "max_attempts": "declared",
            "timeout_s": "declared",
        }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_versions_own_terms_win_field_by_field_and_a_copy_lives_one_ttl(
    db: Database,
) -> None:
    # Rows as the table allows them (a Service resource writes one per service name).
    rows = [
        {"version": "1", "price_per_call_micros": 500_000, "currency": "USD"},
        {"version": "*", "price_per_call_micros": 7, "currency": "EUR", "max_attempts": 2},
    ]
    full = [
        {"name": "priced", "price_per_item_micros": 0, "max_attempts": None, "applied_at": 1.0} | r
        for r in rows
    ]
    await db.transact(lambda tx: tx.execute(sa.insert(service_terms), full))
    clock = ManualClock()
    terms = ServiceTerms(db, ttl_s=1.0, clock=clock)
    await terms.refresh()
    assert terms.applied("priced", "1") == Applied(price=(500_000, 0, "USD"), max_attempts=2)
    assert terms.applied("priced", "2") == Applied(price=(7, 0, "EUR"), max_attempts=2)
    assert terms.applied("echo", "1").empty

    generation = terms.generation
    await db.transact(lambda tx: tx.execute(sa.delete(service_terms)))
    clock.advance(0.999)
    await terms.refresh()  # still fresh: no read
    assert (terms.generation, terms.applied("priced", "2").max_attempts) == (generation, 2)
    clock.advance(0.001)
    await terms.refresh()
    assert terms.generation == generation + 1
    assert terms.applied("priced", "1").empty
