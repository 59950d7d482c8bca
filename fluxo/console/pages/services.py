"""The service catalogue (each service's version and price, and the account's calls of it in the
last day: count, error rate, p50/p95 time) and a service's page: its schemas and terms, the
account's recent calls of it, and the dead letters of those calls, replayed from the page."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from fluxo.console.web import Route, platform, render, url, viewer
from fluxo.control.auth import require
from fluxo.control.platform import Platform
from fluxo_core.errors import NotFoundError
from fluxo_core.storage import Principal, Role
from service_runtime.catalog import ServiceInfo
from service_runtime.dead_letters import DeadLetter

__all__ = ["routes"]

RECENT_CALLS = 50


def routes() -> list[Route]:
    return [
        Route("GET", "/services", _services, "services"),
        Route("GET", "/services/{service}", _service, "service"),
        Route("POST", "/services/{service}/dead-letters/replay", _replay, "service_replay"),
    ]


async def _offered(p: Platform, who: Principal) -> list[ServiceInfo]:
    """The catalogue as the account may see it: a published workflow only where its
    visibility offers it (as ``GET /v1/services`` lists it)."""
    offered = p.workflow_services.offered_to
    return [s for s in await p.runtime.catalog.list() if offered(s.name, who.account_id)]


async def _services(request: web.Request) -> web.StreamResponse:
    p = platform(request)
    catalogue = sorted(await _offered(p, viewer(request)), key=lambda s: s.name)
    figures = await p.activity.service_figures(viewer(request))
    return render(request, "services.html", services=catalogue, figures=figures)


async def _versions(request: web.Request) -> list[ServiceInfo]:
    """The published versions of the service the path names; a service the account is
    not offered is as missing as one that does not exist."""
    name = request.match_info["service"]
    found = [s for s in await _offered(platform(request), viewer(request)) if s.name == name]
    if not found:
        raise NotFoundError(f"no service named {name!r}")
    return found


def _schema_text(schema: Any) -> str | None:
    if schema is None:
        return None
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


async def _service(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    p = platform(request)
    versions = await _versions(request)
    newest = await p.runtime.catalog.resolve(versions[0].name)  # the newest published
    letters: list[tuple[ServiceInfo, DeadLetter]] = []
    for version in versions:
        letters.extend((version, letter) for letter in await p.dead_letters.list(who, version))
    calls = await p.activity.recent_calls(who, newest.name, limit=RECENT_CALLS)
    figures = (await p.activity.service_figures(who)).get(newest.name)
    q = request.query
    return render(
        request,
        "service.html",
        service=newest,
        versions=versions,
        input_schema=_schema_text(newest.input_schema),
        output_schema=_schema_text(newest.output_schema),
        calls=calls,
        figures=figures,
        letters=letters,
        dead_letters_supported=p.dead_letters.supported,
        may_replay=who.role.at_least(Role.MEMBER),
        replayed=q.get("replayed", ""),
        kept=q.get("kept", ""),
    )


async def _replay(request: web.Request) -> web.StreamResponse:
    """Replay the dead letters the form names (``message_id``, repeated) of one version."""
    who = viewer(request)
    require(who, Role.MEMBER, "replay dead letters")
    versions = await _versions(request)
    form = await request.post()
    wanted = str(form.get("version", ""))
    version = next((v for v in versions if v.version == wanted), None)
    if version is None:
        raise NotFoundError(f"no version {wanted!r} of service {versions[0].name!r}")
    ids = [str(i) for i in form.getall("message_id", [])]
    replay = await platform(request).dead_letters.replay(who, version, ids)
    kept = sum(len(job.message_ids) for job in replay.kept)
    query = {"replayed": str(replay.replayed), "kept": str(kept)}
    raise web.HTTPSeeOther(url(request, "service", query, service=version.name) + "#dead-letters")
