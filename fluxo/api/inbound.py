"""Routes of the inbound triggers: SMS deliveries and an email trigger's attachments.

``POST /hooks/{account}/{trigger}/sms`` takes an SMS trigger's deliveries
(:mod:`fluxo.control.triggers.sms`): no API token, the provider's signature instead; a request
that is not signed for the trigger is 403 and creates nothing. Twilio gets an empty TwiML
``<Response/>`` (``text/xml``), the JSON provider ``{"job_id", "status", "duplicate"}`` (202).

``GET /v1/triggers/{name}/attachments/{ref}`` answers the bytes of an attachment a job's
payload lists (``attachments[].ref``), for the token's account only: another account's
trigger or attachment is 404. The bytes are served as a download (``Content-Disposition:
attachment``, ``nosniff``, a sandboxing CSP), never rendered in the API's origin.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fluxo.api.common import LIMITS, PLATFORM, principal
from fluxo.control.triggers.sms import (
    EMPTY_TWIML,
    MAX_SMS_BYTES,
    TWILIO_SIGNATURE_HEADER,
    sms_request,
)
from fluxo_core.errors import MalformedRequestError

__all__ = ["add_routes", "document_routes"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/triggers/{name}/attachments/{ref}", _attachment)
    app.router.add_post("/hooks/{account}/{trigger}/sms", _sms)


async def _sms(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    if request.content_length is not None and request.content_length > MAX_SMS_BYTES:
        raise MalformedRequestError(
            f"the SMS request is {request.content_length} bytes, over {MAX_SMS_BYTES}; "
            "nothing was created",
            problems=[("body", "too large")],
        )
    raw = await request.content.read(MAX_SMS_BYTES + 1)
    sms = await sms_request(
        platform.triggers.store,
        platform.triggers.secrets,
        request.match_info["account"],
        request.match_info["trigger"],
        url=str(request.url),
        headers=request.headers,
        content_type=request.content_type,
        body=raw,
        now=platform.clock.time(),
        limits=request.app[LIMITS],
    )
    fired = await platform.triggers.fire(sms.row, sms.event_id, sms.payload)
    if sms.provider == "twilio":
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")
    body = {"job_id": fired.job_id, "status": fired.status, "duplicate": not fired.created}
    return web.json_response(body, status=202)


async def _attachment(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    who = principal(request)
    row = await platform.triggers.get(who, request.match_info["name"])
    found = await platform.attachments.get(who.account_id, row.name, request.match_info["ref"])
    safe = "".join(c for c in found.filename if c.isascii() and c.isprintable() and c not in '"\\')
    return web.Response(
        body=found.data,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{safe or "attachment"}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "X-Fluxo-Content-Type": found.content_type,
        },
    )


def document_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Add the inbound trigger routes to the OpenAPI document."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    path_param = {"in": "path", "required": True, "schema": {"type": "string"}}
    paths["/hooks/{account}/{trigger}/sms"] = {
        "post": {
            "summary": "Deliver an incoming SMS: the SMS trigger's job is created (once per "
            "message id)",
            "description": (
                "Authenticated by the provider's signature, not by an API token. Twilio: "
                f"`{TWILIO_SIGNATURE_HEADER}`, Base64 of HMAC-SHA1 with the account's auth token "
                "of the URL Twilio called (spec.sms.publicUrl) followed by the POST parameters' "
                "names and values sorted by name; answered with an empty TwiML `<Response/>`. "
                "JSON provider: `X-Fluxo-Timestamp` and `X-Fluxo-Signature: sha256=<hex>` over "
                "`<timestamp>.<body>`, body `{id, from, to, text}`. The message id "
                "(MessageSid, id) deduplicates: a retry gives the first job."
            ),
            "security": [],
            "parameters": [
                {"name": "account", **path_param, "description": "The trigger's account"},
                {"name": "trigger", **path_param, "description": "The SMS trigger's name"},
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {
                                "id": {"type": "string", "maxLength": 128},
                                "from": {"type": "string"},
                                "to": {"type": "string"},
                                "text": {"type": "string"},
                            },
                        }
                    },
                },
            },
            "responses": {
                "200": {
                    "description": "Twilio: the job was created (or had been): empty TwiML",
                    "content": {"text/xml": {"schema": {"type": "string"}}},
                },
                "202": {
                    "description": "JSON provider: the job (duplicate: made before)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "job_id": {"type": "string"},
                                    "status": {"type": "string"},
                                    "duplicate": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "400": {"description": "Malformed or oversized body", "content": error},
                "413": {"description": "Over the server's request size", "content": error},
                "403": {
                    "description": "Not signed for this trigger (or no such SMS trigger): "
                    "nothing was created",
                    "content": error,
                },
                "422": {"description": "The message id or a field is missing", "content": error},
                "423": {
                    "description": "The trigger is held: nothing was created",
                    "content": error,
                },
            },
        }
    }
    paths["/v1/triggers/{name}/attachments/{ref}"] = {
        "get": {
            "summary": "An attachment of a mail an email trigger received (as a download)",
            "description": (
                "The reference is the one the job's payload lists (`attachments[].ref`). The "
                "attachment's own content type is in `X-Fluxo-Content-Type`."
            ),
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "ref", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The attachment's bytes",
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
                "401": {"description": "Not authenticated", "content": error},
                "403": {"description": "The token may not read triggers", "content": error},
                "404": {
                    "description": "No such trigger or attachment in this account",
                    "content": error,
                },
            },
        }
    }
