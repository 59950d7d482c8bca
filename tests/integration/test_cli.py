"""The one-command start and the CLI, as a user runs them (real processes, real HTTP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fluxo_process import REPO, fluxo_up, free_port, run_fluxo

fluxo = run_fluxo


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    port = free_port()
    with fluxo_up(home=tmp_path, FLUXO_PORT=str(port)) as up:
        text = up.output
        assert f"Fluxo is running at http://127.0.0.1:{port}" in text, text
        token = (tmp_path / "admin.token").read_text().strip()
        # Output that is not a terminal (a log file, a collector) gets where it is, not the token.
        assert token not in text
        assert f"admin token: created and saved in {tmp_path / 'admin.token'}" in text
        yield f"http://127.0.0.1:{port}", token, tmp_path


@pytest.mark.slow
def test_fluxo_up_serves_the_demo_services(server: tuple[str, str, Path]) -> None:
    url, token, home = server
    headers = {"Authorization": f"Bearer {token}"}
    services = httpx.get(f"{url}/v1/services", headers=headers, timeout=10).json()["items"]
    names = {s["name"] for s in services}
    assert {"noop", "http", "transform", "parse-order", "enrich-customer", "notify-log"} <= names
    order = {
        "payload": {
            "id": "A-1",
            "customer": {"email": "ada@example.com"},
            "items": [{"sku": "KB-1", "qty": 2, "price": 49.5}],
        }
    }
    resp = httpx.post(
        f"{url}/v1/services/parse-order/calls", json=order, headers=headers, timeout=30
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "succeeded"
    assert body["account_id"] == "default"
    assert (home / "admin.token").stat().st_mode & 0o077 == 0  # the token file is private


def test_schema_packet_prints_the_json_schema(tmp_path: Path) -> None:
    result = fluxo("schema", "packet", home=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["title"] == "Fluxo packet"
    assert "payload" in schema["properties"]


def test_token_command_issues_a_token_bound_to_an_account(tmp_path: Path) -> None:
    result = fluxo("token", "--account", "acme", "--user", "ada", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("fxo_")


def test_bad_configuration_is_one_clear_line(tmp_path: Path) -> None:
    env_result = subprocess.run(
        [sys.executable, "-m", "fluxo.cli", "services"],
        env=dict(os.environ, FLUXO_HOME=str(tmp_path), FLUXO_DATABASE_URL="mysql://nope"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert env_result.returncode == 1
    assert env_result.stderr.startswith("fluxo: FLUXO_DATABASE_URL must be")
    assert "Traceback" not in env_result.stderr


def test_worker_refuses_a_module_without_services(tmp_path: Path) -> None:
    result = fluxo("worker", "--module", "json", home=tmp_path)
    assert result.returncode == 1
    assert "must define SERVICES" in result.stderr


def test_worker_imports_a_module_from_the_current_folder(tmp_path: Path) -> None:
    """The `fluxo` script (not `python -m`) finds a module where the user runs it."""
    (tmp_path / "my_fluxo_services.py").write_text("NOT_SERVICES = []\n")
    script = Path(sys.executable).with_name("fluxo")
    result = subprocess.run(
        [str(script), "worker", "--module", "my_fluxo_services"],
        env=dict(os.environ, FLUXO_HOME=str(tmp_path / "home")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    # Imported (from the current folder), then refused for what it holds, not for its absence.
    assert "module 'my_fluxo_services' must define SERVICES" in result.stderr, result.stderr


def test_worker_says_where_it_looked_for_a_missing_module(tmp_path: Path) -> None:
    result = fluxo("worker", "--module", "no_such_fluxo_module", home=tmp_path)
    assert result.returncode == 1
    assert "current folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_services_show_per_item_prices(tmp_path: Path) -> None:
    result = fluxo("services", home=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "0.0005 EUR/item" in lines["notify-log@1"], lines["notify-log@1"]
    assert "free" in lines["noop@1"]
    assert "0 EUR/call" not in result.stdout


WORKFLOW_YAML = """\
apiVersion: fluxo.dev/v1
kind: Workflow
metadata: {name: greet}
spec:
  input_schema: {type: object, required: [name]}
  steps:
    - {id: parse, kind: service, service: noop, next: [shape]}
    - id: shape
      kind: transform
      ops: [{op: set, path: greeting, expr: '"hello " & name'}]
"""


def test_apply_validate_and_run_on_the_local_database(tmp_path: Path) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text(WORKFLOW_YAML)
    applied = fluxo("apply", "-f", str(path), home=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "workflow/greet created"
    again = fluxo("apply", "-f", str(path), home=tmp_path)
    assert again.stdout.strip() == "workflow/greet unchanged"

    ran = fluxo("run", "greet", "--input", '{"name": "Ada"}', "--wait", home=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"name": "Ada", "greeting": "hello Ada"}
    assert "ok     shape" in ran.stderr  # progress, step by step

    listed = fluxo("jobs", "list", "--json", home=tmp_path)
    (job,) = json.loads(listed.stdout)["items"]
    shown = json.loads(fluxo("jobs", "show", job["id"], home=tmp_path).stdout)
    assert [s["step_id"] for s in shown["steps"]] == ["parse", "shape"]


def test_run_exits_non_zero_when_the_input_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text(WORKFLOW_YAML)
    fluxo("apply", "-f", str(path), home=tmp_path)
    ran = fluxo("run", "greet", "--input", '{"nom": "Ada"}', "--wait", home=tmp_path)
    assert ran.returncode == 1
    assert "input: 'name' is a required property" in ran.stderr


def test_validate_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        WORKFLOW_YAML.replace("service: noop", "service: nop").replace(
            "next: [shape]", "next: [shap]"
        )
    )
    result = fluxo("validate", str(path), home=tmp_path)
    assert result.returncode == 1
    assert (
        "doc[0].spec.steps[0].service: unknown service 'nop' (did you mean 'noop'?)"
        in result.stderr
    )
    assert (
        "doc[0].spec.steps[0].next[0]: unknown step 'shap' (did you mean 'shape'?)" in result.stderr
    )
    assert "(line 7)" in result.stderr  # the line of the offending step


@pytest.mark.slow
def test_cli_talks_to_a_running_server(server: tuple[str, str, Path], tmp_path: Path) -> None:
    url, token, _ = server
    path = tmp_path / "greet.yaml"
    path.write_text(WORKFLOW_YAML)
    env = dict(os.environ, FLUXO_URL=url, FLUXO_TOKEN=token, FLUXO_HOME=str(tmp_path / "other"))
    run = [sys.executable, "-m", "fluxo.cli"]
    applied = subprocess.run(
        [*run, "apply", "-f", str(path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    ran = subprocess.run(
        [*run, "run", "greet", "--input", '{"name": "Bo"}', "--wait"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["greeting"] == "hello Bo"
    # The job lives in the server's database, not in the CLI's (empty) home.
    assert not (tmp_path / "other" / "fluxo.db").exists()


def test_export_argo_and_cronjob(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "greet.yaml"
    path.write_text(WORKFLOW_YAML)
    fluxo("apply", "-f", str(path), home=tmp_path)
    argo = fluxo("export", "greet", "--engine", "argo", home=tmp_path)
    assert argo.returncode == 0, argo.stderr
    documents = list(yaml.safe_load_all(argo.stdout))
    kinds = [d["kind"] for d in documents]
    assert "WorkflowTemplate" in kinds
    assert "ServiceAccount" in kinds
    # The account's own Secret: the export says how to make it, the templates read it.
    assert "kubectl -n NAMESPACE create secret generic fluxo-gateway-default" in argo.stdout
    assert "fluxo token --account default --user argo --engine argo" in argo.stdout
    template = next(d for d in documents if d["kind"] == "WorkflowTemplate")
    assert template["metadata"]["name"].startswith("default-greet-v1-")
    assert '"name": "fluxo-gateway-default"' in json.dumps(template)
    assert '"fluxo-gateway"' not in json.dumps(documents)
    cron = fluxo("export", "greet", "--cronjob", "*/5 * * * *", home=tmp_path)
    assert cron.returncode == 0, cron.stderr
    (job,) = yaml.safe_load_all(cron.stdout)
    assert (job["kind"], job["spec"]["schedule"]) == ("CronJob", "*/5 * * * *")
    assert job["metadata"]["name"].startswith("fluxo-default-greet-")
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLUXO_JOBS_URL"].endswith("/v1/workflows/greet/jobs")
    assert env["FLUXO_KEY_PREFIX"] == "cron:greet"
    assert "Idempotency-Key: $FLUXO_KEY_PREFIX:$at" in container["command"][-1]
    secret = container["env"][0]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "fluxo-gateway-default", "key": "authorization"}
    missing = fluxo("export", "nope", "--engine", "argo", home=tmp_path)
    assert missing.returncode == 1
    assert "apply it first" in missing.stderr
    elsewhere = fluxo("export", "greet", "--engine", "argo", "--account", "globex", home=tmp_path)
    assert elsewhere.returncode == 1  # greet is the admin account's, not globex's
    assert "apply it first" in elsewhere.stderr


FLOW = [
    {"id": "t1", "type": "tab", "label": "Orders"},
    {"id": "in", "type": "inject", "z": "t1", "name": "tick", "repeat": "60", "crontab": "",
     "once": False, "topic": "", "payload": "", "payloadType": "date", "x": 100, "y": 80,
     "wires": [["fn"]]},
    {"id": "fn", "type": "function", "z": "t1", "name": "shape", "outputs": 1,
     "func": "msg.payload = {n: 1}; return msg;", "x": 300, "y": 80, "wires": [["dbg"]]},
    {"id": "dbg", "type": "debug", "z": "t1", "name": "", "active": True, "x": 500, "y": 80,
     "wires": []},
]  # fmt: skip


def test_import_nodered_writes_workflows_and_reports_fidelity(tmp_path: Path) -> None:
    import yaml

    flow = tmp_path / "orders flow.json"
    flow.write_text(json.dumps(FLOW))
    result = fluxo(
        "import", "nodered", str(flow), "-o", str(tmp_path / "out"), "--json", home=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"] == {"mapped": 2, "native": 1, "dropped": 1}
    status = {n["node_id"]: n["status"] for n in report["nodes"]}
    assert status == {"t1": "mapped", "in": "mapped", "fn": "native", "dbg": "dropped"}
    (written,) = (tmp_path / "out").glob("*.yaml")
    workflow = yaml.safe_load(written.read_text())
    assert workflow["kind"] == "Workflow"
    assert [s["kind"] for s in workflow["spec"]["steps"]] == ["native"]
    # The flow beside it, as read; the workflow names it and runs where the step engine says.
    sidecar = tmp_path / "out" / "orders-flow.flow.json"
    assert json.loads(sidecar.read_text()) == FLOW
    assert workflow["spec"]["source"] == {"format": "nodered", "file": sidecar.name}
    assert report["workflows"] == [
        {"name": "orders", "engine": "step", "why": [], "runnable": True, "refused": []}
    ]
    runs = {n["node_id"]: n["runs"] for n in report["nodes"]}
    assert runs["fn"] == "step engine and Node-RED"  # the step engine accepts this function
    assert runs["dbg"] == "nowhere"
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a"')
    bad = fluxo("import", "nodered", str(broken), home=tmp_path)
    assert bad.returncode == 1
    assert "not JSON" in bad.stderr or "not valid JSON" in bad.stderr


def test_export_nodered_flow_passes_the_flow_checks(tmp_path: Path) -> None:
    from translators import check_flow

    path = tmp_path / "greet.yaml"
    path.write_text(WORKFLOW_YAML)
    fluxo("apply", "-f", str(path), home=tmp_path)
    result = fluxo("export", "greet", "--engine", "nodered", home=tmp_path)
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)
    assert check_flow(nodes) == []
    assert {"http in", "http request"} <= {n["type"] for n in nodes}


@pytest.mark.slow
def test_fluxo_call_prints_the_call_record_for_a_container_step(
    server: tuple[str, str, Path], tmp_path: Path
) -> None:
    """What an Argo container step runs: the record on stdout, exit 0 only when it succeeded,
    and the same packet id asked twice is the same call."""
    url, token, _ = server
    env = dict(os.environ, FLUXO_AUTHORIZATION=f"Bearer {token}")
    packet = {"id": "job-1:parse:0", "payload": {"id": "A-1", "customer": {"email": "a@b.c"}}}

    def call(service: str, body: dict[str, object]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "fluxo.cli",
                "call",
                service,
                "--gateway",
                url,
                "--packet",
                json.dumps(body),
                "--wait",
                "20",
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    first = call("noop", packet)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert (record["id"], record["status"]) == ("job-1:parse:0", "succeeded")
    again = call("noop", packet)
    assert json.loads(again.stdout)["created_at"] == record["created_at"]  # the same call

    refused = call("no-such-service", {**packet, "id": "job-1:x:0"})
    assert refused.returncode == 1
    assert "no-such-service" in refused.stderr
    assert token not in refused.stderr + refused.stdout

    unsigned = subprocess.run(
        [
            sys.executable,
            "-m",
            "fluxo.cli",
            "call",
            "noop",
            "--gateway",
            url,
            "--packet",
            json.dumps(packet),
        ],
        env={k: v for k, v in os.environ.items() if k not in ("FLUXO_TOKEN",)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unsigned.returncode == 1
    assert "FLUXO_AUTHORIZATION" in unsigned.stderr


# --- a newcomer's first hour: clear errors, one limit for every way in -----------------------------


def test_a_second_server_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = fluxo("up", "--port", str(port), home=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fluxo:")]
    assert len(errors) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in errors[0]
    assert "--port" in errors[0]


@pytest.mark.slow
def test_fluxo_up_on_port_0_says_the_port_it_got_and_hands_it_to_the_engines(
    tmp_path: Path,
) -> None:
    with fluxo_up("--port", "0", home=tmp_path, FLUXO_ENGINES="step,nodered") as up:
        url, text = up.url, up.output
        assert not url.endswith(":0"), text
        assert f"engines call it at: {url}" in text
        assert httpx.get(f"{url}/livez", timeout=10).status_code == 200


@pytest.mark.parametrize("raw", ['"s"', "5", "null", "[1, 2]"])
def test_a_job_input_that_is_not_an_object_is_a_clear_error(tmp_path: Path, raw: str) -> None:
    workflow = tmp_path / "w.yaml"
    workflow.write_text(
        "apiVersion: fluxo.dev/v1\nkind: Workflow\nmetadata: {name: w}\n"
        "spec: {steps: [{id: s, kind: service, service: noop}]}\n"
    )
    assert fluxo("apply", "-f", str(workflow), home=tmp_path).returncode == 0
    result = fluxo("run", "w", "--input", raw, home=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "fluxo: invalid job: the input must be one JSON object" in result.stderr


def test_the_cli_holds_a_local_job_input_to_the_packet_limit(tmp_path: Path) -> None:
    workflow = tmp_path / "w.yaml"
    workflow.write_text(
        "apiVersion: fluxo.dev/v1\nkind: Workflow\nmetadata: {name: w}\n"
        "spec: {steps: [{id: s, kind: service, service: noop}]}\n"
    )
    assert fluxo("apply", "-f", str(workflow), home=tmp_path).returncode == 0
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "x" * 3000}))
    env = {"FLUXO_MAX_PACKET_BYTES": "2048"}
    result = fluxo("run", "w", "--input", f"@{big}", home=tmp_path, **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "FLUXO_MAX_PACKET_BYTES" in result.stderr
    # Under the file limit but over the packet limit once wrapped: the control plane refuses.
    big.write_text(json.dumps({"blob": "x" * 1900}))
    result = fluxo("run", "w", "--input", f"@{big}", home=tmp_path, **env)
    assert result.returncode == 1
    assert "makes a packet of" in result.stderr
