"""The IMAP mailbox watcher against a real Dovecot on loopback (tests/support/dovecot.py).

New mail arrives while the watcher waits in IDLE, passes the filters, keeps its dedup key across
reconnects, is marked seen or moved only when the caller says so; a killed server shows as
degraded, and mail delivered while it was down is yielded once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from fluxo.control.mailbox import (
    AttachmentInfo,
    MailboxHealth,
    MailboxSettings,
    MailboxWatcher,
    MailMessage,
    MessageKey,
)
from fluxo_core.errors import ConfigError
from fluxo_core.redaction import install_log_redaction
from services.http.policy import HostPolicy
from tests.support.dovecot import PASSWORD, USER, Dovecot, dovecot, dovecot_binary, server_root

__all__ = ["dovecot"]

pytestmark = pytest.mark.timeout(90)


def mail(
    subject: str,
    *,
    sender: str = "Grace Hopper <grace@example.org>",
    text: str = "Please ship SO-1042.",
    html: str | None = None,
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    padding: int = 0,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"Ada <{USER}>"
    message["Cc"] = "ops@example.test"
    message["Subject"] = subject
    message["Date"] = "Sun, 06 Dec 2026 15:04:05 +0000"
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.org>"
    message.set_content(text + ("x" * padding))
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


class Watch:
    """A watcher running in a task: what it yields goes to a queue, its health to a list."""

    def __init__(self, settings: MailboxSettings) -> None:
        self.stored: dict[str, bytes] = {}
        self.health: list[MailboxHealth] = []
        self.changed = asyncio.Event()
        self.watcher = MailboxWatcher(
            settings, on_health=self._on_health, store_attachment=self._store
        )
        self.queue: asyncio.Queue[MailMessage] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for message in self.watcher.messages():
            await self.queue.put(message)

    async def _store(self, key: MessageKey, info: AttachmentInfo, data: bytes) -> str:
        ref = f"att-{key.dedup_key}-{len(self.stored)}"
        self.stored[ref] = data
        return ref

    async def _on_health(self, health: MailboxHealth) -> None:
        self.health.append(health)
        self.changed.set()

    async def state(self, wanted: str, within: float) -> MailboxHealth:
        deadline = time.monotonic() + within
        while not (self.health and self.health[-1].state == wanted):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
        return self.health[-1]

    async def next(self, within: float = 10.0) -> MailMessage:
        return await asyncio.wait_for(self.queue.get(), within)

    async def nothing_more(self, marker: Dovecot, subject: str = "marker") -> None:
        """Deliver a marker and see it come next: nothing else was pending before it."""
        marker.deliver(mail(subject))
        message = await self.next()
        assert message.subject == subject

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.watcher.aclose()


def settings(server: Dovecot, **overrides: Any) -> MailboxSettings:
    assert server.cert is not None

    async def password() -> str:
        return PASSWORD

    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": USER,
        "password": password,
        "security": "starttls",
        "tls_context": server.cert.client_context(),
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "host_policy": HostPolicy(allow=["127.0.0.1"]),  # Dovecot is on loopback
        **overrides,
    }
    return MailboxSettings(**fields)


@pytest.fixture
async def watch(dovecot: Dovecot) -> AsyncIterator[Watch]:
    running = Watch(settings(dovecot))
    await running.state("connected", 15)
    yield running
    await running.stop()


async def test_new_mail_is_yielded_within_seconds_while_idle(
    dovecot: Dovecot, watch: Watch
) -> None:
    assert watch.watcher.health.state == "connected"
    dovecot.deliver(
        mail(
            "Order SO-1042",
            html="<p>Please ship <b>SO-1042</b>.</p>",
            attachments=[
                ("order.csv", "text/csv", b"sku,qty\nKB-1,2\n"),
                ("scan.pdf", "application/pdf", b"%PDF-1.4"),
            ],
        )
    )
    started = time.monotonic()
    message = await watch.next(within=10)
    assert time.monotonic() - started < 10
    assert message.subject == "Order SO-1042"
    assert (message.sender, message.sender_name) == ("grace@example.org", "Grace Hopper")
    assert message.to == (USER,)
    assert message.cc == ("ops@example.test",)
    assert message.date == "2026-12-06T15:04:05+00:00"
    assert message.message_id == "<Order-SO-1042@example.org>"
    assert message.text is not None
    assert message.text.strip() == "Please ship SO-1042."
    assert message.html is not None
    assert "<b>SO-1042</b>" in message.html
    assert [(a.filename, a.content_type, a.size) for a in message.attachments] == [
        ("order.csv", "text/csv", 15),
        ("scan.pdf", "application/pdf", 8),
    ]
    assert [watch.stored[a.ref or ""] for a in message.attachments] == [
        b"sku,qty\nKB-1,2\n",
        b"%PDF-1.4",
    ]
    payload = message.payload()
    assert payload["from"] == "grace@example.org"
    assert payload["attachments"][0]["ref"] == message.attachments[0].ref
    assert payload["uid"] == message.key.uid
    assert payload["uidvalidity"] == message.key.uidvalidity > 0
    # Fetched with BODY.PEEK: reading it did not mark it.
    assert "\\Seen" not in dovecot.flags()[message.key.uid]


async def test_only_mail_that_passes_the_filters_is_yielded(dovecot: Dovecot) -> None:
    running = Watch(settings(dovecot, from_filter="GRACE@", subject_filter="order"))
    try:
        await running.state("connected", 15)
        dovecot.deliver(mail("Newsletter", sender="grace@example.org"))
        dovecot.deliver(mail("Order from Bob", sender="bob@example.org"))
        dovecot.deliver(mail("Re: ORDER SO-7", sender="Grace <grace@example.org>"))
        message = await running.next()
        assert message.subject == "Re: ORDER SO-7"
        with pytest.raises(TimeoutError):
            await running.next(within=1.5)
        # The others stay unseen and untouched: they are simply not this trigger's mail.
        assert all("\\Seen" not in f for f in dovecot.flags().values())
    finally:
        await running.stop()


async def test_the_dedup_key_is_stable_and_mail_is_marked_seen_only_when_told(
    dovecot: Dovecot,
) -> None:
    dovecot.deliver(mail("Order SO-1"))
    first = Watch(settings(dovecot))
    try:
        message = await first.next()
    finally:
        await first.stop()
    assert "\\Seen" not in dovecot.flags()[message.key.uid]

    # Not marked (the caller's job was never committed): it comes back, with the same key.
    second = Watch(settings(dovecot))
    try:
        again = await second.next()
        assert again.key == message.key
        assert again.key.dedup_key == message.key.dedup_key
        assert again.message_id == message.message_id
        await second.watcher.mark_seen(again.key)
        assert "\\Seen" in dovecot.flags()[message.key.uid]
    finally:
        await second.stop()

    third = Watch(settings(dovecot))
    try:
        await third.nothing_more(dovecot)
    finally:
        await third.stop()


async def test_a_message_is_moved_once_its_job_is_committed(dovecot: Dovecot, watch: Watch) -> None:
    dovecot.create_folder("Processed")
    dovecot.deliver(mail("Order SO-2"))
    message = await watch.next()
    await watch.watcher.move(message.key, "Processed")
    assert dovecot.folder_count("Processed") == 1
    assert message.key.uid not in dovecot.flags()
    await watch.nothing_more(dovecot)


async def test_a_killed_server_shows_degraded_and_no_mail_is_missed_after_it_returns(
    dovecot: Dovecot, watch: Watch
) -> None:
    dovecot.deliver(mail("before"))
    assert (await watch.next()).subject == "before"
    dovecot.kill()
    started = time.monotonic()
    degraded = await watch.state("degraded", within=30)
    assert time.monotonic() - started < 30
    assert degraded.error
    dovecot.deliver(mail("while down 1"))
    dovecot.deliver(mail("while down 2"))
    await asyncio.sleep(1.5)  # a few reconnect attempts fail meanwhile; it stays degraded
    assert watch.watcher.health.state == "degraded"
    dovecot.start()
    await watch.state("connected", within=30)
    got = {(await watch.next(within=15)).subject for _ in range(3)}
    # "before" was never marked: it comes back too, with its dedup key, for the caller to skip.
    assert got == {"before", "while down 1", "while down 2"}


async def test_a_silent_connection_shows_degraded_when_idle_goes_unanswered(
    dovecot: Dovecot,
) -> None:
    running = Watch(settings(dovecot, idle_renew_s=1.0, command_timeout_s=1.0))
    try:
        await running.state("connected", 15)
        dovecot.freeze(True)  # no reset, no close: the connection just goes quiet
        try:
            health = await running.state("degraded", within=30)
            assert health.error == "the server did not answer in time"
        finally:
            dovecot.freeze(False)
        await running.state("connected", within=30)
        dovecot.deliver(mail("after the thaw"))
        assert (await running.next(within=15)).subject == "after the thaw"
    finally:
        await running.stop()


async def test_a_server_without_idle_is_polled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioimaplib")
    from tests.conftest import require_server

    binary = dovecot_binary()
    require_server("Dovecot", binary is not None, "install dovecot-imapd (scripts/setup)")
    assert binary is not None
    with server_root(tmp_path) as root:
        server = Dovecot(
            root,
            binary,
            extra_config="protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE\n}\n",
        )
        server.configure()
        server.start()
        running = Watch(settings(server, poll_interval_s=0.3))
        try:
            await running.state("connected", 15)
            server.deliver(mail("polled"))
            assert (await running.next(within=10)).subject == "polled"
            sent = [r.getMessage() for r in caplog.records if "Sending" in r.getMessage()]
            assert any("NOOP" in line for line in sent)
            assert not any("IDLE" in line for line in sent)
        finally:
            await running.stop()
            server.stop()


async def test_parsing_is_bounded(dovecot: Dovecot) -> None:
    running = Watch(
        settings(dovecot, max_message_bytes=20_000, max_attachments=1, max_attachment_bytes=100)
    )
    try:
        await running.state("connected", 15)
        dovecot.deliver(mail("big", padding=50_000))
        dovecot.deliver(
            mail(
                "files",
                attachments=[
                    ("a.bin", "application/octet-stream", b"x" * 500),
                    ("b.txt", "text/plain", b"ok"),
                ],
            )
        )
        big = await running.next()
        assert big.subject == "big"
        assert big.truncated
        assert big.text is None
        assert big.size > 50_000
        files = await running.next()
        assert [(a.filename, a.ref is None, a.skipped) for a in files.attachments] == [
            ("a.bin", True, "over the limit of 100 bytes"),
            ("b.txt", True, "over the limit of 1"),
        ]
        assert running.stored == {}
    finally:
        await running.stop()


async def test_a_wrong_password_is_degraded_naming_the_user_never_the_password(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    install_log_redaction()
    caplog.set_level(logging.DEBUG)

    async def wrong() -> str:
        return "not-" + PASSWORD

    running = Watch(settings(dovecot, password=wrong))
    try:
        health = await running.state("degraded", 15)
        assert health.error is not None
        assert f"refused the login of {USER!r}" in health.error
    finally:
        await running.stop()
    good = Watch(settings(dovecot))
    try:
        await good.state("connected", 15)
    finally:
        await good.stop()
    assert PASSWORD not in caplog.text


def test_a_password_in_clear_is_refused_off_loopback() -> None:
    async def password() -> str:
        return PASSWORD

    with pytest.raises(ConfigError) as info:
        MailboxSettings(
            host="imap.example.com", port=143, username=USER, password=password, security="none"
        )
    assert "security none would send the password in clear" in info.value.message
    assert PASSWORD not in repr(
        MailboxSettings(host="::1", port=143, username=USER, password=password, security="none")
    )


async def test_tls_from_the_start_and_a_certificate_it_does_not_trust(dovecot: Dovecot) -> None:
    running = Watch(settings(dovecot, security="tls", port=dovecot.tls_port))
    try:
        await running.state("connected", 15)
        dovecot.deliver(mail("over tls"))
        assert (await running.next()).subject == "over tls"
    finally:
        await running.stop()
    import ssl

    untrusted = Watch(settings(dovecot, tls_context=ssl.create_default_context()))
    try:
        health = await untrusted.state("degraded", 15)
        assert health.error is not None
        assert "CERTIFICATE_VERIFY_FAILED" in health.error
    finally:
        await untrusted.stop()
