"""Workflow and job routes: apply workflows, create jobs (idempotently), follow and cancel them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fluxo.api.common import PLATFORM, int_query, json_body, principal, seconds, yaml_body
from fluxo.control.jobs import JOB_STATUSES, parse_version
from fluxo_core.errors import ValidationError
from fluxo_core.ir.workflow import workflow_document
from fluxo_core.storage.workflows import AppliedWorkflow

__all__ = ["add_routes", "applied_json"]

MAX_IDEMPOTENCY_KEY = 200


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/workflows", _apply)
    app.router.add_get("/v1/workflows", _list_workflows)
    app.router.add_get("/v1/workflows/{name}", _get_workflow)
    app.router.add_post("/v1/workflows/{name}/jobs", _create_job)
    app.router.add_get("/v1/jobs", _list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", _get_job)
    app.router.add_post("/v1/jobs/{job_id}/cancel", _cancel_job)
    app.router.add_post("/v1/jobs/{job_id}/engine-events", _job_engine_event)
    app.router.add_post("/v1/engine-events", _engine_event)


def applied_json(applied: AppliedWorkflow) -> dict[str, Any]:
    return {
        "name": applied.workflow.metadata.name,
        "version": applied.version,
        "created": applied.created,
        "workflow": workflow_document(applied.workflow),
    }


async def _apply(request: web.Request) -> web.Response:
    """A workflow document as JSON, or as YAML with ``Content-Type: application/yaml``."""
    if request.content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
        document = await yaml_body(request)
    else:
        document = await json_body(request)
    applied = await request.app[PLATFORM].jobs.apply(document, principal(request))
    return web.json_response(applied_json(applied), status=201 if applied.created else 200)


async def _list_workflows(request: web.Request) -> web.Response:
    items = await request.app[PLATFORM].workflows.list(principal(request).account_id)
    return web.json_response({"items": [applied_json(a) for a in items]})


async def _get_workflow(request: web.Request) -> web.Response:
    raw = request.query.get("version")
    version = None if raw is None else parse_version(raw, where="query.version")
    applied = await request.app[PLATFORM].workflows.get(
        principal(request).account_id, request.match_info["name"], version
    )
    return web.json_response(applied_json(applied))


async def _create_job(request: web.Request) -> web.Response:
    """Body ``{"input": ..., "headers": {...}}``; ``Idempotency-Key`` makes retries safe."""
    body = await json_body(request)
    if not isinstance(body, dict) or "input" not in body:
        raise ValidationError(
            'the body must be {"input": <object or array of objects>}',
            problems=[("body.input", "required")],
        )
    extra = set(body) - {"input", "headers"}
    if extra:
        raise ValidationError(
            f"unknown fields in the body: {', '.join(sorted(extra))}",
            problems=[(f"body.{name}", "unknown field") for name in sorted(extra)],
        )
    headers = body.get("headers")
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
    ):
        raise ValidationError(
            'body.headers must be an object of strings, e.g. {"source": "crm"}',
            problems=[("body.headers", "expected an object of string values")],
        )
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            f"the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            problems=[("headers.Idempotency-Key", "length")],
        )
    platform = request.app[PLATFORM]
    who = principal(request)
    job = await platform.jobs.create(
        who,
        request.match_info["name"],
        body["input"],
        idempotency_key=key,
        headers=headers,
    )
    wait = seconds(request, 0.0)
    if wait > 0:
        job = await platform.jobs.wait(who, job.id, wait)
    return web.json_response(
        job.model_dump(mode="json"),
        status=201,
        headers={"Location": f"/v1/jobs/{job.id}"},
    )


async def _get_job(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    who = principal(request)
    wait = seconds(request, 0.0)
    job_id = request.match_info["job_id"]
    job = await (
        platform.jobs.wait(who, job_id, wait) if wait > 0 else platform.jobs.get(who, job_id)
    )
    return web.json_response(job.model_dump(mode="json"))


async def _cancel_job(request: web.Request) -> web.Response:
    job = await request.app[PLATFORM].jobs.cancel(principal(request), request.match_info["job_id"])
    return web.json_response(job.model_dump(mode="json"))


async def _list_jobs(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise ValidationError(
            f"query parameter status={status!r} is not a job status; use one of "
            f"{', '.join(JOB_STATUSES)}",
            problems=[("query.status", f"one of {', '.join(JOB_STATUSES)}")],
        )
    page = await request.app[PLATFORM].jobs.list(
        principal(request),
        workflow=request.query.get("workflow"),
        status=status,
        limit=int_query(request, "limit", 50, low=1, high=500),
        cursor=request.query.get("cursor"),
    )
    return web.json_response(page.model_dump(mode="json"))


async def _job_engine_event(request: web.Request) -> web.Response:
    """An external engine reports the end of a job (Argo's exit handler)."""
    body = await json_body(request)
    job_id = request.match_info["job_id"]
    record = await request.app[PLATFORM].jobs.engine_event(principal(request), job_id, body)
    return web.json_response({"id": record.id, "status": record.status})


async def _engine_event(request: web.Request) -> web.Response:
    """An external engine reports the end of a job named in the body (Node-RED flows)."""
    body = await json_body(request)
    job_id = body.get("job_id") if isinstance(body, dict) else None
    if not isinstance(job_id, str) or not job_id:
        raise ValidationError(
            "an engine event names its job: send {job_id, status, result | error}",
            problems=[("body.job_id", "missing")],
        )
    record = await request.app[PLATFORM].jobs.engine_event(principal(request), job_id, body)
    return web.json_response({"id": record.id, "status": record.status})
