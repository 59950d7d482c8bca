"""The OpenAPI 3.1 document of the HTTP API, built from the same pydantic models it serves."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from fluxo.api import dead_letters, inbound, resources, triggers
from fluxo.control.blocks import BlockAuditEntry, BlockRecord
from fluxo.control.jobs import JOB_STATUSES, MAX_VERSION, JobPage, JobRecord
from fluxo.control.usage import MAX_LIMIT as MAX_USAGE_LIMIT
from fluxo_core.ir import Packet, Workflow
from fluxo_core.storage.ledger import GROUP_KEYS
from fluxo_core.storage.quotas import NAME_PATTERN as QUOTA_NAME
from fluxo_core.storage.quotas import QUOTA_KINDS, QUOTA_SCOPES, RATE_PERIODS, USAGE_PERIODS
from fluxo_core.storage.secrets import NAME_PATTERN as SECRET_NAME
from service_runtime import CallRecord

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "type": {"type": "string"},
                "message": {"type": "string"},
                "retryable": {"type": "boolean"},
                "context": {"type": "object"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "location": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


ENGINE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "job_id": {"type": "string"},
        "status": {"type": "string", "enum": ["succeeded", "failed"]},
        "result": {},
        "error": {"type": "object"},
        "engine": {"type": "string"},
        "event": {"type": "string", "enum": ["finished"]},
        "run": {"type": "string"},
    },
}
PROBE: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "checks": {
            "type": "object",
            "description": "Each dependency: 'ok', or why not (no answer in time, failed).",
            "additionalProperties": {"type": "string"},
        },
    },
}
APPLIED: dict[str, Any] = {
    "type": "object",
    "required": ["name", "version", "created", "workflow"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "created": {"type": "boolean"},
        "workflow": {"type": "object", "description": "The workflow as stored (see Workflow)."},
    },
}
SERVICE_INFO: dict[str, Any] = {
    "type": "object",
    "required": ["name", "version", "price"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "input_schema": {"type": ["object", "null"]},
        "output_schema": {"type": ["object", "null"]},
        "price": {
            "type": "object",
            "properties": {
                "per_call": {"type": "string"},
                "per_item": {"type": "string"},
                "currency": {"type": "string"},
                "policy": {
                    "type": "object",
                    "description": "Whether failed, retried and cancelled calls are billed "
                    "(each at the per-call price); by default only succeeded calls are.",
                    "properties": {
                        name: {"type": "string", "enum": ["free", "billed"]}
                        for name in ("failed", "retried", "cancelled")
                    },
                },
            },
        },
        "max_attempts": {"type": "integer"},
        "timeout_s": {"type": ["number", "null"]},
        "terms": {
            "type": "object",
            "description": "Where each term in force comes from: `applied` by the platform "
            "(a Service resource, which overrides the code) or `declared` by the service's code.",
            "properties": {
                name: {"type": "string", "enum": ["applied", "declared"]}
                for name in ("price", "max_attempts", "timeout_s")
            },
        },
    },
}
JOB_STATE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": {"type": "string"}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (bad JSON or YAML)",
        401: "Missing, unknown, revoked or expired bearer token",
        403: "Refused: the token's role may not do this (a viewer writing), or by admission "
        "(blocked, cancelled, a calls or spend quota used up: code quota_exceeded)",
        404: "No such service, workflow, call or job in this account",
        409: "Conflicts with stored state (for a new job: code concurrency_limit, as many jobs "
        "run as a concurrency limit allows)",
        413: "Over the packet size limit (FLUXO_MAX_PACKET_BYTES)",
        429: "Over a rate limit (code rate_limited); the Retry-After header says in how many "
        "seconds to try again",
        422: "Invalid input, or a document over a structural limit (depth, values, YAML "
        "aliases); `problems` lists every problem with its location",
        502: "The service's handler failed (the call record says why)",
        504: "No result within `wait`; the call goes on (poll its Location)",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _items(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": schema}},
    }


def _wait(description: str) -> dict[str, Any]:
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": 300},
        "description": description,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    # Requests are described by the models' validation schemas, responses by their
    # serialization schemas (pydantic names the two -Input and -Output where they differ).
    keys: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (Packet, "validation"),
        (Workflow, "validation"),
        (CallRecord, "serialization"),
        (JobRecord, "serialization"),
        (JobPage, "serialization"),
    ]
    refs, defs = models_json_schema(keys, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    packet_ref = ref(Packet, "validation")["$ref"].rsplit("/", 1)[-1]
    schemas["Error"] = ERROR_SCHEMA
    # The body of a call is a packet whose actor may be left out (the token's user and account).
    call_request = {k: v for k, v in schemas[packet_ref].items() if k not in ("$id", "title")}
    call_request["required"] = [r for r in call_request.get("required", []) if r != "actor"]
    call_request["description"] = (
        "A packet; `actor` may be omitted (it defaults to the token's user and account)."
    )
    schemas["CallRequest"] = call_request
    payload = call_request["properties"]["payload"]
    schemas["JobRequest"] = {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {**payload, "description": "One object or an array of objects."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    workflow_ref = ref(Workflow, "validation")
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    probe = {"security": [], "responses": {"200": _json(PROBE, "Ready")}}
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "summary": "Where things are: a browser (Accept: text/html) is sent to the web "
                "console; anyone else gets the OpenAPI and console paths",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "openapi": {"type": "string"},
                                "console": {"type": ["string", "null"]},
                            },
                        },
                        "The API's and the console's paths",
                    ),
                    "303": {"description": "To the web console"},
                },
            }
        },
        "/livez": {
            "get": {
                "summary": "Liveness: the process is up and answers",
                "security": [],
                "responses": {"200": _json(PROBE, "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the database and the queue transport answer",
                **probe,
                "responses": {
                    "200": _json(PROBE, "Ready"),
                    "503": _json(PROBE, "Not ready; `checks` says which check failed"),
                },
            }
        },
        "/v1/health": {
            "get": {
                "summary": "Readiness (the same as /readyz)",
                **probe,
                "responses": {
                    "200": _json(PROBE, "Ready"),
                    "503": _json(PROBE, "Not ready; `checks` says which check failed"),
                },
            }
        },
        "/v1/services": {
            "get": {
                "summary": "List the services this Fluxo knows, with the terms in force",
                "responses": {
                    "200": _json(_items(SERVICE_INFO), "Services"),
                    **_errors(400, 401),
                },
            }
        },
        "/v1/services/{name}/calls": {
            "post": {
                "summary": "Call a service (synchronous with a timeout, or asynchronous)",
                "parameters": [
                    _path("name", "service name or name@version"),
                    _wait("Seconds to wait for the result (default 30); 202 if still running"),
                    _query("async", {"type": "boolean"}, "Return 202 at once with the call id"),
                ],
                "requestBody": {"required": True, **_json(_ref("CallRequest"), "The packet")},
                "responses": {
                    "200": _json(ref(CallRecord, "serialization"), "The finished call"),
                    "202": _json(ref(CallRecord, "serialization"), "Accepted; poll the Location"),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 429, 502, 504),
                },
            }
        },
        "/v1/calls/{call_id}": {
            "get": {
                "summary": "A call of this account",
                "parameters": [_path("call_id", "the call id"), _wait("Long-poll until done")],
                "responses": {
                    "200": _json(ref(CallRecord, "serialization"), "Finished"),
                    "202": _json(ref(CallRecord, "serialization"), "Still running"),
                    **_errors(400, 401, 404, 422),
                },
            }
        },
        "/v1/workflows": {
            "post": {
                "summary": "Apply a workflow (a changed spec makes a new version)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": workflow_ref},
                        "application/yaml": {"schema": workflow_ref},
                    },
                },
                "responses": {
                    "200": _json(APPLIED, "Unchanged: the existing version"),
                    "201": _json(APPLIED, "A new version"),
                    **_errors(400, 401, 404, 413, 422),
                },
            },
            "get": {
                "summary": "The newest version of every workflow",
                "responses": {"200": _json(_items(APPLIED), "Workflows"), **_errors(400, 401)},
            },
        },
        "/v1/workflows/{name}": {
            "get": {
                "summary": "A workflow (newest version, or ?version=)",
                "parameters": [
                    _path("name", "workflow name"),
                    _query(
                        "version",
                        {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                        "a version",
                    ),
                ],
                "responses": {
                    "200": _json(APPLIED, "The workflow"),
                    **_errors(400, 401, 404, 422),
                },
            }
        },
        "/v1/workflows/{name}/jobs": {
            "post": {
                "summary": "Start a job; the same Idempotency-Key returns the same job",
                "parameters": [
                    _path("name", "workflow name or name@version"),
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                    _wait("Seconds to wait for the job to end"),
                ],
                "requestBody": {"required": True, **_json(_ref("JobRequest"), "The job input")},
                "responses": {
                    "201": _json(ref(JobRecord, "serialization"), "The job"),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 429),
                },
            }
        },
        "/v1/jobs": {
            "get": {
                "summary": "Jobs of this account, newest first",
                "parameters": [
                    _query("workflow", {"type": "string"}, "only this workflow"),
                    _query(
                        "status",
                        {"type": "string", "enum": list(JOB_STATUSES)},
                        "only this status",
                    ),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (50)"
                    ),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                ],
                "responses": {
                    "200": _json(ref(JobPage, "serialization"), "A page of job summaries"),
                    **_errors(400, 401, 422),
                },
            }
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "A job with its steps and their packets",
                "parameters": [_path("job_id", "the job id"), _wait("Long-poll until it ends")],
                "responses": {
                    "200": _json(ref(JobRecord, "serialization"), "The job"),
                    **_errors(400, 401, 404, 422),
                },
            }
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job: its next service call is refused",
                "parameters": [_path("job_id", "the job id")],
                "responses": {
                    "200": _json(ref(JobRecord, "serialization"), "The job"),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/v1/jobs/{job_id}/engine-events": {
            "post": {
                "summary": "An external engine reports a job's end (engine tokens only)",
                "description": "Argo's exit handler posts {engine, event: finished, run}; "
                "Fluxo then reads the outcome from the Argo Server.",
                "parameters": [_path("job_id", "the job id")],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ENGINE_EVENT}},
                },
                "responses": {
                    "200": _json(JOB_STATE, "The job's status after the report"),
                    **_errors(400, 401, 403, 404, 413, 422),
                },
            }
        },
        "/v1/engine-events": {
            "post": {
                "summary": "An external engine reports a job's end (engine tokens only)",
                "description": "Node-RED flows post {job_id, status: succeeded, result} or "
                "{job_id, status: failed, error}; a repeated report changes nothing.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ENGINE_EVENT}},
                },
                "responses": {
                    "200": _json(JOB_STATE, "The job's status after the report"),
                    **_errors(400, 401, 403, 404, 413, 422),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI")},
            }
        },
    }
    _add_secret_routes(paths, schemas)
    _add_usage_routes(paths, schemas)
    _add_quota_routes(paths, schemas)
    _add_billing_routes(paths, schemas)
    _add_metrics_route(paths)
    _add_block_routes(paths, schemas, job_record=ref(JobRecord, "serialization"))
    _add_auth_routes(paths, schemas)
    resources.document_routes(paths, schemas)
    triggers.document_routes(paths, schemas)
    dead_letters.document_routes(paths, schemas)
    inbound.document_routes(paths, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Fluxo API", "version": "1", "description": "Run and sell automations."},
        "servers": [{"url": "/"}],
        "security": secured,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# --- secrets (the /v1/secrets routes, fluxo/api/secrets.py) ---------------------------------


def _add_secret_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Document the secret routes: values go in (PUT), never out (names and times only)."""
    schemas["Secret"] = {
        "type": "object",
        "description": "A stored secret as shown: never its value.",
        "required": ["name", "created_at", "updated_at"],
        "properties": {
            "name": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": False,
    }
    schemas["SecretValue"] = {
        "type": "object",
        "required": ["value"],
        "properties": {"value": {"type": "string", "minLength": 1, "maxLength": 16384}},
        "additionalProperties": False,
    }
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": SECRET_NAME.pattern},
        "description": 'the secret\'s name, as an http request refers to it: {"secret": NAME}',
    }
    paths["/v1/secrets"] = {
        "get": {
            "summary": "The account's secrets: names and times, never values",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["items"],
                        "properties": {"items": {"type": "array", "items": _ref("Secret")}},
                    },
                    "The secrets",
                ),
                **_errors(401, 403),
            },
        }
    }
    paths["/v1/secrets/{name}"] = {
        "put": {
            "summary": "Set a secret (encrypted at rest; the http service sends it by reference)",
            "description": 'Refer to it in an http request header as {"secret": NAME} '
            '(optionally with "prefix": "Bearer "); it is read in the worker at call time, for '
            "the call's own account, and never stored in calls, queues, steps or logs.",
            "parameters": [name],
            "requestBody": {"required": True, **_json(_ref("SecretValue"), "The value")},
            "responses": {
                "200": _json(_ref("Secret"), "Replaced"),
                "201": _json(_ref("Secret"), "Created"),
                **_errors(400, 401, 403, 404, 413, 422),
            },
        },
        "delete": {
            "summary": "Delete a secret",
            "parameters": [name],
            "responses": {"204": {"description": "Deleted"}, **_errors(400, 401, 403, 404, 422)},
        },
    }


# --- usage (GET /v1/usage, fluxo/api/usage.py) ---------------------------------------------------


def _add_usage_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Document the usage route: a page of records, or sums grouped by ``group_by``."""
    amount = {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
        "description": 'An exact decimal amount in `currency`, e.g. "0.0125" (never a float).',
    }
    nullable = {"type": ["string", "null"]}
    counts = {
        "currency": {"type": "string"},
        "calls": {"type": "integer", "minimum": 0},
        "units": {"type": "integer"},
        "amount": amount,
    }
    schemas["UsageTotal"] = {
        "type": "object",
        "description": "Sums of one currency: amounts in different currencies are never added.",
        "required": list(counts),
        "properties": counts,
        "additionalProperties": False,
    }
    schemas["UsageGroup"] = {
        "type": "object",
        "description": "Sums of one group and currency; each name of `group_by` holds the "
        "group's value (workflow and job are null for direct calls).",
        "required": list(counts),
        "properties": {**counts, **{key: nullable for key in GROUP_KEYS}},
        "additionalProperties": False,
    }
    schemas["UsageRecord"] = {
        "type": "object",
        "description": "What one call cost, or one credit entry.",
        "required": [
            "call_id", "user_id", "service", "version", "workflow", "job_id", "step_id",
            "units", "unit_price", "amount", "currency", "created_at",
        ],
        "properties": {
            "call_id": {"type": "string"},
            "user_id": {"type": "string"},
            "service": {"type": "string"},
            "version": {"type": "string"},
            "workflow": nullable,
            "job_id": nullable,
            "step_id": nullable,
            "units": {"type": "integer"},
            "unit_price": amount,
            "amount": amount,
            "currency": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "outcome": {
                "type": "string",
                "enum": ["succeeded", "failed", "retried", "cancelled", "credit"],
                "description": "What is charged: a call's outcome (failed, retried and "
                "cancelled ones only if its service's price policy bills them), or a credit "
                "(a negative amount with its reason and who made it)",
            },
            "attempt": {"type": "integer", "description": "a retried attempt's number, else 0"},
            "reason": nullable,
            "created_by": nullable,
        },
        "additionalProperties": False,
    }  # fmt: skip
    totals = {"type": "array", "items": _ref("UsageTotal")}
    page = {
        "type": "object",
        "description": "Without group_by: a page of records, newest first.",
        "required": ["items", "next_cursor", "totals"],
        "properties": {
            "items": {"type": "array", "items": _ref("UsageRecord")},
            "next_cursor": {"type": ["string", "null"]},
            "totals": totals,
        },
        "additionalProperties": False,
    }
    grouped = {
        "type": "object",
        "description": "With group_by: the sums of every group, ordered by the group's values.",
        "required": ["group_by", "groups", "totals"],
        "properties": {
            "group_by": {"type": "array", "items": {"type": "string", "enum": list(GROUP_KEYS)}},
            "groups": {"type": "array", "items": _ref("UsageGroup")},
            "totals": totals,
        },
        "additionalProperties": False,
    }
    time = {"type": "string", "format": "date-time"}
    paths["/v1/usage"] = {
        "get": {
            "summary": "What this account used: its usage records, or their grouped sums",
            "description": "Always the token's account. `totals` (per currency) covers every "
            "record the filters match, not only the page.",
            "parameters": [
                _query("workflow", {"type": "string"}, "only calls of this workflow's jobs"),
                _query("service", {"type": "string"}, "only calls of this service"),
                _query("job", {"type": "string"}, "only calls of this job"),
                _query(
                    "period",
                    {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                    "a UTC month YYYY-MM, e.g. 2026-11 (not with from/to)",
                ),
                _query("from", time, "from this time (RFC 3339, included)"),
                _query("to", time, "until this time (RFC 3339, excluded)"),
                _query(
                    "group_by",
                    {"type": "string"},
                    f"sum per group: a comma list of {', '.join(GROUP_KEYS)} (UTC day/month)",
                ),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_USAGE_LIMIT},
                    "records per page (50)",
                ),
                _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
            ],
            "responses": {
                "200": _json({"anyOf": [page, grouped]}, "Records or grouped sums"),
                **_errors(400, 401, 403, 422),
            },
        }
    }


# --- billing (credits and invoices, fluxo/api/billing.py) ----------------------------------------


def _add_billing_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Document credits and invoices (always the token's account)."""
    amount = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2,6}$"}
    nullable = {"type": ["string", "null"]}
    time = {"type": "string", "format": "date-time"}
    schemas["CreditRequest"] = {
        "type": "object",
        "required": ["amount", "reason"],
        "properties": {
            "account": {
                "type": "string",
                "description": "The account credited (default: the token's own)",
            },
            "amount": {
                "type": "string",
                "description": 'The amount taken off, above zero, e.g. "12.50" (at most six '
                "decimal places)",
            },
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "default": "EUR"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500},
            "service": {
                "type": "string",
                "description": "What the credit is for (shown on the invoice); default credit",
            },
        },
        "additionalProperties": False,
    }
    schemas["Credit"] = {
        "type": "object",
        "required": ["id", "account", "amount", "currency", "reason", "created_by"],
        "properties": {
            "id": {"type": "string"},
            "account": {"type": "string"},
            "service": {"type": "string"},
            "amount": {**amount, "description": "negative: a credit takes it off"},
            "currency": {"type": "string"},
            "reason": {"type": "string"},
            "created_by": {"type": "string"},
            "created_at": time,
        },
    }
    line = {
        "type": "object",
        "required": ["kind", "service", "workflow", "calls", "units", "amount", "currency"],
        "properties": {
            "kind": {"type": "string", "enum": ["usage", "credit"]},
            "service": {"type": "string"},
            "workflow": {**nullable, "description": "null: direct calls (and credits)"},
            "description": {**nullable, "description": "a credit's reason"},
            "calls": {"type": "integer"},
            "units": {"type": "integer"},
            "amount": amount,
            "currency": {"type": "string"},
        },
        "additionalProperties": False,
    }
    schemas["Invoice"] = {
        "type": "object",
        "description": "One account's usage of one UTC month: lines per service, workflow and "
        "currency, then one line per credit; totals per currency. A draft reflects the ledger "
        "now; an issued invoice is numbered and never changes.",
        "required": ["account", "period", "status", "number", "lines", "totals"],
        "properties": {
            "account": {"type": "string"},
            "period": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
            "period_start": time,
            "period_end": time,
            "status": {"type": "string", "enum": ["draft", "issued"]},
            "number": {**nullable, "description": "e.g. ACME-2026-0001 (per account)"},
            "issued_at": {"type": ["string", "null"], "format": "date-time"},
            "issued_by": nullable,
            "lines": {"type": "array", "items": line},
            "totals": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["currency", "amount"],
                    "properties": {"currency": {"type": "string"}, "amount": amount},
                },
            },
        },
    }
    invoice_ref = {"name": "period", "in": "path", "required": True, "schema": {"type": "string"},
                   "description": "a UTC month YYYY-MM, or an issued invoice's number"}  # fmt: skip
    paths["/v1/usage/credits"] = {
        "post": {
            "summary": "Credit this account: a ledger entry with a negative amount and a reason",
            "description": "The ledger is append-only; a correction is a credit. It counts in "
            "usage sums and in the invoice of the month it is made in. Platform admins only (the "
            "seller's correction; to anyone else the route answers 404).",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("CreditRequest")}},
            },
            "responses": {
                "201": _json(_ref("Credit"), "The credit entry"),
                **_errors(400, 401, 403, 404, 422),
            },
        }
    }
    paths["/v1/billing/margin"] = {
        "get": {
            "summary": "Revenue, cost and margin of each workflow this account publishes as a "
            "service, in one month (account admins)",
            "parameters": [
                _query(
                    "period",
                    {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                    "the UTC month YYYY-MM (default: this month)",
                )
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["period", "items"],
                        "properties": {
                            "period": {"type": "string"},
                            "items": _items({"type": "object"})["properties"]["items"],
                        },
                    },
                    "One line per service and currency: calls, revenue, cost, margin",
                ),
                **_errors(401, 403, 422),
            },
        }
    }
    paths["/v1/invoices"] = {
        "get": {
            "summary": "This account's issued invoices, by period",
            "responses": {
                "200": _json(_items({"type": "object"}), "Issued invoices"),
                **_errors(401, 403),
            },
        }
    }
    paths["/v1/invoices/{period}"] = {
        "get": {
            "summary": "One month's invoice (issued, else the draft) or an invoice by number",
            "parameters": [
                invoice_ref,
                _query(
                    "format",
                    {"type": "string", "enum": ["json", "csv", "html"], "default": "json"},
                    "json, csv, or a printable HTML page (prints to PDF in a browser)",
                ),
            ],
            "responses": {
                "200": {
                    "description": "The invoice",
                    "content": {
                        "application/json": {"schema": _ref("Invoice")},
                        "text/csv": {"schema": {"type": "string"}},
                        "text/html": {"schema": {"type": "string"}},
                    },
                },
                **_errors(401, 403, 404, 422),
            },
        }
    }
    paths["/v1/invoices/{period}/issue"] = {
        "post": {
            "summary": "Issue the month's invoice: number it and freeze its lines",
            "description": "Only a month that has ended; an issued invoice is never issued "
            "again or changed (409).",
            "parameters": [_path("period", "a UTC month YYYY-MM")],
            "responses": {
                "201": _json(_ref("Invoice"), "The issued invoice"),
                **_errors(401, 403, 409, 422),
            },
        }
    }


# --- quotas (the /v1/quotas and /v1/quota-events routes, fluxo/api/quotas.py) -----------------


def _add_quota_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Document the quota routes: definitions with their current use, and their events."""
    count_or_amount = {
        "type": ["integer", "string"],
        "description": "calls, jobs or requests; for spend an exact decimal amount, e.g. "
        '"12.50" (never a float)',
    }
    spec = {
        "kind": {"type": "string", "enum": list(QUOTA_KINDS)},
        "limit": count_or_amount,
        "scope": {"type": "string", "enum": list(QUOTA_SCOPES), "default": "account"},
        "target": {
            "type": ["string", "null"],
            "description": "the workflow's or the service's name (scope workflow or service)",
        },
        "period": {
            "type": ["string", "null"],
            "enum": [*USAGE_PERIODS, *RATE_PERIODS, None],
            "description": "calls and spend: day or month (UTC); rate: second, minute or "
            "hour; concurrent_jobs: none",
        },
        "currency": {
            "type": ["string", "null"],
            "description": "spend only (ISO 4217; EUR if left out)",
        },
    }
    schemas["QuotaSpec"] = {
        "type": "object",
        "description": "What a quota limits.",
        "required": ["kind", "limit"],
        "properties": spec,
        "additionalProperties": False,
    }
    schemas["Quota"] = {
        "type": "object",
        "description": "A quota, with what it used in the current period (calls and spend).",
        "required": [
            "name", "kind", "scope", "target", "limit", "period", "currency",
            "current_period", "used", "created_at", "updated_at",
        ],
        "properties": {
            "name": {"type": "string"},
            **spec,
            "current_period": {
                "type": ["string", "null"],
                "description": "the UTC day (2026-12-06) or month (2026-12) counted now",
            },
            "used": {"anyOf": [count_or_amount, {"type": "null"}]},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": False,
    }  # fmt: skip
    schemas["QuotaEvent"] = {
        "type": "object",
        "description": "A quota reached `threshold` percent of its limit in `period` (once each).",
        "required": ["quota", "kind", "period", "threshold", "used", "limit", "created_at"],
        "properties": {
            "quota": {"type": "string"},
            "kind": {"type": "string", "enum": ["calls", "spend"]},
            "period": {"type": "string"},
            "threshold": {"type": "integer", "enum": [80, 100]},
            "used": count_or_amount,
            "limit": count_or_amount,
            "created_at": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": False,
    }
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": QUOTA_NAME.pattern},
        "description": "the quota's name, e.g. daily-calls",
    }
    paths["/v1/quotas"] = {
        "get": {
            "summary": "The account's quotas and limits, with what they used this period",
            "responses": {
                "200": _json(_items(_ref("Quota")), "The quotas, by name"),
                **_errors(400, 401, 403),
            },
        }
    }
    paths["/v1/quotas/{name}"] = {
        "get": {
            "summary": "One quota, with what it used this period",
            "parameters": [name],
            "responses": {"200": _json(_ref("Quota"), "The quota"), **_errors(400, 401, 403, 404)},
        },
        "put": {
            "summary": "Set a quota: calls or spend per day/month, concurrent jobs, or a rate",
            "description": "For the whole account, or one workflow or service (`scope`, "
            "`target`). Calls past a calls quota are refused (403 quota_exceeded), new calls "
            "and jobs once a spend quota is reached (403), new jobs past a concurrency limit "
            "(409 concurrency_limit), requests over a rate (429 rate_limited, Retry-After). "
            "Events are written at 80% and 100% (GET /v1/quota-events).",
            "parameters": [name],
            "requestBody": {"required": True, **_json(_ref("QuotaSpec"), "The quota")},
            "responses": {
                "200": _json(_ref("Quota"), "Replaced"),
                "201": _json(_ref("Quota"), "Created"),
                **_errors(400, 401, 403, 413, 422),
            },
        },
        "delete": {
            "summary": "Delete a quota (its events stay)",
            "parameters": [name],
            "responses": {"204": {"description": "Deleted"}, **_errors(400, 401, 403, 404)},
        },
    }
    paths["/v1/quota-events"] = {
        "get": {
            "summary": "When the account's quotas reached 80% and 100%, newest first",
            "parameters": [
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "events (100)"),
            ],
            "responses": {
                "200": _json(_items(_ref("QuotaEvent")), "The events"),
                **_errors(400, 401, 403, 422),
            },
        }
    }


# --- metrics (the /metrics route, fluxo/api/metrics.py) ---------------------------------------


def _add_metrics_route(paths: dict[str, Any]) -> None:
    """Document ``/metrics``: Prometheus text, for the admin account's tokens only."""
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics of the whole platform (the admin account only)",
            "description": "Jobs by workflow, engine and status; calls by service and status; "
            "queue depth and age; outbox lag; usage units and amount; handler latency per "
            "service; admission refusals by reason. A token of another account gets 404.",
            "responses": {
                "200": {
                    "description": "The Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(401, 403, 404),
            },
        }
    }


# --- users, tokens, sessions, accounts (fluxo/api/auth.py) ---------------------------------------


def _add_auth_routes(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Document the routes of users, tokens, sessions, accounts and ``/v1/me``."""
    role = {"type": "string", "enum": ["viewer", "member", "account-admin", "platform-admin"]}
    when = {"type": ["string", "null"], "format": "date-time"}
    schemas["Role"] = role
    schemas["User"] = {
        "type": "object",
        "description": "A user of the account: never its password or hash.",
        "required": ["account_id", "user_id", "role", "has_password", "created_at", "updated_at"],
        "properties": {
            "account_id": {"type": "string"},
            "user_id": {"type": "string"},
            "role": _ref("Role"),
            "has_password": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    }
    schemas["Token"] = {
        "type": "object",
        "description": "A token or session as listed: never its value or digest.",
        "required": ["id", "account_id", "user_id", "name", "role", "kind", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "account_id": {"type": "string"},
            "user_id": {"type": "string"},
            "name": {"type": "string"},
            "role": _ref("Role"),
            "kind": {"type": "string", "enum": ["api", "session"]},
            "engine": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": when,
            "last_used_at": {
                **when,
                "description": "Written at most once a minute per token",
            },
            "revoked": {"type": "boolean"},
        },
    }
    schemas["NewToken"] = {
        "allOf": [
            _ref("Token"),
            {
                "type": "object",
                "required": ["token"],
                "properties": {"token": {"type": "string", "description": "Shown this once"}},
            },
        ]
    }
    user_id = _path("user_id", "the user's id in the account")
    listed = {"200": _json(_items(_ref("User")), "The users"), **_errors(401, 403)}
    paths["/v1/me"] = {
        "get": {
            "summary": "Who the token is: account, user, role, kind",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["account_id", "user_id", "role", "kind"],
                        "properties": {
                            "account_id": {"type": "string"},
                            "user_id": {"type": "string"},
                            "role": _ref("Role"),
                            "kind": {"type": "string", "enum": ["api", "session", "engine"]},
                            "token_id": {"type": ["string", "null"]},
                        },
                    },
                    "The caller",
                ),
                **_errors(401, 403),
            },
        }
    }
    paths["/v1/users"] = {
        "get": {"summary": "The account's users and their roles", "responses": listed},
        "post": {
            "summary": "Add a user (account admins; a role no higher than one's own)",
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "type": "object",
                        "required": ["user_id", "role"],
                        "properties": {
                            "user_id": {"type": "string"},
                            "role": _ref("Role"),
                            "password": {"type": "string", "minLength": 10},
                        },
                        "additionalProperties": False,
                    },
                    "The user",
                ),
            },
            "responses": {
                "201": _json(_ref("User"), "Added"),
                **_errors(400, 401, 403, 404, 409, 422),
            },
        },
    }
    paths["/v1/users/{user_id}"] = {
        "get": {
            "summary": "One user of the account",
            "parameters": [user_id],
            "responses": {"200": _json(_ref("User"), "The user"), **_errors(401, 403, 404)},
        },
        "delete": {
            "summary": "Remove a user (account admins); its tokens and sessions are revoked",
            "parameters": [user_id],
            "responses": {"204": {"description": "Removed"}, **_errors(401, 403, 404)},
        },
    }
    paths["/v1/users/{user_id}/password"] = {
        "put": {
            "summary": "Set a password: one's own, or (account admins) another user's; "
            "the user's sessions are revoked",
            "parameters": [user_id],
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "type": "object",
                        "required": ["password"],
                        "properties": {"password": {"type": "string", "minLength": 10}},
                        "additionalProperties": False,
                    },
                    "The new password",
                ),
            },
            "responses": {"204": {"description": "Set"}, **_errors(400, 401, 403, 404, 422)},
        }
    }
    paths["/v1/tokens"] = {
        "get": {
            "summary": "API tokens: the account's (account admins) or one's own",
            "responses": {"200": _json(_items(_ref("Token")), "The tokens"), **_errors(401, 403)},
        },
        "post": {
            "summary": "Create an API token (its value is in this answer only)",
            "description": "The role defaults to the user's and can be no higher than the "
            "caller's; only account admins create tokens for other users.",
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "role": _ref("Role"),
                            "user_id": {"type": "string"},
                            "expires_at": {"type": "string", "format": "date-time"},
                            "expires_in_s": {"type": "number", "exclusiveMinimum": 0},
                        },
                        "additionalProperties": False,
                    },
                    "The token to make",
                ),
            },
            "responses": {
                "201": _json(_ref("NewToken"), "Created"),
                **_errors(400, 401, 403, 404, 422),
            },
        },
    }
    paths["/v1/tokens/{token_id}"] = {
        "delete": {
            "summary": "Revoke an API token: one's own, or (account admins) any of the account's",
            "parameters": [_path("token_id", "the token's id (tok_...)")],
            "responses": {"204": {"description": "Revoked"}, **_errors(401, 403, 404)},
        }
    }
    paths["/v1/sessions"] = {
        "post": {
            "summary": "Sign in (console): a session token for an account's user and password",
            "description": "A wrong account, user or password answer the same 401; after "
            "repeated failures for one user, attempts are refused for a while.",
            "security": [],
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "type": "object",
                        "required": ["account", "user", "password"],
                        "properties": {
                            "account": {"type": "string"},
                            "user": {"type": "string"},
                            "password": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                    "The credentials",
                ),
            },
            "responses": {
                "201": _json(_ref("NewToken"), "Signed in"),
                **_errors(400, 401, 422),
            },
        },
        "get": {
            "summary": "Sessions: the account's (account admins) or one's own",
            "responses": {
                "200": _json(_items(_ref("Token")), "The sessions"),
                **_errors(401, 403),
            },
        },
    }
    paths["/v1/sessions/current"] = {
        "delete": {
            "summary": "Sign out: revoke the session this request is made with",
            "responses": {"204": {"description": "Signed out"}, **_errors(401, 422)},
        }
    }
    paths["/v1/sessions/{session_id}"] = {
        "delete": {
            "summary": "Revoke a session: one's own, or (account admins) any of the account's",
            "parameters": [_path("session_id", "the session's id (ses_...)")],
            "responses": {"204": {"description": "Revoked"}, **_errors(401, 403, 404)},
        }
    }
    paths["/v1/accounts"] = {
        "get": {
            "summary": "Every account (platform admins; anyone else gets 404)",
            "responses": {
                "200": _json(_items({"type": "object"}), "The accounts"),
                **_errors(401, 403, 404),
            },
        },
        "post": {
            "summary": "Create an account and optionally its first account admin "
            "(platform admins; anyone else gets 404)",
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "type": "object",
                        "required": ["id"],
                        "properties": {
                            "id": {"type": "string"},
                            "name": {"type": "string"},
                            "admin_user": {"type": "string"},
                            "admin_password": {"type": "string", "minLength": 10},
                        },
                        "additionalProperties": False,
                    },
                    "The account",
                ),
            },
            "responses": {
                "201": _json({"type": "object"}, "Created"),
                **_errors(400, 401, 403, 404, 409, 422),
            },
        },
    }


# --- blocks and job control (fluxo/api/blocks.py) ------------------------------------------------


def _add_block_routes(
    paths: dict[str, Any], schemas: dict[str, Any], *, job_record: dict[str, Any]
) -> None:
    """Document blocks (place, list, lift, audit) and job control (resume, retry, pause)."""
    from fluxo_core.storage.blocks import BLOCK_KINDS

    refs, defs = models_json_schema(
        [(BlockRecord, "serialization"), (BlockAuditEntry, "serialization")], ref_template=_REF
    )
    schemas.update(defs.get("$defs", {}))
    block = dict(refs[(BlockRecord, "serialization")])
    entry = dict(refs[(BlockAuditEntry, "serialization")])
    schemas["BlockRequest"] = {
        "type": "object",
        "required": ["kind", "reason"],
        "properties": {
            "kind": {"type": "string", "enum": list(BLOCK_KINDS)},
            "target": {
                "type": "string",
                "maxLength": 200,
                "description": "The blocked user id, workflow, service or trigger name; for an "
                "account block, the account (or leave it out).",
            },
            "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
            "ends_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When the block ends by itself (RFC 3339 with offset); none: "
                "until lifted.",
            },
            "account": {
                "type": "string",
                "description": "Admin account tokens only: the account whose thing is blocked. "
                "Blocking a whole account always needs the admin account's token.",
            },
        },
        "additionalProperties": False,
    }
    pause = {
        "type": "object",
        "required": ["workflow", "paused"],
        "properties": {
            "workflow": {"type": "string"},
            "paused": {"type": "boolean"},
            "paused_by": {"type": "string"},
            "paused_at": {"type": "number"},
            "jobs_started": {"type": "integer", "description": "Queued jobs started by resume."},
        },
    }
    block_id = _path("block_id", "the block id")
    job_id = _path("job_id", "the job id")
    name = _path("name", "the workflow name")
    paths["/v1/blocks"] = {
        "post": {
            "summary": "Block an account, user, workflow, service or trigger",
            "description": "Enforced within a second at job creation and at every service call, "
            "on every engine. A job it stops ends `blocked`, naming the block and the step; "
            "resume it once the block is lifted.",
            "requestBody": {"required": True, **_json(_ref("BlockRequest"), "The block")},
            "responses": {
                "201": _json(block, "Placed"),
                **_errors(400, 401, 403, 422),
            },
        },
        "get": {
            "summary": "The account's blocks, newest first (admin account: every account's)",
            "parameters": [
                _query("active", {"type": "boolean"}, "Only the blocks that hold now"),
            ],
            "responses": {"200": _json(_items(block), "The blocks"), **_errors(401, 403)},
        },
    }
    paths["/v1/blocks/audit"] = {
        "get": {
            "summary": "Every place and lift of the account's blocks, newest first",
            "responses": {"200": _json(_items(entry), "The audit log"), **_errors(401, 403)},
        }
    }
    paths["/v1/blocks/{block_id}"] = {
        "get": {
            "summary": "A block",
            "parameters": [block_id],
            "responses": {"200": _json(block, "The block"), **_errors(401, 403, 404)},
        },
        "delete": {
            "summary": "Lift a block (recorded: who and when); stopped jobs wait for resume",
            "parameters": [block_id],
            "responses": {"200": _json(block, "Lifted"), **_errors(401, 403, 404, 409)},
        },
    }
    paths["/v1/jobs/{job_id}/resume"] = {
        "post": {
            "summary": "Continue a blocked job from its blocked step, once no block holds it",
            "description": "Finished steps are not run or billed again. 409 if the job is not "
            "blocked or a block still holds it (named).",
            "parameters": [job_id],
            "responses": {"200": _json(job_record, "The job"), **_errors(401, 403, 404, 409)},
        }
    }
    paths["/v1/jobs/{job_id}/retry"] = {
        "post": {
            "summary": "Continue a failed job from its failed step, with the input it stored",
            "description": "On every engine (Node-RED and Argo jobs run again, their finished "
            "calls answered from stored results and the failed call made again once). Finished "
            "steps are not run or billed again. 409 if the job is not failed, or failed outside "
            "a service call.",
            "parameters": [job_id],
            "responses": {
                "200": _json(job_record, "The job"),
                **_errors(401, 403, 404, 409),
            },
        }
    }
    paths["/v1/workflows/{name}/pause"] = {
        "post": {
            "summary": "Pause a workflow: its new jobs are created queued and wait",
            "parameters": [name],
            "responses": {"200": _json(pause, "Paused"), **_errors(401, 403, 404)},
        },
        "get": {
            "summary": "Whether the workflow is paused",
            "parameters": [name],
            "responses": {"200": _json(pause, "Its state"), **_errors(401, 404)},
        },
    }
    paths["/v1/workflows/{name}/resume"] = {
        "post": {
            "summary": "Resume a paused workflow and start its queued jobs, oldest first",
            "parameters": [name],
            "responses": {"200": _json(pause, "Resumed"), **_errors(401, 403, 404)},
        }
    }
