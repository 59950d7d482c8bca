"""``GET /metrics``: the platform's numbers read back as Prometheus samples, for the admin only.

A job, a few calls, a message nobody consumes, an outbox row the relay has not published and a
refused call of a blocked account; the scrape is parsed with prometheus_client's own parser and
its samples compared with what was done (SQLite and PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from fluxo.api import create_app
from fluxo.api.common import ADMIN_ACCOUNT
from fluxo.control.metrics import CONTENT_TYPE, PlatformMetrics
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, NewOutboxMessage, OutboxStore, Principal, Transaction
from service_runtime.transports import OutgoingMessage
from tests.integration.test_remote_engines import until
from tests.support import services as svc

pytestmark = pytest.mark.timeout(60)

ACME = Principal(account_id="acme", user_id="ada")
WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "count-up"},
    "spec": {"steps": [{"id": "up", "kind": "service", "service": "inc"}]},
}

Labels = tuple[tuple[str, str], ...]


@dataclass
class World:
    platform: Platform
    http: TestClient[Any, Any]
    tokens: dict[str, str]  # "admin": the admin account's; "acme": a tenant's

    async def get(self, who: str | None) -> tuple[int, str, str]:
        headers = {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}
        response = await self.http.get("/metrics", headers=headers)
        return response.status, response.headers.get("Content-Type", ""), await response.text()

    async def samples(self) -> dict[str, dict[Labels, float]]:
        """Every sample of a scrape: sample name -> sorted labels -> value."""
        status, _, text = await self.get("admin")
        assert status == 200, text
        found: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                    sample.value
                )
        return found


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    platform = Platform(db, svc.SERVICES, workers=1, poll_interval_s=0.2, admission_cache_s=0)
    await platform.accounts.ensure_account(ADMIN_ACCOUNT)
    await platform.accounts.ensure_account("acme")
    tokens = {
        "admin": await platform.accounts.issue_token(ADMIN_ACCOUNT, "admin"),
        "acme": await platform.accounts.issue_token("acme", "ada"),
        "acme-engine": await platform.accounts.issue_token("acme", "node-red", engine="nodered"),
    }
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        yield World(platform, http, tokens)


async def test_only_the_admin_account_reads_the_metrics(world: World) -> None:
    status, content_type, text = await world.get("admin")
    assert status == 200, text
    assert content_type == CONTENT_TYPE
    assert "fluxo_jobs" in text
    # Another account's token: 404 (as for anything outside its account), with no metric.
    status, _, text = await world.get("acme")
    assert status == 404
    assert "fluxo_" not in text
    # An engine token never reads (its routes are the calls and reports of its runs).
    status, _, text = await world.get("acme-engine")
    assert status == 403
    assert "fluxo_" not in text
    status, _, _ = await world.get(None)
    assert status == 401


async def test_scrape_reports_jobs_calls_usage_queues_outbox_latency_and_refusals(
    world: World,
) -> None:
    platform = world.platform
    await platform.jobs.apply(WORKFLOW, ACME)
    job = await platform.jobs.create(ACME, "count-up", {"n": 1})
    assert (await platform.jobs.wait(ACME, job.id, 20)).status == "succeeded"
    acme = {"Authorization": f"Bearer {world.tokens['acme']}"}
    for n in range(2):
        response = await world.http.post(
            "/v1/services/echo/calls?wait=10", json={"payload": {"n": n}}, headers=acme
        )
        assert response.status == 200, await response.text()

    # A message in a queue no worker reads, and an outbox row no relay publishes (SQL transport).
    now = time.time()

    def enqueue(tx: Transaction) -> None:
        platform.runtime.transport.enqueue(
            tx, [OutgoingMessage("metrics-test.nobody", "m-1", b"{}")]
        )
        OutboxStore(platform.db).write(
            tx, [NewOutboxMessage("metrics-test.out", "o-1", b"{}", {}, 5, 0.0, now - 30)]
        )

    await platform.db.transact(enqueue)

    # A blocked account's call is refused at the gateway, and counted by its reason.
    await platform.accounts.set_blocked("acme", True, "unpaid")
    response = await world.http.post(
        "/v1/services/echo/calls?wait=10", json={"payload": {"n": 9}}, headers=acme
    )
    assert response.status == 403

    async def echo_runs() -> float:
        histogram = (await world.samples()).get("fluxo_call_duration_seconds_count", {})
        return histogram.get((("service", "echo"), ("status", "succeeded")), 0)

    # Latencies are observed after their batch commits: wait for both runs to be counted.
    await until(echo_runs, 2)
    s = await world.samples()

    assert (
        s["fluxo_jobs"][(("engine", "step"), ("status", "succeeded"), ("workflow", "count-up"))]
        == 1
    )
    assert s["fluxo_calls"][(("service", "echo"), ("status", "succeeded"))] == 2
    assert s["fluxo_calls"][(("service", "inc"), ("status", "succeeded"))] == 1
    # echo and inc cost 0.001 EUR a call: usage amounts are in currency units, not micros.
    assert s["fluxo_usage_amount_total"][(("currency", "EUR"), ("service", "echo"))] == 0.002
    assert s["fluxo_usage_amount_total"][(("currency", "EUR"), ("service", "inc"))] == 0.001
    assert s["fluxo_usage_units_total"][(("currency", "EUR"), ("service", "echo"))] == 2
    assert s["fluxo_queue_depth"][(("queue", "metrics-test.nobody"),)] == 1
    assert s["fluxo_queue_oldest_age_seconds"][(("queue", "metrics-test.nobody"),)] >= 0
    assert s["fluxo_outbox_messages"][()] == 1
    assert s["fluxo_outbox_lag_seconds"][()] >= 30
    latency = s["fluxo_call_duration_seconds_bucket"]
    assert latency[(("le", "+Inf"), ("service", "echo"), ("status", "succeeded"))] == 2
    refusals = s["fluxo_admission_refusals_total"]
    assert refusals[(("place", "gateway"), ("reason", "account_blocked"))] == 1


async def test_platforms_in_one_process_keep_their_own_registries(db: Database) -> None:
    # Two sets of metrics in one process: a shared (global) registry would refuse the second's
    # metric names as duplicates.
    first, second = PlatformMetrics(db), PlatformMetrics(db)
    first.interceptor.refusals.labels("account_blocked", "gateway").inc()
    scraped = {m.name: m for m in text_string_to_metric_families((await second.scrape()).decode())}
    assert scraped["fluxo_admission_refusals"].samples == []
    assert scraped["fluxo_outbox_messages"].samples[0].value == 0
