"""Inbound triggers start jobs on a real Node-RED as on the step engine: an email (Dovecot), an
SMS (a signed JSON provider's request) and a RabbitMQ message each make a job that completes
there, with the same result as on steps."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
import uuid
from email.message import EmailMessage
from typing import Any

import aio_pika
import httpx

from tests.integration.nodered.test_nodered_jobs import ACME, Fluxo, fluxo, workflow
from tests.support.dovecot import PASSWORD, USER, Dovecot, dovecot

__all__ = ["dovecot", "fluxo"]  # the fixtures, used by name

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
STEPS = [
    {"id": "first", "kind": "service", "service": "inc", "next": ["second"]},
    {"id": "second", "kind": "service", "service": "inc"},
]


def trigger(name: str, workflow_name: str, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"workflow": workflow_name, "type": kind, kind: config},
    }


async def last_job(fluxo: Fluxo, name: str) -> str:
    for _ in range(300):
        state = await fluxo.platform.triggers.get(ACME, name)
        if state.last_job_id is not None:
            return state.last_job_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"trigger {name} made no job: {state}")


async def test_email_sms_and_queue_jobs_complete_on_node_red(
    fluxo: Fluxo, dovecot: Dovecot
) -> None:
    from tests.conftest import require_server

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        rabbit = True
    except OSError:
        rabbit = False
    require_server("RabbitMQ", rabbit, "guest/guest on 127.0.0.1:5672")
    assert dovecot.cert is not None
    platform = fluxo.platform
    assert platform.secrets is not None
    await platform.secrets.put("acme", "imap", PASSWORD)
    await platform.secrets.put("acme", "sms-key", "sms-nodered")
    queue = f"fluxo-nr-{uuid.uuid4().hex[:8]}"
    results: dict[str, dict[str, Any]] = {}
    for engine in ("step", "nodered"):
        name = f"count-{engine}"
        await platform.jobs.apply(workflow(name, engine, STEPS), ACME)
        # Email: the mail's payload, counted up twice.
        await platform.resources.apply(
            ACME,
            trigger(
                f"mail-{engine}",
                name,
                "email",
                {
                    "host": "127.0.0.1",
                    "port": dovecot.port,
                    "security": "starttls",
                    "username": USER,
                    "passwordSecret": "imap",
                    "caCertificate": dovecot.cert.cert.read_text(),
                    "subjectFilter": engine,
                },
            ),
        )
        mail = EmailMessage()
        mail["From"] = "grace@example.org"
        mail["To"] = USER
        mail["Subject"] = f"for {engine}"
        mail["Message-ID"] = f"<{engine}@example.org>"
        mail.set_content("hello")
        dovecot.deliver(mail.as_bytes())
        mail_job = await platform.jobs.wait(ACME, await last_job(fluxo, f"mail-{engine}"), 30)
        assert mail_job.status == "succeeded", mail_job.error
        assert mail_job.engine == engine
        await platform.triggers.pause(ACME, f"mail-{engine}")
        # SMS: a signed JSON provider's request.
        await platform.resources.apply(
            ACME, trigger(f"sms-{engine}", name, "sms", {"provider": "json", "secret": "sms-key"})
        )
        body = json.dumps({"id": f"sms-{engine}", "from": "+33600000001", "text": "hi"}).encode()
        stamp = int(time.time())
        mac = hmac.new(b"sms-nodered", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        async with httpx.AsyncClient(base_url=fluxo.url, timeout=60) as client:
            response = await client.post(
                f"/hooks/acme/sms-{engine}/sms",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Fluxo-Timestamp": str(stamp),
                    "X-Fluxo-Signature": f"sha256={mac}",
                },
            )
        assert response.status_code == 202, response.text
        sms_job = await platform.jobs.wait(ACME, response.json()["job_id"], 30)
        assert sms_job.status == "succeeded", sms_job.error
        # Queue: a RabbitMQ message.
        await platform.resources.apply(
            ACME,
            trigger(
                f"queue-{engine}",
                name,
                "queue",
                {"source": "rabbitmq", "host": "127.0.0.1", "queue": f"{queue}-{engine}"},
            ),
        )
        connection = await aio_pika.connect(RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(f"{queue}-{engine}", durable=True)
            await channel.default_exchange.publish(
                aio_pika.Message(body=b'{"order": 5}', message_id="q-1"),
                routing_key=f"{queue}-{engine}",
            )
        queue_job = await platform.jobs.wait(ACME, await last_job(fluxo, f"queue-{engine}"), 30)
        assert queue_job.status == "succeeded", queue_job.error
        assert queue_job.engine == engine
        await platform.resources.delete(ACME, "Trigger", f"queue-{engine}")
        results[engine] = {
            "mail": {k: mail_job.result[k] for k in ("n", "from", "text")},
            "sms": {k: sms_job.result[k] for k in ("n", "from", "text")},
            "queue": {k: queue_job.result[k] for k in ("n", "body")},
        }
    assert results["nodered"] == results["step"]
    assert results["step"]["queue"] == {"n": 2, "body": {"order": 5}}
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        for engine in ("step", "nodered"):
            for name in (f"{queue}-{engine}", f"{queue}-{engine}.dead"):
                await channel.queue_delete(name)
