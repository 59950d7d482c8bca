"""Queue and email triggers on a real ``fluxo up``, killed with SIGKILL while it consumes: every
message has exactly one job afterwards, none lost (unacknowledged ones come back from the broker
or the mailbox) and none doubled (the event id of a repeat gives the first job)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import sqlalchemy as sa

from fluxo_core.storage.tables import jobs
from tests.integration.test_server_crash import wait_until
from tests.integration.test_triggers_server import Server
from tests.support.dovecot import PASSWORD, USER, Dovecot, dovecot

__all__ = ["dovecot"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
ECHO = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "take"},
    "spec": {"engine": "step", "steps": [{"id": "take", "kind": "service", "service": "echo"}]},
}


def rabbit_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


def trigger_jobs(database_url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs.c.idempotency_key, jobs.c.status).where(
                    jobs.c.idempotency_key.like("trigger:%")
                )
            ).all()
    finally:
        engine.dispose()
    return [(r.idempotency_key, r.status) for r in rows]


def sigkill(server: Server) -> None:
    server.proc.kill()
    server.proc.wait(10)
    if server.proc.stdout is not None:
        server.proc.stdout.close()


def setup(server: Server, home: Path, secret: tuple[str, str], trigger: dict[str, Any]) -> None:
    token = (home / "admin.token").read_text().strip()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        assert http.post("/v1/workflows", json=ECHO).status_code == 201
        put = http.put(f"/v1/secrets/{secret[0]}", json={"value": secret[1]})
        assert put.status_code == 201, put.text
        applied = http.post("/v1/apply", json={"documents": [trigger]})
        assert applied.status_code == 200, applied.text


async def _publish(queue: str, count: int) -> None:
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for i in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=json.dumps({"n": i}).encode(),
                    message_id=f"m-{i}",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )


async def _depth(queue: str, delete: bool = False) -> int:
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        count = int(declared.declaration_result.message_count or 0)
        if delete:
            await channel.queue_delete(queue)
            await channel.queue_delete(f"{queue}.dead")
        return count


def test_a_sigkill_while_consuming_rabbitmq_loses_and_doubles_nothing(tmp_path: Path) -> None:
    from tests.conftest import require_server

    require_server("RabbitMQ", rabbit_reachable(), "guest/guest on 127.0.0.1:5672")
    queue = f"fluxo-kill-{uuid.uuid4().hex[:8]}"
    total = 300
    asyncio.run(_publish(queue, total))
    home = tmp_path / "home"
    home.mkdir()
    database_url = f"sqlite:///{tmp_path}/fluxo.db"
    trigger = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "orders"},
        "spec": {
            "workflow": "take",
            "type": "queue",
            "queue": {
                "source": "rabbitmq",
                "host": "127.0.0.1",
                "username": "guest",
                "passwordSecret": "rabbit",
                "queue": queue,
            },
        },
    }
    server = Server(home, database_url)
    try:
        setup(server, home, ("rabbit", "guest"), trigger)
        wait_until(lambda: len(trigger_jobs(database_url)) >= 40, 60, "the first jobs")
        sigkill(server)  # with messages delivered and not yet acknowledged
        before = len(trigger_jobs(database_url))
        assert before < total, "the whole queue was consumed before the kill: kill sooner"
        assert asyncio.run(_depth(queue)) > 0  # the unacknowledged ones are back
        server = Server(home, database_url)
        wait_until(lambda: len(trigger_jobs(database_url)) >= total, 90, "every message's job")
        wait_until(lambda: asyncio.run(_depth(queue)) == 0, 30, "the queue to drain")
        wait_until(
            lambda: all(s == "succeeded" for _, s in trigger_jobs(database_url)),
            60,
            "every job to succeed",
        )
        keys = [k for k, _ in trigger_jobs(database_url)]
        assert len(keys) == total
        assert sorted(keys) == sorted(f"trigger:orders:id:m-{i}" for i in range(total))
    finally:
        server.stop()
        asyncio.run(_depth(queue, delete=True))


def test_a_sigkill_while_reading_mail_loses_and_doubles_nothing(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    from email.message import EmailMessage

    assert dovecot.cert is not None
    total = 40
    for i in range(total):
        message = EmailMessage()
        message["From"] = "grace@example.org"
        message["To"] = USER
        message["Subject"] = f"Order {i}"
        message["Message-ID"] = f"<order-{i}@example.org>"
        message.set_content(f"order {i}")
        dovecot.deliver(message.as_bytes())
    home = tmp_path / "home"
    home.mkdir()
    database_url = f"sqlite:///{tmp_path}/fluxo.db"
    trigger = {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "inbox"},
        "spec": {
            "workflow": "take",
            "type": "email",
            "email": {
                "host": "127.0.0.1",
                "port": dovecot.port,
                "security": "starttls",
                "username": USER,
                "passwordSecret": "imap",
                "caCertificate": dovecot.cert.cert.read_text(),
            },
        },
    }
    server = Server(home, database_url)
    try:
        setup(server, home, ("imap", PASSWORD), trigger)
        wait_until(lambda: len(trigger_jobs(database_url)) >= 5, 60, "the first jobs")
        sigkill(server)  # between jobs committed and mail marked seen
        server = Server(home, database_url)
        wait_until(lambda: len(trigger_jobs(database_url)) >= total, 120, "every mail's job")

        def all_seen() -> bool:
            try:
                flags = dovecot.flags()
            except IndexError:
                return False
            return len(flags) == total and all("\\Seen" in f for f in flags.values())

        wait_until(all_seen, 60, "every mail marked seen")
        keys = [k for k, _ in trigger_jobs(database_url)]
        assert sorted(keys) == sorted(
            f"trigger:inbox:mid:<order-{i}@example.org>" for i in range(total)
        )
    finally:
        server.stop()
