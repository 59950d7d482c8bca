"""Email triggers against a real Dovecot (tests/support/dovecot.py), on SQLite and PostgreSQL.

A mail becomes one job that completes on the step engine, with its attachments stored and
fetched by reference within the account; the message is marked seen (or moved) only after its
job is committed; the same message delivered three times makes one job; a Fluxo that stops
between committing a mail's job and marking it loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxo.api import create_app
from fluxo.control.mailbox import MailboxWatcher, MailMessage
from fluxo.control.platform import Platform
from fluxo.control.triggers.email import EmailSource, MailAttachments, email_sources
from fluxo.control.triggers.source import SourceFactory
from fluxo_core.errors import NotFoundError, PayloadTooLargeError
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.accounts import AccountStore
from fluxo_core.storage.attachments import AttachmentStore
from fluxo_core.storage.secrets import SecretKey, SecretStore
from fluxo_core.storage.triggers import TriggerRow
from services.http.policy import HostPolicy
from tests.integration.test_mailbox import mail
from tests.support import services as svc
from tests.support.dovecot import PASSWORD, USER, Dovecot, dovecot

__all__ = ["dovecot"]

pytestmark = pytest.mark.timeout(120)

ACME = Principal(account_id="acme", user_id="ada")
GLOBEX = Principal(account_id="globex", user_id="gus")
# Dovecot is on loopback, which triggers reach only when the operator allows it.
LOOPBACK = HostPolicy(allow=["127.0.0.1"])
KEY = SecretKey.parse("a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=", "test key")

ECHO = {
    "apiVersion": "fluxo.dev/v1",
    "kind": "Workflow",
    "metadata": {"name": "read-mail"},
    "spec": {"engine": "step", "steps": [{"id": "read", "kind": "service", "service": "echo"}]},
}


def email_trigger(server: Dovecot, name: str = "inbox", **email: Any) -> dict[str, Any]:
    assert server.cert is not None
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {
            "workflow": "read-mail",
            "type": "email",
            "email": {
                "host": "127.0.0.1",
                "port": server.port,
                "security": "starttls",
                "username": USER,
                "passwordSecret": "imap-password",
                "caCertificate": server.cert.cert.read_text(),
                "pollIntervalS": 1,
                **email,
            },
        },
    }


def fast_sources(db: Database, secrets: SecretStore) -> dict[str, SourceFactory]:
    return email_sources(
        secrets, AttachmentStore(db), policy=LOOPBACK, reconnect_min_s=0.2, reconnect_max_s=1.0
    )


def platform_on(
    db: Database, secrets: SecretStore, sources: dict[str, SourceFactory] | None = None
) -> Platform:
    return Platform(
        db,
        svc.SERVICES,
        workers=2,
        poll_interval_s=0.1,
        admission_cache_s=0,
        secrets=secrets,
        trigger_tick_s=0.2,
        trigger_sources=sources if sources is not None else fast_sources(db, secrets),
        host_policy=LOOPBACK,
    )


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {value!r}")
        await asyncio.sleep(0.1)


async def trigger_jobs(platform: Platform, who: Principal = ACME) -> list[Any]:
    page = await platform.jobs.list(who)
    return [j for j in page.items if j.user_id.startswith("trigger:")]


def seen(server: Dovecot) -> list[bool] | None:
    """Whether each message of INBOX is seen, in order (None: the folder is changing under the
    read, e.g. a message arriving; the caller asks again)."""
    try:
        return ["\\Seen" in flags for _, flags in sorted(server.flags().items())]
    except IndexError:
        return None


@pytest.fixture
async def secrets(db: Database) -> SecretStore:
    store = SecretStore(db, KEY)
    await AccountStore(db).ensure_account("acme")
    await store.put("acme", "imap-password", PASSWORD)
    return store


@pytest.fixture
async def platform(db: Database, secrets: SecretStore) -> AsyncIterator[Platform]:
    running = platform_on(db, secrets)
    for account in ("acme", "globex"):
        await running.accounts.ensure_account(account)
    async with running:
        await running.jobs.apply(ECHO, ACME)
        await running.jobs.apply(ECHO, GLOBEX)
        yield running


async def test_a_mail_makes_one_job_that_completes_and_is_then_marked_seen(
    dovecot: Dovecot, platform: Platform
) -> None:
    applied = await platform.resources.apply(ACME, email_trigger(dovecot))
    assert applied.document["status"]["conditions"][0]["status"] == "True"
    await eventually(
        lambda: _health(platform, "connected"), within=15
    )  # watching before the mail arrives: IDLE announces it
    dovecot.deliver(
        mail("Order SO-77", attachments=[("order.csv", "text/csv", b"sku,qty\nKB-1,2\n")])
    )
    jobs = await eventually(lambda: trigger_jobs(platform))
    assert len(jobs) == 1
    job = await platform.jobs.wait(ACME, jobs[0].id, 20)
    assert job.status == "succeeded"
    assert job.idempotency_key == "trigger:inbox:mid:<Order-SO-77@example.org>"
    result = job.result
    assert (result["from"], result["subject"], result["to"]) == (
        "grace@example.org",
        "Order SO-77",
        [USER],
    )
    assert result["text"].strip() == "Please ship SO-1042."
    [attachment] = result["attachments"]
    assert (attachment["filename"], attachment["size"]) == ("order.csv", 15)
    assert attachment["ref"].startswith("att_")
    await eventually(lambda: asyncio.to_thread(lambda: seen(dovecot) == [True]))
    state = await platform.triggers.get(ACME, "inbox")
    assert (state.jobs_created, state.health, state.last_error) == (1, "connected", None)

    # The attachment, by its reference, for this account only.
    async with TestClient(TestServer(create_app(platform, max_packet_bytes=65536))) as http:
        acme = {"Authorization": f"Bearer {await platform.accounts.issue_token('acme', 'ada')}"}
        globex = {"Authorization": f"Bearer {await platform.accounts.issue_token('globex', 'gus')}"}
        path = f"/v1/triggers/inbox/attachments/{attachment['ref']}"
        fetched = await http.get(path, headers=acme)
        assert fetched.status == 200
        assert await fetched.read() == b"sku,qty\nKB-1,2\n"
        assert fetched.headers["X-Fluxo-Content-Type"] == "text/csv"
        assert fetched.headers["Content-Disposition"] == 'attachment; filename="order.csv"'
        assert (await http.get(path, headers=globex)).status == 404
        assert (await http.get(path)).status == 401
        wrong = await http.get("/v1/triggers/inbox/attachments/att_0000", headers=acme)
        assert wrong.status == 404

    # What email-send reads to forward it: the same bytes, within the account and its budget.
    forwarded = MailAttachments(platform.attachments)
    stored = await forwarded.read_attachment("acme", attachment["ref"], max_bytes=1024)
    assert (stored.filename, stored.content_type, stored.data) == (
        "order.csv",
        "text/csv",
        b"sku,qty\nKB-1,2\n",
    )
    with pytest.raises(NotFoundError):
        await forwarded.read_attachment("globex", attachment["ref"], max_bytes=1024)
    with pytest.raises(PayloadTooLargeError):
        await forwarded.read_attachment("acme", attachment["ref"], max_bytes=10)
    # Deleting the trigger deletes what it stored.
    await platform.resources.delete(ACME, "Trigger", "inbox")
    with pytest.raises(NotFoundError):
        await forwarded.read_attachment("acme", attachment["ref"], max_bytes=1024)


async def _health(platform: Platform, wanted: str) -> bool:
    return (await platform.triggers.get(ACME, "inbox")).health == wanted


async def test_the_same_message_delivered_three_times_makes_one_job(
    dovecot: Dovecot, platform: Platform
) -> None:
    await platform.resources.apply(ACME, email_trigger(dovecot))
    for _ in range(3):
        dovecot.deliver(mail("Invoice 9"))
    await eventually(lambda: asyncio.to_thread(lambda: seen(dovecot) == [True, True, True]))
    jobs = await trigger_jobs(platform)
    assert len(jobs) == 1
    assert (await platform.jobs.wait(ACME, jobs[0].id, 20)).status == "succeeded"
    assert (await platform.triggers.get(ACME, "inbox")).jobs_created == 1


async def test_filters_and_move_after_the_job(dovecot: Dovecot, platform: Platform) -> None:
    dovecot.create_folder("Done")
    await platform.resources.apply(
        ACME, email_trigger(dovecot, subjectFilter="order", after="move:Done")
    )
    dovecot.deliver(mail("Newsletter"))
    dovecot.deliver(mail("Order 5"))
    await eventually(lambda: asyncio.to_thread(lambda: dovecot.folder_count("Done") == 1))
    jobs = await trigger_jobs(platform)
    assert [(await platform.jobs.wait(ACME, j.id, 20)).result["subject"] for j in jobs] == [
        "Order 5"
    ]
    assert seen(dovecot) == [False]  # the newsletter stays, unread, in INBOX


class _StopsBeforeMarking(EmailSource):
    """A Fluxo that dies after the job is committed and before the mail is marked."""

    committed: asyncio.Event

    async def _done(self, watcher: MailboxWatcher, message: MailMessage) -> None:
        type(self).committed.set()
        await asyncio.Event().wait()  # never marks: the process is gone


async def test_stopping_between_the_job_and_the_mark_loses_and_doubles_nothing(
    dovecot: Dovecot, db: Database, secrets: SecretStore
) -> None:
    _StopsBeforeMarking.committed = asyncio.Event()
    attachments = AttachmentStore(db)

    def stopping(row: TriggerRow) -> EmailSource:
        return _StopsBeforeMarking(row, secrets, attachments, policy=LOOPBACK, reconnect_min_s=0.2)

    first = platform_on(db, secrets, {"email": stopping})
    await first.accounts.ensure_account("acme")
    async with first:
        await first.jobs.apply(ECHO, ACME)
        await first.resources.apply(ACME, email_trigger(dovecot))
        dovecot.deliver(mail("Refund 3"))
        await asyncio.wait_for(_StopsBeforeMarking.committed.wait(), 20)
        assert len(await trigger_jobs(first)) == 1
    assert seen(dovecot) == [False]  # not marked: it will be offered again

    second = platform_on(db, secrets)
    async with second:
        await eventually(lambda: asyncio.to_thread(lambda: seen(dovecot) == [True]))
        jobs = await trigger_jobs(second)
        assert len(jobs) == 1
        assert (await second.jobs.wait(ACME, jobs[0].id, 20)).status == "succeeded"


async def test_a_lost_server_shows_degraded_then_no_mail_is_missed(
    dovecot: Dovecot, platform: Platform
) -> None:
    await platform.resources.apply(ACME, email_trigger(dovecot))
    await eventually(lambda: _health(platform, "connected"), within=15)
    dovecot.kill()
    await eventually(lambda: _health(platform, "degraded"), within=30)
    state = await platform.triggers.get(ACME, "inbox")
    assert state.last_error
    assert PASSWORD not in state.last_error
    dovecot.deliver(mail("While away"))  # delivered while the server is down
    dovecot.start()
    jobs = await eventually(lambda: trigger_jobs(platform), within=30)
    assert [(await platform.jobs.wait(ACME, j.id, 20)).result["subject"] for j in jobs] == [
        "While away"
    ]
    await eventually(lambda: _health(platform, "connected"), within=15)


async def test_a_missing_password_secret_is_reported_on_the_trigger(
    dovecot: Dovecot, platform: Platform
) -> None:
    document = email_trigger(dovecot)
    document["spec"]["email"]["passwordSecret"] = "not-set"
    await platform.resources.apply(ACME, document)

    async def failing() -> str | None:
        state = await platform.triggers.get(ACME, "inbox")
        return state.last_error if state.health != "connected" else None

    error = await eventually(failing, within=15)
    assert "not-set" in error
    with contextlib.suppress(Exception):
        await platform.resources.delete(ACME, "Trigger", "inbox")
