"""Routes of the inbound triggers: an email trigger's attachments.

``GET /v1/triggers/{name}/attachments/{ref}`` answers the bytes of an attachment a job's
payload lists (``attachments[].ref``), for the token's account only: another account's
trigger or attachment is 404. The bytes are served as a download (``Content-Disposition:
attachment``, ``nosniff``, a sandboxing CSP), never rendered in the API's origin.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fluxo.api.common import PLATFORM, principal

__all__ = ["add_routes", "document_routes"]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/triggers/{name}/attachments/{ref}", _attachment)


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
                "404": {
                    "description": "No such trigger or attachment in this account",
                    "content": error,
                },
            },
        }
    }
