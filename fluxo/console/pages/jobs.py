"""Jobs: the list (filters, packet search, keyset pages) and a job's page (steps, timeline,
packets, costs, cancel/retry/resume), live over server-sent events while the job runs."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from markupsafe import Markup

from fluxo.console import sse
from fluxo.console.graph import render_graph, step_phases
from fluxo.console.timeline import render_timeline
from fluxo.console.web import Route, platform, render, render_fragment, url, viewer
from fluxo.control.auth import require
from fluxo.control.jobs import JOB_STATUSES, JobRecord
from fluxo_core.engine import StepState
from fluxo_core.errors import NotFoundError, ValidationError
from fluxo_core.ir import ENGINES
from fluxo_core.storage import Role
from fluxo_core.storage.jobs import SEARCH_WINDOW

__all__ = ["PACKET_PREVIEW_BYTES", "routes"]

PAGE_SIZE = 50
PACKET_PREVIEW_BYTES = 8 * 1024  # larger packets are cut in the page and downloadable whole
MAX_SEARCH = 200
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LIVE_PARTS = ("job-head", "job-timeline", "job-steps")


def routes() -> list[Route]:
    return [
        Route("GET", "/jobs", _list, "jobs"),
        Route("GET", "/jobs/{job_id}", _job, "job"),
        Route("GET", "/jobs/{job_id}/live", _job_live, "job_live"),
        Route("GET", "/jobs/{job_id}/packet", _packet, "job_packet"),
        Route("POST", "/jobs/{job_id}/cancel", _cancel, "job_cancel"),
        Route("POST", "/jobs/{job_id}/retry", _retry, "job_retry"),
        Route("POST", "/jobs/{job_id}/resume", _resume, "job_resume"),
    ]


# --- the list ---------------------------------------------------------------------------------


def _day(raw: str, field: str) -> float | None:
    if not raw:
        return None
    if not _DATE.fullmatch(raw):
        raise ValidationError(
            f"{field} must be a date like 2026-12-31", problems=[(f"query.{field}", "a date")]
        )
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ValidationError(
            f"{field} {raw!r} is not a calendar date", problems=[(f"query.{field}", "a date")]
        ) from None


def _filters(request: web.Request) -> dict[str, str]:
    q = request.query
    found = {k: q.get(k, "").strip() for k in ("workflow", "status", "engine", "from", "to", "q")}
    if found["status"] and found["status"] not in JOB_STATUSES:
        raise ValidationError(
            f"status {found['status']!r} is not a job status",
            problems=[("query.status", "one of " + ", ".join(JOB_STATUSES))],
        )
    if found["engine"] and found["engine"] not in ENGINES:
        raise ValidationError(
            f"engine {found['engine']!r} is not an engine",
            problems=[("query.engine", "one of " + ", ".join(ENGINES))],
        )
    if len(found["q"]) > MAX_SEARCH or len(found["workflow"]) > 100:
        raise ValidationError(
            f"the search is limited to {MAX_SEARCH} characters",
            problems=[("query.q", "too long")],
        )
    return found


async def _list(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    filters = _filters(request)
    until = _day(filters["to"], "to")
    page = await platform(request).jobs.list(
        who,
        workflow=filters["workflow"] or None,
        status=filters["status"] or None,
        engine=filters["engine"] or None,
        since=_day(filters["from"], "from"),
        until=until + 86400 if until is not None else None,  # "to" is the last day shown
        contains=filters["q"] or None,
        limit=PAGE_SIZE,
        cursor=request.query.get("cursor") or None,
    )
    next_url = None
    if page.next_cursor:
        next_url = url(request, "jobs", {**filters, "cursor": page.next_cursor})
    return render(
        request,
        "jobs.html",
        jobs=page.items,
        filters=filters,
        statuses=JOB_STATUSES,
        engines=ENGINES,
        next_url=next_url,
        search_window=SEARCH_WINDOW,
        first_url=url(request, "jobs", filters) if request.query.get("cursor") else None,
    )


# --- one job ----------------------------------------------------------------------------------


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def _packet_view(value: Any) -> dict[str, Any]:
    """A packet as the page shows it: pretty JSON, cut after PACKET_PREVIEW_BYTES."""
    if value is None:
        return {"present": False}
    text = _json_text(value)
    size = len(text.encode())
    if size <= PACKET_PREVIEW_BYTES:
        return {"present": True, "text": text, "size": size, "cut": False}
    cut = text.encode()[:PACKET_PREVIEW_BYTES].decode(errors="ignore")
    return {"present": True, "text": cut, "size": size, "cut": True}


async def _record(request: web.Request) -> JobRecord:
    return await platform(request).jobs.get(viewer(request), request.match_info["job_id"])


async def _context(request: web.Request, job: JobRecord) -> dict[str, Any]:
    who = viewer(request)
    steps: list[StepState] = job.steps or []
    call_ids = [s.call_id for s in steps if s.call_id]
    costs = await platform(request).activity.call_costs(who, call_ids)
    # A step that called a workflow service started a child job: linked when it is the
    # account's own, only named as elsewhere when it runs in the publisher's account.
    children = await platform(request).jobs.children(who, job.id)
    by_call = {c.call_id: c for c in children if c.call_id}
    by_step = {c.step_id: c for c in children if c.step_id}
    total: dict[str, Decimal] = {}
    rows = []
    for step in steps:
        cost = costs.get(step.call_id or "", {})
        for currency, amount in cost.items():
            total[currency] = total.get(currency, Decimal(0)) + amount
        rows.append(
            {
                "step": step,
                "cost": cost,
                "input": _packet_view(step.input),
                "output": _packet_view(step.output),
                "child": by_call.get(step.call_id or "")
                or by_step.get(step.key)
                or by_step.get(step.step_id),
            }
        )
    now = datetime.fromtimestamp(platform(request).clock.time(), UTC)
    return {
        "job": job,
        "rows": rows,
        "total": total,
        # Called by the template with its title in the page's language.
        "timeline": functools.partial(
            render_timeline, steps, job.started_at or job.created_at, job.finished_at, now
        ),
        "has_timeline": any(s.started_at for s in steps),
        "job_input": _packet_view(job.input),
        "job_result": _packet_view(job.result),
        "may_act": who.role.at_least(Role.MEMBER),
        "live": not job.done,
    }


async def _graph(request: web.Request, job: JobRecord) -> Callable[[JobRecord], Markup]:
    """The job's workflow graph, coloured by a record's step states (the workflow version is
    read once: a job never changes version, while its states change on every live update)."""
    applied = await platform(request).workflows.get(
        viewer(request).account_id, job.workflow, job.version
    )
    # A live page asks twice a second; laying out a large graph takes tens of milliseconds on
    # the event loop, so it is drawn again only when a step's phase changed.
    drawn: dict[str, Any] = {"phases": None, "svg": Markup()}

    def draw(record: JobRecord) -> Markup:
        phases = step_phases(record.steps or [])
        if phases != drawn["phases"]:
            drawn.update(phases=phases, svg=render_graph(applied.workflow, phases))
        svg: Markup = drawn["svg"]
        return svg

    return draw


async def _job(request: web.Request) -> web.StreamResponse:
    job = await _record(request)
    values = await _context(request, job)
    graph = await _graph(request, job)
    return render(request, "job.html", graph=graph(job), **values)


async def _job_live(request: web.Request) -> web.StreamResponse:
    job = await _record(request)  # another account's job: 404 before the stream opens
    state = {"done": job.done}
    graph = await _graph(request, job)

    async def fragments() -> dict[str, str]:
        current = await _record(request)
        state["done"] = current.done
        values = await _context(request, current)
        parts = {
            part: render_fragment(request, f"_{part.replace('-', '_')}.html", **values)
            for part in _LIVE_PARTS
        }
        parts["job-graph"] = str(graph(current))  # the graph turns green step by step
        return parts

    return await sse.stream(request, fragments, interval_s=0.5, done=lambda: state["done"])


async def _packet(request: web.Request) -> web.StreamResponse:
    """One packet whole, as a JSON download: ``part`` is input, output (with ``step``, a step
    key), or job-input, job-result."""
    job = await _record(request)
    part, key = request.query.get("part", ""), request.query.get("step")
    value: Any = None
    if part == "job-input":
        value = job.input
    elif part == "job-result":
        value = job.result
    elif part in ("input", "output") and key:
        step = next((s for s in job.steps or [] if s.key == key), None)
        if step is None:
            raise NotFoundError(f"no step {key!r} in job {job.id}")
        value = step.input if part == "input" else step.output
    else:
        raise ValidationError(
            "part must be input or output (with step), job-input or job-result",
            problems=[("query.part", "input, output, job-input or job-result")],
        )
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{job.id}-{key or ''}-{part}")[:200]
    return web.Response(
        body=_json_text(value).encode(),
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
    )


async def _act(request: web.Request, what: str) -> web.StreamResponse:
    who = viewer(request)
    require(who, Role.MEMBER, f"{what} jobs")
    job_id = request.match_info["job_id"]
    p = platform(request)
    if what == "cancel":
        await p.jobs.cancel(who, job_id)
    elif what == "retry":
        await p.job_control.retry(who, job_id)
    else:
        await p.job_control.resume(who, job_id)
    raise web.HTTPSeeOther(url(request, "job", job_id=job_id))


async def _cancel(request: web.Request) -> web.StreamResponse:
    return await _act(request, "cancel")


async def _retry(request: web.Request) -> web.StreamResponse:
    return await _act(request, "retry")


async def _resume(request: web.Request) -> web.StreamResponse:
    return await _act(request, "resume")
