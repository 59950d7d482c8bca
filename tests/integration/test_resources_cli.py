"""``fluxo apply -f FOLDER``, ``get``, ``describe``, ``delete`` on the local database, as a user
runs them; a stale document is refused; a bad one names its file, document and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.fluxo_process import run_fluxo as fluxo

pytestmark = pytest.mark.timeout(180)

WORKFLOWS = """\
apiVersion: fluxo.dev/v1
kind: Workflow
metadata: {name: greet, labels: {team: ops}}
spec:
  steps:
    - {id: parse, kind: service, service: noop}
---
apiVersion: fluxo.dev/v1
kind: Quota
metadata: {name: monthly}
spec: {kind: calls, limit: 1000, period: month}
"""
SERVICE = """\
apiVersion: fluxo.dev/v1
kind: Service
metadata: {name: noop}
spec: {price: {perCall: "0.002"}}
"""


def test_apply_a_folder_then_get_describe_and_delete(tmp_path: Path) -> None:
    folder = tmp_path / "resources"
    folder.mkdir()
    (folder / "a.yaml").write_text(WORKFLOWS)
    (folder / "b.yml").write_text(SERVICE)
    (folder / "notes.txt").write_text("not a resource")

    applied = fluxo("apply", "-f", str(folder), home=tmp_path)
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    assert lines[0] == "workflow/greet created"
    assert lines[1] == "quota/monthly created"  # Ready: no condition to report
    assert lines[2] == "service/noop created"  # Ready: enforced
    [noop] = [
        line for line in fluxo("services", home=tmp_path).stdout.splitlines() if "noop@" in line
    ]
    assert "0.002 EUR/call [applied: price]" in noop

    table = fluxo("get", "WF", home=tmp_path)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "ENGINE", "STEPS", "STATUS", "AGE"]
    assert row.split()[:5] == ["greet", "1", "step", "1", "Ready"]

    described = fluxo("describe", "workflows", "greet", home=tmp_path)
    assert "Labels:              team=ops" in described.stdout
    assert "Ready   True     Applied" in described.stdout

    as_yaml = fluxo("get", "wf", "greet", "-o", "yaml", home=tmp_path)
    document = yaml.safe_load(as_yaml.stdout)
    assert document["metadata"]["resourceVersion"] == "2"
    # Someone applies a change after we read it: our copy is stale.
    changed = WORKFLOWS.split("---")[0].replace("team: ops", "team: sales")
    (tmp_path / "newer.yaml").write_text(changed)
    assert fluxo("apply", "-f", str(tmp_path / "newer.yaml"), home=tmp_path).returncode == 0
    document["metadata"]["labels"] = {"team": "mine"}
    (tmp_path / "stale.yaml").write_text(yaml.safe_dump(document))
    stale = fluxo("apply", "-f", str(tmp_path / "stale.yaml"), home=tmp_path)
    assert stale.returncode == 1
    assert "workflow/greet was changed since it was read" in stale.stderr
    assert "get it again" in stale.stderr

    as_json = json.loads(fluxo("get", "quota", "-o", "json", home=tmp_path).stdout)
    assert [d["metadata"]["name"] for d in as_json["items"]] == ["monthly"]

    # Deleting the Service gives the code's terms back.
    assert fluxo("delete", "service", "noop", home=tmp_path).returncode == 0
    [noop] = [
        line for line in fluxo("services", home=tmp_path).stdout.splitlines() if "noop@" in line
    ]
    assert "applied" not in noop
    assert "0.002" not in noop

    deleted = fluxo("delete", "quota", "monthly", home=tmp_path)
    assert deleted.stdout.strip() == "quota/monthly deleted"
    assert fluxo("get", "quotas", home=tmp_path).stdout.strip() == "No quotas found."
    missing = fluxo("describe", "quota", "monthly", home=tmp_path)
    assert missing.returncode == 1
    assert "no Quota 'monthly'" in missing.stderr


def test_a_bad_document_is_named_by_file_document_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "resources"
    folder.mkdir()
    (folder / "a.yaml").write_text(WORKFLOWS)
    (folder / "b.yaml").write_text(SERVICE.replace('"0.002"', "0.002") + "---\n" + SERVICE)
    result = fluxo("apply", "-f", str(folder), home=tmp_path)
    assert result.returncode == 1
    assert f"{folder / 'b.yaml'} doc[0] spec.price.perCall: " in result.stderr, result.stderr
    assert "quote it in YAML" in result.stderr
    # Nothing was applied.
    assert fluxo("get", "workflows", home=tmp_path).stdout.strip() == "No workflows found."
    unknown = fluxo("get", "gizmos", home=tmp_path)
    assert unknown.returncode == 1
    assert "unknown kind 'gizmos'" in unknown.stderr
