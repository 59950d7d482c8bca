"""Triggers on real ``fluxo up`` servers: cron with two servers on one database (SQLite file and
PostgreSQL) fires each slot once, across the restart of one and the downtime of both; a signed
webhook makes one job per delivery; ``fluxo triggers`` drives them from the command line."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fluxo.control.triggers.webhook import sign
from fluxo_core.storage import Database
from fluxo_core.storage.tables import jobs
from tests.integration.test_server_crash import start_server, wait_until
from tests.support.fluxo_process import free_port, run_fluxo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WORKFLOW = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "count-up"},
    "spec": {"engine": "step", "steps": [{"id": "up", "kind": "service", "service": "inc"}]},
}


def trigger(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"workflow": "count-up", **spec},
    }


class Server:
    def __init__(self, home: Path, database_url: str) -> None:
        self.port = free_port()
        self.proc = start_server(
            home,
            self.port,
            database_url,
            home / "effects.log",
            FLUXO_TRIGGER_TICK_S="0.2",
            # The test mailbox and brokers are on loopback, which triggers may not reach unless
            # the operator allows it.
            FLUXO_HTTP_ALLOW="127.0.0.1",
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def test_cron_fires_each_slot_once_with_two_servers_across_restarts(
    tmp_path: Path, database_url: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    first = Server(home, database_url)
    servers = [first]
    try:
        token = (home / "admin.token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=first.url, headers=auth, timeout=30) as http:
            assert http.post("/v1/workflows", json=WORKFLOW).status_code == 201
            every_second = trigger(
                "tick",
                {
                    "type": "cron",
                    "schedule": "* * * * * *",  # croniter's sixth field: seconds
                    "input": {"n": 1},
                    "cron": {"catchUp": "all", "maxCatchUp": 100},
                },
            )
            applied = http.post("/v1/apply", json={"documents": [every_second]})
            assert applied.status_code == 200, applied.text
        second = Server(home, database_url)
        servers.append(second)
        time.sleep(3)  # both schedulers run
        first.stop()  # one restarts while the other runs on
        time.sleep(1.5)
        first = Server(home, database_url)
        servers.append(first)
        time.sleep(2)
        first.stop()
        second.stop()  # both down: the slots of these two seconds are made up after
        time.sleep(2)
        restarted = Server(home, database_url)
        servers.append(restarted)
        back = time.time()
        with httpx.Client(base_url=restarted.url, headers=auth, timeout=30) as http:

            def caught_up() -> bool:
                state = http.get("/v1/triggers/tick").json()
                return bool(state["lastEventAt"] and state["lastEventAt"] > back + 1)

            wait_until(caught_up, 30, "the restarted server to fire new slots")
            http.post("/v1/triggers/tick/pause").raise_for_status()
            state = http.get("/v1/triggers/tick").json()
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.stop()
    db = Database(database_url)
    try:
        query = sa.select(jobs.c.idempotency_key, jobs.c.status).where(
            jobs.c.workflow == "count-up"
        )
        rows = await db.read(lambda conn: conn.execute(query).all())
    finally:
        await db.close()
    # Keys are trigger:<name>:<slot>, the slot an RFC 3339 time.
    slots = sorted(
        datetime.fromisoformat(r.idempotency_key.split(":", 2)[2]).timestamp() for r in rows
    )
    assert len(slots) >= 8
    # One job per slot, and no slot between the first and the last without its job.
    assert len(set(slots)) == len(slots)
    gaps = [b - a for a, b in itertools.pairwise(slots) if b - a != 1]
    assert gaps == [], f"slots without a job: {gaps}"
    assert state["jobsCreated"] == len(slots)
    assert {r.status for r in rows} <= {"succeeded", "running", "queued"}


def test_webhooks_and_the_triggers_commands_on_a_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = Server(home, f"sqlite:///{tmp_path}/fluxo.db")
    try:
        token = (home / "admin.token").read_text().strip()
        env = {"FLUXO_URL": server.url, "FLUXO_TOKEN": token}

        def fluxo(*args: str, code: int = 0) -> str:
            result = run_fluxo(*args, home=home, **env)
            assert result.returncode == code, result.stderr
            return result.stdout + result.stderr

        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            assert http.post("/v1/workflows", json=WORKFLOW).status_code == 201
            put = http.put("/v1/secrets/orders-key", json={"value": "whsec-server"})
            assert put.status_code == 201, put.text
            hook = trigger("orders", {"type": "webhook", "webhook": {"secret": "orders-key"}})
            assert http.post("/v1/apply", json={"documents": [hook]}).status_code == 200

        def deliver(
            body: bytes, *, secret: str = "whsec-server", query: str = ""
        ) -> httpx.Response:
            stamp = int(time.time())
            return httpx.post(
                f"{server.url}/hooks/default/orders{query}",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Fluxo-Timestamp": str(stamp),
                    "X-Fluxo-Signature": sign(secret, stamp, body),
                    "X-Fluxo-Delivery": "order-1001",
                },
                timeout=30,
            )

        body = json.dumps({"order": 1001}).encode()
        first = deliver(body, query="?wait=20")
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "succeeded"
        again = [deliver(body) for _ in range(2)]
        assert {r.status_code for r in again} == {202}
        assert {r.json()["job_id"] for r in again} == {first.json()["job_id"]}
        assert deliver(body, secret="guess").status_code == 401

        listed = fluxo("triggers", "list")
        assert "orders" in listed
        assert "webhook" in listed
        described = fluxo("triggers", "describe", "orders")
        assert "Jobs created:  1" in described
        assert "pause" in fluxo("triggers", "pause", "orders", "--json")
        held = deliver(json.dumps({"order": 1002}).encode())
        assert held.status_code == 423
        assert "fluxo triggers resume orders" in held.json()["error"]["message"]
        fluxo("triggers", "resume", "orders")
        fired = [
            json.loads(fluxo("triggers", "fire", "orders", "--event-id", "x-1", "--json"))
            for _ in range(2)
        ]
        assert fired[0]["job_id"] == fired[1]["job_id"]
        assert [f["duplicate"] for f in fired] == [False, True]
        missing = fluxo("triggers", "describe", "nothing", code=1)
        assert "fluxo triggers list" in missing
    finally:
        server.stop()


def test_a_sigkill_between_receiving_and_answering_loses_no_webhook(tmp_path: Path) -> None:
    """Deliveries in flight when the server is killed: each one answered 202 has its job; a
    sender retrying every delivery after the restart gets one job per delivery, never two."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{tmp_path}/fluxo.db"
    server = Server(home, url)
    deliveries = [f"crash-{n}" for n in range(400)]
    answered: dict[str, str] = {}
    try:
        token = (home / "admin.token").read_text().strip()
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            assert http.post("/v1/workflows", json=WORKFLOW).status_code == 201
            assert http.put("/v1/secrets/k", json={"value": "whsec-crash"}).status_code == 201
            hook = trigger("orders", {"type": "webhook", "webhook": {"secret": "k"}})
            assert http.post("/v1/apply", json={"documents": [hook]}).status_code == 200

        async def send_all(base: str, ids: list[str], kill_after: int | None) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:

                async def one(delivery: str) -> None:
                    body = json.dumps({"delivery": delivery}).encode()
                    stamp = int(time.time())
                    try:
                        response = await client.post(
                            "/hooks/default/orders",
                            content=body,
                            headers={
                                "Content-Type": "application/json",
                                "X-Fluxo-Timestamp": str(stamp),
                                "X-Fluxo-Signature": sign("whsec-crash", stamp, body),
                                "X-Fluxo-Delivery": delivery,
                            },
                        )
                    except httpx.HTTPError:
                        return  # the server died before answering: the sender retries
                    if response.status_code == 202:
                        answered.setdefault(delivery, response.json()["job_id"])

                tasks = [asyncio.create_task(one(d)) for d in ids]
                if kill_after is not None:
                    while len(answered) < kill_after:
                        await asyncio.sleep(0.005)
                    server.proc.kill()  # SIGKILL, with requests still in flight
                await asyncio.gather(*tasks)

        asyncio.run(send_all(server.url, deliveries, kill_after=100))
        server.proc.wait(10)
        if server.proc.stdout is not None:
            server.proc.stdout.close()
        before_restart = dict(answered)
        assert 100 <= len(before_restart) < len(deliveries)
        server = Server(home, url)
        asyncio.run(send_all(server.url, deliveries, kill_after=None))  # the sender retries all
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            state = http.get("/v1/triggers/orders").json()
    finally:
        if server.proc.poll() is None:
            server.stop()
    # Every delivery answered before the kill kept its job (the retry got the same one).
    assert all(answered[d] == job for d, job in before_restart.items())
    assert sorted(answered) == sorted(deliveries)
    assert len(set(answered.values())) == len(deliveries)
    db = Database(url)
    try:
        query = sa.select(jobs.c.idempotency_key).where(jobs.c.workflow == "count-up")
        keys = asyncio.run(_keys(db, query))
    finally:
        asyncio.run(db.close())
    assert sorted(keys) == sorted(f"trigger:orders:d:{d}" for d in deliveries)
    assert state["jobsCreated"] == len(deliveries)


async def _keys(db: Database, query: Any) -> list[str]:
    rows = await db.read(lambda conn: conn.execute(query).all())
    return [r.idempotency_key for r in rows]
