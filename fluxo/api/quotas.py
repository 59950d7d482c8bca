"""Quota routes: set, list, show and delete an account's quotas, and list their events.

The shapes are :mod:`fluxo.control.quotas`'s, shared with ``fluxo quota``.
"""

from __future__ import annotations

from aiohttp import web

from fluxo.api.common import PLATFORM, int_query, json_body, principal
from fluxo.control.quotas import event_json, parse_quota_spec, quota_answer, quotas_answer

__all__ = ["add_routes"]

MAX_EVENTS = 1000


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/quotas", _list)
    app.router.add_get("/v1/quotas/{name}", _get)
    app.router.add_put("/v1/quotas/{name}", _put)
    app.router.add_delete("/v1/quotas/{name}", _delete)
    app.router.add_get("/v1/quota-events", _events)


async def _list(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    items = await quotas_answer(
        platform.quotas, principal(request).account_id, platform.clock.time()
    )
    return web.json_response({"items": items})


async def _get(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    answer = await quota_answer(
        platform.quotas,
        principal(request).account_id,
        request.match_info["name"],
        platform.clock.time(),
    )
    return web.json_response(answer)


async def _put(request: web.Request) -> web.Response:
    """201 when new, 200 when replaced."""
    spec = parse_quota_spec(await json_body(request))
    platform = request.app[PLATFORM]
    account = principal(request).account_id
    name = request.match_info["name"]
    _, created = await platform.quotas.set(account, name, spec)
    answer = await quota_answer(platform.quotas, account, name, platform.clock.time())
    return web.json_response(answer, status=201 if created else 200)


async def _delete(request: web.Request) -> web.Response:
    store = request.app[PLATFORM].quotas
    await store.delete(principal(request).account_id, request.match_info["name"])
    return web.Response(status=204)


async def _events(request: web.Request) -> web.Response:
    """Newest first."""
    limit = int_query(request, "limit", 100, low=1, high=MAX_EVENTS)
    store = request.app[PLATFORM].quotas
    events = await store.events(principal(request).account_id, limit=limit)
    return web.json_response({"items": [event_json(e) for e in events]})
