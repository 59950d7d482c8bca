"""Dead-letter routes: the account's dead letters of a service, and their replay.

The work is :class:`fluxo.control.dead_letters.AccountDeadLetters`', shared with the console's
service page: scoped to the token's account (another account's dead letter is as missing as
one that does not exist); a viewer reads, a member replays.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fluxo.api.common import PLATFORM, json_body, principal
from fluxo.control.dead_letters import MAX_LETTERS
from fluxo_core.errors import UnknownServiceError, ValidationError
from service_runtime.catalog import ServiceInfo
from service_runtime.dead_letters import DeadLetter

__all__ = ["add_routes", "document_routes"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/services/{name}/dead-letters", _list)
    app.router.add_post("/v1/services/{name}/dead-letters/replay", _replay)


async def _service(request: web.Request) -> ServiceInfo:
    """The service the path names (``name`` or ``name@version``), as the account sees it."""
    platform = request.app[PLATFORM]
    name = request.match_info["name"]
    if not platform.workflow_services.offered_to(
        name.partition("@")[0], principal(request).account_id
    ):
        raise UnknownServiceError(f"no service named {name!r}", service=name)
    return await platform.runtime.catalog.resolve(name)


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "message_id": letter.message_id,
        "queue": letter.queue,
        "error": letter.error,
        "dead_at": letter.dead_at,
        "job_id": letter.job_id,
    }


async def _list(request: web.Request) -> web.Response:
    service = await _service(request)
    letters = await request.app[PLATFORM].dead_letters.list(principal(request), service)
    return web.json_response({"items": [_letter_json(letter) for letter in letters]})


async def _replay(request: web.Request) -> web.Response:
    """Body ``{"message_ids": [...]}``."""
    body = await json_body(request)
    ids = body.get("message_ids") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or set(body) != {"message_ids"}
        or not isinstance(ids, list)
        or not all(isinstance(i, str) for i in ids)
    ):
        raise ValidationError(
            'the body must be {"message_ids": ["<message id>", ...]}',
            problems=[("body.message_ids", "a list of message ids")],
        )
    service = await _service(request)
    replay = await request.app[PLATFORM].dead_letters.replay(principal(request), service, ids)
    return web.json_response(
        {
            "replayed": replay.replayed,
            "kept": [
                {"job_id": j.job_id, "job_status": j.job_status, "message_ids": list(j.message_ids)}
                for j in replay.kept
            ],
        }
    )


def document_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Add the dead-letter routes and their schemas to the OpenAPI document."""

    def json(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: "Malformed body (empty, JSON that does not parse)",
            401: "Missing, unknown, revoked or expired bearer token",
            403: "The token's role may not do this (a viewer replaying, an engine's token)",
            404: "No such service, or no such dead letter of this account's calls of it",
            422: "Invalid body (`problems` says where), or a transport that keeps dead letters "
            "in its broker (code unsupported: replay them with the broker's tools)",
        }
        ref = {"$ref": "#/components/schemas/Error"}
        return {str(c): json(ref, text[c]) for c in codes}

    schemas["DeadLetter"] = {
        "type": "object",
        "required": ["message_id", "queue", "dead_at"],
        "properties": {
            "message_id": {"type": "string", "description": "The call's id"},
            "queue": {"type": "string", "description": "The queue it failed on"},
            "error": {"type": ["string", "null"]},
            "dead_at": {"type": "number", "description": "Epoch seconds"},
            "job_id": {
                "type": ["string", "null"],
                "description": "The job whose step made the call (null: a direct call)",
            },
        },
    }
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "service name or name@version (default: the newest published)",
    }
    paths["/v1/services/{name}/dead-letters"] = {
        "get": {
            "summary": "The dead letters of this account's calls of a service, oldest first",
            "parameters": [name],
            "responses": {
                "200": json(
                    {
                        "type": "object",
                        "required": ["items"],
                        "properties": {
                            "items": {
                                "type": "array",
                                "maxItems": MAX_LETTERS,
                                "items": {"$ref": "#/components/schemas/DeadLetter"},
                            }
                        },
                    },
                    "Dead letters",
                ),
                **errors(401, 403, 404),
            },
        }
    }
    paths["/v1/services/{name}/dead-letters/replay"] = {
        "post": {
            "summary": "Send dead letters of this account's direct calls through again (member)",
            "description": (
                "Each replayed call runs (and is billed) once more. A job step's dead letter "
                "stays where it is, reported in `kept`: its job has handled the failure, so "
                "run the job again instead."
            ),
            "parameters": [name],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["message_ids"],
                            "properties": {
                                "message_ids": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": MAX_LETTERS,
                                    "items": {"type": "string"},
                                }
                            },
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "200": json(
                    {
                        "type": "object",
                        "required": ["replayed", "kept"],
                        "properties": {
                            "replayed": {"type": "integer"},
                            "kept": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "job_id": {"type": "string"},
                                        "job_status": {"type": "string"},
                                        "message_ids": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                    "What the replay did",
                ),
                **errors(400, 401, 403, 404, 422),
            },
        }
    }
