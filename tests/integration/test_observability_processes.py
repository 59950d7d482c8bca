"""Logs and traces as an operator sees them: ``fluxo up`` (API and step engine, no workers) and a
``fluxo worker`` process, both with ``FLUXO_LOG_FORMAT=json`` and an OTLP endpoint.

The job's span comes from the server, its call's and run's spans from the worker, and they join
up into one trace at a real OTLP/HTTP receiver; the worker's log lines are JSON objects that
carry the job, call and trace ids, and the secret in the job's input never reaches a log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service_runtime.interceptors import call_span_id, job_span_id
from tests.support.fluxo_process import REPO, fluxo_env, fluxo_up
from tests.support.otlp import OtlpReceiver, otlp_receiver_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRET = "sk-live-" + "0a1b2c3d4e5f6a7b8c9d"
WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "tell"},
    "spec": {"steps": [{"id": "tell", "kind": "service", "service": "notify-log"}]},
}


def eventually(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_a_job_across_server_and_worker_is_one_trace_and_its_logs_are_json_with_its_ids(
    tmp_path: Path,
) -> None:
    with otlp_receiver_thread() as receiver:
        env = {
            "FLUXO_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds: spans leave soon, not in 5 s
            "FLUXO_POLL_INTERVAL": "0.2",
        }
        worker_log = tmp_path / "worker.log"
        with fluxo_up("--port", "0", "--workers", "0", home=tmp_path, **env) as up:
            with worker_log.open("w") as err:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "fluxo.cli", "worker"],
                    env=fluxo_env(tmp_path, **env),
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
            try:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "ready", worker_log.read_text()
                job_id = run_job(up.url, (tmp_path / "admin.token").read_text().strip())
                eventually(lambda: receiver.named("job ") and receiver.named("run "), "spans")
            finally:
                worker.terminate()
                worker.wait(20)
                if worker.stdout is not None:
                    worker.stdout.close()
        check_trace(receiver, job_id)
        check_logs(worker_log.read_text(), job_id, receiver)


def run_job(url: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        response = http.post("/v1/workflows", json=WORKFLOW)
        assert response.status_code in (200, 201), response.text
        message = f"deploy done, Authorization: Bearer {SECRET}"
        response = http.post("/v1/workflows/tell/jobs", json={"input": {"message": message}})
        assert response.status_code in (200, 201, 202), response.text
        job_id: str = response.json()["id"]

        def ended() -> str | None:
            status: str = http.get(f"/v1/jobs/{job_id}").json()["status"]
            return status if status not in ("queued", "running") else None

        assert eventually(ended, "the job's end") == "succeeded"
    return job_id


def check_trace(receiver: OtlpReceiver, job_id: str) -> None:
    (job,) = receiver.named("job ")
    (call,) = receiver.named("call ")
    (run,) = receiver.named("run ")
    assert job.trace_id == call.trace_id == run.trace_id
    assert (job.span_id, job.parent_id) == (job_span_id(job_id), "")
    assert call.parent_id == job.span_id
    assert call.span_id == call_span_id(call.attributes["fluxo.call_id"])
    assert run.parent_id == call.span_id
    # Two processes sent them: the server the job's, the worker the call's and run's.
    assert job.attributes["fluxo.engine"] == "step"
    assert run.attributes["fluxo.job_id"] == job_id
    assert SECRET not in repr(receiver.spans)


def check_logs(text: str, job_id: str, receiver: OtlpReceiver) -> None:
    """The handler's line names the job, the call and the run whose spans the receiver got."""
    (call,) = receiver.named("call ")
    (run,) = receiver.named("run ")
    assert SECRET not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records, "the worker logged nothing"
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    (told,) = [r for r in records if r["message"].startswith("notification: ")]
    assert told["logger"] == "fluxo.demo.notify"
    assert (told["job_id"], told["trace_id"], told["account"]) == (job_id, run.trace_id, "default")
    assert told["call_id"] == call.attributes["fluxo.call_id"]
    assert told["span_id"] == run.span_id
    assert "***" in told["message"]  # what was redacted, in place of the secret
