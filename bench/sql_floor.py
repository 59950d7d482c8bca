"""The floors under bench/step_engine.py and bench/runtime.py: the same rows, written by a bare
SQL loop.

For batches of jobs of the 3-step no-op workflow, this loop issues what the step engine and the
service worker write for them (job rows, start messages, claims with a lease, inbox rows, step
rows, call rows, usage records, reply messages, acknowledgements, job updates), one transaction
per hop as they commit, with ``executemany`` and no logic in between: no packets, no validation,
no handlers, no ORM. Its jobs/s is what the database and the driver allow on this machine today,
so the step engine's figure can be read against it (this machine's speed varies by 2-3x between
sessions; the ratio of the two figures does not).

For bench/runtime.py the loop writes what a batch of direct service calls costs: call rows and
input messages in one transaction (the gateway's submit), then the claim, inbox rows, results and
usage records in the next (the worker settling them).

    .venv/bin/python -m bench.sql_floor [--jobs 3000] [--calls 20000] [--batch 100] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench.runtime import add_pg_url_option, drop_pg_schema, fresh_pg_schema, log
from fluxo_core.ir import keyed_id, new_packet_id
from fluxo_core.storage import Database

STEPS = ("one", "two", "three")


class Dialect:
    """The few statement shapes that differ between SQLite and PostgreSQL."""

    def __init__(self, conn: Any, *, sqlite: bool) -> None:
        self.conn = conn
        self.sqlite = sqlite
        self.mark = "?" if sqlite else "%s"

    def sql(self, text: str) -> str:
        return text.replace("?", self.mark)

    def many(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            if self.sqlite:
                self.conn.executemany(text, rows)
            else:
                with self.conn.cursor() as cur:
                    cur.executemany(self.sql(text), rows)

    def rows(self, text: str, params: Sequence[Any]) -> list[Any]:
        if self.sqlite:
            return self.conn.execute(text, params).fetchall()
        with self.conn.cursor() as cur:
            cur.execute(self.sql(text), params)
            return cur.fetchall()

    def transaction(self, work: Callable[[], None]) -> None:
        if self.sqlite:
            self.conn.execute("BEGIN IMMEDIATE")
            work()
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                work()


def claim(db: Dialect, queue: str, limit: int) -> list[Any]:
    now = time.time()
    lock = "" if db.sqlite else " FOR UPDATE SKIP LOCKED"
    return db.rows(
        "UPDATE queue_messages SET visible_at = ?, attempt = attempt + 1, lease_token = ? "
        "WHERE id IN (SELECT id FROM queue_messages WHERE queue = ? AND visible_at <= ? "
        f"ORDER BY visible_at, id LIMIT ?{lock}) RETURNING id, message_id, body",
        (now + 30, "lease", queue, now, limit),
    )


def settle(db: Dialect, consumer: str, claimed: list[Any]) -> None:
    now = time.time()
    db.many(
        "INSERT INTO inbox (consumer, message_id, processed_at) VALUES (?, ?, ?)",
        [(consumer, r[1], now) for r in claimed],
    )
    db.many("DELETE FROM queue_messages WHERE id = ?", [(r[0],) for r in claimed])


def enqueue(db: Dialect, queue: str, items: list[tuple[str, bytes]]) -> None:
    now = time.time()
    db.many(
        "INSERT INTO queue_messages (queue, message_id, body, headers, attempt, max_attempts, "
        "visible_at, created_at) VALUES (?, ?, ?, '{}', 0, 5, ?, ?)",
        [(queue, mid, body, now, now) for mid, body in items],
    )


def succeed_calls(db: Dialect, size: int) -> tuple[list[Any], float]:
    """The worker's part of a batch: take the service's messages, record them in the inbox and
    write the calls' results; returns the taken messages and the time of the results."""
    claimed = claim(db, "svc.noop", size)
    settle(db, "svc.noop", claimed)
    done = time.time()
    db.many(
        "UPDATE calls SET status = 'succeeded', result = ?, attempts = 1, finished_at = ? "
        "WHERE id = ?",
        [(b"[{}]", done, r[1]) for r in claimed],
    )
    return claimed, done


def call_rows(db: Dialect, jobs: list[str], step: str) -> None:
    now = time.time()
    calls = [(keyed_id(job, f"{job}/{step}/1"), job) for job in jobs]
    db.many(
        "INSERT INTO job_steps (job_id, key, step_id, status, attempt, call_id, input, context, "
        "seq, started_at) VALUES (?, ?, ?, 'running', 1, ?, ?, '{}', 0, ?)",
        [(job, step, step, cid, b"{}", now) for cid, job in calls],
    )
    db.many(
        "INSERT INTO calls (id, account_id, user_id, service, version, job_id, step_id, status, "
        "request, attempts, reply_to, created_at) "
        "VALUES (?, 'bench', 'bench', 'noop', '1', ?, ?, 'queued', ?, 0, 'engine.step', ?)",
        [(cid, job, step, b"{}", now) for cid, job in calls],
    )
    enqueue(db, "svc.noop", [(cid, job.encode()) for cid, job in calls])


def one_batch(db: Dialect, size: int) -> None:
    now = time.time()
    jobs = [new_packet_id() for _ in range(size)]  # time-ordered ids, as the product's

    def create() -> None:
        db.many(
            "INSERT INTO jobs (id, account_id, user_id, workflow, version, engine, status, input, "
            "active, created_at) VALUES (?, 'bench', 'bench', 'three-noops', 1, 'step', "
            "'queued', ?, 0, ?)",
            [(job, b"{}", now) for job in jobs],
        )
        enqueue(db, "engine.step", [(f"start-{job}", job.encode()) for job in jobs])

    db.transaction(create)

    def start() -> None:
        claimed = claim(db, "engine.step", size)
        started = [r[2].decode() for r in claimed]
        settle(db, "engine.step", claimed)
        db.many(
            "UPDATE jobs SET status = 'running', active = 1, started_at = ? WHERE id = ?",
            [(now, job) for job in started],
        )
        call_rows(db, started, STEPS[0])

    db.transaction(start)
    for index, step in enumerate(STEPS):

        def work(step: str = step) -> None:
            claimed, done = succeed_calls(db, size)
            db.many(
                "INSERT INTO usage_records (call_id, account_id, user_id, service, version, "
                "job_id, step_id, units, unit_price_micros, amount_micros, currency, created_at) "
                "VALUES (?, 'bench', 'bench', 'noop', '1', ?, ?, 1, 100, 100, 'EUR', ?)",
                [(r[1], r[2].decode(), step, done) for r in claimed],
            )
            enqueue(db, "engine.step", [(f"call:{r[1]}", r[2]) for r in claimed])

        def advance(index: int = index, step: str = step) -> None:
            claimed = claim(db, "engine.step", size)
            settle(db, "engine.step", claimed)
            ready = [r[2].decode() for r in claimed]
            done = time.time()
            db.many(
                "UPDATE job_steps SET status = 'succeeded', output = ?, finished_at = ? "
                "WHERE job_id = ? AND key = ?",
                [(b"[{}]", done, job, step) for job in ready],
            )
            if index + 1 < len(STEPS):
                call_rows(db, ready, STEPS[index + 1])
            else:
                db.many(
                    "UPDATE jobs SET status = 'succeeded', active = 0, result = ?, "
                    "finished_at = ? WHERE id = ?",
                    [(b"[{}]", done, job) for job in ready],
                )

        db.transaction(work)
        db.transaction(advance)


def run(db: Dialect, jobs: int, batch: int) -> float:
    start = time.perf_counter()
    for done in range(0, jobs, batch):
        one_batch(db, min(batch, jobs - done))
    return jobs / (time.perf_counter() - start)


def one_call_batch(db: Dialect, size: int) -> None:
    now = time.time()
    ids = [new_packet_id() for _ in range(size)]

    def submit() -> None:
        db.many(
            "INSERT INTO calls (id, account_id, user_id, service, version, status, request, "
            "attempts, created_at) VALUES (?, 'bench', 'bench', 'noop', '1', 'queued', ?, 0, ?)",
            [(cid, b"{}", now) for cid in ids],
        )
        enqueue(db, "svc.noop", [(cid, b"{}") for cid in ids])

    def work() -> None:
        claimed, done = succeed_calls(db, size)
        db.many(
            "INSERT INTO usage_records (call_id, account_id, user_id, service, version, units, "
            "unit_price_micros, amount_micros, currency, created_at) "
            "VALUES (?, 'bench', 'bench', 'noop', '1', 1, 100, 100, 'EUR', ?)",
            [(r[1], done) for r in claimed],
        )

    db.transaction(submit)
    db.transaction(work)


def run_calls(db: Dialect, calls: int, batch: int) -> float:
    start = time.perf_counter()
    for done in range(0, calls, batch):
        one_call_batch(db, min(batch, calls - done))
    return calls / (time.perf_counter() - start)


async def migrated(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await db.close()


def sqlite_floor(jobs: int, batch: int, loop: Callable[[Dialect, int, int], float] = run) -> float:
    """Jobs (or, with ``loop=run_calls``, calls) per second of the bare loop on SQLite."""
    tmp = Path(tempfile.mkdtemp(prefix="fluxo-floor-"))
    try:
        path = tmp / "floor.db"
        asyncio.run(migrated(f"sqlite:///{path}"))
        conn = sqlite3.connect(path, isolation_level=None)
        # As the product's connections: WAL, commits not synced (NORMAL survives a process crash).
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return loop(Dialect(conn, sqlite=True), jobs, batch)
        finally:
            conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pg_floor(
    base_url: str, jobs: int, batch: int, loop: Callable[[Dialect, int, int], float] = run
) -> float:
    """Jobs (or, with ``loop=run_calls``, calls) per second of the bare loop on PostgreSQL."""
    url, schema = fresh_pg_schema(base_url)
    try:
        asyncio.run(migrated(url))
        dsn = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn, autocommit=True, options=f"-csearch_path={schema}") as conn:
            return loop(Dialect(conn, sqlite=False), jobs, batch)
    finally:
        drop_pg_schema(base_url, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100, help="jobs per transaction")
    add_pg_url_option(parser)
    args = parser.parse_args()
    figures = {
        "floor_sqlite_jobs_per_s": round(sqlite_floor(args.jobs, args.batch)),
        "floor_pg_jobs_per_s": round(pg_floor(args.pg_url, args.jobs, args.batch)),
        "floor_sqlite_calls_per_s": round(sqlite_floor(args.calls, 200, run_calls)),
        "floor_pg_calls_per_s": round(pg_floor(args.pg_url, args.calls, 200, run_calls)),
    }
    log(f"bare SQL loop, same rows as the step engine and the call path: {figures}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
