"""Triggers start jobs on a real Node-RED as they do on the step engine: a cron slot and a
signed webhook each make a job that completes there, with the same result as on steps."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from fluxo.control.triggers.webhook import sign
from tests.integration.nodered.test_nodered_jobs import ACME, Fluxo, fluxo, workflow

__all__ = ["fluxo"]  # the fixture, used by name

STEPS = [
    {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
    {"id": "second", "kind": "service", "service": "inc"},
]


def trigger(name: str, spec: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_cron_and_webhook_jobs_complete_on_node_red(fluxo: Fluxo) -> None:
    platform = fluxo.platform
    assert platform.secrets is not None
    for engine in ("step", "nodered"):
        await platform.jobs.apply(workflow(f"count-{engine}", engine, STEPS), ACME)
    await platform.secrets.put("acme", "hook-key", "whsec-nodered")
    results: dict[str, list[object]] = {}
    for engine in ("step", "nodered"):
        # Every second (croniter's sixth field): the running supervisor fires it by itself.
        await platform.resources.apply(
            ACME,
            trigger(
                f"tick-{engine}",
                {
                    "workflow": f"count-{engine}",
                    "type": "cron",
                    "schedule": "* * * * * *",
                    "input": {"n": 1},
                },
            ),
        )
        await platform.resources.apply(
            ACME,
            trigger(
                f"hook-{engine}",
                {
                    "workflow": f"count-{engine}",
                    "type": "webhook",
                    "webhook": {"secret": "hook-key"},
                },
            ),
        )
        for _ in range(300):
            state = await platform.triggers.get(ACME, f"tick-{engine}")
            if state.last_job_id is not None:
                break
            await asyncio.sleep(0.1)
        assert state.last_job_id is not None, state
        await platform.triggers.pause(ACME, f"tick-{engine}")
        cron_job = await platform.jobs.wait(ACME, state.last_job_id, 30)
        assert cron_job.status == "succeeded", cron_job.error
        assert cron_job.engine == engine
        body = json.dumps({"n": 10}).encode()
        stamp = int(time.time())
        async with httpx.AsyncClient(base_url=fluxo.url, timeout=60) as client:
            response = await client.post(
                f"/hooks/acme/hook-{engine}?wait=30",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Fluxo-Timestamp": str(stamp),
                    "X-Fluxo-Signature": sign("whsec-nodered", stamp, body),
                },
            )
        answer = response.json()
        assert response.status_code == 200, answer
        assert answer["status"] == "succeeded", answer
        # The webhook's payload is {body, headers, query, contentType}: inc counts n from 0.
        assert answer["result"]["body"] == {"n": 10}
        results[engine] = [cron_job.result["n"], answer["result"]["n"]]
    assert results["nodered"] == results["step"] == [3, 2]
