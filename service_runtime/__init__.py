"""The service runtime: SDK, queues, transactional outbox, inbox dedupe, worker and gateway."""

from service_runtime.catalog import ServiceCatalog, ServiceInfo
from service_runtime.gateway import CallRecord, Gateway
from service_runtime.interceptors import (
    AdmitRequest,
    CallRequest,
    Interceptor,
    InterceptorChain,
    Metering,
    Tracing,
    default_interceptors,
)
from service_runtime.runtime import ServiceRuntime
from service_runtime.sdk import Call, Outputs, Price, RetryPolicy, Service, service
from service_runtime.transports import SqlTransport, Transport
from service_runtime.worker import Worker

__all__ = [
    "AdmitRequest",
    "Call",
    "CallRecord",
    "CallRequest",
    "Gateway",
    "Interceptor",
    "InterceptorChain",
    "Metering",
    "Outputs",
    "Price",
    "RetryPolicy",
    "Service",
    "ServiceCatalog",
    "ServiceInfo",
    "ServiceRuntime",
    "SqlTransport",
    "Tracing",
    "Transport",
    "Worker",
    "default_interceptors",
    "service",
]
