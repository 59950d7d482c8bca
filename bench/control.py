"""Benchmark of the control plane's cost on the service-call path: calls/s through the gateway with
the policy on versus off, on SQLite (and PostgreSQL with ``--pg``).

Policy on: the interceptor chain of a Fluxo process (admission, quotas, metrics, then metering and
tracing), with the calling account under every kind of quota that applies to calls (calls per day
for the account and for the service, spend per month, a request rate), another account blocked,
and ``LIVE_BLOCKS`` live blocks in the block index admission matches every call against (of this
account's other workflows and services, and of other accounts: blocks that exist but do not
concern these calls), and the called service priced by terms the platform applied (a Service
resource's, which the worker reads through its one-second copy). Policy off: metering and
tracing only. The same runtime otherwise: a producer submits calls in batches through the gateway while an
in-process worker drains them; the clock stops when the last usage record is committed. Each mode
runs ``--rounds`` times, alternating, and keeps its best round.

Prints progress, then as its last line one JSON object: ``calls_per_s_policy_on``,
``calls_per_s_policy_off`` and ``ratio`` (on / off) for SQLite, and the same prefixed ``pg_``
with ``--pg``. The ``cpu_`` figures count calls per second of this process's CPU time instead
of the wall clock: on a busy machine they tell the policy's cost apart from the neighbours'.

    .venv/bin/python -m bench.control [--calls 20000] [--rounds 2] [--pg] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.runtime import (
    ACTOR,
    add_pg_url_option,
    count_failed,
    count_usage,
    drop_pg_schema,
    fresh_pg_schema,
    log,
    packets,
)
from bench.services import SERVICES
from fluxo.control.metrics import PlatformMetrics
from fluxo.control.platform import call_interceptors, tune_gc_for_serving
from fluxo.control.policy import Admission
from fluxo.control.quotas import QuotaEnforcer
from fluxo_core.storage import AccountStore, Database, ServiceTermsStore, TermsRow
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.quotas import QuotaSpec, QuotaStore
from service_runtime import Interceptor, ServiceRuntime, default_interceptors

ACCOUNT = ACTOR["account"]["id"]
BATCH = 500
LIVE_BLOCKS = 200
# Limits far above what a run uses: every quota is checked and counted, none refuses.
QUOTAS = {
    "calls-per-day": QuotaSpec(kind="calls", limit=10**12, period="day"),
    "noop-calls": QuotaSpec(
        kind="calls", limit=10**12, period="month", scope="service", target="noop"
    ),
    "spend-per-month": QuotaSpec(kind="spend", limit=10**14, period="month", currency="EUR"),
    "rate": QuotaSpec(kind="rate", limit=10**9, period="second"),
}


async def prepare(db: Database, policy: bool) -> list[Interceptor]:
    """The accounts, quotas and block of a run, and its interceptor chain."""
    accounts = AccountStore(db)
    await accounts.ensure_account(ACCOUNT)
    if not policy:
        return default_interceptors()
    await accounts.ensure_account("blocked-neighbour")
    await accounts.set_blocked("blocked-neighbour", True, "unpaid invoice")
    blocks = BlockStore(db)
    for i in range(LIVE_BLOCKS):
        await blocks.place(
            block_id=f"bench-{i}",
            account_id=ACCOUNT if i % 2 else f"other-{i}",
            kind="workflow" if i % 3 else "service",
            target=f"unused-{i}",
            reason="bench",
            placed_by="bench/bench",
        )
    # The price in force is the platform's, not the one noop's code declares.
    applied = TermsRow("noop", None, 2_000, 0, "EUR", applied_at=time.time())
    await ServiceTermsStore(db).replace("noop", applied)
    store = QuotaStore(db)
    for name, spec in QUOTAS.items():
        await store.set(ACCOUNT, name, spec)
    metrics = PlatformMetrics(db)
    enforcer = QuotaEnforcer(store, on_event=metrics.count_quota_event)
    return call_interceptors(Admission(accounts), [enforcer, metrics.interceptor])


async def throughput(url: str, *, calls: int, policy: bool) -> tuple[float, float]:
    """Calls per second from the first submission to the last committed usage record: per
    second of the wall clock, and per second of this process's CPU time (what the policy
    costs, whatever else the machine runs meanwhile)."""
    db = Database(url)
    await db.migrate()
    interceptors = await prepare(db, policy)
    runtime = ServiceRuntime(
        db, SERVICES, workers=1, batch_size=200, poll_interval_s=0.5, interceptors=interceptors
    )
    try:
        await runtime.start()
        tune_gc_for_serving()
        base = await count_usage(db)
        todo = packets(calls)
        start = time.perf_counter()
        cpu = time.process_time()

        async def produce() -> None:
            for i in range(0, calls, BATCH):
                await runtime.gateway.submit("noop", todo[i : i + BATCH])
                await asyncio.sleep(0)  # let the in-process worker interleave

        producer = asyncio.create_task(produce())
        while await count_usage(db) - base < calls:
            if await count_failed(db):
                raise RuntimeError("calls failed during the benchmark (refused by a quota?)")
            if producer.done() and producer.exception() is not None:
                raise RuntimeError("the producer failed") from producer.exception()
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
        cpu_s = time.process_time() - cpu
        await producer
        return calls / elapsed, calls / cpu_s
    finally:
        await runtime.stop()
        await db.close()


async def compare(urls: Any, *, calls: int, rounds: int, label: str) -> dict[str, float]:
    """Best calls/s of each mode over ``rounds`` alternating rounds; ``urls()`` gives a fresh
    database URL and its clean-up for each run."""
    best = {True: 0.0, False: 0.0}
    best_cpu = {True: 0.0, False: 0.0}
    for round_ in range(rounds):
        for policy in (False, True):
            url, clean = urls()
            try:
                rate, cpu_rate = await throughput(url, calls=calls, policy=policy)
            finally:
                clean()
            log(
                f"{label} round {round_ + 1}, policy {'on' if policy else 'off'}: "
                f"{rate:.0f} calls/s ({cpu_rate:.0f} per CPU second)"
            )
            best[policy] = max(best[policy], rate)
            best_cpu[policy] = max(best_cpu[policy], cpu_rate)
    return {
        "calls_per_s_policy_on": round(best[True]),
        "calls_per_s_policy_off": round(best[False]),
        "ratio": round(best[True] / best[False], 3),
        "cpu_calls_per_s_policy_on": round(best_cpu[True]),
        "cpu_calls_per_s_policy_off": round(best_cpu[False]),
        "cpu_ratio": round(best_cpu[True] / best_cpu[False], 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg", action="store_true", help="also measure on PostgreSQL")
    add_pg_url_option(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fluxo-bench-control-"))
    runs = iter(range(1_000_000))

    def sqlite_url() -> tuple[str, Any]:
        path = tmp / f"run{next(runs)}.db"
        return f"sqlite:///{path}", lambda: None

    try:
        figures: dict[str, Any] = await compare(
            sqlite_url, calls=args.calls, rounds=args.rounds, label="sqlite"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"sqlite: ratio {figures['ratio']}")
    if args.pg:

        def pg_url() -> tuple[str, Any]:
            url, schema = fresh_pg_schema(args.pg_url)
            return url, lambda: drop_pg_schema(args.pg_url, schema)

        pg = await compare(pg_url, calls=args.calls, rounds=args.rounds, label="postgres")
        figures.update({f"pg_{key}": value for key, value in pg.items()})
        log(f"postgres: ratio {pg['ratio']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
