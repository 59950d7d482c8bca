"""Deploy and run Fluxo workflows on a real Node-RED (Admin API, httpx), and a managed local one."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from engines.nodered._errors import NodeRedServerError
from engines.nodered.engine import ENGINE_NAME, NodeRedEngine, StepsSource
from engines.nodered.managed import ManagedNodeRed, ManagedStatus, NodeRedInstallError
from fluxo_core.storage.jobs import JobStore
from translators.nodered import NodeRedOptions

if TYPE_CHECKING:
    from fluxo_core.config import FluxoConfig
    from fluxo_core.storage.workflows import WorkflowStore
    from service_runtime import ServiceRuntime

__all__ = [
    "DEFAULT_NODERED_URL",
    "DEFAULT_PUBLIC_URL",
    "ENGINE_NAME",
    "ManagedNodeRed",
    "ManagedStatus",
    "NodeRedEngine",
    "NodeRedInstallError",
    "NodeRedOptions",
    "NodeRedServerError",
    "StepsSource",
    "create_engine",
]

DEFAULT_NODERED_URL = "http://127.0.0.1:1880"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8240"


def create_engine(
    runtime: ServiceRuntime | None,
    workflows: WorkflowStore | None,
    *,
    config: FluxoConfig | None = None,
    poll_interval_s: float = 1.0,
    lease_s: float = 15.0,
    steps_source: StepsSource | None = None,
    client: httpx.AsyncClient | None = None,
) -> NodeRedEngine:
    """The registry's factory for ``nodered``.

    Reads ``nodered_url``, ``nodered_admin_token`` and ``gateway_url`` (where Node-RED reaches
    Fluxo) from ``config``, with local defaults without one. Without an admin token, and when
    ``nodered_url`` is the managed Node-RED under ``config.home`` (``fluxo nodered install``), the
    engine logs in as its admin user with the password kept there (read at each login: the
    managed Node-RED may be installed after Fluxo started). ``workflows``,
    ``poll_interval_s`` and ``lease_s`` are part of the factory signature every engine shares;
    Node-RED runs its jobs itself and needs none of them. ``steps_source`` is how
    :meth:`NodeRedEngine.status` reads a job; by default the job row and its gateway calls in
    ``runtime``'s database.
    """
    del workflows, poll_interval_s, lease_s
    if steps_source is None and runtime is not None:
        # A job's steps on Node-RED are the gateway calls its flow made (the flow keeps no
        # history); the job row holds its status and result.
        steps_source = JobStore(runtime.db).run_status_from_calls
    url = str(getattr(config, "nodered_url", None) or DEFAULT_NODERED_URL)
    token = getattr(config, "nodered_admin_token", None)
    public_url = config.gateway_url if config is not None else DEFAULT_PUBLIC_URL
    login: Callable[[], tuple[str, str] | None] | None = None
    home = getattr(config, "home", None)
    if not token and home is not None:
        managed = ManagedNodeRed(Path(home) / "nodered")
        login = functools.partial(managed.admin_login, url)  # read at each login
    return NodeRedEngine(
        url,
        token=str(token) if token else None,
        login=login,
        options=NodeRedOptions(fluxo_url=public_url),
        client=client,
        steps_source=steps_source,
    )
