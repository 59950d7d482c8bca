"""Quotas and blocks: the account's limits with what they used, their 80% and 100% events, and
the blocks in force with their history; a member places and lifts blocks as the API lets it
(:class:`fluxo.control.blocks.BlockService` decides what may be blocked and lifted)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from fluxo.console.web import Route, platform, render, url, viewer
from fluxo.control.auth import acts_for_platform, require
from fluxo.control.blocks import BlockRecord
from fluxo.control.quotas import event_json, quotas_answer
from fluxo_core.storage import Principal, Role
from fluxo_core.storage.blocks import BLOCK_KINDS

__all__ = ["routes"]

MAX_EVENTS = 50
_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


def routes() -> list[Route]:
    return [
        Route("GET", "/quotas", _quotas, "quotas"),
        Route("GET", "/blocks", _blocks, "blocks"),
        Route("POST", "/blocks", _place, "block_place"),
        Route("POST", "/blocks/{block_id}/lift", _lift, "block_lift"),
    ]


async def _quotas(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    p = platform(request)
    quotas = await quotas_answer(p.quotas, who.account_id, p.clock.time())
    for quota in quotas:
        quota["share"] = _share(quota)
    events = [
        {**event_json(e), "at": e.created_at}
        for e in await p.quotas.events(who.account_id, limit=MAX_EVENTS)
    ]
    refusals = [
        {"call": call, "message": _message(call.error)}
        for call in await p.activity.quota_refusals(who)
    ]
    return render(request, "quotas.html", quotas=quotas, events=events, refusals=refusals)


def _message(error: str | None) -> str:
    """The refusal's message, from the call's error (its JSON)."""
    try:
        found = orjson.loads(error or "{}")
    except orjson.JSONDecodeError:
        return error or ""
    return str(found.get("message", "")) if isinstance(found, dict) else str(found)


def _share(quota: dict[str, Any]) -> float | None:
    """What a calls or spend quota used of its limit, 0 to 1 (None for the other kinds)."""
    if quota["used"] is None:
        return None
    limit = float(quota["limit"])
    return min(1.0, float(quota["used"]) / limit) if limit > 0 else 1.0


def _may_lift(who: Principal, block: BlockRecord) -> bool:
    """As :meth:`BlockService.lift` decides: a block the platform admin placed (and any block
    of a whole account) is the admin's to lift."""
    if not who.role.at_least(Role.MEMBER) or not block.active:
        return False
    if acts_for_platform(who):
        return True
    return block.kind != "account" and block.placed_by.partition("/")[0] == who.account_id


async def _blocks(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    p = platform(request)
    blocks = await p.blocks.find(who)
    audit = await p.blocks.audit(who)
    # Only the admin account blocks whole accounts; everyone else blocks its own things.
    kinds = [k for k in BLOCK_KINDS if k != "account" or acts_for_platform(who)]
    return render(
        request,
        "blocks.html",
        active=[(b, _may_lift(who, b)) for b in blocks if b.active],
        history=[b for b in blocks if not b.active],
        audit=audit[:MAX_EVENTS],
        kinds=kinds,
        may_act=who.role.at_least(Role.MEMBER),
        done=request.query.get("done", ""),
    )


async def _place(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    require(who, Role.MEMBER, "place blocks")
    form = await request.post()
    ends_at = str(form.get("ends_at", "")).strip()
    if ends_at and not _OFFSET.search(ends_at):
        ends_at += "Z"  # the form's local-time input has no offset: it is UTC, as the page says
    await platform(request).blocks.place(
        who,
        kind=str(form.get("kind", "")),
        target=str(form.get("target", "")).strip() or None,
        reason=str(form.get("reason", "")),
        ends_at=ends_at or None,
    )
    raise web.HTTPSeeOther(url(request, "blocks", {"done": "placed"}))


async def _lift(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    require(who, Role.MEMBER, "lift blocks")
    await platform(request).blocks.lift(who, request.match_info["block_id"])
    raise web.HTTPSeeOther(url(request, "blocks", {"done": "lifted"}))
