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
from service_runtime.interceptors.tracing import Span, SpanExporter, Tracing

__all__ = [
    "AdmitPlace",
    "AdmitRequest",
    "CallRequest",
    "CallResult",
    "Interceptor",
    "InterceptorChain",
    "Metering",
    "PreparedCall",
    "RecordPlace",
    "RecordRequest",
    "ResultRequest",
    "ResultStatus",
    "Span",
    "SpanExporter",
    "Tracing",
    "default_interceptors",
]


def default_interceptors() -> list[Interceptor]:
    """What every runtime runs unless told otherwise: metering, then tracing."""
    return [Metering(), Tracing()]
