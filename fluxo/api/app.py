"""The HTTP API (aiohttp): services and calls, workflows and jobs, and its OpenAPI document.

Every route except the probes (``/livez``, ``/readyz``, ``/v1/health``), ``/v1/openapi.json``,
sign-in (``POST /v1/sessions``) and the webhooks (``POST /hooks/...``, authenticated by their
trigger's secret: fluxo/api/triggers.py) needs ``Authorization: Bearer <token>``; the token names one account
and everything a request reads or writes is scoped to it. A revoked or expired token is 401; a
viewer's token is 403 on every write (see fluxo/api/auth.py and fluxo/control/auth.py). Errors are JSON::

    {"error": {"code": "...", "type": "...", "message": "...", "problems": [...]}}
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from fluxo.api import (
    auth,
    billing,
    blocks,
    calls,
    dead_letters,
    inbound,
    jobs,
    metrics,
    quotas,
    resources,
    secrets,
    triggers,
    usage,
)
from fluxo.api.common import ENVELOPE_BYTES, LIMITS, MAX_BYTES, PARSER, PLATFORM, PRINCIPAL
from fluxo.api.openapi import openapi_document
from fluxo.control.platform import Platform
from fluxo_core.errors import (
    AuthError,
    FluxoError,
    MalformedRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
)
from fluxo_core.ir.documents import DocumentLimits
from fluxo_core.storage import Role

__all__ = ["Face", "create_app"]

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/", "/livez", "/readyz", "/v1/health", "/v1/openapi.json"})
READY_TIMEOUT_S = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Face = Callable[[web.Application], str]
"""Mounts a face (the web console) on the API application as a sub-application and answers the
path it is served at. A face answers for itself (its own sign-in and error pages): the bearer
token check below is the API's, not the face's. The faces sit above this package (import-linter
layers), so the CLI hands them in."""
HOME = web.AppKey("home", str)


def create_app(
    platform: Platform, *, max_packet_bytes: int, faces: Sequence[Face] = ()
) -> web.Application:
    """The API application over a started :class:`Platform`, with ``faces`` mounted on it."""
    # Room for the envelope around the largest allowed packet; the exact limit is checked in the
    # handlers so the error can say which limit and how to change it.
    app = web.Application(
        middlewares=[_errors, _text, _auth], client_max_size=max_packet_bytes + ENVELOPE_BYTES
    )
    app[PLATFORM] = platform
    app[MAX_BYTES] = max_packet_bytes
    app[LIMITS] = DocumentLimits(max_bytes=max_packet_bytes + ENVELOPE_BYTES)
    app.cleanup_ctx.append(_parser_pool)
    app.router.add_get("/livez", _livez)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/v1/health", _readyz)
    app.router.add_get("/v1/openapi.json", _openapi)
    calls.add_routes(app)
    dead_letters.add_routes(app)
    jobs.add_routes(app)
    secrets.add_routes(app)
    usage.add_routes(app)
    billing.add_routes(app)
    quotas.add_routes(app)
    metrics.add_routes(app)
    auth.add_routes(app)
    resources.add_routes(app)
    blocks.add_routes(app)
    homes = [mount(app) for mount in faces]
    if homes:
        app[HOME] = homes[0]
    app.router.add_get("/", _root)
    triggers.add_routes(app)
    inbound.add_routes(app)
    return app


def _error_response(error: FluxoError) -> web.Response:
    response = web.json_response({"error": error.to_dict()}, status=error.http_status)
    if isinstance(error, RateLimitedError):
        # Whole seconds (RFC 9110), rounded up: a client that waits that long finds room.
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return response


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FluxoError as exc:
        return _error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BYTES]
        return _error_response(
            PayloadTooLargeError(
                f"the request body is over the packet limit of {limit} bytes "
                "(FLUXO_MAX_PACKET_BYTES); send a reference to the data instead, or raise the limit",
                limit=limit,
            )
        )
    except web.HTTPException:
        raise
    except Exception:
        # Internals (and anything secret they might hold) stay in the server log.
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"error": {"code": "internal", "message": "internal error; see the server log"}}
        return web.json_response(body, status=500)


async def _parser_pool(app: web.Application) -> AsyncIterator[None]:
    # Two threads: parsing is CPU-bound, so more would only queue on the GIL; the bound keeps
    # many large bodies from taking every thread of the loop's default pool.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fluxo-parse") as pool:
        app[PARSER] = pool
        yield


@web.middleware
async def _text(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a path or query that cannot be stored as text before any handler sees it.

    aiohttp decodes bytes that are not UTF-8 into lone surrogates, and PostgreSQL refuses NUL in
    text: either would fail deep in a query, as a 500, instead of here as a 400.
    """
    parts = [("path", request.path)] + [(f"query.{k}", v) for k, v in request.query.items()]
    for where, text in parts:
        if "\x00" in text or not _storable(text):
            raise MalformedRequestError(
                f"the {where} holds a NUL character or bytes that are not UTF-8; "
                "percent-encode UTF-8 text",
                problems=[(where, "not UTF-8 text")],
            )
    return await handler(request)


def _storable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if len(request.match_info.apps) > 1:
        return await handler(request)  # a face's route: the face signs its users in
    if request.path in PUBLIC_PATHS or (request.method, request.path) in auth.PUBLIC_ROUTES:
        return await handler(request)
    if triggers.is_hook(request):  # authenticated by its trigger's secret, not a token
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send 'Authorization: Bearer <token>' (create one with 'fluxo token')")
    who = await request.app[PLATFORM].accounts.authenticate(token.strip())
    if who.engine is not None and not _engine_may(request):
        raise PermissionDeniedError(
            f"a {who.engine} engine token only calls services, creates jobs and reports job "
            f"events; {request.method} {request.path} needs a user's token"
        )
    if who.role is Role.VIEWER and not auth.viewer_may(request):
        raise PermissionDeniedError(
            f"your role viewer only reads; {request.method} {request.path} needs the member "
            "role or higher (ask an account admin)",
            role=who.role.value,
        )
    request[PRINCIPAL] = who
    return await handler(request)


# What an engine's token may do: the calls and reports its runs make, and the jobs a cron
# trigger on that engine starts (in the token's own account).
_ENGINE_ROUTES = (
    re.compile(r"^/v1/services/[^/]+/calls$"),
    re.compile(r"^/v1/engine-events$"),
    re.compile(r"^/v1/jobs/[^/]+/engine-events$"),
    re.compile(r"^/v1/workflows/[^/]+/jobs$"),
)


def _engine_may(request: web.Request) -> bool:
    return request.method == "POST" and any(r.match(request.path) for r in _ENGINE_ROUTES)


async def _root(request: web.Request) -> web.Response:
    """A browser opening the printed URL lands on the console; a client learns where the API is."""
    home = request.app.get(HOME)
    if home is not None and "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPSeeOther(home)
    return web.json_response({"name": "fluxo", "openapi": "/v1/openapi.json", "console": home})


async def _livez(request: web.Request) -> web.Response:
    """The process is up and its event loop answers (Kubernetes' liveness probe)."""
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """The database and the queue transport answer (Kubernetes' readiness probe); 503 naming
    each check that failed. ``/v1/health`` answers the same."""
    checks = await request.app[PLATFORM].readiness(READY_TIMEOUT_S)
    ready = all(state == "ok" for state in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
