"""Node-RED Admin API failures mapped to Fluxo errors at the engine boundary.

::

    401        -> AuthError             (the admin token or user/password)
    403        -> PermissionDeniedError (the admin user's permissions)
    404        -> NotFoundError
    409        -> ConflictError         (``version_mismatch``: the flows changed meanwhile)
    400, 422   -> ValidationError       (Node-RED refused what was sent)
    5xx, 429, timeouts, connection failures -> NodeRedServerError, retryable

Every message names the operation (which names the workflow) and the server (never a token or a
password) and quotes at most :data:`MAX_DETAIL` characters of what Node-RED said. The mapping
itself is the one every HTTP engine shares (:mod:`engines._http`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from engines._http import display_url, http_errors
from engines._http import status_error as _status_error
from fluxo_core.errors import EngineUnavailableError, FluxoError

__all__ = ["MAX_DETAIL", "NodeRedServerError", "display_url", "map_errors", "status_error"]

MAX_DETAIL = 300

_HINTS = {
    401: "give the engine a valid admin token (FLUXO_NODERED_ADMIN_TOKEN) or the username and "
    "password of an adminAuth user",
    403: "the admin user needs the '*' (or flows.write) permission in adminAuth",
    400: "Node-RED refused it",
    422: "Node-RED refused it",
}


class NodeRedServerError(EngineUnavailableError):
    """Node-RED failed or could not be reached (``retryable`` for 5xx and network errors)."""


def status_error(
    response: httpx.Response,
    operation: str,
    server: str,
    secrets: Iterable[str | None] = (),
    **context: Any,
) -> FluxoError:
    """The Fluxo error for a Node-RED answer with an error status."""
    return _status_error(
        response,
        where=f"Node-RED {server}",
        operation=operation,
        unavailable=NodeRedServerError,
        hints=_HINTS,
        refused="nodered",
        secrets=secrets,
        limit=MAX_DETAIL,
        server=server,
        **context,
    )


@contextmanager
def map_errors(
    operation: str, server: str, secrets: Iterable[str | None] = (), **context: Any
) -> Iterator[None]:
    """Map httpx failures inside the block to Fluxo errors (re-raised ``from`` the original)."""
    with http_errors(
        unavailable=NodeRedServerError,
        status=lambda response: status_error(response, operation, server, secrets, **context),
        timeout_message=f"Node-RED {server} did not answer {operation} in time; check that it "
        "is up (`fluxo nodered status`) or raise the engine's timeout_s",
        unreachable_message=f"cannot reach Node-RED at {server} for {operation}; check the "
        "engine's URL (FLUXO_NODERED_URL) and that Node-RED runs (`fluxo nodered start`)",
        operation=operation,
        server=server,
        **context,
    ):
        yield
