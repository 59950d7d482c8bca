"""Which engines can run a workflow: each engine's declared capabilities, then its translator's
checks (the same checks an apply runs, so the answer is the one the engine would give)."""

from __future__ import annotations

from dataclasses import dataclass

from fluxo.control.jobs import _check_runnable
from fluxo_core.engine import EngineRegistry
from fluxo_core.errors import FluxoError
from fluxo_core.ir import ENGINES, Workflow
from translators import NodeRedOptions, check_argo, check_flow, to_argo, to_nodered

__all__ = ["EngineFit", "engine_fits"]

_PROBLEMS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class EngineFit:
    """One engine's answer: ``installed`` here, and ``problems`` (empty: it can run it)."""

    engine: str
    installed: bool
    problems: tuple[str, ...]

    @property
    def runs(self) -> bool:
        return not self.problems


def engine_fits(workflow: Workflow, registry: EngineRegistry) -> list[EngineFit]:
    """Every engine Fluxo knows, in the order of ``fluxo_core.ir.ENGINES``."""
    installed = {engine.name: engine for engine in registry.engines()}
    fits = []
    for name in ENGINES:
        problems: list[str] = []
        engine = installed.get(name)
        if engine is not None:
            try:
                _check_runnable(engine, workflow)
            except FluxoError as exc:
                problems.append(exc.message)
        if not problems:
            problems += _translator_problems(name, workflow)
        fits.append(EngineFit(name, engine is not None, tuple(problems[:_PROBLEMS_SHOWN])))
    return fits


def _translator_problems(engine: str, workflow: Workflow) -> list[str]:
    try:
        if engine == "nodered":
            found = check_flow(to_nodered(workflow, options=NodeRedOptions()))
            return [f"{where}: {message}" for where, message in found]
        if engine == "argo":
            bundle = to_argo(
                workflow, gateway_url="http://fluxo", version=workflow.metadata.version or "0"
            )
            found = check_argo(bundle.workflow_template)
            return [f"{where}: {message}" for where, message in found]
    except FluxoError as exc:  # the translator refuses what the engine cannot express
        return [exc.message]
    return []
