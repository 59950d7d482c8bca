"""OpenTelemetry: Fluxo's spans exported over OTLP/HTTP, when an endpoint is configured.

Off by default. :func:`open_spans` gives None unless ``FluxoConfig.otlp_traces_endpoint`` is
set (``FLUXO_OTLP_ENDPOINT``, or the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_ENDPOINT``), and only then imports the OpenTelemetry SDK: a Fluxo without
an endpoint never loads it, and its hot path builds no span at all (see
:class:`~service_runtime.interceptors.Tracing`).

The spans, each in the trace its packets carry (one job, one trace, across processes):

- ``job WORKFLOW``: a job from its creation to its end, exported by the process that ended it;
  the root of its trace, or a child of the span its input packet names.
- ``call SERVICE``: a call from its creation to the end of its last run, exported by the worker
  that settled it; a child of its packet's ``parent_id``, else of its job's span.
- ``run SERVICE``: each run of the call's handler (a retried call has several), a child of the
  call's span; its outputs carry its span id as their ``parent_id``.

Job and call spans have ids derived from the job and call ids
(:func:`~service_runtime.interceptors.job_span_id`), which is how a worker process parents a
call's span to a job span that another process exports.

Spans are built as the SDK's ``ReadableSpan`` with their real ids and times and handed to a
``BatchSpanProcessor`` whose thread sends them with the OTLP/HTTP exporter, which reads the
standard ``OTEL_EXPORTER_OTLP_*`` settings (headers, timeout, compression) itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from fluxo_core.config import FluxoConfig
from service_runtime.interceptors import JobSpan, Span, call_span_id, job_span_id

__all__ = ["OtlpSpans", "open_spans"]

log = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NANOS = 1_000_000_000


def open_spans(config: FluxoConfig | None) -> OtlpSpans | None:
    """The OTLP span sink ``config`` asks for, or None (no endpoint: no spans, no SDK)."""
    if config is None or config.otlp_traces_endpoint is None:
        return None
    return OtlpSpans(OTLPSpanExporter(endpoint=config.otlp_traces_endpoint))


class OtlpSpans:
    """A :class:`~service_runtime.interceptors.SpanSink` that exports through the SDK.

    Args:
        exporter: where the batches go (the OTLP/HTTP exporter; any SDK exporter works).
        service_name: the ``service.name`` resource attribute, unless ``OTEL_SERVICE_NAME``
            sets another.
    """

    def __init__(self, exporter: SpanExporter, *, service_name: str = "fluxo") -> None:
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
        self._resource = Resource.create(attributes)
        self._scope = InstrumentationScope("fluxo")
        self._processor = BatchSpanProcessor(exporter)

    def runs(self, spans: Sequence[Span]) -> None:
        for s in spans:
            call = _context(s.trace_id, call_span_id(s.call_id))
            end = s.start + s.duration_s
            attributes: dict[str, str | int] = {
                "fluxo.call_id": s.call_id,
                "fluxo.service": s.service,
                "fluxo.account": s.account_id,
                "fluxo.attempt": s.attempt,
                "fluxo.status": s.status,
                **_job_attributes(s.job_id, s.step_id),
            }
            self._end(
                f"run {s.service}",
                _context(s.trace_id, s.span_id),
                call,
                SpanKind.CONSUMER,
                s.start,
                end,
                attributes,
                s.error,
            )
            if not s.final:
                continue
            parent = s.parent_id or (job_span_id(s.job_id) if s.job_id else None)
            self._end(
                f"call {s.service}",
                call,
                _context(s.trace_id, parent) if parent else None,
                SpanKind.PRODUCER,
                min(s.call_created_at or s.start, s.start),
                end,
                {**attributes, "fluxo.attempts": s.attempt},
                s.error,
            )

    def jobs(self, spans: Sequence[JobSpan]) -> None:
        for j in spans:
            self._end(
                f"job {j.workflow}",
                _context(j.trace_id, j.span_id),
                _context(j.trace_id, j.parent_id) if j.parent_id else None,
                SpanKind.INTERNAL,
                j.start,
                j.start + j.duration_s,
                {
                    "fluxo.job_id": j.job_id,
                    "fluxo.workflow": j.workflow,
                    "fluxo.engine": j.engine,
                    "fluxo.account": j.account_id,
                    "fluxo.status": j.status,
                },
                j.error,
            )

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Send every span ended so far (blocking: call it off the event loop)."""
        return self._processor.force_flush(int(timeout_s * 1000))

    async def aclose(self) -> None:
        # Sends what is buffered (blocking: off the loop). A flush, not a shutdown: a platform
        # may be started again, and the processor's thread is a daemon that ends with the
        # process.
        await asyncio.to_thread(self._processor.force_flush)

    def _end(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start: float,
        end: float,
        attributes: dict[str, str | int],
        error: str | None,
    ) -> None:
        if error:
            attributes = {**attributes, "error.type": error}
        span = ReadableSpan(
            name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind,
            status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.OK),
            start_time=int(start * _NANOS),
            end_time=int(max(end, start) * _NANOS),
            instrumentation_scope=self._scope,
        )
        self._processor.on_end(span)


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=_SAMPLED)


def _job_attributes(job_id: str | None, step_id: str | None) -> dict[str, str]:
    attributes = {}
    if job_id:
        attributes["fluxo.job_id"] = job_id
    if step_id:
        attributes["fluxo.step_id"] = step_id
    return attributes
