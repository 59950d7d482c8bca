"""Quotas and limits on SQLite and PostgreSQL, through the HTTP API: each kind of limit refuses
with its own error (calls and spend: 403 quota_exceeded; concurrent jobs: 409
concurrency_limit; rate: 429 rate_limited with Retry-After), counting is exact under concurrent
submissions, and the 80% and 100% events are written once per quota and period."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.clock import ManualClock
from fluxo_core.storage import Database
from fluxo_core.storage.quotas import QuotaSpec
from fluxo_core.storage.tables import calls, quota_usage
from tests.integration.test_remote_engines import RecordingEngine
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)


@dataclass
class Api:
    platform: Platform
    http: TestClient[Any, Any]
    headers: dict[str, str]
    clock: ManualClock

    async def send(
        self, method: str, path: str, body: Any = None, status: int | None = None
    ) -> tuple[int, Any, Any]:
        data = None if body is None else json.dumps(body)
        response = await self.http.request(method, path, data=data, headers=self.headers)
        text = await response.text()
        answer = json.loads(text) if text else None
        if status is not None:
            assert response.status == status, text
        return response.status, answer, response.headers

    async def quota(self, name: str, **spec: Any) -> Any:
        status, body, _ = await self.send("PUT", f"/v1/quotas/{name}", spec)
        assert status in (200, 201), body
        return body

    async def call(self, n: int = 1, service: str = "echo") -> tuple[int, Any, Any]:
        return await self.send(
            "POST", f"/v1/services/{service}/calls?wait=10", {"payload": {"n": n}}
        )

    async def events(self) -> list[tuple[str, int]]:
        _, body, _ = await self.send("GET", "/v1/quota-events", status=200)
        return [(e["quota"], e["threshold"]) for e in body["items"]]


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    clock = ManualClock()
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.1,
        admission_cache_s=0,
        engines=("step", RecordingEngine()),
        clock=clock,
    )
    await platform.accounts.ensure_account("acme")
    await platform.accounts.ensure_account("globex")
    headers = {"Authorization": f"Bearer {await platform.accounts.issue_token('acme', 'ada')}"}
    app = create_app(platform, max_packet_bytes=65536)
    async with platform, TestClient(TestServer(app)) as http:
        yield Api(platform, http, headers, clock)


def error_code(body: Any) -> str:
    code: str = body["error"]["code"]
    return code


async def calls_of(db: Database, account: str) -> int:
    query = sa.select(sa.func.count()).select_from(calls).where(calls.c.account_id == account)
    return int(await db.read(lambda c: c.execute(query).scalar_one()))


# --- the quota routes ---------------------------------------------------------------------------


async def test_a_quota_is_set_shown_replaced_listed_and_deleted(api: Api) -> None:
    status, created, _ = await api.send(
        "PUT", "/v1/quotas/daily", {"kind": "calls", "limit": 10, "period": "day"}
    )
    assert status == 201
    assert created["scope"] == "account"
    assert created["used"] == 0
    assert created["current_period"] == "2027-01-15"  # the ManualClock's day, UTC
    status, replaced, _ = await api.send(
        "PUT",
        "/v1/quotas/daily",
        {
            "kind": "spend",
            "limit": "12.50",
            "period": "month",
            "scope": "service",
            "target": "echo",
        },
    )
    assert status == 200
    assert (replaced["limit"], replaced["currency"], replaced["current_period"]) == (
        "12.5",
        "EUR",
        "2027-01",
    )
    _, listed, _ = await api.send("GET", "/v1/quotas", status=200)
    assert [q["name"] for q in listed["items"]] == ["daily"]
    await api.send("DELETE", "/v1/quotas/daily", status=204)
    _, gone, _ = await api.send("DELETE", "/v1/quotas/daily", status=404)
    assert "fluxo quota list" in gone["error"]["message"]


async def test_a_bad_quota_lists_every_problem(api: Api) -> None:
    _, body, _ = await api.send(
        "PUT", "/v1/quotas/ok", {"kind": "calls", "limit": 1, "colour": "red"}, status=422
    )
    assert body["error"]["problems"][0]["location"] == "body.colour"
    _, body, _ = await api.send(
        "PUT", "/v1/quotas/ok", {"kind": "calls", "limit": -1, "scope": "service"}, status=422
    )
    where = {p["location"] for p in body["error"]["problems"]}
    assert where == {"body.limit", "body.period", "body.target"}


# --- calls --------------------------------------------------------------------------------------


async def test_a_call_past_a_calls_quota_is_refused_and_events_come_once(api: Api) -> None:
    await api.quota("daily-calls", kind="calls", limit=5, period="day")
    for n in range(5):
        status, body, _ = await api.call(n)
        assert status == 200, body
    status, body, _ = await api.call(99)
    assert status == 403
    assert error_code(body) == "quota_exceeded"
    assert body["error"]["context"]["quota"] == "daily-calls"
    assert await calls_of(api.platform.db, "acme") == 5  # nothing of the refused one written
    await api.call(100)
    assert await api.events() == [("daily-calls", 100), ("daily-calls", 80)]
    metrics = (await api.platform.metrics.scrape()).decode()
    for threshold in (80, 100):
        assert f'fluxo_quota_events_total{{kind="calls",threshold="{threshold}"}} 1.0' in metrics
    refused = 'fluxo_admission_refusals_total{place="gateway",reason="quota_exceeded"} 2.0'
    assert refused in metrics
    # The next day counts from zero.
    api.clock.advance(86_400)
    status, _, _ = await api.call(7)
    assert status == 200
    _, shown, _ = await api.send("GET", "/v1/quotas/daily-calls", status=200)
    assert (shown["used"], shown["current_period"]) == (1, "2027-01-16")


async def test_concurrent_submissions_never_count_past_a_calls_quota(api: Api) -> None:
    await api.quota("calls", kind="calls", limit=10, period="month")
    answers = await asyncio.gather(
        *(api.send("POST", "/v1/services/echo/calls", {"payload": {"n": n}}) for n in range(30))
    )
    statuses = sorted(status < 300 for status, _, _ in answers)
    assert statuses == [False] * 20 + [True] * 10
    assert {error_code(body) for status, body, _ in answers if status >= 300} == {"quota_exceeded"}
    assert await calls_of(api.platform.db, "acme") == 10
    used = await api.platform.db.read(
        lambda c: c.execute(sa.select(quota_usage.c.used)).scalar_one()
    )
    assert used == 10


async def test_a_workflow_quota_counts_only_that_workflows_calls(api: Api) -> None:
    await api.quota("orders", kind="calls", limit=1, period="day", scope="workflow", target="two")
    two_steps = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": "two"},
        "spec": {
            "steps": [
                {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
                {"id": "second", "kind": "service", "service": "inc"},
            ]
        },
    }
    await api.send("POST", "/v1/workflows", two_steps, status=201)
    # A direct call is not the workflow's.
    status, _, _ = await api.call(1)
    assert status == 200
    # The step engine writes the second step's call in its own transaction, past the quota:
    # the worker refuses it, and the job fails naming the quota.
    _, job, _ = await api.send("POST", "/v1/workflows/two/jobs", {"input": {"n": 1}}, status=201)
    _, done, _ = await api.send("GET", f"/v1/jobs/{job['id']}?wait=10", status=200)
    assert done["status"] == "failed", done
    assert "orders" in json.dumps(done["error"])
    # The quota is used up: a new job of the workflow is refused at once.
    _, body, _ = await api.send("POST", "/v1/workflows/two/jobs", {"input": {"n": 2}}, status=403)
    assert error_code(body) == "quota_exceeded"


# --- spend --------------------------------------------------------------------------------------


async def test_calls_are_refused_once_a_spend_quota_is_reached(api: Api) -> None:
    # echo costs 0.001 EUR a call.
    await api.quota("budget", kind="spend", limit="0.002", period="month", currency="EUR")
    for n in range(2):
        status, body, _ = await api.call(n)
        assert status == 200, body
    status, body, _ = await api.call(3)
    assert status == 403
    assert error_code(body) == "quota_exceeded"
    assert body["error"]["context"]["kind"] == "spend"
    _, shown, _ = await api.send("GET", "/v1/quotas/budget", status=200)
    assert shown["used"] == "0.002"
    assert await api.events() == [("budget", 100), ("budget", 80)]


async def test_a_spend_quota_in_another_currency_counts_nothing(api: Api) -> None:
    await api.quota("usd", kind="spend", limit="0.001", period="day", currency="USD")
    for n in range(3):
        status, _, _ = await api.call(n)
        assert status == 200
    _, shown, _ = await api.send("GET", "/v1/quotas/usd", status=200)
    assert shown["used"] == "0"


# --- concurrent jobs ----------------------------------------------------------------------------

EXTERNAL = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "long"},
    "spec": {"engine": "nodered", "steps": [{"id": "a", "kind": "service", "service": "inc"}]},
}


async def test_a_job_past_a_concurrency_limit_is_refused(api: Api) -> None:
    await api.quota("two-at-once", kind="concurrent_jobs", limit=2)
    await api.send("POST", "/v1/workflows", EXTERNAL, status=201)
    for n in range(2):  # the recording engine never ends them: they stay queued or running
        await api.send("POST", "/v1/workflows/long/jobs", {"input": {"n": n}}, status=201)
    _, body, _ = await api.send("POST", "/v1/workflows/long/jobs", {"input": {"n": 3}}, status=409)
    assert error_code(body) == "concurrency_limit"
    assert body["error"]["context"]["running"] == 2
    _, page, _ = await api.send("GET", "/v1/jobs", status=200)
    assert len(page["items"]) == 2
    # Once one ends, another may start.
    await api.send("POST", f"/v1/jobs/{page['items'][0]['id']}/cancel", status=200)
    await api.send("POST", "/v1/workflows/long/jobs", {"input": {"n": 4}}, status=201)


async def test_concurrent_job_creations_never_run_past_the_limit(api: Api) -> None:
    await api.quota("three", kind="concurrent_jobs", limit=3, scope="workflow", target="long")
    await api.send("POST", "/v1/workflows", EXTERNAL, status=201)
    answers = await asyncio.gather(
        *(api.send("POST", "/v1/workflows/long/jobs", {"input": {"n": n}}) for n in range(12))
    )
    assert sorted(status for status, _, _ in answers) == [201] * 3 + [409] * 9


# --- rate ---------------------------------------------------------------------------------------


async def test_a_call_over_a_rate_limit_gets_429_with_retry_after(api: Api) -> None:
    await api.send("POST", "/v1/workflows", EXTERNAL, status=201)
    await api.quota("rate", kind="rate", limit=2, period="minute")
    for n in range(2):
        status, _, _ = await api.call(n)
        assert status == 200
    status, body, headers = await api.call(3)
    assert status == 429
    assert error_code(body) == "rate_limited"
    assert headers["Retry-After"] == "30"  # one token of 2 per minute comes in 30 s
    api.clock.advance(29)
    status, _, headers = await api.call(4)
    assert (status, headers["Retry-After"]) == (429, "1")
    # Job creation takes from the same bucket.
    api.clock.advance(1)
    await api.send("POST", "/v1/workflows/long/jobs", {"input": {"n": 5}}, status=201)
    status, body, _ = await api.call(6)
    assert (status, error_code(body)) == (429, "rate_limited")


async def test_another_accounts_quota_limits_nothing_here(api: Api) -> None:
    await api.platform.quotas.set("globex", "none", QuotaSpec(kind="calls", limit=0, period="day"))
    status, _, _ = await api.call(1)
    assert status == 200
