"""The named places of a service call, their request objects, and the chain that runs them.

A call passes three places, in this order (admit, record, result), with four hooks between them;
an :class:`Interceptor` overrides the hooks of the places it cares about, and gets ONE request
object there (new fields can join a request without breaking an interceptor), the way Temporal's
SDK hands each interceptor method one ``*Input``:

``admit`` (async), before anything of the calls is written
    at the gateway (a client's, an API's or a remote engine's calls), when a job is created,
    and in the worker just before the handlers run (a block or a cancel stops queued work).
    Refuse a call with :meth:`AdmitRequest.refuse`.
``admit_in_transaction`` (sync), the same decision inside the worker's write transaction
    for inline handlers, which are taken, run and settled in one transaction (nothing can be
    awaited there). An interceptor that admits but cannot decide here makes the worker claim
    inline handlers' messages like any others instead (a little slower, equally correct).
``on_record`` (sync), inside the transaction that writes the call rows and input messages
    of every engine path (gateway, step engine). It observes; it cannot refuse (the engine's
    own state change commits with it).
``on_result`` (sync), inside the transaction that applies the outcomes of handler runs:
    with the inbox rows and the calls' results, so what it writes is applied exactly once
    (Metering's usage records), however often a message is delivered.

Hooks that run inside a transaction get it as their second argument, to write in. Every hook
takes a batch: the runtime admits, records and settles calls by the hundred, and one statement
per batch is what keeps it fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fluxo_core.errors import FluxoError
from fluxo_core.ir import Packet
from fluxo_core.storage import Transaction
from service_runtime.catalog import ServiceInfo
from service_runtime.sdk import Service

__all__ = [
    "AdmitPlace",
    "AdmitRequest",
    "CallRequest",
    "CallResult",
    "Interceptor",
    "InterceptorChain",
    "PreparedCall",
    "RecordPlace",
    "RecordRequest",
    "ResultRequest",
    "ResultStatus",
]

AdmitPlace = Literal["gateway", "job", "worker"]
ResultStatus = Literal["succeeded", "failed", "retrying"]


@dataclass(frozen=True, slots=True)
class CallRequest:
    """Who calls which service, inside which job: what admission and quotas decide on."""

    account_id: str
    user_id: str
    service: str
    version: str
    job_id: str | None
    step_id: str | None
    workflow: str | None
    call_id: str | None = None  # the packet id, for a call (None for a job being created)

    @classmethod
    def for_call(cls, packet: Packet, service: str, version: str) -> CallRequest:
        """The request for a call of ``service@version`` with ``packet``."""
        return cls(
            account_id=packet.account_id,
            user_id=packet.actor.user.id,
            service=service,
            version=version,
            job_id=packet.job_id,
            step_id=packet.step_id,
            workflow=packet.workflow,
            call_id=packet.id,
        )


@dataclass(slots=True)
class AdmitRequest:
    """Calls about to be admitted at ``place``; interceptors refuse some with :meth:`refuse`.

    Interceptors run in the chain's order and each sees the refusals of those before it, so a
    quota after admission does not count a call that admission refused.
    """

    place: AdmitPlace
    calls: Sequence[CallRequest]
    refusals: list[FluxoError | None] = field(init=False)

    def __post_init__(self) -> None:
        self.refusals = [None] * len(self.calls)

    def refuse(self, index: int, error: FluxoError) -> None:
        """Refuse ``calls[index]`` with ``error`` (the first refusal of a call is the one kept)."""
        if self.refusals[index] is None:
            self.refusals[index] = error

    def pending(self) -> Iterator[tuple[int, CallRequest]]:
        """``(index, call)`` of the calls nobody refused so far."""
        for index, call in enumerate(self.calls):
            if self.refusals[index] is None:
                yield index, call

    def raise_refused(self) -> None:
        """Raise the first refusal, if any call was refused (for places that admit all or none)."""
        for refusal in self.refusals:
            if refusal is not None:
                raise refusal


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A call's packet, checked and serialised: what the gateway writes as a call row."""

    id: str
    account_id: str
    user_id: str
    job_id: str | None
    step_id: str | None
    body: bytes
    workflow: str | None = None  # name@version, for a call inside a job

    @classmethod
    def of(cls, packet: Packet, body: bytes) -> PreparedCall:
        return cls(
            packet.id,
            packet.account_id,
            packet.actor.user.id,
            packet.job_id,
            packet.step_id,
            body,
            packet.workflow,
        )


RecordPlace = Literal["gateway", "engine"]


@dataclass(frozen=True, slots=True)
class RecordRequest:
    """Calls of one service being written, with their input messages (new calls only: a packet
    sent again is the same call and is not recorded twice).

    ``place``: ``gateway`` for a submission of its own (an exception in ``on_record`` refuses
    it whole, nothing written); ``engine`` for calls an engine's state change causes, written
    in the engine's transaction, which must not fail for them (the worker refuses them later).
    """

    service: ServiceInfo
    calls: Sequence[PreparedCall]
    reply_to: str | None
    place: RecordPlace = "engine"


@dataclass(slots=True)  # not frozen: one is built per call, and frozen ones build 4x slower
class CallResult:
    """The outcome of one run of a call's handler, as the worker applies it (read-only).

    Args:
        packet: the call's input packet (``packet.id`` is the call id).
        service: the service that ran it (its name, version and price).
        status: ``succeeded`` and ``failed`` are final; ``retrying`` means another delivery comes.
        attempt: which delivery this was (1 for the first).
        outputs: the output payloads, on success (a list payload is one packet of N items).
        error: why it failed or retries.
        span_id: the W3C span id of this run; the output packets carry it as ``parent_id``.
        started_at: when the handler started (epoch seconds), or when it was refused.
        duration_s: how long the handler ran (zero if it never ran).
    """

    packet: Packet
    service: Service
    status: ResultStatus
    attempt: int
    outputs: Sequence[Any]
    error: FluxoError | None
    span_id: str
    started_at: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class ResultRequest:
    """The outcomes applied by one worker transaction (duplicates, and messages that are not
    packets at all, left out), at ``now`` (epoch seconds)."""

    results: Sequence[CallResult]
    now: float


class Interceptor:
    """A component at the named places of a call; override the hooks you need.

    The in-transaction hooks run where the transaction runs (a database thread on PostgreSQL)
    while it holds its locks: they issue statements through ``tx`` and nothing slow; anything
    to do after the commit goes to ``tx.after_commit``. An exception in a hook fails the whole
    batch (a client's submission; a worker's batch, which is then retried): refuse a call with
    :meth:`AdmitRequest.refuse` instead.
    """

    async def admit(self, request: AdmitRequest) -> None:
        """Before anything is written; refuse calls with ``request.refuse``."""

    def admit_in_transaction(self, request: AdmitRequest, tx: Transaction) -> None:
        """The decision of :meth:`admit`, inside the worker's write transaction (inline
        handlers); read what you need through ``tx``."""

    def on_record(self, request: RecordRequest, tx: Transaction) -> None:
        """Calls being written, inside the transaction that writes them."""

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        """Outcomes being applied, inside the transaction that applies them exactly once."""


class InterceptorChain:
    """Runs interceptors in order at each place of a call.

    Each hook runs only the interceptors that override it (looked up once, here), so a place
    nobody watches costs nothing on the hot path.
    """

    def __init__(self, interceptors: Sequence[Interceptor] = ()) -> None:
        self.interceptors = tuple(interceptors)
        self._admit = _overriding(self.interceptors, "admit")
        self._admit_in_tx = _overriding(self.interceptors, "admit_in_transaction")
        self._record = _overriding(self.interceptors, "on_record")
        self._result = _overriding(self.interceptors, "on_result")

    @property
    def admits(self) -> bool:
        """Whether any interceptor decides on admission (else no admit request is built)."""
        return bool(self._admit)

    @property
    def admits_in_transaction(self) -> bool:
        """Whether every interceptor that admits can also decide inside a transaction."""
        return all(i in self._admit_in_tx for i in self._admit)

    @property
    def records(self) -> bool:
        return bool(self._record)

    @property
    def observes_results(self) -> bool:
        return bool(self._result)

    async def admit(self, request: AdmitRequest) -> None:
        for interceptor in self._admit:
            await interceptor.admit(request)

    def admit_in_transaction(self, request: AdmitRequest, tx: Transaction) -> None:
        for interceptor in self._admit_in_tx:
            interceptor.admit_in_transaction(request, tx)

    def on_record(self, request: RecordRequest, tx: Transaction) -> None:
        for interceptor in self._record:
            interceptor.on_record(request, tx)

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        for interceptor in self._result:
            interceptor.on_result(request, tx)


def _overriding(interceptors: tuple[Interceptor, ...], hook: str) -> list[Interceptor]:
    base = getattr(Interceptor, hook)
    return [i for i in interceptors if getattr(type(i), hook) is not base]
