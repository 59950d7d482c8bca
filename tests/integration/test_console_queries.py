"""The console's queries on SQLite and PostgreSQL: the jobs list's filters and packet search, the
overview's figures and a job's costs, each scoped to one account."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from fluxo.control.activity import Activity
from fluxo_core.clock import ManualClock
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.bulk import bulk_insert
from fluxo_core.storage.jobs import SEARCH_WINDOW, JobStore
from fluxo_core.storage.tables import calls, jobs, usage_records

NOW = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC


def _job(i: int, account: str, **values: Any) -> dict[str, Any]:
    payload = {"order": f"ord-{i}", "email": f"c{i}@example.com"}
    row: dict[str, Any] = {
        "id": f"{account}-{i:06d}",
        "account_id": account,
        "user_id": "ana",
        "workflow": "orders",
        "version": 1,
        "engine": "step",
        "status": "succeeded",
        "idempotency_key": None,
        "input": orjson.dumps({"payload": payload}),
        "result": orjson.dumps([{**payload, "done": True}]),
        "error": None,
        "active": 0,
        "created_at": NOW - 1000 + i,
        "started_at": None,
        "finished_at": None,
        "run_id": None,
    }
    row.update(values)
    return row


def _charge(call_id: str, account: str, micros: int, at: float, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "call_id": call_id,
        "account_id": account,
        "user_id": "ana",
        "service": "price",
        "version": "1",
        "job_id": None,
        "step_id": None,
        "units": 1,
        "unit_price_micros": micros,
        "amount_micros": micros,
        "currency": "EUR",
        "created_at": at,
        "outcome": "succeeded",
        "attempt": 0,
        "reason": None,
        "created_by": None,
    }
    row.update(values)
    return row


async def _insert(db: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    await db.transact(lambda tx: bulk_insert(tx, table, rows))


async def test_the_jobs_list_filters_by_engine_time_and_a_value_inside_packets(
    db: Database,
) -> None:
    rows = [_job(i, "acme", engine="argo" if i % 2 else "step") for i in range(20)]
    rows.append(_job(99, "globex", input=orjson.dumps({"payload": {"order": "ord-7"}})))
    await _insert(db, jobs, rows)
    store = JobStore(db)

    def ids(found: tuple[list[Any], str | None]) -> list[str]:
        return [r.id for r in found[0]]

    page = await store.page(
        "acme", workflow=None, status=None, limit=50, cursor=None, engine="argo"
    )
    assert ids(page) == [f"acme-{i:06d}" for i in range(19, 0, -2)]
    window = await store.page(
        "acme",
        workflow=None,
        status=None,
        limit=50,
        cursor=None,
        since=NOW - 1000 + 5,
        until=NOW - 1000 + 8,
    )
    assert ids(window) == ["acme-000007", "acme-000006", "acme-000005"]
    # In the input, in the result; never another account's, even with the same value.
    found = await store.page(
        "acme", workflow=None, status=None, limit=50, cursor=None, contains="ord-7"
    )
    assert ids(found) == ["acme-000007"]
    found = await store.page(
        "acme", workflow=None, status=None, limit=50, cursor=None, contains='"done":true'
    )
    assert len(ids(found)) == 20
    # LIKE's wildcards are plain text here.
    nothing = await store.page(
        "acme", workflow=None, status=None, limit=50, cursor=None, contains="ord-%"
    )
    assert ids(nothing) == []


async def test_a_search_reads_one_window_of_jobs_per_page_and_its_cursor_goes_on(
    db: Database,
) -> None:
    count = SEARCH_WINDOW + 10
    rows = [_job(i, "acme") for i in range(count)]
    await _insert(db, jobs, rows)
    store = JobStore(db)
    # ord-3 is older than the newest SEARCH_WINDOW jobs: the first page finds nothing...
    first, cursor = await store.page(
        "acme", workflow=None, status=None, limit=50, cursor=None, contains='"ord-3"'
    )
    assert first == []
    assert cursor is not None
    # ...and says where to go on; the next page finds it.
    second, after = await store.page(
        "acme", workflow=None, status=None, limit=50, cursor=cursor, contains='"ord-3"'
    )
    assert [r.id for r in second] == ["acme-000003"]
    assert after is None


async def test_the_overview_counts_rates_queue_spend_and_failures_of_one_account(
    db: Database,
) -> None:
    failed = _job(
        3,
        "acme",
        status="failed",
        error='{"code": "x", "message": "bad order"}',
        created_at=NOW - 60,
    )
    await _insert(
        db,
        jobs,
        [
            _job(1, "acme", created_at=NOW - 60),
            _job(2, "acme", status="running", created_at=NOW - 60),
            failed,
            _job(4, "acme", created_at=NOW - 3 * 86400),  # too old for the success rate
            _job(5, "globex", status="failed"),
        ],
    )
    await _insert(
        db,
        calls,
        [
            {
                "id": f"q{i}",
                "account_id": "acme" if i < 3 else "globex",
                "user_id": "ana",
                "service": "price",
                "version": "1",
                "job_id": None,
                "step_id": None,
                "status": "queued",
                "request": b"{}",
                "result": None,
                "error": None,
                "attempts": 0,
                "reply_to": None,
                "created_at": NOW - 60 + i,
                "finished_at": None,
            }
            for i in range(5)
        ],
    )
    await _insert(
        db,
        usage_records,
        [
            _charge("a", "acme", 1_500_000, NOW - 10),  # today
            _charge("b", "acme", 250_000, NOW - 2 * 86400),  # this month, before today
            _charge("c", "acme", 9_000_000, NOW - 40 * 86400),  # last month
            _charge("d", "acme", -500_000, NOW - 5, outcome="credit"),
            _charge("e", "globex", 7_000_000, NOW - 10),
        ],
    )
    activity = Activity(db, clock=ManualClock(NOW))
    seen = await activity.overview(Principal("acme", "ana"))
    assert (seen.running, seen.queued, seen.blocked) == (1, 0, 0)
    assert seen.ended == 2
    assert seen.success_rate == 0.5
    assert seen.jobs_per_minute == 3 / 15  # three jobs made in the last 15 minutes
    assert seen.queue_depth == 3
    assert seen.queue_age_s == 60
    assert {k: str(v) for k, v in seen.spend_today.items()} == {"EUR": "1.000000"}
    assert {k: str(v) for k, v in seen.spend_month.items()} == {"EUR": "1.250000"}
    assert [j.id for j in seen.failures] == ["acme-000003"]
    assert seen.failures[0].error == {"code": "x", "message": "bad order"}


async def test_a_jobs_costs_are_its_own_accounts_only(db: Database) -> None:
    await _insert(
        db,
        usage_records,
        [
            _charge("call-1", "acme", 1_500_000, NOW),
            _charge("call-1", "acme", 500_000, NOW, outcome="retried", attempt=1),
            _charge("call-1", "acme", -100_000, NOW, outcome="credit", attempt=2),
            _charge("call-2", "globex", 9_000_000, NOW),
        ],
    )
    activity = Activity(db, clock=ManualClock(NOW))
    costs = await activity.call_costs(Principal("acme", "ana"), ["call-1", "call-2"])
    assert {c: {k: str(v) for k, v in m.items()} for c, m in costs.items()} == {
        "call-1": {"EUR": "2.000000"}
    }


async def test_service_figures_count_calls_errors_and_percentiles(db: Database) -> None:
    now = time.time()
    await _insert(
        db,
        calls,
        [
            {
                "id": f"c{i}",
                "account_id": "acme",
                "user_id": "ana",
                "service": "price",
                "version": "1",
                "job_id": None,
                "step_id": None,
                "status": "failed" if i == 0 else "succeeded",
                "request": b"{}",
                "result": None,
                "error": None,
                "attempts": 1,
                "reply_to": None,
                "created_at": now - 100,
                "finished_at": now - 100 + (i + 1) / 10,
            }
            for i in range(10)
        ],
    )
    figures = await Activity(db).service_figures(Principal("acme", "ana"))
    price = figures["price"]
    assert price.calls == 10
    assert price.error_rate == 0.1
    assert price.p50_s == pytest.approx(0.6)
    assert price.p95_s == pytest.approx(1.0)
    assert await Activity(db).service_figures(Principal("globex", "gus")) == {}
