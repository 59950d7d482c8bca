"""The built-in services: ``noop``, ``http``, ``transform``, ``nodered-node``, and the demo pipeline.

``builtin_services(config)`` gives the services every Fluxo installation offers;
``demo_services()`` gives ``parse-order``, ``enrich-customer`` and ``notify-log`` for the product
demo and the tests. :func:`apply_transform` and :class:`Transform` are re-exported from the IR's
transform language (:mod:`fluxo_core.ir.transform`), which the step engine evaluates itself.
"""

from __future__ import annotations

from fluxo_core.ir.transform import PathKey, Transform, apply_transform, parse_path
from nodered_semantics.support import NODERED_NODE_SERVICE, node_problem
from service_runtime.sdk import Service
from services.config import BuiltinConfig
from services.demo import (
    DEMO_CUSTOMERS,
    CustomerProfile,
    enrich_customer,
    make_enrich_customer,
    make_notify_log,
    notify_log,
    parse_order,
)
from services.http.credentials import SecretSource
from services.http.policy import HostPolicy, Resolver, guarded_transport, system_resolver
from services.http.service import HttpService
from services.nodered.function import FunctionLimits
from services.nodered.service import nodered_node_service, run_node
from services.noop import noop
from services.transform import transform_service

__all__ = [
    "DEMO_CUSTOMERS",
    "NODERED_NODE_SERVICE",
    "BuiltinConfig",
    "CustomerProfile",
    "FunctionLimits",
    "HostPolicy",
    "HttpService",
    "PathKey",
    "Resolver",
    "SecretSource",
    "Transform",
    "apply_transform",
    "builtin_services",
    "demo_services",
    "enrich_customer",
    "guarded_transport",
    "make_enrich_customer",
    "make_notify_log",
    "node_problem",
    "nodered_node_service",
    "noop",
    "notify_log",
    "parse_order",
    "parse_path",
    "run_node",
    "system_resolver",
    "transform_service",
]


def builtin_services(
    config: BuiltinConfig | None = None, *, secrets: SecretSource | None = None
) -> list[Service]:
    """The services every installation offers: ``noop``, ``http``, ``transform`` and
    ``nodered-node`` (what the step engine runs a flow imported from Node-RED with).

    Args:
        config: limits and the ``http`` host policy; build it from Fluxo's configuration with
            :meth:`BuiltinConfig.from_fluxo_config`. Defaults allow only public addresses.
        secrets: the stored secrets that ``http`` requests may refer to (the platform's
            ``SecretStore``); without it, such a request fails with a clear error.
    """
    config = config or BuiltinConfig()
    return [
        noop,
        HttpService(config, secrets=secrets).service,
        transform_service(timeout_ms=config.transform_timeout_ms),
        nodered_node_service(),
    ]


def demo_services() -> list[Service]:
    """The demo order pipeline: ``parse-order``, ``enrich-customer`` and ``notify-log``."""
    return [parse_order, enrich_customer, notify_log]
