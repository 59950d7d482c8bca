"""The service runtime: SDK, queues, transactional outbox, inbox dedupe, worker and gateway."""

from service_runtime.catalog import ServiceCatalog, ServiceInfo
from service_runtime.gateway import (
    AdmissionHook,
    AdmissionRequest,
    CallRecord,
    Gateway,
)
from service_runtime.runtime import ServiceRuntime
from service_runtime.sdk import Call, Outputs, Price, RetryPolicy, Service, service
from service_runtime.transports import SqlTransport, Transport
from service_runtime.worker import Worker

__all__ = [
    "AdmissionHook",
    "AdmissionRequest",
    "Call",
    "CallRecord",
    "Gateway",
    "Outputs",
    "Price",
    "RetryPolicy",
    "Service",
    "ServiceCatalog",
    "ServiceInfo",
    "ServiceRuntime",
    "SqlTransport",
    "Transport",
    "Worker",
    "service",
]
