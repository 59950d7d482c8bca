"""Submit, observe and cancel Fluxo workflows on an Argo Server (Argo Workflows REST API, httpx)."""

from __future__ import annotations

import httpx

from engines.argo._errors import ArgoServerError
from engines.argo.engine import ArgoConfig, ArgoEngine
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError
from fluxo_core.storage.workflows import WorkflowStore
from service_runtime import ServiceRuntime

__all__ = ["ArgoConfig", "ArgoEngine", "ArgoServerError", "create_engine"]


def create_engine(
    runtime: ServiceRuntime,
    workflows: WorkflowStore,
    *,
    config: FluxoConfig | None = None,
    client: httpx.AsyncClient | None = None,
    poll_interval_s: float = 1.0,
    lease_s: float = 15.0,
) -> ArgoEngine:
    """The registry's factory for ``argo``, from ``FLUXO_ARGO_*`` settings.

    The templates call the gateway at ``FLUXO_PUBLIC_URL``: the address the cluster reaches
    Fluxo at, which is rarely the loopback address Fluxo listens on.
    """
    if config is None or config.argo_url is None:
        raise ConfigError(
            "the argo engine needs the Argo Server's URL: set FLUXO_ARGO_URL "
            "(and FLUXO_ARGO_TOKEN, FLUXO_ARGO_NAMESPACE, FLUXO_PUBLIC_URL)",
            setting="FLUXO_ARGO_URL",
        )
    return ArgoEngine(
        ArgoConfig(
            base_url=config.argo_url,
            namespace=config.argo_namespace,
            token=config.argo_token,
            gateway_url=config.gateway_url,
            verify_tls=config.argo_verify_tls,
        ),
        client=client,
    )
