"""What handlers and interceptors log carries the ids of the work in hand: the job, the call,
its trace and the span of the handler's run, and the account (inline, threaded and async
handlers alike; the gateway's admission too). SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fluxo.control.platform import Platform
from fluxo_core.ir import Packet
from fluxo_core.logs import JsonFormatter
from fluxo_core.redaction import install_log_redaction
from fluxo_core.storage import Database, Principal
from service_runtime import AdmitRequest, Interceptor, service

pytestmark = pytest.mark.timeout(60)

ACME = Principal(account_id="acme", user_id="ada")
handlers_log = logging.getLogger("tests.json_logs")


@service("log-inline", inline=True)
def log_inline(payload: dict[str, Any]) -> dict[str, Any]:
    handlers_log.info("inline handler ran")
    return payload


@service("log-thread")
def log_thread(payload: dict[str, Any]) -> dict[str, Any]:
    handlers_log.info("threaded handler ran")
    return payload


@service("log-async")
async def log_async(payload: dict[str, Any]) -> dict[str, Any]:
    handlers_log.info("async handler ran")
    return payload


class LoggingAdmission(Interceptor):
    async def admit(self, request: AdmitRequest) -> None:
        if request.place == "gateway":
            handlers_log.info("admitting at the gateway")


WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "logged"},
    "spec": {
        "steps": [
            {"id": "a", "kind": "service", "service": "log-inline", "next": ["b"]},
            {"id": "b", "kind": "service", "service": "log-thread", "next": ["c"]},
            {"id": "c", "kind": "service", "service": "log-async"},
        ]
    },
}


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    install_log_redaction()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handlers_log.addHandler(handler)
    handlers_log.setLevel(logging.INFO)
    try:
        yield out
    finally:
        handlers_log.removeHandler(handler)
        handlers_log.setLevel(logging.NOTSET)


def parsed(out: io.StringIO) -> dict[str, dict[str, Any]]:
    """The lines, by message."""
    return {line["message"]: line for line in map(json.loads, out.getvalue().splitlines())}


@pytest.fixture
async def platform(db: Database) -> Platform:
    platform = Platform(
        db,
        [log_inline, log_thread, log_async],
        workers=1,
        poll_interval_s=0.2,
        interceptors=[LoggingAdmission()],
    )
    await platform.accounts.ensure_account("acme")
    return platform


async def test_handlers_of_a_job_log_with_its_job_call_trace_span_and_account(
    platform: Platform, lines: io.StringIO
) -> None:
    async with platform:
        await platform.jobs.apply(WORKFLOW, ACME)
        job = await platform.jobs.create(ACME, "logged", {"n": 1})
        record = await platform.jobs.wait(ACME, job.id, 20)
        assert record.status == "succeeded"
    row = await platform.jobs.store.job(job.id)
    trace_id = Packet.model_validate_json(row.input).trace_id
    calls = {step.step_id: step.call_id for step in record.steps}
    logged = parsed(lines)
    spans = set()
    for step, message in (
        ("a", "inline handler ran"),
        ("b", "threaded handler ran"),
        ("c", "async handler ran"),
    ):
        line = logged[message]
        assert (line["job_id"], line["call_id"], line["trace_id"], line["account"]) == (
            job.id,
            calls[step],
            trace_id,
            "acme",
        ), line
        spans.add(line["span_id"])
    assert len(spans) == 3  # each run is a span of its own


async def test_a_gateway_call_logs_with_its_call_and_trace(
    platform: Platform, lines: io.StringIO
) -> None:
    packet = Packet.model_validate(
        {"actor": {"user": {"id": "ada"}, "account": {"id": "acme"}}, "payload": {}}
    )
    async with platform:
        record = await platform.runtime.gateway.call("log-thread", packet, wait=20)
        assert record.status == "succeeded"
    logged = parsed(lines)
    for message in ("admitting at the gateway", "threaded handler ran"):
        line = logged[message]
        assert (line["call_id"], line["trace_id"], line["account"]) == (
            packet.id,
            packet.trace_id,
            "acme",
        )
        assert "job_id" not in line
