"""``GET /v1/usage`` on SQLite and PostgreSQL: the token's account's records and grouped sums,
exact decimal amounts per currency, and a 422 naming each bad query parameter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, UsageLedger, bulk_insert
from fluxo_core.storage.tables import jobs
from tests.integration.test_usage_ledger import FIRST_OF_DEC, LAST_OF_NOV, at, usage
from tests.support import services as svc
from tests.support.rows import JobRowToWrite

pytestmark = pytest.mark.timeout(60)

Api = tuple[TestClient[Any, Any], dict[str, str]]

SEEDED = [
    usage("c1", account="acme", job="j-orders", when=at("2026-11-02T10:00:00")),
    usage("c2", account="acme", job="j-orders", service="http", units=3, price=100),
    usage("c3", account="acme", when=FIRST_OF_DEC),
    usage("c4", account="acme", service="http", currency="USD", price=7, when=FIRST_OF_DEC),
    usage("g1", account="globex", job="j-globex", when=LAST_OF_NOV),
]


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.2)
    for account in ("acme", "globex"):
        await platform.accounts.ensure_account(account)
    headers = {"Authorization": f"Bearer {await platform.accounts.issue_token('acme', 'ada')}"}
    job_rows = [
        JobRowToWrite("j-orders", "acme", "ada", "orders", 1, "step", "succeeded", b"{}", 0, 1.0),
        JobRowToWrite("j-globex", "globex", "gus", "orders", 1, "step", "succeeded", b"{}", 0, 1.0),
    ]

    def seed(tx: Any) -> None:
        bulk_insert(tx, jobs, job_rows)
        UsageLedger.record(tx, SEEDED)

    await db.transact(seed)
    app = create_app(platform, max_packet_bytes=65536)
    async with platform, TestClient(TestServer(app)) as http:
        yield http, headers


async def get(api: Api, query: str, status: int = 200) -> Any:
    http, headers = api
    response = await http.get(f"/v1/usage{query}", headers=headers)
    body = await response.json()
    assert response.status == status, body
    return body


async def test_records_are_the_accounts_own_newest_first_in_exact_decimals(api: Api) -> None:
    body = await get(api, "")
    assert [item["call_id"] for item in body["items"]] == ["c4", "c3", "c2", "c1"]
    assert body["next_cursor"] is None
    assert body["items"][2] == {
        "call_id": "c2",
        "user_id": "u1",
        "service": "http",
        "version": "1",
        "workflow": "orders",
        "job_id": "j-orders",
        "step_id": "s1",
        "units": 3,
        "unit_price": "0.0001",
        "amount": "0.0003",
        "currency": "EUR",
        "created_at": "2026-11-30T23:59:59.500000+00:00",
        "outcome": "succeeded",
        "attempt": 0,
        "reason": None,
        "created_by": None,
    }
    assert body["totals"] == [
        {"currency": "EUR", "calls": 3, "units": 5, "amount": "0.0253"},
        {"currency": "USD", "calls": 1, "units": 1, "amount": "0.000007"},
    ]


async def test_pages_carry_the_totals_of_every_match(api: Api) -> None:
    first = await get(api, "?limit=3")
    assert [i["call_id"] for i in first["items"]] == ["c4", "c3", "c2"]
    assert first["totals"][0]["calls"] == 3  # all EUR records, not only the page's
    rest = await get(api, f"?limit=3&cursor={first['next_cursor']}")
    assert [i["call_id"] for i in rest["items"]] == ["c1"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "calls"),
    [
        ("?workflow=orders", ["c2", "c1"]),
        ("?service=http", ["c4", "c2"]),
        ("?job=j-orders&service=echo", ["c1"]),
        ("?period=2026-11", ["c2", "c1"]),
        ("?period=2026-12", ["c4", "c3"]),
        ("?from=2026-11-30T23:59:59Z&to=2026-12-01T00:00:00Z", ["c2"]),
        ("?from=2026-12-01T01:00:00%2B01:00", ["c4", "c3"]),  # an offset counts
        ("?job=j-globex", []),  # another account's job: nothing, not an error
    ],
)
async def test_filters(api: Api, query: str, calls: list[str]) -> None:
    body = await get(api, query)
    assert [item["call_id"] for item in body["items"]] == calls


async def test_grouped_sums_per_currency(api: Api) -> None:
    body = await get(api, "?group_by=month,service")
    assert body["group_by"] == ["month", "service"]
    assert body["groups"] == [
        {"month": "2026-11", "service": "echo", "currency": "EUR", "calls": 1, "units": 1,
         "amount": "0.0125"},
        {"month": "2026-11", "service": "http", "currency": "EUR", "calls": 1, "units": 3,
         "amount": "0.0003"},
        {"month": "2026-12", "service": "echo", "currency": "EUR", "calls": 1, "units": 1,
         "amount": "0.0125"},
        {"month": "2026-12", "service": "http", "currency": "USD", "calls": 1, "units": 1,
         "amount": "0.000007"},
    ]  # fmt: skip
    by_job = await get(api, "?group_by=job,workflow&period=2026-11")
    assert by_job["groups"] == [
        {"job": "j-orders", "workflow": "orders", "currency": "EUR", "calls": 2, "units": 4,
         "amount": "0.0128"},
    ]  # fmt: skip


async def test_a_real_call_is_read_back_as_metering_charged_it(api: Api) -> None:
    http, headers = api
    call = await http.post(
        "/v1/services/fan-out/calls?wait=10",
        data=json.dumps({"payload": {"items": [1, 2, 3]}}),
        headers=headers,
    )
    assert call.status == 200, await call.text()
    body = await get(api, "?service=fan-out")
    # 0.01 per call + 3 items at 0.002 each.
    assert [(i["units"], i["unit_price"], i["amount"]) for i in body["items"]] == [
        (3, "0.002", "0.016")
    ]
    assert body["items"][0]["workflow"] is None


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("?period=2026-13", "query.period"),
        ("?period=november", "query.period"),
        ("?period=2026-11&from=2026-11-01T00:00:00Z", "query.period"),
        ("?from=2026-11-01", "query.from"),
        ("?to=yesterday", "query.to"),
        ("?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "query.to"),
        ("?group_by=year", "query.group_by"),
        ("?group_by=service,service", "query.group_by"),
        ("?group_by=", "query.group_by"),
        ("?limit=0", "query.limit"),
        ("?limit=501", "query.limit"),
        ("?limit=%C2%B2", "query.limit"),  # a superscript two is no digit here
        ("?cursor=nonsense", "query.cursor"),
        ("?group_by=service&cursor=1.0_1", "query.cursor"),
    ],
)
async def test_a_bad_parameter_is_a_422_naming_it(api: Api, query: str, where: str) -> None:
    body = await get(api, query, status=422)
    assert where in [p["location"] for p in body["error"]["problems"]], body


async def test_every_bad_parameter_is_named_at_once(api: Api) -> None:
    body = await get(api, "?period=x&group_by=y&limit=z", status=422)
    locations = {p["location"] for p in body["error"]["problems"]}
    assert locations == {"query.period", "query.group_by", "query.limit"}
