"""Benchmark of the Node-RED engine: flow import/export, and jobs on Node-RED vs the step engine.

``import_export_5000_nodes_s``: a generated flow file of 5,000 nodes (50 tabs of 100 nodes, a mix
of the portable nodes, function nodes kept native, debug nodes and wires between them) imported
into workflows and exported back with the source (the round trip); best of 3.

``nodered_jobs_per_s`` and ``step_jobs_per_s``: the same 3-service workflow of no-op services run
as jobs: on a real Node-RED (the managed one, started by this benchmark; each job's input is posted
to the flow's entry, every step calls the gateway over HTTP with the engine token, the flow
reports the end) and on the step engine, both through one Fluxo server on SQLite. The clock runs
from the first job's creation to the last job finished.

Prints progress to stderr, then as its last line one JSON object with the figures.

    .venv/bin/python -m bench.nodered [--jobs 300] [--skip-jobs]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.runtime import log
from bench.step_engine import count_finished
from fluxo.api import create_app
from fluxo.control.platform import Platform
from fluxo_core.config import FluxoConfig
from fluxo_core.storage import Database, Principal
from services import builtin_services
from translators import from_nodered, to_nodered_flows

ME = Principal(account_id="bench", user_id="bench")


def generated_flow(tabs: int = 50, per_tab: int = 100, seed: int = 0) -> list[dict[str, Any]]:
    """A realistic flow file: each tab is a chain inject -> change -> switch -> function ->
    template -> json -> http request, repeated, with a debug node every tenth. Values and
    template texts differ per node and per ``seed``, so no expression is parsed from a cache
    warmed by another node or an earlier repeat."""
    kinds: list[dict[str, Any]] = [
        {"type": "change", "rules": [{"t": "set", "p": "payload.seen", "pt": "msg", "to": "true",
                                      "tot": "bool"}], "action": "", "property": "", "from": "",
         "to": "", "reg": False},
        {"type": "switch", "property": "payload.n", "propertyType": "msg",
         "rules": [{"t": "gt", "v": "3", "vt": "num"}, {"t": "else"}], "checkall": "true",
         "repair": False, "outputs": 2},
        {"type": "function", "func": "msg.payload.f = 1;\nreturn msg;", "outputs": 1,
         "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": []},
        {"type": "template", "field": "payload", "fieldType": "msg", "format": "handlebars",
         "syntax": "mustache", "template": "{\"n\": {{payload.n}} }", "output": "json"},
        {"type": "json", "property": "payload", "action": "", "pretty": False},
        {"type": "http request", "method": "POST", "ret": "obj", "paytoqs": "ignore",
         "url": "https://api.example.com/items", "tls": "", "persist": False, "proxy": "",
         "insecureHTTPParser": False, "authType": "", "senderr": False, "headers": []},
    ]  # fmt: skip
    nodes: list[dict[str, Any]] = []
    for t in range(tabs):
        tab = f"tab{t:03d}"
        nodes.append({"id": tab, "type": "tab", "label": f"Flow {t}", "disabled": False,
                      "info": "", "env": []})  # fmt: skip
        chain: list[dict[str, Any]] = []
        chain.append({"id": f"{tab}-n000", "type": "inject", "z": tab, "name": "",
                      "props": [{"p": "payload"}], "repeat": "", "crontab": "", "once": False,
                      "onceDelay": 0.1, "topic": "", "payload": "{\"n\": 5}",
                      "payloadType": "json", "x": 100, "y": 40, "wires": [[]]})  # fmt: skip
        for i in range(1, per_tab - 1):
            template = kinds[(i - 1) % len(kinds)]
            if i % 10 == 9:
                node = {"type": "debug", "active": True, "tosidebar": True, "console": False,
                        "tostatus": False, "complete": "payload", "targetType": "msg",
                        "statusVal": "", "statusType": "auto"}  # fmt: skip
            else:
                node = json.loads(json.dumps(template))
                tag = f"{seed}-{t}-{i}"
                if node["type"] == "template":
                    node["template"] = '{"n": {{payload.n}}, "tag": "' + tag + '"}'
                elif node["type"] == "switch":
                    node["rules"][0]["v"] = str(i)
                elif node["type"] == "change":
                    node["rules"][0]["to"] = tag
                    node["rules"][0]["tot"] = "str"
            node.update(
                {"id": f"{tab}-n{i:03d}", "z": tab, "name": f"step {i}",
                 "x": 100 + 160 * (i % 10), "y": 40 + 60 * (i // 10), "wires": []}
            )  # fmt: skip
            chain.append(node)
        chain.append({"id": f"{tab}-n{per_tab - 1:03d}", "type": "debug", "z": tab, "name": "",
                      "active": True, "tosidebar": True, "console": False, "tostatus": False,
                      "complete": "payload", "targetType": "msg", "statusVal": "",
                      "statusType": "auto", "x": 900, "y": 700, "wires": []})  # fmt: skip
        for a, b in itertools.pairwise(chain):
            outputs = 2 if a["type"] == "switch" else 1
            if a["type"] == "debug":
                continue
            a["wires"] = [[b["id"]]] + [[] for _ in range(outputs - 1)]
        nodes.extend(chain)
    return nodes


def import_export_seconds(repeat: int = 3) -> tuple[float, int]:
    best, total = float("inf"), 0
    for attempt in range(repeat):
        flow = generated_flow(seed=attempt)
        total = len(flow) - sum(1 for n in flow if n["type"] == "tab")
        start = time.perf_counter()
        imported = from_nodered(flow)
        back = to_nodered_flows(imported.workflows, source=imported.source, explicit_tabs=False)
        best = min(best, time.perf_counter() - start)
        if back != flow:
            raise RuntimeError("the round trip of the generated flow is not lossless")
    return best, total


WORKFLOW_STEPS = [
    {"id": "one", "kind": "service", "service": "noop", "next": ["two"]},
    {"id": "two", "kind": "service", "service": "noop", "next": ["three"]},
    {"id": "three", "kind": "service", "service": "noop"},
]


def workflow(name: str, engine: str) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"engine": engine, "steps": WORKFLOW_STEPS},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def jobs_per_second(platform: Platform, name: str, count: int, concurrency: int) -> float:
    base, _ = await count_finished(platform.db)
    start = time.perf_counter()
    for i in range(0, count, concurrency):
        n = min(concurrency, count - i)
        await platform.jobs.create_many(ME, name, [{"i": i + j} for j in range(n)])
    deadline = time.monotonic() + 300
    while True:
        finished, bad = await count_finished(platform.db)
        if finished - base >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {finished - base} of {count} {name} jobs finished")
        await asyncio.sleep(0.05)
    if bad:
        raise RuntimeError(f"{bad} job(s) did not succeed")
    return count / (time.perf_counter() - start)


async def engine_figures(jobs: int, concurrency: int) -> dict[str, float]:
    from engines.nodered import ManagedNodeRed, create_engine

    tmp = Path(tempfile.mkdtemp(prefix="fluxo-bench-nr-"))
    cache = Path(
        os.environ.get("FLUXO_TEST_NODERED_HOME") or Path.home() / ".cache/fluxo/test-nodered"
    )
    managed = ManagedNodeRed(tmp / "nodered", app_dir=cache / "app")
    token = "fxo_bench_" + secrets.token_urlsafe(24)
    port = free_port()
    managed.install(port=free_port())
    status = managed.start(env={"FLUXO_TOKEN": token}, wait_s=60)
    db = Database(f"sqlite:///{tmp}/bench.db")
    await db.migrate()
    config = FluxoConfig(
        home=tmp,
        database_url=db.url,
        public_url=f"http://127.0.0.1:{port}",
        nodered_url=status.url,
        engines=("step", "nodered"),
    )
    nodered = create_engine(None, None, config=config)
    platform = Platform(db, builtin_services(), workers=1, engines=("step", nodered))
    runner: web.AppRunner | None = None
    try:
        await platform.accounts.ensure_account(ME.account_id)
        await platform.accounts.ensure_account("ops")
        await platform.accounts.issue_token("ops", "node-red", engine="nodered", token=token)
        async with platform:
            runner = web.AppRunner(create_app(platform, max_packet_bytes=1_048_576))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await platform.jobs.apply(workflow("three-noops-step", "step"), ME)
            await platform.jobs.apply(workflow("three-noops-nr", "nodered"), ME)
            await jobs_per_second(platform, "three-noops-step", 20, concurrency)  # warm-up
            await jobs_per_second(platform, "three-noops-nr", 20, concurrency)
            step = await jobs_per_second(platform, "three-noops-step", jobs, concurrency)
            log(f"step engine: {step:.0f} jobs/s")
            nodered_rate = await jobs_per_second(platform, "three-noops-nr", jobs, concurrency)
            log(f"Node-RED: {nodered_rate:.0f} jobs/s")
    finally:
        if runner is not None:
            await runner.cleanup()
        await db.close()
        managed.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"nodered_jobs_per_s": round(nodered_rate, 1), "step_jobs_per_s": round(step, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs per engine")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs created at once")
    parser.add_argument("--skip-jobs", action="store_true", help="only the import/export figure")
    args = parser.parse_args()
    seconds, nodes = import_export_seconds()
    log(f"import + export of {nodes} nodes: {seconds:.3f} s (best of 3)")
    figures: dict[str, Any] = {"import_export_5000_nodes_s": round(seconds, 3)}
    if not args.skip_jobs:
        figures.update(await engine_figures(args.jobs, args.concurrency))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
