"""Argo Server failures mapped to Fluxo errors at the engine boundary.

::

    401        -> AuthError             (check ArgoConfig.token)
    403        -> PermissionDeniedError (the token's RBAC in the namespace)
    404        -> NotFoundError
    409        -> ConflictError
    400, 422   -> ValidationError       (Argo refused the document)
    5xx, 429, timeouts, connection failures -> ArgoServerError, retryable

Messages name the operation and the server (never the token) and carry at most
:data:`MAX_DETAIL` characters of the server's answer. The mapping itself is the one every HTTP
engine shares (:mod:`engines._http`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from engines._http import display_url, http_errors
from engines._http import status_error as _status_error
from fluxo_core.errors import EngineUnavailableError, FluxoError

__all__ = ["MAX_DETAIL", "ArgoServerError", "display_url", "map_errors", "status_error"]

MAX_DETAIL = 200

_HINTS = {
    401: "check the bearer token (ArgoConfig.token)",
    403: "grant the token's service account access to the namespace",
    400: "Argo refused the document",
    422: "Argo refused the document",
}


class ArgoServerError(EngineUnavailableError):
    """The Argo Server failed or could not be reached (``retryable`` for 5xx and network errors)."""


def status_error(
    response: httpx.Response, operation: str, server: str, secret: str | None
) -> FluxoError:
    """The Fluxo error for an Argo Server answer with an error status."""
    return _status_error(
        response,
        where=f"Argo Server {server}",
        operation=operation,
        unavailable=ArgoServerError,
        hints=_HINTS,
        refused="argo",
        secrets=[secret],
        limit=MAX_DETAIL,
        server=server,
    )


@contextmanager
def map_errors(operation: str, server: str, secret: str | None) -> Iterator[None]:
    """Map httpx failures inside the block to Fluxo errors (re-raised ``from`` the original)."""
    with http_errors(
        unavailable=ArgoServerError,
        status=lambda response: status_error(response, operation, server, secret),
        timeout_message=f"Argo Server {server} did not answer {operation} in time; check that "
        "it is up or raise ArgoConfig.timeout_s",
        unreachable_message=f"cannot reach the Argo Server at {server} for {operation}; check "
        "ArgoConfig.base_url and that the server is up",
        operation=operation,
        server=server,
    ):
        yield
