"""Under crash injection the invoice equals the priced sum of the calls that completed.

A load of jobs runs on an all-in-one server (``fluxo up``) helped by two worker processes
(``fluxo worker``). Mid-load one worker is killed with SIGKILL, then the server; the server is
started again and every job finishes. The invoice of the month (the draft over the API, then
the issued one) must equal, to the cent and in fact to the micro-unit, the sum over the calls
that succeeded of their service's price, less the credit given meanwhile: handlers that ran
twice because of a kill are billed once, and no completed call goes unbilled. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from fluxo.control.billing import Billing, invoice_json
from fluxo_core.clock import ManualClock
from fluxo_core.storage import Database
from fluxo_core.storage.ledger import month_bounds
from fluxo_core.storage.tables import calls, services
from tests.integration.test_cli import free_port
from tests.integration.test_crash import start_worker
from tests.integration.test_server_crash import (
    NOTIFY_WORKFLOW,
    Load,
    job_counts,
    lines,
    start_server,
)

JOBS = 300
CREDIT = Decimal("0.05")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


async def wait_effects(effects: Path, count: int, what: str) -> None:
    deadline = time.monotonic() + 60
    while len(lines(effects)) < count:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def priced_sum_of_completed_calls(db: Database) -> tuple[int, int]:
    """``(calls, amount_micros)``: the succeeded calls, each at its service's per-call price
    (the services of this load have no per-item price)."""
    query = (
        sa.select(calls.c.id, services.c.price_per_call_micros, services.c.price_per_item_micros)
        .select_from(
            calls.join(
                services,
                sa.and_(services.c.name == calls.c.service, services.c.version == calls.c.version),
            )
        )
        .where(calls.c.status == "succeeded")
    )
    rows = await db.read(lambda c: c.execute(query).all())
    assert all(r.price_per_item_micros == 0 for r in rows)
    return len(rows), sum(r.price_per_call_micros for r in rows)


def month_of(epoch: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(epoch))


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_invoice_equals_the_priced_completed_calls_after_sigkills(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.time()
    server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
    workers = [start_worker(database_url, effects) for _ in range(2)]
    token = (tmp_path / "admin.token").read_text().strip()
    load = Load(url, token)
    load.todo = list(range(JOBS))
    try:
        assert (await load.http.post("/v1/workflows", json=NOTIFY_WORKFLOW)).status_code == 201
        credit = await load.http.post(
            "/v1/usage/credits", json={"amount": str(CREDIT), "reason": "crash drill"}
        )
        assert credit.status_code == 201, credit.text
        submitting = asyncio.create_task(load.submit())
        # A worker process dies mid-handler, then the whole server, while jobs keep coming.
        await wait_effects(effects, JOBS // 5, "the first notifications")
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait(10)
        await wait_effects(effects, JOBS // 3, "more notifications")
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
        await submitting

        server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
        submitting = asyncio.create_task(load.submit())  # the rest, after the restart
        deadline = time.monotonic() + 120
        while True:
            counts = await job_counts(db)
            if submitting.done():
                submitting.result()
                assert not load.todo, f"{len(load.todo)} jobs could not be submitted"
                if counts == {"succeeded": JOBS}:
                    break
            assert time.monotonic() < deadline, f"jobs still unfinished: {counts}"
            await asyncio.sleep(0.1)

        # The drafts of the month(s) the load ran in, as the API shows them.
        periods = sorted({month_of(started), month_of(time.time())})
        drafts = []
        for period in periods:
            reply = await load.http.get(f"/v1/invoices/{period}")
            assert reply.status_code == 200, reply.text
            drafts.append(reply.json())
    finally:
        await load.http.aclose()
        stop(server)
        for worker in workers:
            stop(worker)

    sent = [line.split()[1] for line in lines(effects)]
    assert len(sent) > len(set(sent)), "the kills must make some handler run twice"
    completed, priced = await priced_sum_of_completed_calls(db)
    assert completed == 2 * JOBS  # notify and inc, once each per job
    expected = Decimal(priced).scaleb(-6) - CREDIT

    def total(invoice: dict[str, object]) -> Decimal:
        totals = invoice["totals"]
        assert isinstance(totals, list)
        return sum((Decimal(t["amount"]) for t in totals if t["currency"] == "EUR"), Decimal(0))

    drafted = sum((total(d) for d in drafts), Decimal(0))
    assert drafted.quantize(Decimal("0.01")) == expected.quantize(Decimal("0.01"))
    assert drafted == expected  # exact, not only to the cent
    calls_billed = sum(
        line["calls"] for d in drafts for line in d["lines"] if line["kind"] == "usage"
    )
    assert calls_billed == completed

    # Issued once the month is over: the same lines, frozen.
    issued_total = Decimal(0)
    for period in periods:
        _, end = month_bounds(period)
        billing = Billing(db, clock=ManualClock(end + 1))
        issued = invoice_json(await billing.issue("default", period, "test"))
        issued_total += total(issued)
    assert issued_total == expected
    print(
        f"\nbilling under crash ({db.dialect}): {JOBS} jobs, {completed} calls completed, "
        f"{len(sent) - len(set(sent))} handlers run twice; invoice {drafted} EUR == priced "
        f"calls {Decimal(priced).scaleb(-6)} - credit {CREDIT}"
    )
