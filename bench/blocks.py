"""Benchmark of admission with blocks: gateway calls/s with the admission policy on (with live
blocks of other targets and other accounts in its index) and off, on SQLite.

Each run submits ``--calls`` calls in batches of ``--batch`` through the gateway of a runtime
without workers (so the figure is the admitting and recording path the policy adds to), once with
the chain ``Admission + Metering`` and once with ``Metering`` alone. Prints progress, then as its
last line one JSON object: ``calls_per_s_policy_on``, ``calls_per_s_policy_off``, ``ratio``.

    .venv/bin/python -m bench.blocks [--calls 20000] [--blocks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.runtime import packets
from bench.services import SERVICES
from fluxo.control.policy import Admission
from fluxo_core.storage import AccountStore, Database
from fluxo_core.storage.blocks import BlockStore
from service_runtime import ServiceRuntime, default_interceptors


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def run(url: str, calls: int, batch: int, *, policy: bool, blocks: int) -> float:
    db = Database(url)
    await db.migrate()
    accounts = AccountStore(db)
    await accounts.ensure_account("bench")
    store = BlockStore(db)
    for i in range(blocks):  # live blocks that match nothing the benchmark calls
        account = "bench" if i % 2 else f"other-{i}"
        await store.place(
            block_id=f"b{i}",
            account_id=account,
            kind="service",
            target=f"unused-{i}",
            reason="bench",
            placed_by="bench/bench",
        )
    chain = [Admission(accounts), *default_interceptors()] if policy else default_interceptors()
    runtime = ServiceRuntime(db, SERVICES, workers=0, interceptors=chain)
    work = packets(calls)
    async with runtime:
        start = time.perf_counter()
        for i in range(0, calls, batch):
            await runtime.gateway.submit("noop", work[i : i + batch])
        elapsed = time.perf_counter() - start
    await db.close()
    return calls / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=1000)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in (False, True):
            url = f"sqlite:///{Path(tmp) / f'bench-{policy}.db'}"
            rate = await run(url, args.calls, args.batch, policy=policy, blocks=args.blocks)
            name = "calls_per_s_policy_on" if policy else "calls_per_s_policy_off"
            figures[name] = round(rate)
            log(f"{name}: {rate:.0f}")
    figures["ratio"] = round(
        figures["calls_per_s_policy_on"] / figures["calls_per_s_policy_off"], 3
    )
    figures["blocks"] = args.blocks
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
