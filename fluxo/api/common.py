"""What every route shares: the app keys, the caller's principal, bodies, query numbers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from fluxo.control.platform import Platform
from fluxo_core.errors import MalformedRequestError, ValidationError
from fluxo_core.ir.documents import (
    INLINE_BYTES,
    DocumentLimits,
    parse_json,
    parse_yaml,
    parse_yaml_documents,
)
from fluxo_core.storage import Principal
from fluxo_core.storage.accounts import PLATFORM_ACCOUNT

__all__ = [
    "ADMIN_ACCOUNT",
    "ENVELOPE_BYTES",
    "LIMITS",
    "MAX_BYTES",
    "MAX_WAIT_S",
    "PARSER",
    "PLATFORM",
    "PRINCIPAL",
    "int_query",
    "json_body",
    "principal",
    "seconds",
    "yaml_body",
    "yaml_documents_body",
]

ADMIN_ACCOUNT = PLATFORM_ACCOUNT
"""The platform admin's account: ``fluxo up`` issues its token (role ``platform-admin``); the
platform-wide routes (``/metrics``, ``/v1/accounts``) answer platform admins only."""

PRINCIPAL = web.RequestKey("principal", Principal)
PLATFORM = web.AppKey("platform", Platform)
MAX_BYTES = web.AppKey("max_packet_bytes", int)
LIMITS = web.AppKey("document_limits", DocumentLimits)
PARSER = web.AppKey("parser", ThreadPoolExecutor)
MAX_WAIT_S = 300.0
ENVELOPE_BYTES = 64 * 1024
"""Room for a packet's envelope around the largest payload allowed; the packet limit itself is
checked exactly where packets are made (gateway, job service)."""


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def json_body(request: web.Request) -> Any:
    """The body parsed as JSON, within the document limits; errors say where the JSON breaks."""
    return await _parsed(request, parse_json)


async def yaml_body(request: web.Request) -> Any:
    """The body parsed as one YAML document, within the document limits (aliases counted)."""
    return await _parsed(request, parse_yaml)


async def yaml_documents_body(request: web.Request) -> list[Any]:
    """The body parsed as a YAML stream (``---`` between documents), within the document
    limits; empty documents are skipped."""

    def parse(raw: bytes, *, limits: DocumentLimits, where: str) -> list[Any]:
        return [data for _, _, data in parse_yaml_documents(raw, limits=limits, where=where)]

    documents: list[Any] = await _parsed(request, parse)
    return documents


async def _parsed(request: web.Request, parse: Callable[..., Any]) -> Any:
    limits = request.app[LIMITS]
    if request.content_length is not None and request.content_length > limits.max_bytes:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limits.max_bytes, actual_size=request.content_length
        )
    raw = await request.read()
    if not raw:
        raise MalformedRequestError("the request body is empty; send a JSON document")
    if len(raw) <= INLINE_BYTES:
        return parse(raw, limits=limits, where="body")
    # Parsing and checking a large document takes milliseconds to a second of CPU: in a small
    # pool of its own, so the event loop keeps serving every other request meanwhile.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        request.app[PARSER], lambda: parse(raw, limits=limits, where="body")
    )


_DIGITS = re.compile(r"[0-9]{1,18}")


def int_query(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """The query parameter ``name`` as a whole number in ``[low, high]`` (ASCII digits only:
    ``str.isdigit`` also accepts superscripts and other scripts' digits)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise ValidationError(
            f"query parameter {name}={raw!r} must be a whole number from {low} to {high}",
            problems=[(f"query.{name}", f"expected a number from {low} to {high}")],
        )
    return int(raw)


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
