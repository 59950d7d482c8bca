"""The HTTP API (aiohttp): the gateway endpoint and call lookups.

Every route except ``/v1/health`` needs ``Authorization: Bearer <token>``; the token names one
account and everything a request reads or writes is scoped to it. Errors are JSON::

    {"error": {"code": "...", "type": "...", "message": "...", "problems": [...]}}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from aiohttp import web

from fluxo_core.errors import (
    AuthError,
    FluxoError,
    MalformedRequestError,
    PacketValidationError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ValidationError,
)
from fluxo_core.ir import Packet
from fluxo_core.ir._problems import problems_from_pydantic
from fluxo_core.storage import AccountStore, Principal
from service_runtime import CallRecord, ServiceRuntime

__all__ = ["create_app"]

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
RUNTIME = web.AppKey("runtime", ServiceRuntime)
ACCOUNTS = web.AppKey("accounts", AccountStore)
MAX_BYTES = web.AppKey("max_packet_bytes", int)

DEFAULT_WAIT_S = 30.0
MAX_WAIT_S = 300.0
PUBLIC_PATHS = frozenset({"/v1/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    runtime: ServiceRuntime, accounts: AccountStore, *, max_packet_bytes: int
) -> web.Application:
    """The API application over a started :class:`ServiceRuntime`."""
    # Room for the envelope around the largest allowed packet; the exact limit is checked below
    # so the error can say which limit and how to change it.
    app = web.Application(
        middlewares=[_errors, _auth], client_max_size=max_packet_bytes + 64 * 1024
    )
    app[RUNTIME] = runtime
    app[ACCOUNTS] = accounts
    app[MAX_BYTES] = max_packet_bytes
    app.router.add_get("/v1/health", _health)
    app.router.add_get("/v1/services", _list_services)
    app.router.add_post("/v1/services/{name}/calls", _create_call)
    app.router.add_get("/v1/calls/{call_id}", _get_call)
    return app


def _error_response(error: FluxoError) -> web.Response:
    return web.json_response({"error": error.to_dict()}, status=error.http_status)


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


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send 'Authorization: Bearer <token>' (create one with 'fluxo token')")
    request[PRINCIPAL] = await request.app[ACCOUNTS].authenticate(token.strip())
    return await handler(request)


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _list_services(request: web.Request) -> web.Response:
    infos = await request.app[RUNTIME].catalog.list()
    return web.json_response({"items": [i.to_dict() for i in infos]})


async def _read_json(request: web.Request) -> Any:
    limit = request.app[MAX_BYTES]
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = await request.read()
    if not raw:
        raise MalformedRequestError(
            'the request body is empty; send a JSON packet or {"payload": ...}'
        )
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


def _packet_from_body(body: Any, principal: Principal) -> Packet:
    """A packet from the request body; ``actor`` defaults to the token's user and account."""
    if not isinstance(body, dict):
        raise PacketValidationError(
            'the request body must be a JSON object: a packet, or {"payload": ...}',
            problems=[("body", f"got {type(body).__name__}")],
        )
    actor = body.get("actor")
    if isinstance(actor, dict):
        account = (
            (actor.get("account") or {}).get("id")
            if isinstance(actor.get("account"), dict)
            else None
        )
        if account is not None and account != principal.account_id:
            raise PermissionDeniedError(
                f"the packet is for account {account!r} but the token belongs to account "
                f"{principal.account_id!r}; use a token of that account",
            )
    else:
        body = {
            **body,
            "actor": {"user": {"id": principal.user_id}, "account": {"id": principal.account_id}},
        }
    try:
        return Packet.model_validate(body)
    except pydantic.ValidationError as exc:
        raise PacketValidationError(
            "invalid packet: fix the fields listed below", problems=problems_from_pydantic(exc)
        ) from exc


def _wait_seconds(request: web.Request) -> float | None:
    """None for an asynchronous call; otherwise how long to wait for the result."""
    if request.query.get("async", "").lower() in ("1", "true", "yes") or "respond-async" in (
        request.headers.get("Prefer", "")
    ):
        return None
    return _seconds(request, DEFAULT_WAIT_S)


def _seconds(request: web.Request, default: float) -> float:
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


def _call_response(record: CallRecord) -> web.Response:
    status = 200 if record.done else 202
    body = record.model_dump(mode="json")
    return web.json_response(body, status=status, headers={"Location": f"/v1/calls/{record.id}"})


async def _create_call(request: web.Request) -> web.Response:
    principal = _principal(request)
    wait = _wait_seconds(request)
    packet = _packet_from_body(await _read_json(request), principal)
    runtime = request.app[RUNTIME]
    record = await runtime.gateway.call(
        request.match_info["name"], packet, principal=principal, wait=wait
    )
    return _call_response(record)


async def _get_call(request: web.Request) -> web.Response:
    principal = _principal(request)
    runtime = request.app[RUNTIME]
    call_id = request.match_info["call_id"]
    wait = _seconds(request, 0.0)
    if wait > 0:
        record = await runtime.gateway.wait(call_id, wait, account_id=principal.account_id)
    else:
        record = await runtime.gateway.get(call_id, account_id=principal.account_id)
    return _call_response(record)
