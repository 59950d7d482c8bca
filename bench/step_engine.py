"""Benchmark of the built-in step engine: a 3-step workflow of no-op services, run as durable jobs.

Throughput: jobs are created in concurrent batches (``jobs.create``) while the engine and the
service workers run them; the clock runs from the first creation to the last job finished (counted
in the ``jobs`` table). On SQLite everything runs in one process (the embedded deployment); on
PostgreSQL the services run in worker PROCESSES and the engine in the benchmark's Platform process.
Latency: an open-loop load at a light fixed rate; each job is timed from the start of its creation
until ``jobs.wait`` returns it finished.

Prints progress to stderr, then as its last line one JSON object with the figures, and with them
``floor_*_jobs_per_s``: the same rows written by a bare SQL loop (bench/sql_floor.py), to read
the figures against this machine's speed of the day.

    .venv/bin/python -m bench.step_engine [--jobs 3000] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.runtime import (
    add_pg_url_option,
    drop_pg_schema,
    fresh_pg_schema,
    log,
    start_workers,
    stop_workers,
)
from bench.services import SERVICES
from bench.sql_floor import pg_floor, sqlite_floor
from fluxo.control.platform import Platform, tune_gc_for_serving
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.tables import jobs

ME = Principal(account_id="bench", user_id="bench")
WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "three-noops"},
    "spec": {
        "engine": "step",
        "steps": [
            {"id": "one", "kind": "service", "service": "noop", "next": ["two"]},
            {"id": "two", "kind": "service", "service": "noop", "next": ["three"]},
            {"id": "three", "kind": "service", "service": "noop"},
        ],
    },
}
FINAL = ("succeeded", "failed", "cancelled")


async def count_finished(db: Database) -> tuple[int, int]:
    """(finished jobs, of which not succeeded)."""
    query = sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(sa.case((jobs.c.status != "succeeded", 1), else_=0)), 0),
    ).where(jobs.c.status.in_(FINAL))
    row = await db.read(lambda c: c.execute(query).one())
    return int(row[0]), int(row[1])


async def open_platform(url: str, *, in_process: bool) -> Platform:
    db = Database(url)
    await db.migrate()
    # In-process: one worker loop (SQLite has one writer; a second loop only queues behind it).
    # Otherwise the services run in worker processes and this process runs the engine only.
    platform = Platform(db, SERVICES, workers=1 if in_process else 0, poll_interval_s=0.5)
    await platform.accounts.ensure_account(ME.account_id)
    tune_gc_for_serving()  # as `fluxo up` does once it has started
    return platform


async def run_jobs(platform: Platform, count: int, *, wait: float = 30) -> None:
    """Warm-up: ``count`` jobs one after the other, each waited for."""
    for i in range(count):
        job = await platform.jobs.create(ME, "three-noops", {"warm": i})
        job = await platform.jobs.wait(ME, job.id, wait)
        if job.status != "succeeded":
            raise RuntimeError(f"warm-up job {job.id} ended {job.status}: {job.error}")


async def throughput(
    url: str,
    *,
    count: int,
    workers: int,
    in_process: bool,
    concurrency: int,
    bulk: bool = True,
) -> float:
    """Jobs per second from the first creation to the last job finished.

    ``bulk``: jobs are created ``concurrency`` at a time with ``create_many`` (one transaction,
    as a queue trigger or a batch API client creates them); otherwise one ``create`` per job,
    ``concurrency`` of them in flight.
    """
    platform = await open_platform(url, in_process=in_process)
    db = platform.db
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with platform:
            await platform.jobs.apply(WORKFLOW, ME)
            if not in_process:
                procs = start_workers(url, workers)  # the worker's own batch size
            await run_jobs(platform, 10)
            base, _ = await count_finished(db)
            created_at = 0.0
            start = time.perf_counter()

            async def produce() -> str:
                nonlocal created_at
                last = ""
                for i in range(0, count, concurrency):
                    n = min(concurrency, count - i)
                    if bulk:
                        inputs = [{"i": i + j} for j in range(n)]
                        records = await platform.jobs.create_many(ME, "three-noops", inputs)
                    else:
                        records = await asyncio.gather(
                            *(
                                platform.jobs.create(ME, "three-noops", {"i": i + j})
                                for j in range(n)
                            )
                        )
                    last = records[-1].id
                created_at = time.perf_counter() - start
                return last

            # Counting finished jobs scans the jobs table: done every 20 ms from the start it
            # loaded the database under test (on PostgreSQL a tenth of its work). So: wait for
            # the last job created (a wake-up when it ends), then count until all are done.
            last = await produce()
            await platform.jobs.wait(ME, last, 120)
            while True:
                finished, bad = await count_finished(db)
                if finished - base >= count:
                    break
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - start
            if bad:
                raise RuntimeError(f"{bad} job(s) did not succeed")
            log(
                f"  {count} jobs: all created after {created_at:.2f} s "
                f"({count / created_at:.0f} creates/s), all finished after {elapsed:.2f} s"
            )
            return count / elapsed
    finally:
        stop_workers(procs)
        await db.close()


async def latency(url: str, *, rate: float, seconds: float, in_process: bool) -> list[float]:
    """Milliseconds per job (creation to finished) at an open-loop load of ``rate`` jobs/s."""
    platform = await open_platform(url, in_process=in_process)
    procs: list[subprocess.Popen[bytes]] = []
    samples: list[float] = []
    try:
        async with platform:
            await platform.jobs.apply(WORKFLOW, ME)
            if not in_process:
                procs = start_workers(url, 1)
            await run_jobs(platform, 20)

            async def one(i: int) -> None:
                t0 = time.perf_counter()
                job = await platform.jobs.create(ME, "three-noops", {"i": i})
                job = await platform.jobs.wait(ME, job.id, 30)
                if job.status != "succeeded":
                    raise RuntimeError(f"job {job.id} ended {job.status}: {job.error}")
                samples.append((time.perf_counter() - t0) * 1000)

            tasks = []
            interval = 1 / rate
            begin = time.perf_counter()
            for i in range(int(rate * seconds)):
                delay = begin + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
    finally:
        stop_workers(procs)
        await platform.db.close()
    return sorted(samples)


def percentiles(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), samples[max(int(len(samples) * 0.99) - 1, 0)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per throughput run")
    parser.add_argument("--concurrency", type=int, default=100, help="jobs created at once")
    parser.add_argument("--rate", type=float, default=20.0, help="jobs/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pg-workers", type=int, default=4, help="service worker processes")
    add_pg_url_option(parser)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="fluxo-bench-"))
    try:
        figures["sqlite_jobs_per_s"] = round(
            await throughput(
                f"sqlite:///{tmp}/tp.db",
                count=args.jobs,
                workers=1,
                in_process=True,
                concurrency=args.concurrency,
            )
        )
        log(f"sqlite, embedded (one process): {figures['sqlite_jobs_per_s']} jobs/s (bulk create)")
        figures["sqlite_jobs_per_s_single_create"] = round(
            await throughput(
                f"sqlite:///{tmp}/tp1.db",
                count=args.jobs,
                workers=1,
                in_process=True,
                concurrency=args.concurrency,
                bulk=False,
            )
        )
        log(f"sqlite, one create call per job: {figures['sqlite_jobs_per_s_single_create']} jobs/s")
        p50, p99 = percentiles(
            await latency(
                f"sqlite:///{tmp}/lat.db", rate=args.rate, seconds=args.seconds, in_process=True
            )
        )
        figures["job_p50_ms"], figures["job_p99_ms"] = round(p50, 2), round(p99, 2)
        log(f"sqlite job latency at {args.rate:g} jobs/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    url, schema = fresh_pg_schema(args.pg_url)
    try:
        key = f"pg_jobs_per_s_{args.pg_workers}w"
        figures[key] = round(
            await throughput(
                url,
                count=args.jobs,
                workers=args.pg_workers,
                in_process=False,
                concurrency=args.concurrency,
            )
        )
        log(
            f"postgres, {args.pg_workers} service worker process(es) + engine process: "
            f"{figures[key]} jobs/s (bulk create)"
        )
    finally:
        drop_pg_schema(args.pg_url, schema)
    url, schema = fresh_pg_schema(args.pg_url)
    try:
        key = f"pg_jobs_per_s_{args.pg_workers}w_single_create"
        figures[key] = round(
            await throughput(
                url,
                count=args.jobs,
                workers=args.pg_workers,
                in_process=False,
                concurrency=args.concurrency,
                bulk=False,
            )
        )
        log(f"postgres, one create call per job: {figures[key]} jobs/s")
    finally:
        drop_pg_schema(args.pg_url, schema)
    url, schema = fresh_pg_schema(args.pg_url)
    try:
        p50, p99 = percentiles(
            await latency(url, rate=args.rate, seconds=args.seconds, in_process=False)
        )
        figures["pg_job_p50_ms"], figures["pg_job_p99_ms"] = round(p50, 2), round(p99, 2)
        log(
            f"postgres job latency at {args.rate:g} jobs/s (worker process): "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    finally:
        drop_pg_schema(args.pg_url, schema)
    # The same rows written by a bare SQL loop (bench/sql_floor.py): what this machine allows
    # today, so the figures above can be read against it (its speed varies between sessions).
    figures["floor_sqlite_jobs_per_s"] = round(
        await asyncio.to_thread(sqlite_floor, args.jobs, 100)
    )
    figures["floor_pg_jobs_per_s"] = round(
        await asyncio.to_thread(pg_floor, args.pg_url, args.jobs, 100)
    )
    log(
        f"bare SQL loop of the same rows: sqlite {figures['floor_sqlite_jobs_per_s']} jobs/s, "
        f"postgres {figures['floor_pg_jobs_per_s']} jobs/s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
