"""Benchmark of ``fluxo import nodered`` and ``fluxo export --engine nodered`` on a 5,000-node
flow, the work of the commands without the process start-up.

``import_s``: the flow file's bytes -> workflows (each with its engine chosen by the step
engine's check, and the Node-RED engine's when that refuses), the node report, and the files
the import writes (one YAML per workflow, with libyaml's writer when PyYAML has it, and the flow
sidecar) into a temporary folder. ``export_s``: from what the store holds once the files are
applied (the workflows, the flow's bytes) to the flow of every workflow with the original nodes
(the source imported once, its workflows exported together), as ``fluxo export`` does; reading
the YAML back (what ``fluxo apply`` does) is not counted. The flow is ``bench.nodered``'s
generated one (50 tabs of 100 nodes of the common kinds); best of 3, each on a flow of other
values. The export is checked to give every node back.

Prints progress to stderr, then as its last line one JSON object with the figures.

    .venv/bin/python -m bench.nodered_import
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.nodered import generated_flow
from fluxo.cli import _nodered_flows, _resources
from fluxo_core.ir import DocumentLimits, validate_workflow
from translators import FLOW_LIMITS, NodeRedOptions


def once(seed: int) -> tuple[float, float, int, float, float]:
    flow = generated_flow(seed=seed)
    text = orjson.dumps(flow)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start, cpu_start = time.perf_counter(), time.process_time()
        imported = _nodered_flows.import_file(text, name="big")
        (folder / imported.sidecar).write_bytes(imported.sidecar_bytes())
        for name, body in imported.yaml_texts().items():
            (folder / f"{name}.yaml").write_text(body, encoding="utf-8")
        # What the store holds after `fluxo apply`: each workflow as validated, the flow once.
        limits = DocumentLimits(max_bytes=FLOW_LIMITS.max_bytes)
        sidecars = _nodered_flows.Sidecars()
        documents = _resources.load_documents(folder, limits, sidecars)
        workflows = [validate_workflow(doc) for _, doc in documents]
        stored = _nodered_flows.json_bytes(sidecars.flow_of(workflows[0], folder))
        middle, cpu_middle = time.perf_counter(), time.process_time()
        nodes, notes = _nodered_flows.export_flows(workflows, stored, options=NodeRedOptions())
        end, cpu_end = time.perf_counter(), time.process_time()
    back = {n["id"]: n for n in nodes}
    if any(back.get(n["id"]) != n for n in flow) or notes:
        raise RuntimeError(f"the export did not give the imported flow back: {notes}")
    steps = sum(1 for c in imported.engines.values() if c.engine == "step")
    print(f"seed {seed}: {len(workflows)} workflows, {steps} on the step engine", file=sys.stderr)
    count = len(flow) - sum(1 for n in flow if n["type"] == "tab")
    return middle - start, end - middle, count, cpu_middle - cpu_start, cpu_end - cpu_middle


def main() -> None:
    runs = [once(seed) for seed in range(3)]
    import_s = min(r[0] for r in runs)
    export_s = min(r[1] for r in runs)
    print(
        f"import {import_s:.3f}s, export {export_s:.3f}s (CPU: import "
        f"{min(r[3] for r in runs):.3f}s, export {min(r[4] for r in runs):.3f}s; on a loaded "
        f"machine the wall clock runs ahead), YAML writer {_nodered_flows.YAML_WRITER}",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {"nodes": runs[0][2], "import_s": round(import_s, 3), "export_s": round(export_s, 3)}
        )
    )


if __name__ == "__main__":
    main()
