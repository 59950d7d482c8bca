"""``fluxo block``, ``fluxo workflow pause|resume`` and ``fluxo jobs resume|retry`` as a user runs
them against a running server, and the HTTP routes under them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.fluxo_process import fluxo_up, free_port, run_fluxo

FLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "relay"},
    "spec": {"engine": "step", "steps": [{"id": "pass", "kind": "service", "service": "noop"}]},
}


def test_blocks_and_workflow_pause_from_the_command_line(tmp_path: Path) -> None:
    port = free_port()
    with fluxo_up(home=tmp_path, FLUXO_PORT=str(port)):
        url = f"http://127.0.0.1:{port}"
        token = (tmp_path / "admin.token").read_text().strip()
        env = {"FLUXO_URL": url, "FLUXO_TOKEN": token}
        auth = {"Authorization": f"Bearer {token}"}

        def fluxo(*args: str) -> str:
            result = run_fluxo(*args, home=tmp_path, **env)
            assert result.returncode == 0, result.stderr
            return result.stdout

        placed = json.loads(
            fluxo("block", "add", "workflow", "relay", "--reason", "audit", "--json")
        )
        assert (placed["kind"], placed["target"], placed["active"]) == ("workflow", "relay", True)
        listed = json.loads(fluxo("block", "list", "--active", "--json"))
        assert [b["id"] for b in listed] == [placed["id"]]
        assert placed["id"] in fluxo("block", "list")

        applied = httpx.post(f"{url}/v1/workflows", json=FLOW, headers=auth, timeout=30)
        assert applied.status_code == 201, applied.text
        refused = httpx.post(
            f"{url}/v1/workflows/relay/jobs", json={"input": {"n": 1}}, headers=auth, timeout=30
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "blocked"
        assert placed["id"] in refused.json()["error"]["message"]

        lifted = json.loads(fluxo("block", "lift", placed["id"], "--json"))
        assert lifted["active"] is False
        audit = json.loads(fluxo("block", "audit", "--json"))
        assert [e["action"] for e in audit] == ["lift", "place"]

        assert "paused" in fluxo("workflow", "pause", "relay")
        job = httpx.post(
            f"{url}/v1/workflows/relay/jobs", json={"input": {"n": 2}}, headers=auth, timeout=30
        ).json()
        assert job["status"] == "queued"
        assert "1 queued jobs started" in fluxo("workflow", "resume", "relay")
        done = httpx.get(f"{url}/v1/jobs/{job['id']}?wait=20", headers=auth, timeout=30).json()
        assert (done["status"], done["result"]) == ("succeeded", {"n": 2})

        retried = run_fluxo("jobs", "retry", job["id"], home=tmp_path, **env)
        assert retried.returncode == 1
        assert "not failed" in retried.stderr
