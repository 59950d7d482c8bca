"""The usage route: ``GET /v1/usage``, what the token's account used (records or grouped sums).

The query and the answer are :mod:`fluxo.control.usage`'s, shared with ``fluxo usage``.
"""

from __future__ import annotations

from aiohttp import web

from fluxo.api.common import PLATFORM, principal
from fluxo.control.usage import parse_usage_query, usage_answer

__all__ = ["add_routes"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/usage", _usage)


async def _usage(request: web.Request) -> web.Response:
    """Always the token's account: no parameter names another one."""
    query = parse_usage_query(request.query)
    ledger = request.app[PLATFORM].usage
    return web.json_response(await usage_answer(ledger, principal(request).account_id, query))
