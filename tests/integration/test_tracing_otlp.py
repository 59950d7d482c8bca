"""OpenTelemetry spans, received by a real OTLP/HTTP receiver (tests/support/otlp.py).

A job is one trace: its span (``job W@V``, the root), one span per call (``call S``, a child of
the job's span) and one per run of the call's handler (``run S``, a child of the call's span),
all in the trace id the job's packets carry. The job's span comes from whoever ended the job
(the step engine, or the control plane on a remote engine's report), the calls' and runs' from
the worker that settled them: the parents are named by ids derived from the job and call ids,
so the pieces join up whichever process sent them. SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.platform import Platform, open_span_sink
from fluxo_core.config import FluxoConfig
from fluxo_core.ir import Packet
from fluxo_core.storage import Database, Principal
from service_runtime.interceptors import call_span_id, job_span_id
from tests.integration.test_remote_engines import WORKFLOW as REMOTE_WORKFLOW
from tests.integration.test_remote_engines import RecordingEngine, until
from tests.support import services as svc
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.timeout(60)

ACME = Principal(account_id="acme", user_id="ada")
STEPS = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "traced"},
    "spec": {
        "steps": [
            {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
            {"id": "second", "kind": "service", "service": "inc"},
        ]
    },
}
ERROR = 2  # the OTLP status code of an error


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with otlp_receiver() as running:
        yield running


def config_for(receiver: OtlpReceiver, tmp_path: Path) -> FluxoConfig:
    return FluxoConfig.from_env(
        {"FLUXO_HOME": str(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    )


async def trace_of(platform: Platform, job_id: str) -> str:
    row = await platform.jobs.store.job(job_id)
    return Packet.model_validate_json(row.input).trace_id


def check_tree(receiver: OtlpReceiver, trace_id: str, job_id: str) -> ReceivedSpan:
    """One trace: the job's span at the root, its calls under it, each run under its call;
    every child inside its parent's time. Returns the job's span."""
    assert {s.trace_id for s in receiver.spans} == {trace_id}
    (job,) = receiver.named("job ")
    assert (job.span_id, job.parent_id) == (job_span_id(job_id), "")
    calls = receiver.named("call ")
    runs = receiver.named("run ")
    assert sorted(c.attributes["fluxo.step_id"] for c in calls) == ["first", "second"]
    for call in calls:
        assert call.span_id == call_span_id(call.attributes["fluxo.call_id"])
        assert call.parent_id == job.span_id
        assert call.attributes["fluxo.job_id"] == job_id
        assert job.start_ns <= call.start_ns <= call.end_ns <= job.end_ns
    assert sorted(r.parent_id for r in runs) == sorted(c.span_id for c in calls)
    by_id = {c.span_id: c for c in calls}
    for run in runs:
        call = by_id[run.parent_id]
        assert run.attributes["fluxo.call_id"] == call.attributes["fluxo.call_id"]
        assert call.start_ns <= run.start_ns <= run.end_ns <= call.end_ns
    assert len({s.span_id for s in receiver.spans}) == len(receiver.spans)
    assert {s.resource["service.name"] for s in receiver.spans} == {"fluxo"}
    return job


async def test_a_step_engine_job_is_one_trace_of_its_job_calls_and_runs(
    db: Database, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    config = config_for(receiver, tmp_path)
    assert config.otlp_traces_endpoint == f"{receiver.endpoint}/v1/traces"
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        spans=open_span_sink(config),
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        await platform.jobs.apply(STEPS, ACME)
        job = await platform.jobs.create(ACME, "traced", {"n": 1})
        assert (await platform.jobs.wait(ACME, job.id, 20)).status == "succeeded"
    # Stopping the platform sent what was buffered.
    job_span = check_tree(receiver, await trace_of(platform, job.id), job.id)
    assert job_span.name == "job traced@1"
    assert job_span.attributes["fluxo.status"] == "succeeded"
    assert job_span.attributes["fluxo.engine"] == "step"
    assert {s.name for s in receiver.named("run ")} == {"run inc@1"}


async def test_a_failed_call_is_an_error_span_in_the_trace_of_its_call(
    db: Database, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        spans=open_span_sink(config_for(receiver, tmp_path)),
    )
    await platform.accounts.ensure_account("acme")
    async with platform:
        packet = Packet.model_validate(
            {"actor": {"user": {"id": "ada"}, "account": {"id": "acme"}}, "payload": {}}
        )
        record = await platform.runtime.gateway.call("broken", packet, wait=20)
        assert record.status == "failed"
    (call,) = receiver.named("call ")
    (run,) = receiver.named("run ")
    # A call outside any job: its span is the root of the packet's trace.
    assert (call.trace_id, call.parent_id) == (packet.trace_id, "")
    assert run.parent_id == call.span_id == call_span_id(packet.id)
    assert call.status == run.status == ERROR
    assert record.error is not None
    assert run.attributes["error.type"] == record.error["code"]


async def test_a_remote_engine_job_is_one_trace_across_the_engine_and_the_gateway(
    db: Database, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    engine = RecordingEngine()
    platform = Platform(
        db,
        svc.SERVICES,
        workers=1,
        poll_interval_s=0.2,
        admission_cache_s=0,
        engines=("step", engine),
        spans=open_span_sink(config_for(receiver, tmp_path)),
    )
    await platform.accounts.ensure_account("acme")
    token = await platform.accounts.issue_token("acme", "node-red", engine="nodered")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        platform,
        TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http,
    ):
        await platform.jobs.apply(REMOTE_WORKFLOW, ACME)
        job = await platform.jobs.create(ACME, "remote", {"n": 1})
        transport = platform.runtime.transport
        await until(lambda: transport.depth("engine.nodered"), 0, timeout=15)
        [start] = engine.started
        # The engine's flow copies the job's trace id into every packet it sends (as the
        # Node-RED and Argo translations do).
        for step, n in (("first", 1), ("second", 2)):
            packet: dict[str, Any] = {
                "id": f"nr-{job.id}-{step}",
                "job_id": job.id,
                "step_id": step,
                "workflow": start.workflow,
                "trace_id": start.input.trace_id,
                "actor": start.input.actor.model_dump(mode="json", exclude_none=True),
                "payload": {"n": n},
                "headers": {"fluxo-step-key": step},
            }
            response = await http.post(
                "/v1/services/inc/calls?wait=10", json=packet, headers=headers
            )
            assert response.status == 200, await response.text()
        report = {"job_id": job.id, "status": "succeeded", "result": [{"n": 3}]}
        response = await http.post("/v1/engine-events", json=report, headers=headers)
        assert response.status == 200, await response.text()
    job_span = check_tree(receiver, start.input.trace_id, job.id)
    assert job_span.name == "job remote@1"
    assert job_span.attributes["fluxo.engine"] == "nodered"


def test_without_an_endpoint_no_process_loads_the_sdk(tmp_path: Path) -> None:
    """Off by default, at no cost: building and serving a platform never imports OpenTelemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLUXO_OTLP"))}
    env["FLUXO_HOME"] = str(tmp_path)
    program = (
        "import asyncio, sys\n"
        "import fluxo.cli\n"
        "from fluxo.api import create_app\n"
        "from fluxo.control.platform import build_platform, open_database, default_services\n"
        "from fluxo_core.config import FluxoConfig\n"
        "from fluxo_core.ir import Packet\n"
        "ACTOR = {'user': {'id': 'ada'}, 'account': {'id': 'acme'}}\n"
        "async def run():\n"
        "    config = FluxoConfig.from_env()\n"
        "    assert config.otlp_traces_endpoint is None\n"
        "    db = await open_database(config)\n"
        "    platform = build_platform(config, db, default_services(config, db), workers=1)\n"
        "    create_app(platform, max_packet_bytes=65536)\n"
        "    packet = Packet.model_validate({'actor': ACTOR, 'payload': {}})\n"
        "    await platform.accounts.ensure_account('acme')\n"
        "    async with platform:\n"
        "        record = await platform.runtime.gateway.call('noop', packet, wait=20)\n"
        "        assert record.status == 'succeeded', record\n"
        "    await db.close()\n"
        "asyncio.run(run())\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
