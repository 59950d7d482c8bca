"""Interceptors: components at the named places of a service call (admit, record, result).

The runtime runs one :class:`InterceptorChain`, built at start-up from the interceptors it is
given: the control plane hands in its own (admission) ahead of :func:`default_interceptors`,
so this layer never imports it. See :mod:`service_runtime.interceptors._base` for the places.
"""

from service_runtime.interceptors._base import (
    AdmitPlace,
    AdmitRequest,
    CallRequest,
    CallResult,
    Interceptor,
    InterceptorChain,
    PreparedCall,
    RecordPlace,
    RecordRequest,
    ResultRequest,
    ResultStatus,
)
from service_runtime.interceptors.metering import Metering
from service_runtime.interceptors.tracing import (
    JobSpan,
    Span,
    SpanExporter,
    SpanSink,
    Tracing,
    call_span_id,
    job_span_id,
)

__all__ = [
    "AdmitPlace",
    "AdmitRequest",
    "CallRequest",
    "CallResult",
    "Interceptor",
    "InterceptorChain",
    "JobSpan",
    "Metering",
    "PreparedCall",
    "RecordPlace",
    "RecordRequest",
    "ResultRequest",
    "ResultStatus",
    "Span",
    "SpanExporter",
    "SpanSink",
    "Tracing",
    "call_span_id",
    "default_interceptors",
    "job_span_id",
]


def default_interceptors(*, spans: SpanSink | None = None) -> list[Interceptor]:
    """What every runtime runs unless told otherwise: metering, then tracing (to ``spans``,
    if given)."""
    return [Metering(), Tracing(sink=spans)]
