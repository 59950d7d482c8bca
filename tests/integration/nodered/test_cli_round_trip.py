"""The round trip through the CLI, as a user does it: ``fluxo import nodered FILE -o DIR``,
``fluxo apply -f DIR``, then ``fluxo export NAME --engine nodered`` for every workflow, on each of
the 113 example flows shipped in the node-red package, against a real Node-RED (the workflows the
import puts on the ``nodered`` engine are deployed there when applied).

Lossless: the exported flows together hold every node of the file, by id, with the same
content; any other node is one Fluxo adds (the tab an old-format file lacks). The example files
are those of the Node-RED the test session installs (``tests/support/nodered.py``), found at
collection; without them the test skips, or fails under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fluxo.cli import main
from tests.support.nodered import IN_CI, RunningNodeRed, _cache_dir

_EXAMPLES_ENV = os.environ.get("FLUXO_NODERED_EXAMPLES")
EXAMPLES = (
    Path(_EXAMPLES_ENV)
    if _EXAMPLES_ENV
    else _cache_dir() / "app" / "node_modules" / "@node-red" / "nodes" / "examples"
)
FILES = sorted(EXAMPLES.rglob("*.json")) if EXAMPLES.is_dir() else []
V2 = {"Node-RED-API-Version": "v2"}


def _fluxo(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fluxo_env(
    nodered: RunningNodeRed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """One Fluxo home for the module, whose nodered engine is the session's Node-RED; the
    Node-RED's flows are put back as they were at the end."""
    home = tmp_path_factory.mktemp("round-trip-home")
    env = {
        "FLUXO_HOME": str(home),
        "FLUXO_ENGINES": "step,nodered",
        "FLUXO_NODERED_URL": nodered.url,
        "FLUXO_NODERED_ADMIN_TOKEN": nodered.admin_token,
    }
    with httpx.Client(base_url=nodered.url, headers=nodered.admin_headers, timeout=30) as admin:
        original = admin.get("/flows", headers=V2).json()
        yield env
        admin.post(
            "/flows",
            json={"flows": original["flows"]},
            headers={"Node-RED-Deployment-Type": "full"},
        )


def _id(path: Path) -> str:
    return str(path.relative_to(EXAMPLES)) if FILES else str(path)


@pytest.mark.parametrize("path", FILES or [Path("no-examples")], ids=_id)
def test_import_apply_export_gives_every_node_back(
    path: Path,
    fluxo_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    if not FILES:
        message = f"the example flows of the node-red package are not at {EXAMPLES}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message + " (run a Node-RED test first, or set FLUXO_NODERED_EXAMPLES)")
    for name, value in fluxo_env.items():
        monkeypatch.setenv(name, value)
    original: list[dict[str, Any]] = json.loads(path.read_text())
    out = tmp_path / "imported"

    code, report, err = _fluxo("import", "nodered", str(path), "-o", str(out), "--json")
    assert code == 0, err
    workflows = json.loads(report)["workflows"]
    sidecars = list(out.glob("*.flow.json"))
    assert len(sidecars) == 1
    for workflow in workflows:  # the YAML names its sidecar and stays small: no flow in it
        document = yaml.safe_load((out / f"{workflow['name']}.yaml").read_text())
        assert document["spec"]["source"] == {"format": "nodered", "file": sidecars[0].name}
        assert document["spec"]["engine"] == workflow["engine"]

    code, applied, err = _fluxo("apply", "-f", str(out))
    assert code == 0, err
    exported: dict[str, dict[str, Any]] = {}
    for workflow in workflows:
        name = workflow["name"]
        line = next(li for li in applied.splitlines() if li.startswith(f"workflow/{name} "))
        if workflow["runnable"]:
            assert "Ready=False" not in line, line
            code, flow, err = _fluxo("export", name, "--engine", "nodered")
        else:
            # No engine runs it as imported (the import said so): nothing stored, and the
            # round trip goes through the file instead of the store.
            assert "Ready=False" in line, line
            code, _, err = _fluxo("export", name, "--engine", "nodered")
            assert code == 1, err
            assert "no workflow" in err, err
            code, flow, err = _fluxo("export", str(out / f"{name}.yaml"), "--engine", "nodered")
        assert code == 0, err
        assert "generated" not in err, err  # the source was used, not a generated flow
        for node in json.loads(flow):
            exported.setdefault(node["id"], node)
    by_id = {node["id"]: node for node in original}
    missing = sorted(set(by_id) - set(exported))
    assert not missing, f"nodes not exported: {missing}"
    changed = sorted(nid for nid, node in by_id.items() if exported[nid] != node)
    assert not changed, f"nodes exported with another content: {changed}"
    added = {node["type"] for nid, node in exported.items() if nid not in by_id}
    assert added <= {"tab"}, f"nodes the export added: {added}"
