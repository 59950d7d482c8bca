"""The overview: how the account's jobs, queue and spend are doing right now (live)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fluxo.console import sse
from fluxo.console.web import Route, platform, render, render_fragment, viewer

__all__ = ["routes"]

REFRESH_S = 2.0


def routes() -> list[Route]:
    return [
        Route("GET", "/overview", _overview, "overview"),
        Route("GET", "/overview/live", _overview_live, "overview_live"),
    ]


async def _values(request: web.Request) -> dict[str, Any]:
    return {"o": await platform(request).activity.overview(viewer(request))}


async def _overview(request: web.Request) -> web.StreamResponse:
    return render(request, "overview.html", **await _values(request))


async def _overview_live(request: web.Request) -> web.StreamResponse:
    async def fragments() -> dict[str, str]:
        values = await _values(request)
        return {
            "overview-figures": render_fragment(request, "_overview_figures.html", **values),
            "overview-failures": render_fragment(request, "_overview_failures.html", **values),
        }

    return await sse.stream(request, fragments, interval_s=REFRESH_S)
