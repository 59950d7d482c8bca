"""A published workflow called from every engine: the same answer, the same ledger.

The publisher (account ``pub``) publishes a step-engine workflow as service ``doubler``; a
caller workflow of ``acme`` names it in a service step and runs on the step engine and then on
the engine under test (the managed Node-RED through the gateway, Argo's test interpreter
through the HTTP template). Neither engine knows it calls a workflow: the outcome (status,
result, steps, the caller's ledger) is the same canonical JSON, and each run started one child
job in the publisher's account, billed to the publisher at the same cost.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from fluxo_core.storage import Principal
from fluxo_core.storage.tables import jobs, usage_records
from tests.conformance.test_engines import Stack, assert_same, service, stack, workflow

__all__ = ["stack"]  # the fixture, shared with the engine contract's cases

pytestmark = pytest.mark.timeout(180)

PUB = Principal(account_id="pub", user_id="pat")
ADMIN = Principal(account_id="default", user_id="admin")

DOUBLE = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "double"},
    "spec": {
        "engine": "step",
        "steps": [
            {"id": "bump", "kind": "service", "service": "inc", "next": ["spread"]},
            {"id": "spread", "kind": "service", "service": "fan-out"},
        ],
    },
}
BUYER = workflow("buyer", service("buy", "doubler", "after"), service("after", "echo"))


async def child_costs(stack: Stack, job_id: str) -> list[tuple[str, str, int]]:
    """(account, service, amount) of every ledger entry of the child jobs of ``job_id``."""
    query = (
        sa.select(
            usage_records.c.account_id, usage_records.c.service, usage_records.c.amount_micros
        )
        .select_from(usage_records.join(jobs, jobs.c.id == usage_records.c.job_id))
        .where(jobs.c.parent_job_id == job_id)
    )
    rows = await stack.platform.db.read(lambda conn: conn.execute(query).all())
    return sorted((r.account_id, r.service, r.amount_micros) for r in rows)


async def test_a_published_workflow_answers_every_engine_alike(stack: Stack) -> None:
    platform = stack.platform
    for account in ("pub", "default"):
        await platform.accounts.ensure_account(account)
    await platform.jobs.apply(DOUBLE, PUB)
    document: dict[str, Any] = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Service",
        "metadata": {"name": "doubler"},
        "spec": {
            "workflow": {"name": "double", "account": "pub"},
            "price": {"perCall": "0.25"},
            "visibility": {"scope": "public"},
        },
    }
    await platform.resources.apply(ADMIN, document)

    payload = {"items": ["a", "b"]}
    on_step_job = await stack.run(BUYER, payload, "step")
    on_step = await stack.outcome(on_step_job, unordered=True)
    assert on_step["status"] == "succeeded", on_step
    assert sorted(r["index"] for r in on_step["result"]) == [0, 1]
    on_engine_job = await stack.run(BUYER, payload, stack.engine)
    on_engine = await stack.outcome(on_engine_job, unordered=True)
    assert_same(on_engine, on_step)
    expected_cost = [("pub", "fan-out", 14_000), ("pub", "inc", 1_000)]
    assert await child_costs(stack, on_step_job.id) == expected_cost
    assert await child_costs(stack, on_engine_job.id) == expected_cost


async def test_a_published_workflow_on_the_engine_answers_when_its_job_ends_there(
    stack: Stack,
) -> None:
    """The child runs on the engine under test and ends there (its end reported to the
    control plane): the call is completed with that end, and the caller continues."""
    platform = stack.platform
    await platform.accounts.ensure_account("default")
    inner = await stack.apply(DOUBLE, stack.engine)
    name = f"doubler-{stack.tag}"
    document: dict[str, Any] = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "workflow": {"name": inner, "account": "acme"},
            "price": {"perCall": "0.25"},
            "visibility": {"scope": "public"},
        },
    }
    await platform.resources.apply(ADMIN, document)
    caller = workflow("buyer", service("buy", name, "after"), service("after", "echo"))
    job = await stack.run(caller, {"items": ["a", "b"]}, "step")
    outcome = await stack.outcome(job, unordered=True)
    assert outcome["status"] == "succeeded", outcome
    assert sorted(r["index"] for r in outcome["result"]) == [0, 1]
    query = sa.select(jobs.c.engine, jobs.c.status).where(jobs.c.parent_job_id == job.id)
    children = await platform.db.read(lambda conn: conn.execute(query).all())
    assert [tuple(c) for c in children] == [(stack.engine, "succeeded")]
    query = sa.select(usage_records.c.amount_micros).where(
        usage_records.c.service == name, usage_records.c.job_id == job.id
    )
    assert await platform.db.read(lambda conn: conn.scalars(query).all()) == [250_000]
