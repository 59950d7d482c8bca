"""``fluxo import nodered``, ``validate``, ``apply`` and ``export --engine nodered`` on one flow,
run in-process (the commands' own ``main``, on a local SQLite home): the round trip, and what
changes once the workflow is edited."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from fluxo.cli import main

FLOW = Path(__file__).resolve().parents[2] / "examples" / "order-alerts.nodered.json"


def fluxo(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_an_imported_flow_comes_back_from_export_until_it_is_edited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXO_HOME", str(tmp_path / "home"))
    original = json.loads(FLOW.read_text())
    out = tmp_path / "out"
    assert fluxo("import", "nodered", str(FLOW), "-o", str(out))[0] == 0
    yaml_file = out / "order-alerts.yaml"
    code, checked, err = fluxo("validate", str(yaml_file))
    assert code == 0, err
    assert "source order-alerts-nodered.flow.json: 10 node(s), matches" in checked
    code, _, err = fluxo("apply", "-f", str(out))
    assert code == 0, err

    def exported(ref: str) -> tuple[list[dict[str, object]], str]:
        code, flow, err = fluxo("export", ref, "--engine", "nodered")
        assert code == 0, err
        return json.loads(flow), err

    by_name, note = exported("order-alerts")
    assert note == ""
    assert sorted(by_name, key=lambda n: str(n["id"])) == sorted(original, key=lambda n: n["id"])
    by_file, _ = exported(str(yaml_file))  # a workflow file, as validate takes
    assert by_file == by_name
    # Edited after the import: the source no longer says what the workflow does.
    yaml_file.write_text(yaml_file.read_text().replace("name: order total", "name: order sum"))
    assert fluxo("apply", "-f", str(out))[0] == 0
    generated, note = exported("order-alerts")
    assert "edited since its import" in note
    assert "step 'order-total' changed" in note
    assert not {n["id"] for n in generated} & {n["id"] for n in original}
    assert "order sum" in {n.get("name") for n in generated}
    code, warned, _ = fluxo("validate", str(yaml_file))
    assert code == 0
    assert "warning: workflow 'order-alerts' was edited" in warned


def test_a_sidecar_that_is_missing_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXO_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert fluxo("import", "nodered", str(FLOW), "-o", str(out))[0] == 0
    (out / "order-alerts-nodered.flow.json").unlink()
    code, _, err = fluxo("apply", "-f", str(out))
    assert code == 1
    assert "spec.source.file: cannot read" in err
    assert "order-alerts-nodered.flow.json" in err
    assert "remove spec.source" in err
