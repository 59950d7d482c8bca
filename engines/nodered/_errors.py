"""Node-RED Admin API failures mapped to Fluxo errors at the engine boundary.

::

    httpx.HTTPStatusError 401        -> AuthError             (the admin token or user/password)
    httpx.HTTPStatusError 403        -> PermissionDeniedError (the admin user's permissions)
    httpx.HTTPStatusError 404        -> NotFoundError
    httpx.HTTPStatusError 409        -> ConflictError         (``version_mismatch``: flows changed)
    httpx.HTTPStatusError 400, 422   -> ValidationError       (Node-RED refused what was sent)
    httpx.HTTPStatusError 5xx, 429   -> NodeRedServerError    retryable
    httpx.TransportError (connect,
      timeout, dropped connection)   -> NodeRedServerError    retryable
    any other status                 -> NodeRedServerError    not retryable

Every message names the operation (which names the workflow) and the server (never a token or a
password) and quotes at most :data:`MAX_DETAIL` characters of what Node-RED said.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from fluxo_core.errors import (
    AuthError,
    ConflictError,
    FluxoError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)

__all__ = ["MAX_DETAIL", "NodeRedServerError", "display_url", "map_errors", "status_error"]

MAX_DETAIL = 300


class NodeRedServerError(FluxoError):
    """Node-RED failed or could not be reached (``retryable`` for 5xx and network errors).

    ``fluxo_core.errors`` has no shared "engine unavailable" error yet; this one plays that part
    for Node-RED, as ``ArgoServerError`` does for Argo (same ``code``).
    """

    http_status = 502
    code = "engine_failed"


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to put in a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def detail(response: httpx.Response, secrets: Iterable[str | None] = ()) -> str:
    """What Node-RED said: its ``{"code", "message"}`` error body, else the body; truncated."""
    try:
        text = response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        return ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error_description") or body.get("error")
        code = body.get("code")
        if isinstance(message, str):
            text = f"{code}: {message}" if isinstance(code, str) and code else message
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def status_error(
    response: httpx.Response,
    operation: str,
    server: str,
    secrets: Iterable[str | None] = (),
    **context: Any,
) -> FluxoError:
    """The Fluxo error for a Node-RED answer with an error status."""
    code = response.status_code
    said = detail(response, secrets)
    where = f"Node-RED {server} answered {code} to {operation}" + (f": {said}" if said else "")
    ctx: dict[str, Any] = {"operation": operation, "server": server, "status": code, **context}
    if code == 401:
        return AuthError(
            f"{where}; give the engine a valid admin token (FLUXO_NODERED_ADMIN_TOKEN) or the "
            "username and password of an adminAuth user",
            **ctx,
        )
    if code == 403:
        return PermissionDeniedError(
            f"{where}; the admin user needs the '*' (or flows.write) permission in adminAuth",
            **ctx,
        )
    if code == 404:
        return NotFoundError(where, **ctx)
    if code == 409:
        return ConflictError(where, **ctx)
    if code in (400, 422):
        return ValidationError(
            f"{where}; Node-RED refused it", problems=[("nodered", said or "(no detail)")], **ctx
        )
    return NodeRedServerError(where, retryable=code >= 500 or code == 429, **ctx)


@contextmanager
def map_errors(
    operation: str, server: str, secrets: Iterable[str | None] = (), **context: Any
) -> Iterator[None]:
    """Map httpx failures inside the block to Fluxo errors (re-raised ``from`` the original)."""
    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise status_error(exc.response, operation, server, secrets, **context) from exc
    except httpx.TimeoutException as exc:
        raise NodeRedServerError(
            f"Node-RED {server} did not answer {operation} in time ({type(exc).__name__}); "
            "check that it is up (`fluxo nodered status`) or raise the engine's timeout_s",
            retryable=True,
            operation=operation,
            server=server,
            **context,
        ) from exc
    except httpx.TransportError as exc:
        raise NodeRedServerError(
            f"cannot reach Node-RED at {server} for {operation} ({type(exc).__name__}); check "
            "the engine's URL (FLUXO_NODERED_URL) and that Node-RED runs (`fluxo nodered start`)",
            retryable=True,
            operation=operation,
            server=server,
            **context,
        ) from exc
