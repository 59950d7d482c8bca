"""`fluxo up` with the Node-RED engine, started as a user starts it (a real process, real HTTP).

External engines call Fluxo back at its public URL with an engine token: a server started on
another port than the default must hand them that port, or a tab would call (and send its token
to) whatever listens on the default one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from fluxo_core.storage import AccountStore, Database
from tests.support.fluxo_process import fluxo_up, free_port
from tests.support.nodered import RunningNodeRed

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path, nodered: RunningNodeRed) -> Iterator[tuple[str, str]]:
    """``fluxo up --port P`` with ``FLUXO_ENGINES=step,nodered``; yields its URL and admin token."""
    port = free_port()
    env = {
        "FLUXO_ENGINES": "step,nodered",
        "FLUXO_NODERED_URL": nodered.url,
        "FLUXO_NODERED_ADMIN_TOKEN": nodered.admin_token,
    }
    with fluxo_up("--port", str(port), home=tmp_path, **env) as up:
        assert f"Fluxo is running at http://127.0.0.1:{port}" in up.output, up.output
        yield f"http://127.0.0.1:{port}", (tmp_path / "admin.token").read_text().strip()


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
