"""Benchmark of the IR -> Argo translation: a 200-step workflow (Argo's limit of tasks per DAG).

The workflow is a chain of service steps with a transform, a switch and a delay mixed in every
25 steps, so the shared-template, ``when`` and ``suspend`` paths are timed too. ``to_argo`` runs
``--repeat`` times after one warm-up; the figure is the median wall time of one translation.
The target is under 200 ms.

Prints progress to stderr, then as its last line one JSON object with the figures.

    .venv/bin/python -m bench.argo [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from fluxo_core.ir import Packet, Workflow, validate_workflow
from translators import to_argo, to_argo_job

GATEWAY = "http://fluxo.fluxo-system.svc:8080"
STEPS = 200


def _step(i: int, count: int) -> dict[str, Any]:
    nxt = [f"s{i + 1}"] if i + 1 < count else []
    if i % 25 == 10 and nxt:
        ops = [{"op": "set", "path": "seen", "value": True}]
        return {"id": f"s{i}", "kind": "transform", "ops": ops, "next": nxt}
    if i % 25 == 20 and nxt:
        return {"id": f"s{i}", "kind": "delay", "seconds": 1, "next": nxt}
    return {"id": f"s{i}", "kind": "service", "service": f"svc-{i % 7}", "next": nxt}


def workflow(count: int = STEPS) -> Workflow:
    """A chain of ``count`` steps, mostly service calls."""
    return validate_workflow(
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": "bench-chain", "version": "1"},
            "spec": {"steps": [_step(i, count) for i in range(count)]},
        }
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    ir = workflow()
    bundle = to_argo(ir, gateway_url=GATEWAY, version=1)  # warm-up (imports, caches)
    tasks = len(bundle.workflow_template["spec"]["templates"][0]["dag"]["tasks"])
    log(f"translating {STEPS} steps ({tasks} DAG tasks), {args.repeat} times")
    times: list[float] = []
    for i in range(args.repeat):
        began = time.perf_counter()
        to_argo(ir, gateway_url=GATEWAY, version=1)
        times.append((time.perf_counter() - began) * 1000)
        log(f"  run {i + 1}: {times[-1]:.1f} ms")
    size = len(json.dumps(bundle.workflow_template))
    log(f"template: {size} bytes of JSON")
    packet = Packet.model_validate(
        {"actor": {"user": {"id": "bench"}, "account": {"id": "bench"}}, "payload": {"n": 1}}
    )
    began = time.perf_counter()
    for _ in range(args.repeat):
        to_argo_job(bundle, job_id="bench-job", packet=packet)
    job_ms = (time.perf_counter() - began) * 1000 / args.repeat
    figures = {
        "translate_200_steps_ms": round(statistics.median(times), 2),
        "translate_200_steps_max_ms": round(max(times), 2),
        "job_workflow_ms": round(job_ms, 3),
        "template_bytes": size,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
