"""The 113 example flows shipped inside the node-red npm package, against the real Node-RED.

For every flow file: the import raises nothing and its fidelity report names every node; the
round trip (import, then export with the source) gives the file back unchanged; the export with
explicit tabs (what a deploy needs) passes Fluxo's pre-deploy check, deploys to the running
Node-RED, and starts without a runtime error in Node-RED's log. A few flows need things this
machine does not have (a file to read, a server to reach, a node from another file): they are
listed with the reason in ``tests/golden/nodered/corpus_needs.txt``; any other flow that fails,
or a listed flow that now starts cleanly, fails the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.nodered import RunningNodeRed
from translators import check_flow, from_nodered, to_nodered_flows

ROOT = Path(__file__).resolve().parents[3]
NEEDS = ROOT / "tests" / "golden" / "nodered" / "corpus_needs.txt"
V2 = {"Node-RED-API-Version": "v2"}
SETTLE_S = 0.6  # Node-RED logs a node's start-up error within this after a deploy


def example_files(nodered: RunningNodeRed) -> list[Path]:
    root = nodered.managed.app_dir / "node_modules" / "@node-red" / "nodes" / "examples"
    return sorted(root.rglob("*.json"))


def known_needs() -> dict[str, str]:
    """``relative path -> what it needs`` from the kept list; a reason starting ``sometimes:``
    marks a flow whose need depends on the machine (a port another program may hold)."""
    needs: dict[str, str] = {}
    for line in NEEDS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition("\t")
            needs[name.strip()] = why.strip()
    return needs


@pytest.fixture(scope="module")
def admin(nodered: RunningNodeRed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nodered.url, headers=nodered.admin_headers, timeout=30) as client:
        original = client.get("/flows", headers=V2).json()
        yield client
        client.post(
            "/flows",
            json={"flows": original["flows"]},
            headers={"Node-RED-Deployment-Type": "full"},
        )


def _log_errors(log: Path, offset: int) -> list[str]:
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    return [line for line in text.splitlines() if "[error]" in line]


def _deploy_and_watch(
    admin: httpx.Client, nodered: RunningNodeRed, nodes: list[dict[str, Any]]
) -> list[str]:
    offset = nodered.log_file.stat().st_size
    answer = admin.post(
        "/flows", json={"flows": nodes}, headers={**V2, "Node-RED-Deployment-Type": "full"}
    )
    assert answer.status_code in (200, 204), answer.text
    time.sleep(SETTLE_S)
    return _log_errors(nodered.log_file, offset)


def test_every_example_imports_round_trips_and_deploys(
    nodered: RunningNodeRed, admin: httpx.Client
) -> None:
    files = example_files(nodered)
    assert len(files) == 113, f"expected the 113 example flows of node-red, found {len(files)}"
    root = example_root(files)
    needs = known_needs()
    failed_start: dict[str, list[str]] = {}
    for path in files:
        name = str(path.relative_to(root))
        flow = json.loads(path.read_text())
        imported = from_nodered(flow)
        reported = {entry.node_id for entry in imported.report.nodes}
        assert reported == {str(n["id"]) for n in flow}, f"{name}: report misses nodes"
        back = to_nodered_flows(imported.workflows, source=imported.source, explicit_tabs=False)
        assert back == flow, f"{name}: the round trip changed the flow"
        deployable = to_nodered_flows(imported.workflows, source=imported.source)
        refused = check_flow(deployable)
        if refused:  # Fluxo refuses to deploy it (a wire or link to a node not in the file)
            failed_start[name] = [f"pre-deploy check: {where}: {what}" for where, what in refused]
            continue
        errors = _deploy_and_watch(admin, nodered, deployable)
        if errors:
            failed_start[name] = errors
    unexpected = {n: e for n, e in failed_start.items() if n not in needs}
    assert not unexpected, "flows that failed to start:\n" + json.dumps(unexpected, indent=2)
    always = {n for n, why in needs.items() if not why.startswith("sometimes:")}
    assert always <= set(failed_start), (
        "corpus_needs.txt lists flows that now start cleanly: "
        f"{sorted(always - set(failed_start))}; remove them from the list"
    )
    clean = len(files) - len(failed_start)
    print(f"{clean} of {len(files)} example flows deploy and start cleanly")


def example_root(files: list[Path]) -> Path:
    for parent in files[0].parents:
        if parent.name == "examples":
            return parent
    raise AssertionError("the example flows are not under an examples/ folder")
