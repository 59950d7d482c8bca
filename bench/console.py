"""Benchmark of the web console: server-side time of the jobs list, a job page and the overview
with ``--jobs`` (100,000) jobs of one account in SQLite.

The account's jobs spread over the last 30 days (most succeeded, some failed with a cause, some
running or queued), two steps each with their packets and a usage record per job; a few hundred
calls wait in its queue, and a neighbour account has jobs of its own. Each page is asked
``--requests`` times over loopback by a signed-in client (the console's whole path: session
cookie, control plane, SQL, templates); the jobs list also with a status filter, a page deep
in the keyset order and a packet search.

Prints progress, then as its last line one JSON object: ``jobs_list_p95_ms``,
``job_page_p95_ms``, ``overview_p95_ms`` (target < 50 each), with the other lists' p95 too.

    .venv/bin/python -m bench.console [--jobs 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from fluxo import console
from fluxo.api.app import create_app
from fluxo.control.platform import Platform
from fluxo_core.storage import Database
from fluxo_core.storage.bulk import bulk_insert
from fluxo_core.storage.tables import calls, job_steps, jobs, usage_records

ACCOUNT = "acme"
BATCH = 5_000
DAY = 86_400.0


def log(message: str) -> None:
    print(message, flush=True)


def _rows(count: int, now: float) -> Any:
    """The account's jobs, their steps and usage, in batches of dict rows."""
    rng = random.Random(7)
    for start in range(0, count, BATCH):
        job_rows, step_rows, usage_rows = [], [], []
        for i in range(start, min(start + BATCH, count)):
            created = now - (count - i) * (30 * DAY / count)
            roll = rng.random()
            status = (
                "succeeded"
                if roll < 0.9
                else "failed"
                if roll < 0.97
                else "running"
                if roll < 0.99
                else "queued"
            )
            job_id = f"job-{i:08d}"
            order = {"order": f"ord-{i}", "email": f"customer{i}@example.com", "total": i % 997}
            error = (
                orjson.dumps(
                    {"code": "service_failed", "message": f"order ord-{i} refused"}
                ).decode()
                if status == "failed"
                else None
            )
            job_rows.append(
                {
                    "id": job_id,
                    "account_id": ACCOUNT,
                    "user_id": "ana",
                    "workflow": "orders" if i % 3 else "refunds",
                    "version": 1,
                    "engine": "step",
                    "status": status,
                    "idempotency_key": None,
                    "input": orjson.dumps({"payload": order}),
                    "result": orjson.dumps([order]) if status == "succeeded" else None,
                    "error": error,
                    "active": 1 if status in ("running", "queued") else 0,
                    "created_at": created,
                    "started_at": created + 0.01,
                    "finished_at": created + 0.5 if status in ("succeeded", "failed") else None,
                    "run_id": None,
                }
            )
            for seq, step in enumerate(("price", "notify")):
                step_rows.append(
                    {
                        "job_id": job_id,
                        "key": step,
                        "step_id": step,
                        "status": "succeeded",
                        "attempt": 1 + (i % 7 == 0),
                        "call_id": f"call-{i}-{step}",
                        "input": orjson.dumps(order),
                        "output": orjson.dumps({**order, step: True}),
                        "error": None,
                        "context": None,
                        "seq": seq,
                        "started_at": created + 0.01 + seq * 0.2,
                        "finished_at": created + 0.2 + seq * 0.2,
                    }
                )
            usage_rows.append(
                {
                    "call_id": f"call-{i}-price",
                    "account_id": ACCOUNT,
                    "user_id": "ana",
                    "service": "price",
                    "version": "1",
                    "job_id": job_id,
                    "step_id": "price",
                    "units": 1,
                    "unit_price_micros": 1_500_000,
                    "amount_micros": 1_500_000,
                    "currency": "EUR",
                    "created_at": created + 0.2,
                    "outcome": "succeeded",
                    "attempt": 0,
                    "reason": None,
                    "created_by": None,
                }
            )
        yield job_rows, step_rows, usage_rows


async def seed(db: Database, platform: Platform, count: int) -> str:
    """The data; returns a session token of the account's user."""
    await platform.accounts.ensure_account(ACCOUNT)
    await platform.accounts.ensure_account("globex")
    now = time.time()
    for job_rows, step_rows, usage_rows in _rows(count, now):

        def write(tx: Any, j: Any = job_rows, s: Any = step_rows, u: Any = usage_rows) -> None:
            bulk_insert(tx, jobs, j)
            bulk_insert(tx, job_steps, s)
            bulk_insert(tx, usage_records, u)

        await db.transact(write)
    queued = [
        {
            "id": f"queued-{i}",
            "account_id": ACCOUNT,
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
            "created_at": now - i,
            "finished_at": None,
        }
        for i in range(300)
    ]
    await db.transact(lambda tx: bulk_insert(tx, calls, queued))
    token, _ = await platform.accounts.create_token(
        ACCOUNT, "ana", "bench", expires_at=now + DAY, kind="session"
    )
    return token


async def measure(client: TestClient[Any, Any], path: str, requests: int) -> float:
    """p95 in milliseconds of ``requests`` GETs of ``path`` (after a few to warm up)."""
    times = []
    for n in range(requests + 5):
        start = time.perf_counter()
        response = await client.get(path)
        body = await response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}: {body[:500]!r}")
        if n >= 5:
            times.append(elapsed * 1000)
    p95 = statistics.quantiles(times, n=20)[-1]
    log(f"GET {path}: p50 {statistics.median(times):.1f} ms, p95 {p95:.1f} ms")
    return p95


async def main(count: int, requests: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="fluxo-bench-console-"))
    try:
        db = Database(f"sqlite:///{home / 'fluxo.db'}")
        await db.migrate()
        platform = Platform(db, [], engines=["step"])
        started = time.perf_counter()
        token = await seed(db, platform, count)
        log(f"seeded {count} jobs in {time.perf_counter() - started:.1f} s")
        app = create_app(platform, max_packet_bytes=1_048_576, faces=[console.mount])
        async with TestClient(TestServer(app)) as client:
            client.session.cookie_jar.update_cookies({"fluxo_session": token})
            deep = f"job-{count // 2:08d}"
            figures = {
                "jobs_list_p95_ms": await measure(client, "/console/jobs", requests),
                "job_page_p95_ms": await measure(client, f"/console/jobs/{deep}", requests),
                "overview_p95_ms": await measure(client, "/console/overview", requests),
                "jobs_failed_p95_ms": await measure(
                    client, "/console/jobs?status=failed", requests
                ),
                "jobs_search_p95_ms": await measure(
                    client, f"/console/jobs?q=customer{count - 20}@", requests
                ),
            }
        await db.close()
        return {k: round(v, 2) for k, v in figures.items()}
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.jobs, args.requests))))
