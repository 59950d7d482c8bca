"""The built-in step engine (default, embedded): durable jobs in the database."""

from engines.step._nodered import (
    NODERED_MSG_CONTENT_TYPE,
    native_problem,
    native_steps_by_node,
    step_runnable,
)
from engines.step.engine import ENGINE_QUEUE, StepEngine
from fluxo_core.config import FluxoConfig
from fluxo_core.storage.workflows import WorkflowStore
from service_runtime import ServiceRuntime

__all__ = [
    "ENGINE_QUEUE",
    "NODERED_MSG_CONTENT_TYPE",
    "StepEngine",
    "create_engine",
    "native_problem",
    "native_steps_by_node",
    "step_runnable",
]


def create_engine(
    runtime: ServiceRuntime,
    workflows: WorkflowStore,
    *,
    config: FluxoConfig | None = None,
    poll_interval_s: float = 1.0,
    lease_s: float = 15.0,
) -> StepEngine:
    """The registry's factory for ``step`` (it needs nothing from ``config``)."""
    return StepEngine(runtime, workflows, poll_interval_s=poll_interval_s, lease_s=lease_s)
