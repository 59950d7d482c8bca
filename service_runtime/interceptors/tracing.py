"""Tracing: one span per handler run, in W3C trace context terms.

Packets carry a W3C ``trace_id`` (shared by a job's or a call chain's packets) and a
``parent_id`` (the span that produced them). Each run of a handler is a span of its own: the
worker gives it a ``span_id``, which its output packets carry as their ``parent_id``, so the
spans of a job link up into one trace.

:class:`Tracing` emits each committed run's :class:`Span` as one log line (at DEBUG, on this
module's logger) and to an optional ``export`` callable: the hook for an OpenTelemetry (or any
other) exporter, which Fluxo itself does not depend on. Spans are emitted after the commit that
applies their runs, so a rolled-back batch reports nothing it did not do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fluxo_core.storage import Transaction
from service_runtime.interceptors._base import (
    CallResult,
    Interceptor,
    ResultRequest,
    ResultStatus,
)

__all__ = ["Span", "SpanExporter", "Tracing"]

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

    @property
    def name(self) -> str:
        return f"call {self.service}"

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
        )


SpanExporter = Callable[[Sequence[Span]], None]
"""Receives the spans of each committed batch (in the event loop: hand them off, do not block)."""


class Tracing(Interceptor):
    """Emits a :class:`Span` per handler run: a DEBUG log line, and ``export`` if given.

    Costs nothing when neither is on: spans are built only if someone reads them.
    """

    def __init__(self, export: SpanExporter | None = None) -> None:
        self.export = export

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        logged = log.isEnabledFor(logging.DEBUG)
        if not (logged or self.export is not None) or not request.results:
            return
        spans = [Span.of(r) for r in request.results]

        async def emit() -> None:
            self._emit(spans, logged=logged)

        tx.after_commit(emit)

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
        if self.export is not None:
            try:
                self.export(spans)
            except Exception as exc:
                # The calls are committed; an exporter's failure must not fail the worker's batch.
                log.warning("span exporter %r failed: %s", self.export, exc)
