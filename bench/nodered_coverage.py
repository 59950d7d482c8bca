"""How much of the shipped Node-RED examples the step engine runs.

Over the example flows shipped in the node-red npm package (113 files in 4.1, under
``node_modules/@node-red/nodes/examples``): every file is imported, and each imported workflow is
asked :func:`engines.step.step_runnable`. A file counts as step-runnable when every workflow of
its import is (what the differential test compares). ``compared_equal`` is the number of files
the differential test (tests/integration/nodered/test_differential.py) last found equal on a real
Node-RED and the step engine, as kept in ``tests/golden/nodered/step_runnable.txt`` (regenerate
it with ``FLUXO_REGENERATE=1`` to measure it anew). Files using a node type that is not part of
Node-RED's core (an add-on) are counted apart: the target is read on the others.

With ``--reasons`` the refusal reasons are printed (to stderr), most frequent first.

Prints its last line as one JSON object with the figures.

    .venv/bin/python -m bench.nodered_coverage [--examples DIR] [--reasons]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
from pathlib import Path

from engines.step import step_runnable
from translators.nodered import from_nodered

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "nodered" / "step_runnable.txt"

CORE_TYPES = frozenset(
    {
        # common
        "inject", "debug", "complete", "catch", "status", "link in", "link out", "link call",
        "comment", "junction", "unknown",
        # function
        "function", "switch", "change", "range", "template", "delay", "trigger", "exec", "rbe",
        "filter",
        # network
        "mqtt in", "mqtt out", "mqtt-broker", "http in", "http response", "http request",
        "websocket in", "websocket out", "websocket-listener", "websocket-client", "tcp in",
        "tcp out", "tcp request", "udp in", "udp out", "tls-config", "http proxy",
        # sequence
        "split", "join", "sort", "batch",
        # parser
        "csv", "html", "json", "xml", "yaml",
        # storage
        "file", "file in", "watch",
        # structure
        "tab", "subflow", "group", "global-config",
    }
)  # fmt: skip


def examples_dir(given: str | None) -> Path:
    candidates = [given, os.environ.get("FLUXO_NODERED_EXAMPLES")]
    cache = os.environ.get("FLUXO_TEST_NODERED_HOME") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fluxo" / "test-nodered"
    )
    candidates.append(
        str(Path(cache) / "app" / "node_modules" / "@node-red" / "nodes" / "examples")
    )
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise SystemExit(
        "no example flows found: pass --examples DIR (node_modules/@node-red/nodes/examples) or "
        "run the Node-RED tests once (they install node-red into the test cache)"
    )


def uses_addon(nodes: list[dict[str, object]]) -> bool:
    return any(
        isinstance(n, dict)
        and isinstance(n.get("type"), str)
        and n["type"] not in CORE_TYPES
        and not str(n["type"]).startswith("subflow:")
        for n in nodes
    )


def _reason_kind(reason: str) -> str:
    """A refusal reason without the step and node ids, so alike reasons count together."""
    found = re.match(r"step '[^']*' \((?P<kind>.+?) node [^)]*\): (?P<why>.*)", reason)
    if found is None:
        return re.sub(r"'[^']*'", "'…'", reason)
    return f"{found['kind']}: {re.sub(r'[(][^)]*[)]', '', found['why'])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples")
    parser.add_argument("--reasons", action="store_true")
    args = parser.parse_args()
    root = examples_dir(args.examples)
    files = sorted(root.rglob("*.json"))
    workflows = runnable_workflows = runnable_files = core_files = core_runnable = 0
    reasons: collections.Counter[str] = collections.Counter()
    for path in files:
        data = json.loads(path.read_text())
        imp = from_nodered(data, name="example")
        verdicts = [step_runnable(w, imp.triggers) for w in imp.workflows]
        workflows += len(verdicts)
        runnable_workflows += sum(1 for ok, _ in verdicts if ok)
        ok = all(ok for ok, _ in verdicts)
        runnable_files += ok
        core = not uses_addon(data)
        core_files += core
        core_runnable += ok and core
        for _, why in verdicts:
            for reason in why:
                reasons[_reason_kind(reason)] += 1
    equal = (
        len([line for line in GOLDEN.read_text().splitlines() if line.strip()])
        if GOLDEN.exists()
        else 0
    )
    if args.reasons:
        for reason, count in reasons.most_common():
            print(f"{count:4d}  {reason}", file=sys.stderr)
    print(
        json.dumps(
            {
                "files": len(files),
                "workflows": workflows,
                "step_runnable_workflows": runnable_workflows,
                "step_runnable": runnable_files,
                "compared_equal": equal,
                "files_without_addons": core_files,
                "step_runnable_without_addons": core_runnable,
                "share_without_addons": round(core_runnable / core_files, 3) if core_files else 0,
            }
        )
    )


if __name__ == "__main__":
    main()
