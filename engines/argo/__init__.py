"""Submit, observe and cancel Fluxo workflows on an Argo Server (Argo Workflows REST API, httpx)."""

from __future__ import annotations

from typing import Any

import httpx

from engines.argo._errors import ArgoServerError
from engines.argo.engine import ArgoConfig, ArgoEngine

__all__ = ["ArgoConfig", "ArgoEngine", "ArgoServerError", "create_engine"]


def create_engine(
    config: ArgoConfig | None = None, *, client: httpx.AsyncClient | None = None, **settings: Any
) -> ArgoEngine:
    """The registry's factory for ``argo``: a config, or its fields as keywords."""
    return ArgoEngine(config or ArgoConfig(**settings), client=client)
