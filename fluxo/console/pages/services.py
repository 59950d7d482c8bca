"""The service catalogue: each service's version and price, and the account's calls of it in the
last day (count, error rate, p50/p95 time)."""

from __future__ import annotations

from aiohttp import web

from fluxo.console.web import Route, platform, render, viewer

__all__ = ["routes"]


def routes() -> list[Route]:
    return [Route("GET", "/services", _services, "services")]


async def _services(request: web.Request) -> web.StreamResponse:
    p = platform(request)
    catalogue = sorted(await p.runtime.catalog.list(), key=lambda s: s.name)
    figures = await p.activity.service_figures(viewer(request))
    return render(request, "services.html", services=catalogue, figures=figures)
