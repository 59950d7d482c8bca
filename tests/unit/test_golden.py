"""Golden files are rewritten only on request, and never in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.golden import RegenerateInCiError, regenerate_requested

ROOT = Path(__file__).resolve().parents[2]


def test_goldens_are_compared_unless_regeneration_is_requested() -> None:
    assert regenerate_requested({}) is False
    assert regenerate_requested({"CI": "true"}) is False
    assert regenerate_requested({"FLUXO_REGENERATE": "0"}) is False
    assert regenerate_requested({"FLUXO_REGENERATE": "1", "CI": "false"}) is True


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_regeneration_is_refused_in_ci(ci: str) -> None:
    with pytest.raises(RegenerateInCiError, match=r"refused in CI.*unset FLUXO_REGENERATE"):
        regenerate_requested({"FLUXO_REGENERATE": "1", "CI": ci})


def test_a_ci_run_asking_to_regenerate_stops_before_any_test(tmp_path: Path) -> None:
    env = {"FLUXO_REGENERATE": "1", "CI": "true", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "tests/unit/test_golden.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "FLUXO_REGENERATE=1 is refused in CI" in run.stderr + run.stdout
