"""Benchmark of ``fluxo import nodered``, ``fluxo apply`` and ``fluxo export --engine nodered``
on a 5,000-node flow, the work of the commands without the process start-up.

``import_s``: the flow file's bytes -> workflows (each with its engine chosen by the step
engine's check, and the Node-RED engine's when that refuses), the node report, and the files
the import writes (one YAML per workflow, with libyaml's writer when PyYAML has it, and the flow
sidecar) into a temporary folder. ``apply_read_s``: reading those files back as ``fluxo apply``
and ``fluxo export FILE`` do (the YAML within the document limits, the sidecar, each workflow
validated); reported apart, not part of the target. ``export_s``: from what the store holds
once the files are applied (the workflows, the flow's bytes) to the flow of every workflow with
the original nodes (the source imported once, its workflows exported together) as the JSON text
``fluxo export`` prints. The target (issue 17): ``import_s + export_s`` under 1 s. The flow is
``bench.nodered``'s generated one (50 tabs of 100 nodes of the common kinds); best of 3, each on
a flow of other values. The export is checked to give every node back.

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


def once(seed: int) -> dict[str, float]:
    flow = generated_flow(seed=seed)
    text = orjson.dumps(flow)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clock = _Clock()
        imported = _nodered_flows.import_file(text, name="big")
        (folder / imported.sidecar).write_bytes(imported.sidecar_bytes())
        for name, body in imported.yaml_texts().items():
            (folder / f"{name}.yaml").write_text(body, encoding="utf-8")
        clock.lap("import")
        # What the store holds after `fluxo apply`: each workflow as validated, the flow once.
        limits = DocumentLimits(max_bytes=FLOW_LIMITS.max_bytes)
        sidecars = _nodered_flows.Sidecars()
        documents = _resources.load_documents(folder, limits, sidecars)
        workflows = [validate_workflow(doc) for _, doc in documents]
        stored = _nodered_flows.json_bytes(sidecars.flow_of(workflows[0], folder))
        clock.lap("apply_read")
        nodes, notes = _nodered_flows.export_flows(workflows, stored, options=NodeRedOptions())
        json.dumps(nodes, indent=2, sort_keys=True)  # what `fluxo export` prints
        clock.lap("export")
    back = {n["id"]: n for n in nodes}
    if any(back.get(n["id"]) != n for n in flow) or notes:
        raise RuntimeError(f"the export did not give the imported flow back: {notes}")
    steps = sum(1 for c in imported.engines.values() if c.engine == "step")
    print(f"seed {seed}: {len(workflows)} workflows, {steps} on the step engine", file=sys.stderr)
    return {"nodes": len(flow) - sum(1 for n in flow if n["type"] == "tab"), **clock.laps}


class _Clock:
    """Wall and CPU seconds of each lap (``<name>_s``, ``<name>_cpu_s``)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.laps[f"{name}_s"] = wall - self._wall
        self.laps[f"{name}_cpu_s"] = cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def main() -> None:
    runs = [once(seed) for seed in range(3)]
    best = {key: min(r[key] for r in runs) for key in runs[0] if key != "nodes"}
    print(
        f"import {best['import_s']:.3f}s + export {best['export_s']:.3f}s = "
        f"{best['import_s'] + best['export_s']:.3f}s (target 1 s); apply's read "
        f"{best['apply_read_s']:.3f}s (CPU: import {best['import_cpu_s']:.3f}s, export "
        f"{best['export_cpu_s']:.3f}s, apply's read {best['apply_read_cpu_s']:.3f}s; on a loaded "
        f"machine the wall clock runs ahead), YAML writer {_nodered_flows.YAML_WRITER}",
        file=sys.stderr,
    )
    figures = {key: round(best[key], 3) for key in ("import_s", "export_s", "apply_read_s")}
    print(json.dumps({"nodes": runs[0]["nodes"], **figures}))


if __name__ == "__main__":
    main()
