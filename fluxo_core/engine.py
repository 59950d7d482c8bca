"""The Engine protocol: one shape, three adapters (step, Node-RED, Argo), and their registry.

The control plane reaches engines only through this protocol and the registry, by name. Every
method takes and returns models, raises only :class:`~fluxo_core.errors.FluxoError` subclasses, and
is idempotent where it can be: ``deploy`` is keyed by workflow name + version, ``start`` by job id.

What differs between engines is declared, never discovered: where an engine runs its jobs
(:attr:`EngineCapabilities.locality`), which steps it runs (``step_kinds``, ``native_engines``),
its lifecycle (:meth:`Engine.open` / :meth:`Engine.aclose`, no-ops where there is nothing to
do) and whether it starts a job inside the transaction that creates it (:meth:`Engine.starter`).

This module is part of the model: it imports no storage type. Where a transaction crosses the
contract, it is the small :class:`JobTransaction` protocol, which the storage's transaction
satisfies.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from fluxo_core.errors import ConfigError
from fluxo_core.ir.packet import Packet
from fluxo_core.ir.workflow import ENGINES, Workflow

__all__ = [
    "ENGINE_FACTORIES",
    "JOB_PHASES",
    "Deployment",
    "Engine",
    "EngineCapabilities",
    "EngineRegistry",
    "JobPhase",
    "JobStarter",
    "JobTransaction",
    "Locality",
    "RunHandle",
    "RunStatus",
    "StartRequest",
    "StepPhase",
    "StepState",
    "load_engine",
]

JobPhase = Literal["queued", "running", "succeeded", "failed", "cancelled", "blocked"]
JOB_PHASES: tuple[JobPhase, ...] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "blocked",
)
FINAL_PHASES = frozenset({"succeeded", "failed", "cancelled"})
StepPhase = Literal[
    "pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled", "blocked"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Locality = Literal["in_process", "external"]
"""Where an engine runs its jobs: ``in_process``, inside Fluxo with the job state in Fluxo's
database (it consumes its own queue, ``engine.<name>``, and reports status itself); or
``external``, on a server of its own (Node-RED, Argo), whose jobs Fluxo starts from a runner and
observes through the service calls the engine makes back through the gateway."""


class EngineCapabilities(_Model):
    """What an engine is and can run; ``deploy`` refuses a workflow that needs more.

    Attributes:
        locality: where the engine runs its jobs (see :data:`Locality`); the control plane
            starts, observes and cancels jobs accordingly.
        step_kinds: the step kinds it runs.
        native_engines: whose ``native`` steps it runs.
    """

    locality: Locality
    step_kinds: frozenset[str]
    native_engines: frozenset[str] = frozenset()
    parallel: bool = True
    cancel: bool = True
    per_step_status: bool = True


class Deployment(_Model):
    """A workflow version deployed on an engine."""

    workflow: str  # name@version
    engine: str
    details: dict[str, Any] = Field(default_factory=dict)


class StartRequest(_Model):
    """Start the job ``job_id`` of ``workflow`` (name@version) with ``input``.

    ``account`` is the job's account: a workflow name is unique only in its account, so an
    engine shared by several accounts finds the deployed workflow by both (it deployed it under
    the workflow's ``metadata.account``). None for a workflow deployed without an account.
    """

    job_id: str
    workflow: str
    input: Packet
    account: str | None = None
    # Set when a stopped job runs again (resumed, retried): a new run of the same job, whose
    # calls keep their packet ids (so the gateway answers finished steps from their results).
    rerun: str | None = None


class RunHandle(_Model):
    engine: str
    job_id: str
    run_id: str


class StepState(_Model):
    """One execution of a step in a job (a step inside a fan-out runs once per item)."""

    key: str  # unique in the job, e.g. ``reserve[2]``
    step_id: str
    phase: StepPhase
    attempt: int
    call_id: str | None = None
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunStatus(_Model):
    job_id: str
    phase: JobPhase
    steps: list[StepState] = Field(default_factory=list)
    result: Any = None
    error: dict[str, Any] | None = None


class JobTransaction(Protocol):
    """The open transaction that inserts new job rows, as the engine contract sees it.

    A :data:`JobStarter` writes into it so that a job and what its start causes commit (or roll
    back) together. An engine that starts jobs this way keeps them in Fluxo's own database and
    works on the storage's transaction itself; the contract names only what every transaction
    offers, so that this model layer depends on no storage type.
    """

    def notify(self, *channels: str) -> None:
        """Wake the waiters of these channels once (and only if) the transaction commits."""
        ...

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` on the event loop after a successful commit."""
        ...


JobStarter = Callable[[JobTransaction, Sequence[dict[str, Any]]], None]
"""Starts jobs whose ``jobs`` rows this transaction inserts right after: writes what the start
causes (steps, calls) and leaves each row dict as the start left the job (status, active,
result, error, started_at, finished_at), so the row is written once, already started."""


@runtime_checkable
class Engine(Protocol):
    """What every engine adapter implements."""

    name: str
    capabilities: EngineCapabilities

    async def open(self) -> None:
        """Start what the engine runs in the background (the step engine: its queue consumer).

        Called once, before the engine is asked for anything; a no-op for an engine that has
        nothing to run (its clients connect on first use).
        """
        ...

    async def aclose(self) -> None:
        """Stop the background work :meth:`open` started and release clients (idempotent)."""
        ...

    async def deploy(self, workflow: Workflow) -> Deployment: ...

    async def undeploy(self, workflow: str, *, account: str | None = None) -> None: ...

    async def starter(self, account: str, workflow: str, version: int) -> JobStarter | None:
        """How to start jobs of this workflow version in the transaction that creates them.

        An engine whose jobs live in Fluxo's database (the step engine) returns a
        :data:`JobStarter`: the job row and the job's first service calls commit together, and
        no start message makes a round trip through the engine's queue first (one hop less per
        job). ``None`` means: send a ``start`` message on ``engine.<name>``, which the engine's
        consumer (in process) or Fluxo's runner of external engines turns into :meth:`start`.
        """
        ...

    async def start(self, request: StartRequest) -> RunHandle: ...

    async def status(self, handle: RunHandle) -> RunStatus: ...

    async def cancel(self, handle: RunHandle) -> None: ...


# -- the registry ---------------------------------------------------------------------------------

ENGINE_FACTORIES: Final[Mapping[str, str]] = {
    name: f"engines.{name}:create_engine" for name in ENGINES
}
"""Each engine's factory, by the engine's name, as ``module:function``. The names are the IR's
(:data:`fluxo_core.ir.ENGINES`), and an engine is imported only when a Fluxo runs it (the way
kombu loads a transport by its alias), so nothing of the model or the control plane imports an
engine package. Every factory takes ``(runtime, workflows, *, config, poll_interval_s,
lease_s)``."""


def load_engine(name: str, *args: Any, **kwargs: Any) -> Engine:
    """Build the engine called ``name`` with its registered factory.

    Raises:
        ConfigError: no engine of that name, or its factory made an engine of another name.
    """
    target = ENGINE_FACTORIES.get(name)
    if target is None:
        raise ConfigError(
            f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}", engine=name
        )
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    engine: Engine = factory(*args, **kwargs)
    if engine.name != name:
        raise ConfigError(
            f"the factory {target} made an engine named {engine.name!r}, not {name!r}",
            engine=name,
        )
    return engine


class EngineRegistry:
    """The engines of one Fluxo, by name; the control plane never imports an engine package."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}

    def register(self, engine: Engine) -> None:
        self._engines[engine.name] = engine

    def get(self, name: str) -> Engine:
        try:
            return self._engines[name]
        except KeyError:
            known = ", ".join(sorted(self._engines)) or "none"
            raise ConfigError(
                f"engine {name!r} is not available in this Fluxo (available: {known})",
                engine=name,
            ) from None

    def names(self) -> list[str]:
        return sorted(self._engines)

    def engines(self) -> list[Engine]:
        """The engines, in the order of their names."""
        return [self._engines[name] for name in sorted(self._engines)]
