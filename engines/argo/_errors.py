"""Argo Server failures mapped to Fluxo errors at the engine boundary.

::

    httpx.HTTPStatusError 401        -> AuthError             (check ArgoConfig.token)
    httpx.HTTPStatusError 403        -> PermissionDeniedError (the token's RBAC in the namespace)
    httpx.HTTPStatusError 404        -> NotFoundError
    httpx.HTTPStatusError 409        -> ConflictError
    httpx.HTTPStatusError 400, 422   -> ValidationError       (Argo refused the document)
    httpx.HTTPStatusError 5xx        -> ArgoServerError       retryable
    httpx.TransportError (connect,
      timeout, dropped connection)   -> ArgoServerError       retryable
    any other status                 -> ArgoServerError       not retryable

Messages name the operation and the server (never the token) and carry at most
:data:`MAX_DETAIL` characters of the server's answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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

__all__ = ["MAX_DETAIL", "ArgoServerError", "display_url", "map_errors"]

MAX_DETAIL = 200


class ArgoServerError(FluxoError):
    """The Argo Server failed or could not be reached (``retryable`` for 5xx and network errors)."""

    http_status = 502
    code = "engine_failed"


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to put in a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _detail(response: httpx.Response, secret: str | None) -> str:
    """The server's own message (grpc-gateway ``{"message": ...}``) or the body, truncated."""
    try:
        text = response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        return ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text = body["message"]
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def status_error(
    response: httpx.Response, operation: str, server: str, secret: str | None
) -> FluxoError:
    """The Fluxo error for an Argo Server answer with an error status."""
    code = response.status_code
    detail = _detail(response, secret)
    said = f": {detail}" if detail else ""
    where = f"Argo Server {server} answered {code} to {operation}{said}"
    context: dict[str, Any] = {"operation": operation, "server": server, "status": code}
    if code == 401:
        return AuthError(f"{where}; check the bearer token (ArgoConfig.token)", **context)
    if code == 403:
        return PermissionDeniedError(
            f"{where}; grant the token's service account access to the namespace", **context
        )
    if code == 404:
        return NotFoundError(where, **context)
    if code == 409:
        return ConflictError(where, **context)
    if code in (400, 422):
        return ValidationError(
            f"{where}; Argo refused the document", problems=[("argo", detail)], **context
        )
    retryable = code >= 500 or code == 429
    return ArgoServerError(where, retryable=retryable, **context)


@contextmanager
def map_errors(operation: str, server: str, secret: str | None) -> Iterator[None]:
    """Map httpx failures inside the block to Fluxo errors (re-raised ``from`` the original)."""
    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise status_error(exc.response, operation, server, secret) from exc
    except httpx.TimeoutException as exc:
        raise ArgoServerError(
            f"Argo Server {server} did not answer {operation} in time ({type(exc).__name__}); "
            "check that it is up or raise ArgoConfig.timeout_s",
            retryable=True,
            operation=operation,
            server=server,
        ) from exc
    except httpx.TransportError as exc:
        raise ArgoServerError(
            f"cannot reach the Argo Server at {server} for {operation} ({type(exc).__name__}); "
            "check ArgoConfig.base_url and that the server is up",
            retryable=True,
            operation=operation,
            server=server,
        ) from exc
