"""`fluxo up` with the Node-RED engine, started as a user starts it (a real process, real HTTP).

External engines call Fluxo back at its public URL with an engine token: a server started on
another port than the default must hand them that port, or a tab would call (and send its token
to) whatever listens on the default one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from fluxo_core.storage import AccountStore, Database
from tests.support.nodered import RunningNodeRed

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path, nodered: RunningNodeRed) -> Iterator[tuple[str, str]]:
    """``fluxo up --port P`` with ``FLUXO_ENGINES=step,nodered``; yields its URL and admin token."""
    port = _free_port()
    env = dict(
        os.environ,
        FLUXO_HOME=str(tmp_path),
        FLUXO_ENGINES="step,nodered",
        FLUXO_NODERED_URL=nodered.url,
        FLUXO_NODERED_ADMIN_TOKEN=nodered.admin_token,
    )
    for name in ("FLUXO_DATABASE_URL", "FLUXO_PORT", "FLUXO_PUBLIC_URL"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxo_core.cli", "up", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        output = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            output.append(line)
            if "admin token" in line or not line:
                break
        assert f"Fluxo is running at http://127.0.0.1:{port}" in "".join(output), output
        yield f"http://127.0.0.1:{port}", (tmp_path / "admin.token").read_text().strip()
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()


async def _register_engine_token(home: Path, token: str) -> None:
    """The token the session's Node-RED sends (FLUXO_TOKEN), as account default's engine token."""
    db = Database(f"sqlite:///{home / 'fluxo.db'}")
    try:
        await AccountStore(db).issue_token("default", "node-red", engine="nodered", token=token)
    finally:
        await db.close()


async def test_a_node_red_job_calls_the_port_fluxo_up_serves(
    server: tuple[str, str], tmp_path: Path, nodered: RunningNodeRed
) -> None:
    url, admin = server
    await _register_engine_token(tmp_path, nodered.token)
    document = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Workflow",
        "metadata": {"name": "up-port"},
        "spec": {
            "engine": "nodered",
            "steps": [{"id": "echo", "kind": "service", "service": "noop"}],
        },
    }
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        applied = await client.post(
            "/v1/workflows",
            content=yaml.safe_dump(document),
            headers={"Content-Type": "application/yaml"},
        )
        assert applied.status_code in (200, 201), applied.text
        # Waits until the job ends: Node-RED reports it once its call came back.
        started = await client.post("/v1/workflows/up-port/jobs?wait=30", json={"input": {"n": 1}})
        assert started.status_code in (200, 201, 202), started.text
        job = started.json()
    assert job["status"] == "succeeded", job
    assert job["result"] == {"n": 1}
