"""Under SIGKILL of the server during 200 parent jobs, every parent and child job finishes once
and revenue and cost in the ledger equal the priced calls. On SQLite and PostgreSQL.

An all-in-one server (``fluxo up``) and a worker process (``fluxo worker``, which serves the
workflow service too) run a load of parent jobs whose first step calls a published workflow.
Mid-load the server is killed with SIGKILL while children run and calls wait for them; it is
started again and every job finishes. Each call of the workflow service started exactly one
child job, each parent and child succeeded, each call is in the ledger once: the revenue is
the service's price times the calls, the cost the price of the calls inside the children.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from fluxo.control.billing import money_text
from fluxo_core.storage import Database
from fluxo_core.storage.tables import calls, job_steps, jobs, usage_records
from tests.integration.test_billing_crash import month_of, stop
from tests.integration.test_cli import free_port
from tests.integration.test_crash import start_worker
from tests.integration.test_server_crash import Load, lines, start_server, unfinished_jobs

PARENTS = 200
PRICE_MICROS = 250_000  # the workflow service's price per call
INNER_MICROS = 2_000 + 1_000  # notify + inc: what one child's calls cost its publisher

INNER = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "inner"},
    "spec": {
        "steps": [
            {"id": "notify", "kind": "service", "service": "notify", "next": ["count"]},
            {"id": "count", "kind": "service", "service": "inc"},
        ]
    },
}
SERVICE = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Service",
    "metadata": {"name": "inner-svc"},
    "spec": {
        "workflow": {"name": "inner"},
        "price": {"perCall": "0.25", "currency": "EUR"},
        "visibility": {"scope": "public"},
    },
}
# Named as the load's jobs are created (POST /v1/workflows/notify-all/jobs).
OUTER = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "notify-all"},
    "spec": {
        "steps": [
            {"id": "buy", "kind": "service", "service": "inner-svc", "next": ["after"]},
            {"id": "after", "kind": "service", "service": "echo"},
        ]
    },
}


async def rows(db: Database, query: sa.Select[tuple[object, ...]]) -> list[dict[str, object]]:
    return [dict(r._mapping) for r in await db.read(lambda c: c.execute(query).all())]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_parents_and_children_finish_once_and_the_ledger_equals_the_priced_calls(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
    worker = start_worker(database_url, effects)
    token = (tmp_path / "admin.token").read_text().strip()
    load = Load(url, token)
    load.todo = list(range(PARENTS))
    try:
        for document in (INNER,):
            reply = await load.http.post("/v1/workflows", json=document)
            assert reply.status_code == 201, reply.text
        reply = await load.http.post("/v1/apply", json={"documents": [SERVICE]})
        assert reply.status_code == 200, reply.text
        reply = await load.http.post("/v1/workflows", json=OUTER)
        assert reply.status_code == 201, reply.text
        submitting = asyncio.create_task(load.submit(concurrency=8))
        # The server dies while children run and their callers' calls wait for them.
        deadline = time.monotonic() + 60
        while len(lines(effects)) < PARENTS // 4:
            assert time.monotonic() < deadline, "the children did not start"
            await asyncio.sleep(0.02)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
        await submitting
        cut_off = await unfinished_jobs(db)
        open_calls = await rows(
            db,
            sa.select(calls.c.id).where(
                calls.c.service == "inner-svc", calls.c.status.not_in(("succeeded", "failed"))
            ),
        )
        # The kill cut jobs off mid-way, and calls of the service were waiting for children.
        assert cut_off
        assert open_calls

        server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
        submitting = asyncio.create_task(load.submit(concurrency=8))  # the rest
        deadline = time.monotonic() + 120
        statuses: Counter[str] = Counter()
        while True:
            parents = await rows(
                db, sa.select(jobs.c.status).where(jobs.c.workflow == "notify-all")
            )
            statuses = Counter(str(r["status"]) for r in parents)
            assert set(statuses) <= {"queued", "running", "succeeded"}, statuses
            if submitting.done():
                submitting.result()
                assert not load.todo, f"{len(load.todo)} jobs could not be submitted"
                if statuses == {"succeeded": PARENTS}:
                    break
            assert time.monotonic() < deadline, f"parents still unfinished: {statuses}"
            await asyncio.sleep(0.1)
        margin = await load.http.get("/v1/billing/margin", params={"period": month_of(time.time())})
        assert margin.status_code == 200, margin.text
        report = margin.json()
    finally:
        await load.http.aclose()
        stop(worker)
        stop(server)

    # Every parent succeeded, one per submission.
    parents = await rows(
        db, sa.select(jobs.c.id, jobs.c.status).where(jobs.c.workflow == "notify-all")
    )
    assert len(load.accepted) == PARENTS
    assert {str(p["id"]) for p in parents} == set(load.accepted.values())
    # Each parent's step called the service once, and that call started exactly one child.
    service_calls = await rows(
        db,
        sa.select(calls.c.id, calls.c.status, calls.c.job_id).where(calls.c.service == "inner-svc"),
    )
    assert len(service_calls) == PARENTS
    assert all(c["status"] == "succeeded" for c in service_calls)
    assert {str(c["job_id"]) for c in service_calls} == set(load.accepted.values())
    children = await rows(
        db,
        sa.select(jobs.c.id, jobs.c.status, jobs.c.parent_call_id, jobs.c.parent_job_id).where(
            jobs.c.parent_call_id.is_not(None)
        ),
    )
    assert len(children) == PARENTS  # no call started a second child
    assert {str(c["parent_call_id"]) for c in children} == {str(c["id"]) for c in service_calls}
    assert all(c["status"] == "succeeded" for c in children)
    # Each step of each job finished once: one execution per step, succeeded.
    steps = await rows(db, sa.select(job_steps.c.job_id, job_steps.c.step_id, job_steps.c.status))
    per_step = Counter((str(s["job_id"]), str(s["step_id"])) for s in steps)
    assert set(per_step.values()) == {1}
    assert len(per_step) == 2 * PARENTS * 2
    assert {s["status"] for s in steps} == {"succeeded"}

    # The ledger: one record per call, revenue = price x calls, cost = the children's calls.
    ledger = await rows(
        db,
        sa.select(
            usage_records.c.call_id,
            usage_records.c.service,
            usage_records.c.job_id,
            usage_records.c.amount_micros,
        ),
    )
    assert len(ledger) == len({e["call_id"] for e in ledger})
    revenue = [e for e in ledger if e["service"] == "inner-svc"]
    assert {str(e["call_id"]) for e in revenue} == {str(c["id"]) for c in service_calls}
    assert sum(int(str(e["amount_micros"])) for e in revenue) == PRICE_MICROS * PARENTS
    child_ids = {str(c["id"]) for c in children}
    inside = [e for e in ledger if str(e["job_id"]) in child_ids]
    assert len(inside) == 2 * PARENTS
    assert sum(int(str(e["amount_micros"])) for e in inside) == INNER_MICROS * PARENTS
    assert report["items"] == [
        {
            "service": "inner-svc",
            "currency": "EUR",
            "calls": PARENTS,
            "revenue": money_text(PRICE_MICROS * PARENTS),
            "cost": money_text(INNER_MICROS * PARENTS),
            "margin": money_text((PRICE_MICROS - INNER_MICROS) * PARENTS),
        }
    ]
    # Every child's notification was sent (again, for those cut off by the kill).
    sent = [int(line.split()[1]) for line in lines(effects)]
    assert set(sent) == set(range(PARENTS))
    print(
        f"\nworkflow services under SIGKILL ({db.dialect}): {PARENTS} parents, {len(cut_off)} "
        f"jobs and {len(open_calls)} open calls of the service at the kill, "
        f"{len(sent) - len(set(sent))} notifications sent twice"
    )
