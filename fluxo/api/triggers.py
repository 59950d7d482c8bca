"""Trigger routes: the webhook endpoint ``POST /hooks/{account}/{trigger}`` and ``/v1/triggers``.

The webhook URL names the account: trigger names are unique within an account (they are
resources), so two accounts may both have a trigger ``orders``. A webhook takes no API token:
it is authenticated by the trigger's own scheme (:mod:`fluxo.control.triggers.webhook`), and a
request for a trigger that does not exist is refused exactly as one with a wrong signature
(401), so the URL tells a stranger nothing about an account's triggers.

``/v1/triggers`` is scoped to the token's account: a viewer reads, a member fires, an account
admin pauses and resumes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from fluxo.api.common import LIMITS, PARSER, PLATFORM, json_body, principal, seconds
from fluxo.control.triggers.service import trigger_principal
from fluxo.control.triggers.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    payload_of,
)
from fluxo_core.errors import PayloadTooLargeError, ValidationError
from fluxo_core.ir.documents import INLINE_BYTES, DocumentLimits
from fluxo_core.storage.triggers import TriggerRow

__all__ = ["HOOK_PREFIX", "add_routes", "document_routes", "is_hook"]

HOOK_PREFIX = "/hooks/"
MAX_HOOK_WAIT_S = 60.0


def is_hook(request: web.Request) -> bool:
    """A webhook delivery: authenticated by its trigger, not by a token."""
    return request.method == "POST" and request.path.startswith(HOOK_PREFIX)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/hooks/{account}/{trigger}", _hook)
    app.router.add_get("/v1/triggers", _list)
    app.router.add_get("/v1/triggers/{name}", _get)
    app.router.add_post("/v1/triggers/{name}/pause", _pause)
    app.router.add_post("/v1/triggers/{name}/resume", _resume)
    app.router.add_post("/v1/triggers/{name}/fire", _fire)


async def _hook(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    triggers = platform.triggers
    limits = request.app[LIMITS]
    if request.content_length is not None and request.content_length > limits.max_bytes:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limits.max_bytes, actual_size=request.content_length
        )
    raw = await request.read()
    row, event_id = await triggers.webhook_target(
        request.match_info["account"], request.match_info["trigger"], request.headers, raw
    )
    limit = int(row.spec["webhook"].get("maxBodyBytes", limits.max_bytes))
    if len(raw) > limit:
        raise PayloadTooLargeError(
            f"the webhook body is {len(raw)} bytes, over the trigger's limit of {limit} bytes "
            "(spec.webhook.maxBodyBytes); nothing was created",
            limit=limit,
            size=len(raw),
        )
    wait = min(seconds(request, 0.0), MAX_HOOK_WAIT_S)
    query = {k: v for k, v in request.query.items() if k != "wait"}
    payload = await _payload(request, raw, limits, query)
    fired = await triggers.fire(row, event_id, payload)
    body: dict[str, Any] = {"job_id": fired.job_id, "status": fired.status}
    body["duplicate"] = not fired.created
    if wait > 0:
        job = await platform.jobs.wait(trigger_principal(row), fired.job_id, wait)
        body["status"] = job.status
        if job.done:
            body.update(result=job.result, error=job.error)
            return web.json_response(body, status=200)
    return web.json_response(body, status=202)


async def _payload(
    request: web.Request, raw: bytes, limits: DocumentLimits, query: dict[str, str]
) -> dict[str, Any]:
    def parse() -> dict[str, Any]:
        return payload_of(raw, request.content_type, request.headers, query, limits=limits)

    if len(raw) <= INLINE_BYTES:
        return parse()
    # A large JSON body takes milliseconds of CPU to parse and check: off the event loop.
    return await asyncio.get_running_loop().run_in_executor(request.app[PARSER], parse)


def _trigger_json(row: TriggerRow) -> dict[str, Any]:
    return {**row.to_json(), "spec": row.spec}


async def _list(request: web.Request) -> web.Response:
    rows = await request.app[PLATFORM].triggers.list(principal(request))
    return web.json_response({"items": [_trigger_json(r) for r in rows]})


async def _get(request: web.Request) -> web.Response:
    row = await request.app[PLATFORM].triggers.get(principal(request), request.match_info["name"])
    return web.json_response(_trigger_json(row))


async def _pause(request: web.Request) -> web.Response:
    row = await request.app[PLATFORM].triggers.pause(principal(request), request.match_info["name"])
    return web.json_response(_trigger_json(row))


async def _resume(request: web.Request) -> web.Response:
    row = await request.app[PLATFORM].triggers.resume(
        principal(request), request.match_info["name"]
    )
    return web.json_response(_trigger_json(row))


async def _fire(request: web.Request) -> web.Response:
    """Body (optional) ``{"input": {...}, "event_id": "..."}``: the input replaces the spec's;
    the same event id again gives the first job."""
    body: Any = {}
    if request.can_read_body:
        body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"input", "event_id"}:
        raise ValidationError(
            'the body must be {"input": {...}, "event_id": "..."} (both optional)',
            problems=[("body", "expected an object with input and event_id")],
        )
    event_id = body.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ValidationError(
            "event_id must be text", problems=[("body.event_id", "expected a string")]
        )
    fired = await request.app[PLATFORM].triggers.fire_now(
        principal(request), request.match_info["name"], body.get("input"), event_id=event_id
    )
    return web.json_response(
        {"job_id": fired.job_id, "status": fired.status, "duplicate": not fired.created},
        status=201 if fired.created else 200,
    )


def document_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Add the trigger routes and their schemas to the OpenAPI document."""

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def json(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: "Malformed body (JSON that does not parse, text that is not UTF-8)",
            401: "Not authenticated: a missing, stale or wrong signature or token (and, with the "
            "same answer, a trigger that does not exist)",
            403: "The token's role may not do this (viewers read; members fire; account admins "
            "pause and resume), or a quota refused the job",
            404: "No such trigger in this account (or, on a webhook, deleted as it arrived)",
            409: "A concurrency limit of the workflow refused the job (code concurrency_limit)",
            429: "Over a rate limit (code rate_limited); Retry-After says when to try again",
            413: "Over the trigger's body limit (spec.webhook.maxBodyBytes), or a body or job "
            "input over the packet limit (FLUXO_MAX_PACKET_BYTES)",
            422: "Invalid body, or a JSON body over a structural limit (depth, values)",
            423: "The trigger is held (paused, blocked, or its workflow paused or blocked): "
            "nothing was created; `context.held` says why and how to lift it",
        }
        return {str(c): json(ref("Error"), text[c]) for c in codes}

    schemas["Trigger"] = {
        "type": "object",
        "required": ["name", "workflow", "type", "health", "jobsCreated"],
        "properties": {
            "name": {"type": "string"},
            "workflow": {"type": "string"},
            "type": {"type": "string", "enum": ["cron", "webhook", "email", "sms", "queue"]},
            "enabled": {"type": "boolean"},
            "paused": {"type": "boolean"},
            "pausedBy": {"type": ["string", "null"]},
            "health": {"type": "string", "enum": ["connected", "degraded", "failing"]},
            "held": {"type": ["string", "null"], "description": "Why it does not fire now"},
            "nextFireAt": {"type": ["number", "null"], "description": "Cron: epoch seconds"},
            "lastEventId": {"type": ["string", "null"]},
            "lastEventAt": {"type": ["number", "null"]},
            "lastJobId": {"type": ["string", "null"]},
            "lastError": {"type": ["string", "null"]},
            "jobsCreated": {"type": "integer"},
            "lagS": {"type": ["number", "null"]},
            "generation": {"type": "integer"},
            "spec": {"type": "object"},
        },
    }
    fired = {
        "type": "object",
        "required": ["job_id", "status", "duplicate"],
        "properties": {
            "job_id": {"type": "string"},
            "status": {"type": "string"},
            "duplicate": {
                "type": "boolean",
                "description": "The event was delivered before: this is the job it made then",
            },
            "result": {},
            "error": {"type": ["object", "null"]},
        },
    }
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The trigger's name (its resource's metadata.name)",
    }
    wait = {
        "name": "wait",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": MAX_HOOK_WAIT_S},
        "description": "Wait up to this many seconds for the job to end and answer its result",
    }
    paths["/hooks/{account}/{trigger}"] = {
        "post": {
            "summary": "Deliver a webhook: the trigger's job is created (once per delivery)",
            "description": (
                "Authenticated by the trigger, not by an API token: "
                f"`{TIMESTAMP_HEADER}: <unix seconds>` and `{SIGNATURE_HEADER}: sha256=<hex>`, "
                "the HMAC-SHA256 with the trigger's secret of `<timestamp>.<body>` (refused "
                "more than 300 s from the server's time), or `Authorization: Bearer <secret>` "
                f"when the trigger's webhook.auth is bearer. `{DELIVERY_HEADER}` deduplicates: "
                "the same delivery id gives the first job. The job's payload is `{body, headers, "
                "query, contentType}`: JSON, a form as an object, or text."
            ),
            "security": [],
            "parameters": [
                {
                    "name": "account",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The account the trigger belongs to",
                },
                {
                    "name": "trigger",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The trigger's name",
                },
                wait,
            ],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {}},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    "text/plain": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "202": json(fired, "The job was created (or had been, for this delivery)"),
                "200": json(fired, "With wait: the job ended within it; its result"),
                **errors(400, 401, 403, 404, 409, 413, 422, 423, 429),
            },
        }
    }
    paths["/v1/triggers"] = {
        "get": {
            "summary": "The account's triggers with their health",
            "responses": {
                "200": json(
                    {
                        "type": "object",
                        "properties": {"items": {"type": "array", "items": ref("Trigger")}},
                    },
                    "Triggers",
                ),
                **errors(401, 403),
            },
        }
    }
    paths["/v1/triggers/{name}"] = {
        "get": {
            "summary": "A trigger: its spec, health, last event, jobs created, next fire time",
            "parameters": [name],
            "responses": {"200": json(ref("Trigger"), "The trigger"), **errors(401, 403, 404)},
        }
    }
    for action, summary in (
        ("pause", "Pause a trigger (account admin): it holds until resumed"),
        ("resume", "Resume a trigger (account admin); cron makes up slots as catchUp says"),
    ):
        paths[f"/v1/triggers/{{name}}/{action}"] = {
            "post": {
                "summary": summary,
                "parameters": [name],
                "responses": {"200": json(ref("Trigger"), "Its state"), **errors(401, 403, 404)},
            }
        }
    paths["/v1/triggers/{name}/fire"] = {
        "post": {
            "summary": "Fire a trigger now (member): a job with its input, or the one given",
            "parameters": [name],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "input": {"type": "object"},
                                "event_id": {"type": "string", "maxLength": 128},
                            },
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "201": json(fired, "A new job"),
                "200": json(fired, "This event id fired before: its job"),
                **errors(400, 401, 403, 404, 409, 413, 422, 423, 429),
            },
        }
    }
