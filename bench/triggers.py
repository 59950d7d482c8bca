"""Signed webhooks into committed jobs: ``POST /hooks/{account}/{trigger}`` on a ``fluxo up``
server (SQLite, step engine, its workers running the jobs), from concurrent clients in this
process. A request counts when the server answered 202: its job row and start message are
committed. Each request has its own delivery id and a fresh HMAC signature.

    PYTHONPATH=$PWD .venv/bin/python -m bench.triggers [--requests 6000] [--clients 64]

The last line printed is a JSON object: webhook_jobs_per_s, webhook_p50_ms, webhook_p99_ms, and
server_cpu_ms_per_job: the server process's CPU time (user and system) per job during the run,
which compares two versions fairly even on a machine that is busy with something else, where
the rate does not; and client_cpu_ms_per_request, this process's (the clients share the machine's
two cores with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from fluxo.control.triggers.webhook import sign

REPO = Path(__file__).resolve().parents[1]
# FLUXO_BENCH_PROFILE=FILE: run the server under cProfile, its statistics written to FILE.
PROFILE = (
    ["-m", "cProfile", "-o", os.environ["FLUXO_BENCH_PROFILE"]]
    if os.environ.get("FLUXO_BENCH_PROFILE")
    else []
)
SECRET = "whsec-bench"
WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "intake"},
    "spec": {"engine": "step", "steps": [{"id": "take", "kind": "service", "service": "noop"}]},
}
TRIGGER = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Trigger",
    "metadata": {"name": "orders"},
    "spec": {"workflow": "intake", "type": "webhook", "webhook": {"secret": "orders-key"}},
}


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(home: Path, port: int) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        FLUXO_HOME=str(home),
        FLUXO_PORT=str(port),
        FLUXO_DATABASE_URL=f"sqlite:///{home / 'fluxo.db'}",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, *PROFILE, "-m", "fluxo.cli", "up"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "admin token" in line:
            return proc
    raise SystemExit("fluxo up did not start")


async def _client(
    http: aiohttp.ClientSession, url: str, ids: list[int], latencies: list[float]
) -> None:
    while ids:
        n = ids.pop()
        body = json.dumps({"order": n, "items": [{"sku": "A-1", "qty": 2}]}).encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Fluxo-Timestamp": str(stamp),
            "X-Fluxo-Signature": sign(SECRET, stamp, body),
            "X-Fluxo-Delivery": f"bench-{n}",
        }
        started = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as response:
            await response.read()
            if response.status != 202:
                raise SystemExit(f"webhook answered {response.status}: {await response.text()}")
        latencies.append(time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = _serve(home, port)
        try:
            base = f"http://127.0.0.1:{port}"
            token = (home / "admin.token").read_text().strip()
            auth = {"Authorization": f"Bearer {token}"}
            connector = aiohttp.TCPConnector(limit=args.clients)
            async with aiohttp.ClientSession(base_url=base, connector=connector) as http:
                for method, path, document in (
                    ("POST", "/v1/workflows", WORKFLOW),
                    ("PUT", "/v1/secrets/orders-key", {"value": SECRET}),
                    ("POST", "/v1/apply", {"documents": [TRIGGER]}),
                ):
                    async with http.request(method, path, json=document, headers=auth) as r:
                        if r.status >= 300:
                            raise SystemExit(f"{method} {path}: {r.status} {await r.text()}")
                url = "/hooks/default/orders"
                warm: list[float] = []
                ids = list(range(args.requests, args.requests + args.warmup))
                await asyncio.gather(*(_client(http, url, ids, warm) for _ in range(8)))
                latencies: list[float] = []
                ids = list(range(args.requests))
                cpu_before = _cpu_s(proc.pid)
                client_before = time.process_time()
                started = time.perf_counter()
                await asyncio.gather(
                    *(_client(http, url, ids, latencies) for _ in range(args.clients))
                )
                elapsed = time.perf_counter() - started
                cpu = _cpu_s(proc.pid) - cpu_before
                client_cpu = time.process_time() - client_before
                async with http.get("/v1/triggers/orders", headers=auth) as r:
                    state = await r.json()
        finally:
            proc.terminate()
            proc.wait(30)
    assert state["jobsCreated"] == args.requests + args.warmup, state
    cuts = statistics.quantiles(latencies, n=100)
    figures = {
        "webhook_jobs_per_s": round(args.requests / elapsed),
        "webhook_p50_ms": round(cuts[49] * 1000, 2),
        "webhook_p99_ms": round(cuts[98] * 1000, 2),
        "server_cpu_ms_per_job": round(cpu * 1000 / args.requests, 3),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / args.requests, 3),
        "requests": args.requests,
        "clients": args.clients,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
