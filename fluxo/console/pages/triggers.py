"""Triggers: the account's triggers with their health (connected, degraded, failing), last event,
last error, jobs created and lag; fire one now, pause and resume it. The roles are the trigger
service's (:class:`fluxo.control.triggers.TriggerService`): a viewer reads, a member fires, an
account admin pauses and resumes."""

from __future__ import annotations

from aiohttp import web

from fluxo.console.web import Route, platform, render, url, viewer
from fluxo.control.auth import require
from fluxo_core.storage import Role

__all__ = ["routes"]


def routes() -> list[Route]:
    return [
        Route("GET", "/triggers", _list, "triggers"),
        Route("GET", "/triggers/{trigger}", _trigger, "trigger"),
        Route("POST", "/triggers/{trigger}/fire", _fire, "trigger_fire"),
        Route("POST", "/triggers/{trigger}/pause", _pause, "trigger_pause"),
        Route("POST", "/triggers/{trigger}/resume", _resume, "trigger_resume"),
    ]


def _roles(request: web.Request) -> dict[str, bool]:
    role = viewer(request).role
    return {
        "may_fire": role.at_least(Role.MEMBER),
        "may_pause": role.at_least(Role.ACCOUNT_ADMIN),
    }


async def _list(request: web.Request) -> web.StreamResponse:
    rows = await platform(request).triggers.list(viewer(request))
    triggers = sorted(rows, key=lambda r: r.name)
    return render(request, "triggers.html", triggers=triggers, **_roles(request))


async def _trigger(request: web.Request) -> web.StreamResponse:
    row = await platform(request).triggers.get(viewer(request), request.match_info["trigger"])
    return render(
        request,
        "trigger.html",
        trigger=row,
        fired=request.query.get("job", ""),
        **_roles(request),
    )


async def _fire(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    require(who, Role.MEMBER, "fire triggers")
    name = request.match_info["trigger"]
    fired = await platform(request).triggers.fire_now(who, name, None)
    raise web.HTTPSeeOther(url(request, "trigger", {"job": fired.job_id}, trigger=name))


async def _pause(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    name = request.match_info["trigger"]
    await platform(request).triggers.pause(who, name)  # an account admin's (it checks)
    raise web.HTTPSeeOther(url(request, "trigger", trigger=name))


async def _resume(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    name = request.match_info["trigger"]
    await platform(request).triggers.resume(who, name)
    raise web.HTTPSeeOther(url(request, "trigger", trigger=name))
