"""Tracing: one span per handler run, in W3C trace context terms.

Packets carry a W3C ``trace_id`` (shared by a job's or a call chain's packets) and a
``parent_id`` (the span that produced them). Each run of a handler is a span of its own: the
worker gives it a ``span_id``, which its output packets carry as their ``parent_id``, so the
spans of a job link up into one trace.

:class:`Tracing` emits each committed run's :class:`Span` as one log line (at DEBUG, on this
module's logger) and to an optional ``export`` callable, or to a :class:`SpanSink` (an
OpenTelemetry exporter: the control plane builds one when an OTLP endpoint is configured; this
layer does not depend on OpenTelemetry). A sink also receives each ended job's
:class:`JobSpan`, from the engine that ended it. Spans are emitted after the commit that
applies their runs, so a rolled-back batch reports nothing it did not do.

A job's span and a call's span have ids derived from the job and call ids
(:func:`job_span_id`, :func:`call_span_id`), so any process can name them as a parent
without asking another: a call's span is the child of its packet's ``parent_id`` or else of
its job's span, and each run of its handler is a child of the call's span. One job is one
trace, whichever processes ran its parts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fluxo_core.storage import Transaction
from service_runtime.interceptors._base import (
    CallResult,
    Interceptor,
    ResultRequest,
    ResultStatus,
)

__all__ = [
    "JobSpan",
    "Span",
    "SpanExporter",
    "SpanSink",
    "Tracing",
    "call_span_id",
    "job_span_id",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Span:
    """One run of a call's handler.

    ``start`` is in epoch seconds; ``error`` is the error's code (``service_failed``, ...),
    never its message, so a span carries no payload data.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    call_id: str
    account_id: str
    job_id: str | None
    step_id: str | None
    status: ResultStatus
    attempt: int
    start: float
    duration_s: float
    error: str | None
    # When the call was made (its packet's created_at, epoch seconds): where its span starts.
    call_created_at: float | None = None

    @property
    def name(self) -> str:
        return f"call {self.service}"

    @property
    def final(self) -> bool:
        """Whether this run ended its call (no other delivery comes)."""
        return self.status != "retrying"

    @property
    def traceparent(self) -> str:
        """The span as a W3C ``traceparent`` header value (version 00, sampled)."""
        return f"00-{self.trace_id}-{self.span_id}-01"

    @classmethod
    def of(cls, result: CallResult) -> Span:
        packet = result.packet
        return cls(
            trace_id=packet.trace_id,
            span_id=result.span_id,
            parent_id=packet.parent_id,
            service=result.service.ref,
            call_id=packet.id,
            account_id=packet.account_id,
            job_id=packet.job_id,
            step_id=packet.step_id,
            status=result.status,
            attempt=result.attempt,
            start=result.started_at,
            duration_s=result.duration_s,
            error=result.error.code if result.error is not None else None,
            call_created_at=packet.created_at.timestamp(),
        )


@dataclass(frozen=True, slots=True)
class JobSpan:
    """A job, from its creation to its end (``start`` in epoch seconds).

    ``parent_id``: the span id its input packet carried (a job started from another's call),
    else None (the job's span is its trace's root). ``error`` is the error's code, if any.
    """

    trace_id: str
    parent_id: str | None
    job_id: str
    workflow: str
    engine: str
    account_id: str
    status: str
    start: float
    duration_s: float
    error: str | None

    @property
    def span_id(self) -> str:
        return job_span_id(self.job_id)

    @property
    def name(self) -> str:
        return f"job {self.workflow}"


def job_span_id(job_id: str) -> str:
    """The W3C span id of a job's span (16 hex), derived from its id."""
    return _span_id("job", job_id)


def call_span_id(call_id: str) -> str:
    """The W3C span id of a call's span (16 hex), derived from its id (the packet id)."""
    return _span_id("call", call_id)


def _span_id(kind: str, ident: str) -> str:
    digest = hashlib.blake2b(f"{kind}:{ident}".encode(), digest_size=8).hexdigest()
    return digest if digest != "0" * 16 else "0" * 15 + "1"  # all zeros is not a valid span id


class SpanSink(Protocol):
    """Where spans go (an OpenTelemetry exporter). Called on the event loop: hand the spans
    off, do not block."""

    def runs(self, spans: Sequence[Span]) -> None:
        """Handler runs (and, through the final ones, their calls)."""

    def jobs(self, spans: Sequence[JobSpan]) -> None:
        """Jobs that ended."""

    async def aclose(self) -> None:
        """Send what is buffered (at a stop: the process may end next)."""


SpanExporter = Callable[[Sequence[Span]], None]
"""Receives the spans of each committed batch (in the event loop: hand them off, do not block)."""


class Tracing(Interceptor):
    """Emits a :class:`Span` per handler run: a DEBUG log line, to ``export`` if given and to
    ``sink`` if given; and, through :meth:`jobs_ended`, each ended job's span to ``sink``.

    Costs nothing when none is on: spans are built only if someone reads them.
    """

    def __init__(self, export: SpanExporter | None = None, *, sink: SpanSink | None = None) -> None:
        self.export = export
        self.sink = sink

    @property
    def exports_jobs(self) -> bool:
        """Whether anyone reads job spans (else engines build none)."""
        return self.sink is not None

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        logged = log.isEnabledFor(logging.DEBUG)
        exported = self.export is not None or self.sink is not None
        if not (logged or exported) or not request.results:
            return
        spans = [Span.of(r) for r in request.results]

        async def emit() -> None:
            self._emit(spans, logged=logged)

        tx.after_commit(emit)

    def jobs_ended(self, tx: Transaction, spans: Sequence[JobSpan]) -> None:
        """Export these jobs' spans once ``tx`` commits (they ended in it)."""
        sink = self.sink
        if sink is None or not spans:
            return
        ended = list(spans)

        async def emit() -> None:
            try:
                sink.jobs(ended)
            except Exception as exc:
                log.warning("span sink %r failed: %s", sink, exc)

        tx.after_commit(emit)

    async def aclose(self) -> None:
        """Send the spans still buffered (at the end of the process)."""
        if self.sink is not None:
            await self.sink.aclose()

    def _emit(self, spans: list[Span], *, logged: bool) -> None:
        if logged:
            for s in spans:
                log.debug(
                    "span %s parent=%s call=%s service=%s job=%s step=%s status=%s attempt=%d "
                    "duration_ms=%.3f%s",
                    s.traceparent,
                    s.parent_id or "-",
                    s.call_id,
                    s.service,
                    s.job_id or "-",
                    s.step_id or "-",
                    s.status,
                    s.attempt,
                    s.duration_s * 1000,
                    f" error={s.error}" if s.error else "",
                )
        for target in (self.export, self.sink.runs if self.sink is not None else None):
            if target is None:
                continue
            try:
                target(spans)
            except Exception as exc:
                # The calls are committed; an exporter's failure must not fail the worker's batch.
                log.warning("span exporter %r failed: %s", target, exc)
