"""A trigger's second message survives SIGKILL of the server: its timer and the node's state
are in the database, and a restarted server sends it, once, in the job that sent the first."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from fluxo_core.storage import Database
from fluxo_core.storage.tables import job_steps
from tests.integration.test_cli import free_port
from tests.integration.test_server_crash import start_server
from translators.nodered import from_nodered

TRIGGER = {
    "id": "trig",
    "type": "trigger",
    "z": "tab",
    "op1": "first",
    "op2": "second",
    "op1type": "str",
    "op2type": "str",
    "duration": "3",
    "units": "s",
    "extend": False,
    "bytopic": "all",
    "outputs": 1,
    "x": 0,
    "y": 0,
    "wires": [],
}


def workflow() -> dict[str, object]:
    flow = [{"id": "tab", "type": "tab", "label": "crashtrig"}, TRIGGER]
    doc = from_nodered(flow).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    return doc


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_waiting_trigger_message_survives_sigkill_of_the_server(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    async def waiting() -> list[str]:
        rows = await db.read(
            lambda c: c.execute(sa.select(job_steps.c.key).where(job_steps.c.status == "waiting"))
        )
        return [r.key for r in rows]

    server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
    try:
        token = (tmp_path / "admin.token").read_text().strip()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        doc = workflow()
        assert http.post("/v1/workflows", json=doc).status_code == 201
        name = doc["metadata"]["name"]  # type: ignore[index]
        job = http.post(f"/v1/workflows/{name}/jobs", json={"input": {"n": 1}}).json()
        found: list[str] = []
        for _ in range(200):
            found = await waiting()
            if found:
                break
            await asyncio.sleep(0.05)
        assert found == ["trigger~t1"], "the trigger's second message should wait for its timer"
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        if server.stdout is not None:
            server.stdout.close()

    server = start_server(tmp_path, port, database_url, effects, FLUXO_LEASE_S="0.5")
    try:
        final = http.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
        if server.stdout is not None:
            server.stdout.close()
        http.close()
    assert final["status"] == "succeeded", final
    rows = await db.read(
        lambda c: c.execute(
            sa.select(job_steps.c.key, job_steps.c.status, job_steps.c.output).where(
                job_steps.c.job_id == job["id"]
            )
        ).all()
    )
    by_key = {r.key: r for r in rows}
    assert sorted(by_key) == ["trigger", "trigger~t1"]
    assert by_key["trigger~t1"].status == "succeeded"
    assert b'"second"' in bytes(by_key["trigger~t1"].output)
