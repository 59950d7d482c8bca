"""A deployed workflow version, pre-digested for running: step lookup, services, joins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engines.step._context import context_problems, native_context_scopes
from engines.step._nodered import (
    dropped_problems,
    native_events,
    native_ports,
    native_problem,
    native_steps_by_node,
)
from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.ir import (
    JoinStep,
    NativeStep,
    ServiceStep,
    SwitchStep,
    TransformStep,
    Workflow,
    merging_steps,
)
from fluxo_core.ir.transform import Parameters, Transform
from nodered_semantics.support import is_sequence_node
from service_runtime.catalog import ServiceInfo
from translators.nodered import DROPPED_LABEL

__all__ = ["RUNNABLE_KINDS", "Plan", "successors"]

RUNNABLE_KINDS = frozenset({"service", "switch", "transform", "split", "join", "delay", "native"})
"""Step kinds the engine runs; ``native`` only for Node-RED nodes the ``nodered-node`` service
supports (see :func:`engines.step._nodered.step_runnable`)."""


def successors(step: Any) -> list[str]:
    """Every step a step can hand its packet to (switch cases and default included)."""
    if isinstance(step, SwitchStep):
        targets = [t for case in step.cases for t in case.next] + list(step.default)
        return list(dict.fromkeys(targets))
    return list(getattr(step, "next", []))


@dataclass
class Plan:
    """What the engine needs to run jobs of one workflow version."""

    workflow: Workflow
    version: int
    services: dict[str, ServiceInfo]  # by step id (native steps: the nodered-node service)
    steps: dict[str, Any] = field(init=False)
    ports: dict[str, list[list[str]]] = field(init=False)  # native steps: targets per port
    # native steps watched by status/complete steps: those steps by event port
    events: dict[str, dict[int, list[str]]] = field(init=False)
    context_scopes: dict[str, list[str]] = field(init=False)  # native steps using context
    merging: set[str] = field(init=False)  # steps whose keys name where a token came from
    join_of_split: dict[str, str] = field(init=False)
    # Native steps that take a job's messages together (Node-RED joins, batches...), upstream
    # ones first.
    sequences: list[str] = field(init=False)
    transforms: dict[str, Transform] = field(init=False)
    params: dict[str, Parameters] = field(init=False)  # service steps with `with`, by step id

    def __post_init__(self) -> None:
        spec = self.workflow.spec
        self.steps = spec.steps_by_id()
        for step in spec.steps:
            if step.kind not in RUNNABLE_KINDS:
                raise UnsupportedFeatureError(
                    f"step {step.id!r} of workflow {self.workflow.metadata.name!r} is a "
                    f"{step.kind!r} step, which the step engine cannot run; choose the engine "
                    "it was made for (spec.engine) or replace the step",
                    step=step.id,
                    kind=step.kind,
                )
        dropped = dropped_problems(self.workflow)
        if dropped:
            raise UnsupportedFeatureError(
                f"the step engine would not run workflow {self.workflow.metadata.name!r} as "
                f"Node-RED runs its flow: {'; '.join(dropped)} (spec.engine: nodered)",
                dropped=self.workflow.metadata.labels.get(DROPPED_LABEL, ""),
            )
        self.ports = {}
        self.events = {}
        by_node = native_steps_by_node(self.workflow)  # once: per step it was quadratic
        for step in spec.steps:
            if isinstance(step, NativeStep):
                ports = native_ports(step, self.workflow, by_node)
                problem = native_problem(step, self.workflow, by_node)
                if problem is not None or isinstance(ports, str):
                    raise UnsupportedFeatureError(
                        f"{problem or ports}; so the step engine cannot run workflow "
                        f"{self.workflow.metadata.name!r}: run it on the nodered engine "
                        "(spec.engine: nodered) or replace the node",
                        step=step.id,
                        kind=step.kind,
                        node_type=str(step.config.get("type", "")),
                    )
                self.ports[step.id] = ports
                events = native_events(step, self.workflow)
                if events:
                    self.events[step.id] = events
        problems = context_problems(self.workflow)
        if problems:
            raise UnsupportedFeatureError(
                f"workflow {self.workflow.metadata.name!r}: {'; '.join(problems)} "
                "(spec.engine: nodered)"
            )
        self.context_scopes = native_context_scopes(self.workflow)
        self.merging = merging_steps(spec.steps)
        self.join_of_split = {
            step.split: step.id for step in spec.steps if isinstance(step, JoinStep)
        }
        self.sequences = _upstream_first(
            [s.id for s in spec.steps if isinstance(s, NativeStep) and is_sequence_node(s.config)],
            self.steps,
        )
        self.transforms = {
            step.id: Transform.parse(
                [op.model_dump(by_alias=True, exclude_unset=True) for op in step.ops],
                where=f"spec.steps[{step.id}].ops",
            )
            for step in spec.steps
            if isinstance(step, TransformStep)
        }
        self.params = {
            step.id: Parameters(step.with_, where=f"spec.steps[{step.id}].with")
            for step in spec.steps
            if isinstance(step, ServiceStep) and step.with_
        }

    @property
    def ref(self) -> str:
        return f"{self.workflow.metadata.name}@{self.version}"

    def service_steps(self) -> list[ServiceStep]:
        return [s for s in self.workflow.spec.steps if isinstance(s, ServiceStep)]


def _upstream_first(chosen: list[str], steps: dict[str, Any]) -> list[str]:
    """``chosen`` ordered so that a step comes before every chosen step it leads to."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in successors(steps[todo.pop()]):
                if target not in seen and target in steps:
                    seen.add(target)
                    todo.append(target)
        return seen

    reached = {sid: reach(sid) for sid in chosen}
    return sorted(chosen, key=lambda sid: sum(sid in reached[o] for o in chosen if o != sid))
