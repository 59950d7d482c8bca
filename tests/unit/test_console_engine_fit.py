"""Which engines can run a workflow: the translators' checks (and, when installed, capabilities)."""

from __future__ import annotations

from pathlib import Path

from fluxo.console.engine_fit import engine_fits
from fluxo_core.engine import EngineRegistry
from fluxo_core.ir import load_workflows_yaml
from translators import from_nodered

ROOT = Path(__file__).resolve().parents[2]


def test_a_plain_workflow_fits_every_engine() -> None:
    workflow = load_workflows_yaml((ROOT / "examples/order-intake.yaml").read_text())[0]
    fits = engine_fits(workflow, EngineRegistry())
    assert [(f.engine, f.installed, f.runs) for f in fits] == [
        ("step", False, True),
        ("nodered", False, True),
        ("argo", False, True),
    ]


def test_a_native_node_red_step_does_not_fit_argo_and_says_why() -> None:
    imported = from_nodered((ROOT / "examples/order-alerts.nodered.json").read_text())
    fits = {f.engine: f for f in engine_fits(imported.workflows[0], EngineRegistry())}
    assert fits["nodered"].runs
    assert not fits["argo"].runs
    assert "order-total" in " ".join(fits["argo"].problems)
