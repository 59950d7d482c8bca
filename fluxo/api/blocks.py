"""Block and job-control routes: place, list and lift blocks and read their audit log; resume
and retry jobs; pause and resume workflows. The work is :mod:`fluxo.control.blocks`' and
:mod:`fluxo.control.job_control`'s, shared with the CLI."""

from __future__ import annotations

from aiohttp import web

from fluxo.api.common import PLATFORM, json_body, principal
from fluxo_core.errors import ValidationError

__all__ = ["BLOCK_FIELDS", "add_routes"]

BLOCK_FIELDS = ("kind", "target", "reason", "ends_at", "account")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/blocks", _place)
    app.router.add_get("/v1/blocks", _list)
    app.router.add_get("/v1/blocks/audit", _audit)
    app.router.add_get("/v1/blocks/{block_id}", _get)
    app.router.add_delete("/v1/blocks/{block_id}", _lift)
    app.router.add_post("/v1/jobs/{job_id}/resume", _resume_job)
    app.router.add_post("/v1/jobs/{job_id}/retry", _retry_job)
    app.router.add_post("/v1/workflows/{name}/pause", _pause_workflow)
    app.router.add_post("/v1/workflows/{name}/resume", _resume_workflow)
    app.router.add_get("/v1/workflows/{name}/pause", _workflow_pause)


async def _place(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ValidationError(
            'the body must be {"kind": ..., "target": ..., "reason": ...}',
            problems=[("body", "expected an object")],
        )
    extra = sorted(set(body) - set(BLOCK_FIELDS))
    if extra:
        raise ValidationError(
            f"unknown fields in the body: {', '.join(extra)}",
            problems=[(f"body.{name}", "unknown field") for name in extra],
        )
    block = await request.app[PLATFORM].blocks.place(
        principal(request),
        kind=body.get("kind"),
        target=body.get("target"),
        reason=body.get("reason"),
        ends_at=body.get("ends_at"),
        account=body.get("account"),
    )
    return web.json_response(
        block.model_dump(mode="json"), status=201, headers={"Location": f"/v1/blocks/{block.id}"}
    )


async def _list(request: web.Request) -> web.Response:
    active = request.query.get("active", "").lower() in ("1", "true", "yes")
    items = await request.app[PLATFORM].blocks.find(principal(request), active_only=active)
    return web.json_response({"items": [b.model_dump(mode="json") for b in items]})


async def _get(request: web.Request) -> web.Response:
    block = await request.app[PLATFORM].blocks.get(
        principal(request), request.match_info["block_id"]
    )
    return web.json_response(block.model_dump(mode="json"))


async def _lift(request: web.Request) -> web.Response:
    block = await request.app[PLATFORM].blocks.lift(
        principal(request), request.match_info["block_id"]
    )
    return web.json_response(block.model_dump(mode="json"))


async def _audit(request: web.Request) -> web.Response:
    entries = await request.app[PLATFORM].blocks.audit(principal(request))
    return web.json_response({"items": [e.model_dump(mode="json") for e in entries]})


async def _resume_job(request: web.Request) -> web.Response:
    control = request.app[PLATFORM].job_control
    job = await control.resume(principal(request), request.match_info["job_id"])
    return web.json_response(job.model_dump(mode="json"))


async def _retry_job(request: web.Request) -> web.Response:
    control = request.app[PLATFORM].job_control
    job = await control.retry(principal(request), request.match_info["job_id"])
    return web.json_response(job.model_dump(mode="json"))


async def _pause_workflow(request: web.Request) -> web.Response:
    control = request.app[PLATFORM].job_control
    state = await control.pause_workflow(principal(request), request.match_info["name"])
    return web.json_response(state.to_dict())


async def _resume_workflow(request: web.Request) -> web.Response:
    control = request.app[PLATFORM].job_control
    state = await control.resume_workflow(principal(request), request.match_info["name"])
    return web.json_response(state.to_dict())


async def _workflow_pause(request: web.Request) -> web.Response:
    control = request.app[PLATFORM].job_control
    state = await control.workflow_pause(principal(request), request.match_info["name"])
    return web.json_response(state.to_dict())
