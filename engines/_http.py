"""What the engines that drive an external server over HTTP share (Node-RED, Argo).

One mapping of HTTP failures to Fluxo errors, so that both engines fail the same way::

    401       -> AuthError              403 -> PermissionDeniedError
    404       -> NotFoundError          409 -> ConflictError
    400, 422  -> ValidationError        (the server refused what was sent; its words as a problem)
    5xx, 429  -> the engine's "unavailable" error, retryable
    timeouts, connection failures -> the same, retryable
    any other status -> the same, not retryable

Messages name the server (never a credential: URLs are shown without user info or query) and
quote at most ``limit`` characters of what the server said, with known secrets masked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
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

__all__ = ["display_url", "http_errors", "server_detail", "status_error"]


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to put in a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def server_detail(
    response: httpx.Response, secrets: Iterable[str | None] = (), *, limit: int = 300
) -> str:
    """What the server said: the ``message`` of its JSON error body (prefixed by a textual
    ``code``, as Node-RED sends), else the body; secrets masked, truncated to ``limit``."""
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
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_error(
    response: httpx.Response,
    *,
    where: str,
    operation: str,
    unavailable: type[FluxoError],
    hints: Mapping[int, str],
    refused: str,
    secrets: Iterable[str | None] = (),
    limit: int = 300,
    **context: Any,
) -> FluxoError:
    """The Fluxo error for an answer with an error status.

    Args:
        where: who answered, e.g. ``"Argo Server https://argo/"``.
        operation: what was asked, e.g. ``"create Workflow job-1"``.
        unavailable: the engine's error for a server that failed (5xx) or answered oddly.
        hints: what to do, per status (401, 403, ...), appended to the message.
        refused: the problem's location for a 400/422 (``"argo"``, ``"nodered"``).
    """
    code = response.status_code
    said = server_detail(response, secrets, limit=limit)
    message = f"{where} answered {code} to {operation}" + (f": {said}" if said else "")
    if code in hints:
        message = f"{message}; {hints[code]}"
    ctx: dict[str, Any] = {"operation": operation, "status": code, **context}
    if code == 401:
        return AuthError(message, **ctx)
    if code == 403:
        return PermissionDeniedError(message, **ctx)
    if code == 404:
        return NotFoundError(message, **ctx)
    if code == 409:
        return ConflictError(message, **ctx)
    if code in (400, 422):
        return ValidationError(message, problems=[(refused, said or "(no detail)")], **ctx)
    return unavailable(message, retryable=code >= 500 or code == 429, **ctx)


@contextmanager
def http_errors(
    *,
    unavailable: type[FluxoError],
    status: Any,
    timeout_message: str,
    unreachable_message: str,
    **context: Any,
) -> Iterator[None]:
    """Map httpx failures inside the block to Fluxo errors (re-raised ``from`` the original).

    ``status(response)`` makes the error for an error status (the engine's :func:`status_error`
    with its hints); the two messages say what to check when the server is slow or away.
    """
    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise status(exc.response) from exc
    except httpx.TimeoutException as exc:
        raise unavailable(
            f"{timeout_message} ({type(exc).__name__})", retryable=True, **context
        ) from exc
    except httpx.TransportError as exc:
        raise unavailable(
            f"{unreachable_message} ({type(exc).__name__})", retryable=True, **context
        ) from exc
