"""The console's workflow figures: jobs, success rate, last run and spend per job, per account."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from fluxo_core.storage import Database, Transaction
from fluxo_core.storage.tables import jobs, usage_records
from fluxo_core.storage.workflow_stats import WorkflowStatsStore

pytestmark = pytest.mark.timeout(60)


def _job(job_id: str, account: str, workflow: str, status: str, at: float) -> dict[str, Any]:
    return {
        "id": job_id, "account_id": account, "user_id": "u", "workflow": workflow,
        "version": 1, "engine": "step", "status": status, "input": b"{}", "active": 0,
        "created_at": at,
    }  # fmt: skip


def _charge(
    call: str, account: str, job_id: str, micros: int, currency: str = "USD"
) -> dict[str, Any]:
    return {
        "call_id": call, "account_id": account, "user_id": "u", "service": "s", "version": "1",
        "job_id": job_id, "units": 1, "unit_price_micros": micros, "amount_micros": micros,
        "currency": currency, "created_at": 1.0,
    }  # fmt: skip


async def test_figures_per_workflow_of_one_account_only(db: Database) -> None:
    def seed(tx: Transaction) -> None:
        tx.execute(
            sa.insert(jobs),
            [
                _job("j1", "acme", "orders", "succeeded", 10.0),
                _job("j2", "acme", "orders", "failed", 20.0),
                _job("j3", "acme", "orders", "running", 30.0),
                _job("j4", "acme", "leads", "queued", 5.0),
                _job("j5", "globex", "orders", "succeeded", 99.0),
            ],
        )
        tx.execute(
            sa.insert(usage_records),
            [
                _charge("c1", "acme", "j1", 300_000),
                _charge("c2", "acme", "j2", 150_000),
                _charge("c3", "acme", "j1", 50_000, "BRL"),
                _charge("c4", "globex", "j5", 9_000_000),
                _charge("c5", "globex", "j1", 7_000_000),  # a forged job id of another account
            ],
        )

    await db.transact(seed)
    stats = await WorkflowStatsStore(db).by_workflow("acme")
    assert set(stats) == {"orders", "leads"}
    orders = stats["orders"]
    assert (orders.jobs, orders.ended, orders.succeeded) == (3, 2, 1)
    assert orders.success_rate == 0.5
    assert orders.last_run_at == 30.0
    assert orders.spend_micros == {"USD": 450_000, "BRL": 50_000}
    assert orders.cost_per_job() == {"BRL": pytest.approx(50_000 / 3 / 1e6), "USD": 0.15}
    leads = stats["leads"]
    assert leads.success_rate is None
    assert leads.cost_per_job() == {}
    assert await WorkflowStatsStore(db).by_workflow("nobody") == {}
