"""The built-in services: ``noop``, ``http``, ``transform``, ``nodered-node``, ``email-send``,
``sms-send``, ``webhook-send``, and the demo pipeline.

``builtin_services(config)`` gives the services every Fluxo installation offers;
``demo_services()`` gives ``parse-order``, ``enrich-customer`` and ``notify-log`` for the product
demo and the tests. :func:`apply_transform` and :class:`Transform` are re-exported from the IR's
transform language (:mod:`fluxo_core.ir.transform`), which the step engine evaluates itself.
"""

from __future__ import annotations

from fluxo_core.ir.transform import PathKey, Transform, apply_transform, parse_path
from nodered_semantics.support import NODERED_NODE_SERVICE, node_problem
from service_runtime.sdk import Service
from services.comm.common import AttachmentSource, StoredAttachment
from services.comm.email import EmailService
from services.comm.sms import SmsService
from services.comm.webhook import WebhookService, sign_webhook, verify_webhook
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
    "AttachmentSource",
    "BuiltinConfig",
    "CustomerProfile",
    "EmailService",
    "FunctionLimits",
    "HostPolicy",
    "HttpService",
    "PathKey",
    "Resolver",
    "SecretSource",
    "SmsService",
    "StoredAttachment",
    "Transform",
    "WebhookService",
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
    "sign_webhook",
    "system_resolver",
    "transform_service",
    "verify_webhook",
]


def builtin_services(
    config: BuiltinConfig | None = None,
    *,
    secrets: SecretSource | None = None,
    attachments: AttachmentSource | None = None,
) -> list[Service]:
    """The services every installation offers: ``noop``, ``http``, ``transform``,
    ``nodered-node`` (what the step engine runs a flow imported from Node-RED with), and the
    external communication services ``email-send``, ``sms-send`` and ``webhook-send``.

    Args:
        config: limits and the host policy of every service that connects out; build it from
            Fluxo's configuration with :meth:`BuiltinConfig.from_fluxo_config`. Defaults allow
            only public addresses.
        secrets: the stored secrets that requests may refer to (the platform's
            ``SecretStore``); without it, such a request fails with a clear error.
        attachments: where ``email-send`` reads attachments named by reference; without it only
            inline attachments are sent.
    """
    config = config or BuiltinConfig()
    return [
        noop,
        HttpService(config, secrets=secrets).service,
        transform_service(timeout_ms=config.transform_timeout_ms),
        nodered_node_service(),
        EmailService(config, secrets=secrets, attachments=attachments).service,
        SmsService(config, secrets=secrets).service,
        WebhookService(config, secrets=secrets).service,
    ]


def demo_services() -> list[Service]:
    """The demo order pipeline: ``parse-order``, ``enrich-customer`` and ``notify-log``."""
    return [parse_order, enrich_customer, notify_log]
