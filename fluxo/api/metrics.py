"""``GET /metrics``: the platform's Prometheus metrics, for the platform admin only.

The metrics count every account's jobs, calls and usage, so they are not any one account's to
read: only a platform admin's token (the role ``platform-admin``, which the token ``fluxo up``
issues has) gets them. Any other account's token gets 404, as for anything outside its
account: the route's existence is not something a tenant learns from it.
"""

from __future__ import annotations

from aiohttp import web

from fluxo.api.common import PLATFORM, principal
from fluxo.control.metrics import CONTENT_TYPE
from fluxo_core.errors import NotFoundError
from fluxo_core.storage import Role

__all__ = ["add_routes"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", _metrics)


async def _metrics(request: web.Request) -> web.Response:
    if principal(request).role is not Role.PLATFORM_ADMIN:
        raise NotFoundError(f"no route {request.path} in this account")
    body = await request.app[PLATFORM].metrics.scrape()
    # The content type names the exposition format's version, so it is set whole, not split.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
