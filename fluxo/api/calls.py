"""Service routes: the gateway endpoint (synchronous or asynchronous calls) and call lookups."""

from __future__ import annotations

from typing import Any

import pydantic
from aiohttp import web

from fluxo.api.common import PLATFORM, json_body, principal, seconds
from fluxo_core.errors import (
    BlockedError,
    PacketValidationError,
    PermissionDeniedError,
    UnknownServiceError,
    ValidationError,
)
from fluxo_core.ir import Packet
from fluxo_core.ir._problems import problems_from_pydantic
from fluxo_core.storage import Principal
from service_runtime import CallRecord

__all__ = ["add_routes"]

DEFAULT_WAIT_S = 30.0
PAYLOAD_REF_HEADER = "fluxo-payload-ref"
STEP_KEY_HEADER = "fluxo-step-key"
JOB_FIELDS = ("job_id", "step_id", "workflow")
JOB_HEADERS = (STEP_KEY_HEADER, PAYLOAD_REF_HEADER)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/services", _list_services)
    app.router.add_post("/v1/services/{name}/calls", _create_call)
    app.router.add_get("/v1/calls/{call_id}", _get_call)


async def _list_services(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    account = principal(request).account_id
    infos = await platform.runtime.catalog.list()
    # A published workflow is listed to the accounts its visibility names only.
    offered = platform.workflow_services.offered_to
    return web.json_response({"items": [i.to_dict() for i in infos if offered(i.name, account)]})


def _packet_from_body(body: Any, who: Principal) -> Packet:
    """A packet from the request body; ``actor`` defaults to the token's user and account."""
    if not isinstance(body, dict):
        raise PacketValidationError(
            'the request body must be a JSON object: a packet, or {"payload": ...}',
            problems=[("body", f"got {type(body).__name__}")],
        )
    actor = body.get("actor")
    if isinstance(actor, dict):
        account = (
            (actor.get("account") or {}).get("id")
            if isinstance(actor.get("account"), dict)
            else None
        )
        if account is not None and account != who.account_id:
            raise PermissionDeniedError(
                f"the packet is for account {account!r} but the token belongs to account "
                f"{who.account_id!r}; use a token of that account",
            )
    else:
        body = {
            **body,
            "actor": {"user": {"id": who.user_id}, "account": {"id": who.account_id}},
        }
    try:
        return Packet.model_validate(body)
    except pydantic.ValidationError as exc:
        raise PacketValidationError(
            "invalid packet: fix the fields listed below", problems=problems_from_pydantic(exc)
        ) from exc


def _wait_seconds(request: web.Request) -> float | None:
    """None for an asynchronous call; otherwise how long to wait for the result."""
    if request.query.get("async", "").lower() in ("1", "true", "yes") or "respond-async" in (
        request.headers.get("Prefer", "")
    ):
        return None
    return seconds(request, DEFAULT_WAIT_S)


def _call_response(record: CallRecord) -> web.Response:
    status = 200 if record.done else 202
    body = record.model_dump(mode="json")
    return web.json_response(body, status=status, headers={"Location": f"/v1/calls/{record.id}"})


async def _create_call(request: web.Request) -> web.Response:
    who = principal(request)
    wait = _wait_seconds(request)
    body = await json_body(request)
    platform = request.app[PLATFORM]
    job = None
    engine = who.engine is not None
    if engine:  # an engine acting for one of its jobs: run as the job's account
        job_id = body.get("job_id") if isinstance(body, dict) else None
        job = await platform.jobs.engine_job(who, job_id)
        who = job.principal
        # Admission checks blocks against the packet's workflow: it is the job's own.
        body = {**body, "workflow": job.workflow}
    else:
        _refuse_job_fields(body)
    packet = _packet_from_body(body, who)
    ref = packet.headers.get(PAYLOAD_REF_HEADER)
    if job is not None and ref is not None:  # a payload too large for the engine, by reference
        headers = {k: v for k, v in packet.headers.items() if k != PAYLOAD_REF_HEADER}
        payload = platform.jobs.stored_payload(job, ref)
        packet = Packet.model_validate(
            {**packet.model_dump(mode="json"), "payload": payload, "headers": headers}
        )
    gateway = platform.runtime.gateway
    name = request.match_info["name"]
    if not platform.workflow_services.offered_to(name.partition("@")[0], who.account_id):
        # As if it did not exist: a private workflow service is not the caller's to know of.
        raise UnknownServiceError(f"no service named {name!r}", service=name)
    # An engine passes the result on to the job's next step: it gets it unmasked.
    try:
        record = await gateway.call(
            request.match_info["name"], packet, principal=who, wait=wait, reveal=engine
        )
    except BlockedError as exc:
        if job is not None:  # a block stops the job: it ends blocked, and may be resumed
            await platform.job_control.engine_call_blocked(job.id, packet.step_id, exc.to_dict())
        raise
    if job is not None and record.status == "failed" and _blocked(record.error):
        # Refused by the worker (a block placed just after the gateway admitted the call).
        await platform.job_control.engine_call_blocked(job.id, packet.step_id, record.error or {})
    return _call_response(record)


def _blocked(error: dict[str, Any] | None) -> bool:
    return error is not None and error.get("code") == BlockedError.code


def _refuse_job_fields(body: Any) -> None:
    """A call made with a user's token is a plain service call: it names no job, step or
    workflow, so it can never become a step of a job (only the job's engine, with its token,
    writes those), and it resolves no stored payload."""
    if not isinstance(body, dict):
        return  # refused as a packet, with its location, by _packet_from_body
    problems = [
        (f"body.{name}", "only the engine running a job may send it; leave it out")
        for name in JOB_FIELDS
        if body.get(name) is not None
    ]
    headers = body.get("headers")
    if isinstance(headers, dict):
        problems += [
            (f"body.headers.{name}", "only the engine running a job may send it; leave it out")
            for name in JOB_HEADERS
            if name in headers
        ]
    if problems:
        raise ValidationError(
            "a call made with a user's token cannot attach to a job: remove "
            + ", ".join(loc for loc, _ in problems),
            problems=problems,
        )


async def _get_call(request: web.Request) -> web.Response:
    account_id = principal(request).account_id
    gateway = request.app[PLATFORM].runtime.gateway
    call_id = request.match_info["call_id"]
    wait = seconds(request, 0.0)
    if wait > 0:
        record = await gateway.wait(call_id, wait, account_id=account_id)
    else:
        record = await gateway.get(call_id, account_id=account_id)
    return _call_response(record)
