"""Secret routes: set, list and delete an account's stored secrets. A value goes in, never out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from fluxo.api.common import PLATFORM, json_body, principal
from fluxo_core.errors import ConfigError, ValidationError
from fluxo_core.storage import SecretInfo, SecretStore

__all__ = ["add_routes", "secret_json"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/secrets", _list)
    app.router.add_put("/v1/secrets/{name}", _put)
    app.router.add_delete("/v1/secrets/{name}", _delete)


def secret_json(info: SecretInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "created_at": datetime.fromtimestamp(info.created_at, UTC).isoformat(),
        "updated_at": datetime.fromtimestamp(info.updated_at, UTC).isoformat(),
    }


def _store(request: web.Request) -> SecretStore:
    store = request.app[PLATFORM].secrets
    if store is None:
        raise ConfigError("this Fluxo keeps no secrets: it was started without a configuration")
    return store


async def _list(request: web.Request) -> web.Response:
    items = await _store(request).list(principal(request).account_id)
    return web.json_response({"items": [secret_json(i) for i in items]})


async def _put(request: web.Request) -> web.Response:
    """Body ``{"value": "..."}``; 201 when new, 200 when replaced. The answer has no value."""
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("value"), str):
        raise ValidationError(
            'the body must be {"value": "<the secret, a string>"}',
            problems=[("body.value", "required: a string")],
        )
    if set(body) != {"value"}:
        unknown = ", ".join(sorted(str(k) for k in set(body) - {"value"}))
        raise ValidationError(
            f"unknown field(s) {unknown}; the body is {{'value': ...}}",
            problems=[(f"body.{k}", "unknown field") for k in sorted(set(body) - {"value"})],
        )
    info, created = await _store(request).put(
        principal(request).account_id, request.match_info["name"], body["value"]
    )
    return web.json_response(secret_json(info), status=201 if created else 200)


async def _delete(request: web.Request) -> web.Response:
    await _store(request).delete(principal(request).account_id, request.match_info["name"])
    return web.Response(status=204)
