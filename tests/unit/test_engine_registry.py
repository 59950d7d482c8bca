"""The engine registry: engine names exist once, and every consumer reads them from there."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxo import cli
from fluxo_core.config import FluxoConfig
from fluxo_core.engine import ENGINE_FACTORIES, EngineRegistry, load_engine
from fluxo_core.errors import ConfigError
from fluxo_core.ir import DEFAULT_ENGINE, ENGINES, json_schema

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fluxo_core", "service_runtime", "translators", "engines")

# Where engine names may stand together in one literal: the list itself, and the IR's rule of
# which engines host another engine's native steps (a fact about steps, not a list of engines).
NAMES_HOME = {"fluxo_core/ir/workflow.py", "fluxo_core/ir/validation.py"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def _strings(node: ast.AST) -> set[str]:
    """The string constants a tuple, list, set or dict literal holds (dict: its keys)."""
    items: list[Any] = []
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        items = node.elts
    elif isinstance(node, ast.Dict):
        items = [k for k in node.keys if k is not None]
    elif isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}


def test_engine_names_are_listed_in_one_place_only() -> None:
    lists = [
        f"{path}:{node.lineno}"
        for path, tree in _modules()
        if path not in NAMES_HOME
        for node in ast.walk(tree)
        if len(_strings(node) & set(ENGINES)) >= 2
    ]
    assert lists == [], "engine names listed outside fluxo_core/ir/workflow.py (read ENGINES)"


def test_no_engine_is_inspected_with_hasattr() -> None:
    # What an engine is and does is declared in its capabilities and the protocol.
    found = [
        f"{path}:{node.lineno}"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) in ("hasattr", "getattr")
        and node.args
        and "engine" in ast.unparse(node.args[0]).lower()
    ]
    assert found == []


def test_every_engine_name_has_a_factory_that_imports() -> None:
    assert tuple(ENGINE_FACTORIES) == ENGINES
    for name, target in ENGINE_FACTORIES.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_the_names_reach_the_schema_the_config_and_the_cli(tmp_path: Path) -> None:
    spec = json_schema("workflow")["$defs"]["WorkflowSpec"]["properties"]["engine"]
    assert next(s for s in spec["anyOf"] if "enum" in s)["enum"] == list(ENGINES)
    assert FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path)}).engines == (DEFAULT_ENGINE,)
    with pytest.raises(ConfigError, match="known: " + ", ".join(ENGINES)):
        FluxoConfig.from_env({"FLUXO_HOME": str(tmp_path), "FLUXO_ENGINES": "kubeflow"})
    parser = cli._parser()
    token = parser.parse_args(["token", "--account", "a", "--user", "u", "--engine", "argo"])
    assert token.engine == "argo"
    with pytest.raises(SystemExit):  # the default engine runs inside Fluxo: no token for it
        parser.parse_args(["token", "--account", "a", "--user", "u", "--engine", DEFAULT_ENGINE])


def test_load_engine_builds_the_named_engine() -> None:
    engine = load_engine("nodered", None, None)
    assert engine.name == "nodered"
    assert engine.capabilities.locality == "external"


def test_load_engine_names_the_known_engines_for_an_unknown_one() -> None:
    with pytest.raises(ConfigError, match="unknown engine 'kubeflow'; known engines: step"):
        load_engine("kubeflow")


def test_load_engine_refuses_a_factory_that_makes_another_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(ENGINE_FACTORIES, "argo", "engines.nodered:create_engine")
    with pytest.raises(ConfigError, match="named 'nodered', not 'argo'"):
        load_engine("argo", None, None)


def test_the_registry_names_what_is_available_when_an_engine_is_missing() -> None:
    registry = EngineRegistry()
    registry.register(load_engine("nodered", None, None))
    with pytest.raises(ConfigError, match=r"engine 'argo' is not available .*available: nodered"):
        registry.get("argo")
    assert [e.name for e in registry.engines()] == ["nodered"]
