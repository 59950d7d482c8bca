"""Benchmark of the full service-call path: enqueue -> queue/outbox -> worker -> handler ->
result + usage record, with a no-op handler, on SQLite and PostgreSQL.

Throughput: a producer submits calls in batches while worker PROCESSES drain them; the clock stops
when the last usage record is committed. Latency: an open-loop load at a light fixed rate; each
call is timed from the start of its submission until its result is visible to the caller.

Prints progress, then as its last line one JSON object with the figures, and with them
``floor_*_calls_per_s``: the same rows written by a bare SQL loop (bench/sql_floor.py), to read
the figures against this machine's speed of the day.

    .venv/bin/python -m bench.runtime [--calls 20000] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from bench.services import SERVICES
from fluxo.control.platform import tune_gc_for_serving
from fluxo_core.ir import Packet
from fluxo_core.storage import AccountStore, Database
from fluxo_core.storage.tables import calls, usage_records
from service_runtime import ServiceRuntime

REPO = Path(__file__).resolve().parents[1]
ACTOR = {"user": {"id": "bench"}, "account": {"id": "bench"}}


def add_pg_url_option(parser: argparse.ArgumentParser) -> None:
    """``--pg-url``: the PostgreSQL to measure on (each run gets its own schema)."""
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "FLUXO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def packets(n: int) -> list[Packet]:
    return [Packet.model_validate({"actor": ACTOR, "payload": {"i": i}}) for i in range(n)]


def start_workers(url: str, count: int, batch: int | None = None) -> list[subprocess.Popen[bytes]]:
    """``count`` ``fluxo worker`` processes of bench.services (``batch``: the worker's batch
    size, else the CLI's default)."""
    env = dict(os.environ, FLUXO_DATABASE_URL=url, PYTHONPATH=str(REPO), FLUXO_POLL_INTERVAL="0.5")
    batch_option = ["--batch-size", str(batch)] if batch is not None else []
    procs = []
    for _ in range(count):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fluxo.cli",
                    "worker",
                    "--module",
                    "bench.services",
                    *batch_option,
                ],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("a worker process did not start")
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


async def count_usage(db: Database) -> int:
    query = sa.select(sa.func.count()).select_from(usage_records)
    return int(await db.read(lambda c: c.scalar(query)) or 0)


async def count_failed(db: Database) -> int:
    query = sa.select(sa.func.count()).select_from(calls).where(calls.c.status == "failed")
    return int(await db.read(lambda c: c.scalar(query)) or 0)


async def throughput(url: str, *, calls: int, workers: int, in_process: bool, batch: int) -> float:
    """Calls per second from the first enqueue to the last committed usage record."""
    db = Database(url)
    await db.migrate()
    # Worker processes check admission like production ones: the calling account must exist.
    await AccountStore(db).ensure_account(ACTOR["account"]["id"])
    runtime = ServiceRuntime(
        db, SERVICES, workers=1 if in_process else 0, batch_size=batch, poll_interval_s=0.5
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await runtime.start()
        tune_gc_for_serving()  # as `fluxo up` and `fluxo worker` do once they have started
        if not in_process:
            procs = start_workers(url, workers, batch)
        base = await count_usage(db)
        todo = packets(calls)
        start = time.perf_counter()

        async def produce() -> None:
            for i in range(0, calls, 500):
                await runtime.gateway.submit("noop", todo[i : i + 500])
                await asyncio.sleep(0)  # let an in-process worker interleave

        producer = asyncio.create_task(produce())
        while await count_usage(db) - base < calls:
            if await count_failed(db):
                raise RuntimeError("calls failed during the benchmark; see the worker logs")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
        await producer
        return calls / elapsed
    finally:
        stop_workers(procs)
        await runtime.stop()
        await db.close()


async def latency(
    url: str, *, rate: float, seconds: float, in_process: bool
) -> tuple[float, float]:
    """(p50, p99) milliseconds at a light open-loop load of ``rate`` calls per second."""
    db = Database(url)
    await db.migrate()
    await AccountStore(db).ensure_account(ACTOR["account"]["id"])
    runtime = ServiceRuntime(db, SERVICES, workers=1 if in_process else 0, poll_interval_s=0.5)
    procs: list[subprocess.Popen[bytes]] = []
    samples: list[float] = []
    try:
        await runtime.start()
        tune_gc_for_serving()
        if not in_process:
            procs = start_workers(url, 1, 100)
        for warm in packets(20):
            await runtime.gateway.call("noop", warm, wait=10)

        async def one(packet: Packet) -> None:
            t0 = time.perf_counter()
            record = await runtime.gateway.call("noop", packet, wait=10)
            if record.status != "succeeded":
                raise RuntimeError(f"call {record.id} ended {record.status}")
            samples.append((time.perf_counter() - t0) * 1000)

        tasks = []
        interval = 1 / rate
        begin = time.perf_counter()
        for i, packet in enumerate(packets(int(rate * seconds))):
            delay = begin + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(packet)))
        await asyncio.gather(*tasks)
    finally:
        stop_workers(procs)
        await runtime.stop()
        await db.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def fresh_pg_schema(base_url: str) -> tuple[str, str]:
    schema = "bench_" + uuid.uuid4().hex[:8]
    dsn = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{schema}", schema


def drop_pg_schema(base_url: str, schema: str) -> None:
    dsn = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=100.0, help="calls/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0)
    add_pg_url_option(parser)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="fluxo-bench-"))
    try:
        url = f"sqlite:///{tmp}/tp.db"
        figures["sqlite_calls_per_s"] = round(
            await throughput(url, calls=args.calls, workers=1, in_process=True, batch=200)
        )
        log(f"sqlite, embedded (one process): {figures['sqlite_calls_per_s']} calls/s")
        p50, p99 = await latency(
            f"sqlite:///{tmp}/lat.db", rate=args.rate, seconds=args.seconds, in_process=True
        )
        figures["sqlite_p50_ms"], figures["sqlite_p99_ms"] = round(p50, 2), round(p99, 2)
        log(f"sqlite latency at {args.rate:g}/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for key, workers in (("pg_calls_per_s_1w", 1), ("pg_calls_per_s_4w", 4)):
        url, schema = fresh_pg_schema(args.pg_url)
        try:
            figures[key] = round(
                await throughput(
                    url, calls=args.calls, workers=workers, in_process=False, batch=200
                )
            )
            log(f"postgres, {workers} worker process(es): {figures[key]} calls/s")
        finally:
            drop_pg_schema(args.pg_url, schema)
    url, schema = fresh_pg_schema(args.pg_url)
    try:
        p50, p99 = await latency(url, rate=args.rate, seconds=args.seconds, in_process=False)
        figures["pg_p50_ms"], figures["pg_p99_ms"] = round(p50, 2), round(p99, 2)
        log(
            f"postgres latency at {args.rate:g}/s (worker process): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    finally:
        drop_pg_schema(args.pg_url, schema)
    # What this machine allows today for the same rows (imported here: sql_floor imports this
    # module's helpers).
    from bench.sql_floor import pg_floor, run_calls, sqlite_floor

    figures["floor_sqlite_calls_per_s"] = round(
        await asyncio.to_thread(sqlite_floor, args.calls, 200, run_calls)
    )
    figures["floor_pg_calls_per_s"] = round(
        await asyncio.to_thread(pg_floor, args.pg_url, args.calls, 200, run_calls)
    )
    log(
        f"bare SQL loop of the same rows: sqlite {figures['floor_sqlite_calls_per_s']} calls/s, "
        f"postgres {figures['floor_pg_calls_per_s']} calls/s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
