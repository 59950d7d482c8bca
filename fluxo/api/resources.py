"""Resource routes: apply documents of any kind, read, list and delete them (the token's account).

``POST /v1/apply`` takes several documents (JSON ``{"documents": [...]}``, or a YAML stream with
``Content-Type: application/yaml``) and answers each one's outcome: ``created``, ``configured``
or ``unchanged``. ``/v1/resources/{kind}[/{name}]`` reads, lists, applies (PUT) and deletes one
kind; ``{kind}`` is any spelling of a kind (``workflow``, ``workflows``, ``wf``). A stale
``metadata.resourceVersion`` answers 409; another account's resource 404.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fluxo.api.common import PLATFORM, json_body, principal, yaml_documents_body
from fluxo.control.resources import MAX_DOCUMENTS
from fluxo_core.errors import ValidationError
from fluxo_core.ir.resources import KINDS, kind_info

__all__ = ["add_routes", "document_routes"]

_YAML = ("application/yaml", "application/x-yaml", "text/yaml")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/apply", _apply)
    app.router.add_get("/v1/resources/{kind}", _list)
    app.router.add_get("/v1/resources/{kind}/{name}", _get)
    app.router.add_put("/v1/resources/{kind}/{name}", _put)
    app.router.add_delete("/v1/resources/{kind}/{name}", _delete)


async def _apply(request: web.Request) -> web.Response:
    if request.content_type in _YAML:
        documents = await yaml_documents_body(request)
    else:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("documents"), list):
            raise ValidationError(
                'the body must be {"documents": [<resource document>, ...]} (or a YAML stream '
                "with Content-Type: application/yaml)",
                problems=[("body.documents", "required: an array of documents")],
            )
        extra = sorted(str(k) for k in set(body) - {"documents"})
        if extra:
            raise ValidationError(
                f"unknown field(s) in the body: {', '.join(extra)}",
                problems=[(f"body.{k}", "unknown field") for k in extra],
            )
        documents = body["documents"]
    if not documents:
        raise ValidationError(
            "no document to apply", problems=[("body.documents", "at least one document")]
        )
    results = await request.app[PLATFORM].resources.apply_all(principal(request), documents)
    return web.json_response({"items": [r.to_dict() for r in results]})


async def _list(request: web.Request) -> web.Response:
    items = await request.app[PLATFORM].resources.list(
        principal(request), request.match_info["kind"]
    )
    return web.json_response({"items": items})


async def _get(request: web.Request) -> web.Response:
    document = await request.app[PLATFORM].resources.get(
        principal(request), request.match_info["kind"], request.match_info["name"]
    )
    return web.json_response(document)


async def _put(request: web.Request) -> web.Response:
    """One document; its kind and name must be those of the path. 201 when created."""
    resources = request.app[PLATFORM].resources
    body = await json_body(request)
    kind, name = request.match_info["kind"], request.match_info["name"]
    info = kind_info(kind, where="path.kind")
    if isinstance(body, dict):
        problems = []
        if body.get("kind") != info.kind:
            problems.append(("kind", f"must be {info.kind!r}, the kind of the path"))
        meta = body.get("metadata")
        if not isinstance(meta, dict) or meta.get("name") != name:
            problems.append(("metadata.name", f"must be {name!r}, the name of the path"))
        if problems:
            raise ValidationError("the document is not the resource of the path", problems=problems)
    applied = await resources.apply(principal(request), body)
    return web.json_response(applied.to_dict(), status=201 if applied.outcome == "created" else 200)


async def _delete(request: web.Request) -> web.Response:
    document = await request.app[PLATFORM].resources.delete(
        principal(request), request.match_info["kind"], request.match_info["name"]
    )
    return web.json_response(document)


# --- the OpenAPI document of these routes (called from fluxo/api/openapi.py) ---------------------


def document_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Add the resource routes and their schemas to the OpenAPI document."""

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def json(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: "Malformed request (bad JSON or YAML)",
            401: "Missing or unknown bearer token",
            403: "A platform-wide kind (Account, Service) from a token that is not the "
            "platform admin's, or an engine token",
            404: "No such resource in this account",
            409: "A stale metadata.resourceVersion: get the resource again and re-apply",
            413: "Over the size limit (FLUXO_MAX_PACKET_BYTES)",
            422: "Invalid document or unknown kind; `problems` lists every problem with its "
            "location (spec.price.perCall)",
        }
        return {str(c): json(ref("Error"), text[c]) for c in codes}

    spellings = sorted(
        {s for k in KINDS.values() for s in (k.kind, k.kind.lower(), k.plural, *k.aliases)}
    )
    condition = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string"},
            "observedGeneration": {"type": "integer"},
        },
    }
    schemas["Resource"] = {
        "type": "object",
        "description": "A declarative resource (Kubernetes-style). `status` is the platform's: "
        "ignored in an applied document. `metadata.resourceVersion` in an applied document "
        "must be the stored one (else 409); leave it out to create or update regardless.",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"type": "string", "enum": ["fluxo.dev/v1"]},
            "kind": {"type": "string", "enum": sorted(KINDS)},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "account": {"type": "string"},
                    "uid": {"type": "string"},
                    "resourceVersion": {"type": "string"},
                    "generation": {"type": "integer"},
                    "creationTimestamp": {"type": "string"},
                },
            },
            "spec": {"type": "object"},
            "status": {
                "type": "object",
                "properties": {
                    "observedGeneration": {"type": "integer"},
                    "conditions": {"type": "array", "items": condition},
                },
            },
        },
    }
    schemas["AppliedResource"] = {
        "type": "object",
        "required": ["kind", "name", "outcome", "resource"],
        "properties": {
            "kind": {"type": "string"},
            "name": {"type": "string"},
            "outcome": {"type": "string", "enum": ["created", "configured", "unchanged"]},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "resource": ref("Resource"),
        },
    }
    kind = {
        "name": "kind",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"a kind, in any case, singular, plural or short: {', '.join(spellings)}",
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/v1/apply"] = {
        "post": {
            "summary": "Apply several resource documents (create, update or leave unchanged)",
            "description": "All documents are checked first: none is stored if one is invalid. "
            "Then each is applied in order and reconciled by its kind's controller, whose "
            "conditions are in `status`. JSON `{documents: [...]}` or a YAML stream "
            f"(Content-Type: application/yaml); at most {MAX_DOCUMENTS} documents.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["documents"],
                            "properties": {
                                "documents": {
                                    "type": "array",
                                    "items": ref("Resource"),
                                    "minItems": 1,
                                }
                            },
                        }
                    },
                    "application/yaml": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": json(
                    {
                        "type": "object",
                        "required": ["items"],
                        "properties": {"items": {"type": "array", "items": ref("AppliedResource")}},
                    },
                    "What happened to each document, in order",
                ),
                **errors(400, 401, 403, 404, 409, 413, 422),
            },
        }
    }
    paths["/v1/resources/{kind}"] = {
        "get": {
            "summary": "The account's resources of one kind, by name",
            "parameters": [kind],
            "responses": {
                "200": json(
                    {
                        "type": "object",
                        "required": ["items"],
                        "properties": {"items": {"type": "array", "items": ref("Resource")}},
                    },
                    "The resources",
                ),
                **errors(400, 401, 403, 422),
            },
        }
    }
    paths["/v1/resources/{kind}/{name}"] = {
        "get": {
            "summary": "One resource, with its status",
            "parameters": [kind, name],
            "responses": {
                "200": json(ref("Resource"), "The resource"),
                **errors(400, 401, 403, 404, 422),
            },
        },
        "put": {
            "summary": "Apply one resource document (its kind and name are the path's)",
            "parameters": [kind, name],
            "requestBody": {"required": True, **json(ref("Resource"), "The document")},
            "responses": {
                "200": json(ref("AppliedResource"), "Configured or unchanged"),
                "201": json(ref("AppliedResource"), "Created"),
                **errors(400, 401, 403, 404, 409, 413, 422),
            },
        },
        "delete": {
            "summary": "Delete one resource (its controller releases what it made)",
            "parameters": [kind, name],
            "responses": {
                "200": json(ref("Resource"), "The deleted resource"),
                **errors(400, 401, 403, 404, 422),
            },
        },
    }
