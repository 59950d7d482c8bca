"""The overview: how the account's jobs and spend are doing right now."""

from __future__ import annotations

from aiohttp import web

from fluxo.console.web import Route, render

__all__ = ["routes"]


def routes() -> list[Route]:
    return [Route("GET", "/overview", _overview, "overview")]


async def _overview(request: web.Request) -> web.StreamResponse:
    return render(request, "overview.html")
