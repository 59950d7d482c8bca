"""The Engine protocol: one shape, three adapters (step, Node-RED, Argo).

The control plane reaches engines only through this protocol and the registry, by name. Every
method takes and returns models, raises only :class:`~fluxo_core.errors.FluxoError` subclasses, and
is idempotent where it can be: ``deploy`` is keyed by workflow name + version, ``start`` by job id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from fluxo_core.ir.packet import Packet
from fluxo_core.ir.workflow import Workflow

if TYPE_CHECKING:
    from fluxo_core.storage.database import Transaction

__all__ = [
    "JOB_PHASES",
    "Deployment",
    "Engine",
    "EngineCapabilities",
    "JobPhase",
    "JobStarter",
    "RunHandle",
    "RunStatus",
    "StartRequest",
    "StartsInTransaction",
    "StepPhase",
    "StepState",
]

JobPhase = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_PHASES: tuple[JobPhase, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_PHASES = frozenset({"succeeded", "failed", "cancelled"})
StepPhase = Literal["pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineCapabilities(_Model):
    """What an engine can run; ``deploy`` refuses a workflow that needs more."""

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


@runtime_checkable
class Engine(Protocol):
    """What every engine adapter implements."""

    name: str
    capabilities: EngineCapabilities

    async def deploy(self, workflow: Workflow) -> Deployment: ...

    async def undeploy(self, workflow: str, *, account: str | None = None) -> None: ...

    async def start(self, request: StartRequest) -> RunHandle: ...

    async def status(self, handle: RunHandle) -> RunStatus: ...

    async def cancel(self, handle: RunHandle) -> None: ...


JobStarter = Callable[["Transaction", Sequence[dict[str, Any]]], None]
"""Starts jobs whose ``jobs`` rows this transaction inserts right after: writes what the start
causes (steps, calls) and leaves each row dict as the start left the job (status, active,
result, error, started_at, finished_at), so the row is written once, already started."""


@runtime_checkable
class StartsInTransaction(Protocol):
    """An engine whose jobs live in Fluxo's own database (the step engine).

    It starts a job in the very transaction that creates it: the job row and the job's first
    service calls commit together, and no start message makes a round trip through the engine's
    queue first (one hop less per job, for latency and throughput). Other engines get a start
    message, which their runner turns into :meth:`Engine.start`.
    """

    async def starter(self, account: str, workflow: str, version: int) -> JobStarter: ...
