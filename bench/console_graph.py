"""Benchmark of the workflow graph (fluxo/console/graph.py): render time of a large workflow.

Builds a workflow of ``--steps`` steps (a chain with a switch every tenth step that jumps 50
steps ahead and an ``on_error.goto`` to the last step every seventh: long edges, many bend
points), renders its SVG ``--runs`` times and prints, as its last line, one JSON object:
``steps``, ``edges``, ``render_p50_ms``, ``render_p95_ms``, ``svg_bytes``.

    .venv/bin/python -m bench.console_graph [--steps 500] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from fluxo.console.graph import layout_graph, render_graph
from fluxo_core.ir import Workflow


def workflow(count: int) -> Workflow:
    steps: list[dict[str, Any]] = []
    for n in range(count):
        after = [f"s{n + 1}"] if n < count - 1 else []
        if n % 10 == 0 and n + 50 < count:
            when = {"path": "x", "op": "gt", "value": n}
            steps.append(
                {"id": f"s{n}", "kind": "switch", "default": after,
                 "cases": [{"when": when, "next": [f"s{n + 50}"]}]}
            )  # fmt: skip
        elif n % 7 == 0 and n < count - 1:
            steps.append(
                {"id": f"s{n}", "kind": "service", "service": "svc", "next": after,
                 "on_error": {"goto": f"s{count - 1}"}}
            )  # fmt: skip
        else:
            steps.append({"id": f"s{n}", "kind": "service", "service": "svc", "next": after})
    return Workflow.model_validate(
        {"apiVersion": "fluxo.dev/v1", "kind": "Workflow", "metadata": {"name": "big"},
         "spec": {"steps": steps}}
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    big = workflow(args.steps)
    times = []
    svg = ""
    for _ in range(args.runs):
        start = time.perf_counter()
        svg = str(render_graph(big))
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(
        json.dumps(
            {
                "steps": args.steps,
                "edges": len(layout_graph(big).edges),
                "render_p50_ms": round(statistics.median(times), 2),
                "render_p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
                "svg_bytes": len(svg),
            }
        )
    )


if __name__ == "__main__":
    main()
