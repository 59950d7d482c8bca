"""What every route shares: the app keys, the caller's principal, JSON bodies, ``wait``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from fluxo_core.control.platform import Platform
from fluxo_core.errors import MalformedRequestError, ValidationError
from fluxo_core.storage import Principal

__all__ = ["MAX_BYTES", "MAX_WAIT_S", "PLATFORM", "PRINCIPAL", "json_body", "principal", "seconds"]

PRINCIPAL = web.RequestKey("principal", Principal)
PLATFORM = web.AppKey("platform", Platform)
MAX_BYTES = web.AppKey("max_packet_bytes", int)
MAX_WAIT_S = 300.0


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def json_body(request: web.Request) -> Any:
    """The body parsed as JSON; errors say where the JSON breaks."""
    limit = request.app[MAX_BYTES]
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = await request.read()
    if not raw:
        raise MalformedRequestError("the request body is empty; send a JSON document")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (
            f"line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else "body"
        )
        raise MalformedRequestError(
            f"the request body is not valid JSON ({where}: {exc.args[0] if exc.args else exc})",
            problems=[("body", str(exc))],
        ) from exc


def seconds(request: web.Request, default: float) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return default
    try:
        wait = float(raw)
    except ValueError:
        raise ValidationError(
            f"query parameter wait={raw!r} is not a number of seconds",
            problems=[("query.wait", "expected seconds, e.g. wait=10")],
        ) from None
    if not 0 <= wait <= MAX_WAIT_S:
        raise ValidationError(
            f"query parameter wait={raw} must be between 0 and {MAX_WAIT_S:g} seconds",
            problems=[("query.wait", "out of range")],
        )
    return wait
