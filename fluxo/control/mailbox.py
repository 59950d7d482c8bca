"""The IMAP mailbox watcher the email trigger reads new mail with.

:class:`MailboxWatcher` keeps one IMAP connection to a folder and yields each new message that
passes the filters as a parsed :class:`MailMessage`, with its dedup key (UIDVALIDITY and UID) and
Message-ID. It never marks anything by itself: the caller commits the job a message starts,
and only then calls :meth:`MailboxWatcher.mark_seen` or :meth:`MailboxWatcher.move` (on a second
connection, so the watching one stays in IDLE). A message that is yielded and neither marked nor
moved comes back after the next reconnect, and the dedup key tells the caller it is a repeat. So a
crash between receiving and committing loses no mail, and a repeat makes no second job.

New mail is "unseen mail in the folder": after a restart or a lost connection the watcher
searches the folder again, so mail delivered while it was away is yielded as soon as it is back.
It waits with IDLE (RFC 2177), renewed every ``idle_renew_s``, and polls every
``poll_interval_s`` on a server without IDLE. A connection that drops is noticed at once; one
that goes silent (a cut network, a frozen server) when the renewal goes unanswered for
``command_timeout_s``: with the defaults, within 25 seconds. Lost connections are retried with exponential
backoff (``reconnect_min_s`` doubling to ``reconnect_max_s``, with jitter); the health callback
hears ``connected`` on each connection made and ``degraded``, with the error, on each failure.

Bounded: a message over ``max_message_bytes`` is not downloaded (its headers are, and it is
yielded with ``truncated`` set); at most ``max_attachments`` attachments of at most
``max_attachment_bytes`` each are stored (the others are listed with the reason they were
skipped); large messages are parsed off the event loop.

The password is read from ``settings.password`` (an async callable, e.g. a stored secret's
reveal) at each connection, so a rotated secret is used from the next reconnect; it is never
logged (aioimaplib's debug log of LOGIN is blanked) nor put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal

import aioimaplib

from fluxo.control.hosts import connect_address
from fluxo_core.errors import ConfigError, FluxoError, ServiceError
from fluxo_core.redaction import hidden_from_logs

if TYPE_CHECKING:
    from services.http.policy import HostPolicy

__all__ = [
    "AttachmentInfo",
    "MailMessage",
    "MailboxError",
    "MailboxHealth",
    "MailboxSettings",
    "MailboxWatcher",
    "MessageKey",
]

log = logging.getLogger(__name__)

Security = Literal["tls", "starttls", "none"]
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_FOLDER = re.compile(r"^[\x20-\x7e]{1,200}$")
_PARSE_OFF_LOOP_BYTES = 256 * 1024
_FETCH_HEAD = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailboxError(FluxoError):
    """The IMAP server refused a command, or the connection failed or timed out."""

    http_status = 502
    code = "mailbox_failed"
    default_retryable = True


@dataclass(frozen=True)
class MailboxSettings:
    """Where and how to watch.

    Attributes:
        host, port: the IMAP server (993 for ``tls``, 143 for ``starttls``).
        username: the login.
        password: an async callable giving the password (read at each connection).
        security: ``tls`` (TLS from the start), ``starttls`` (upgraded before the login; refused
            if the server does not offer it) or ``none`` (loopback hosts only).
        folder: the folder to watch (printable ASCII).
        from_filter, subject_filter: only messages whose From (name or address) or Subject
            contains this text, case-insensitively.
        tls_context: how the server's certificate is checked (default: the system's CAs).
        host_policy: which hosts may be reached (the platform's ``FLUXO_HTTP_ALLOW`` and
            ``FLUXO_HTTP_DENY``), checked at every connection; the default refuses internal
            addresses (loopback, private, link-local).
    """

    host: str
    port: int
    username: str
    password: Callable[[], Awaitable[str]] = field(repr=False)
    security: Security = "tls"
    folder: str = "INBOX"
    from_filter: str | None = None
    subject_filter: str | None = None
    poll_interval_s: float = 30.0
    idle_renew_s: float = 15.0
    command_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_message_bytes: int = 25 * 1024 * 1024
    max_attachments: int = 20
    max_attachment_bytes: int = 10 * 1024 * 1024
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)
    host_policy: HostPolicy = field(default_factory=lambda: _strict_policy(), repr=False)

    def __post_init__(self) -> None:
        if self.security not in ("tls", "starttls", "none"):
            raise ConfigError(
                f"mailbox security {self.security!r} is not one of tls, starttls, none",
                setting="security",
            )
        if self.security == "none" and not _is_loopback(self.host):
            raise ConfigError(
                f"mailbox {self.host}: security none would send the password in clear; use tls "
                "(port 993) or starttls (port 143); none is allowed on loopback only",
                setting="security",
            )
        if not _FOLDER.match(self.folder) or '"' in self.folder or "\\" in self.folder:
            raise ConfigError(
                f"mailbox folder {self.folder!r} must be printable ASCII without quotes or "
                "backslashes",
                setting="folder",
            )
        for name in ("from_filter", "subject_filter"):
            value = getattr(self, name)
            if value is not None and (not value or any(c in value for c in '\r\n"\\')):
                raise ConfigError(
                    f"mailbox {name} must be non-empty text without line breaks, quotes or "
                    "backslashes",
                    setting=name,
                )
        for name in (
            "poll_interval_s",
            "idle_renew_s",
            "command_timeout_s",
            "reconnect_min_s",
            "reconnect_max_s",
            "max_message_bytes",
            "max_attachment_bytes",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"mailbox {name} must be above zero", setting=name)


@dataclass(frozen=True)
class MessageKey:
    """Where a message is, for good: the folder's UIDVALIDITY and the message's UID."""

    folder: str
    uidvalidity: int
    uid: int

    @property
    def dedup_key(self) -> str:
        """Stable for as long as the message exists in the folder (RFC 3501 2.3.1.1)."""
        return f"{self.uidvalidity}:{self.uid}"


@dataclass(frozen=True)
class AttachmentInfo:
    """An attachment as a job sees it: ``ref`` is what the store answered; ``skipped`` says
    why it was not stored (over a limit), and then ``ref`` is None."""

    filename: str
    content_type: str
    size: int
    ref: str | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class MailMessage:
    """One new message, parsed."""

    key: MessageKey
    message_id: str | None
    sender: str
    sender_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: str | None
    text: str | None
    html: str | None
    attachments: tuple[AttachmentInfo, ...]
    size: int
    truncated: bool

    def payload(self) -> dict[str, Any]:
        """The job payload of this message."""
        return {
            "from": self.sender,
            "from_name": self.sender_name,
            "to": list(self.to),
            "cc": list(self.cc),
            "subject": self.subject,
            "date": self.date,
            "text": self.text,
            "html": self.html,
            "attachments": [
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "ref": a.ref,
                    **({"skipped": a.skipped} if a.skipped else {}),
                }
                for a in self.attachments
            ],
            "message_id": self.message_id,
            "folder": self.key.folder,
            "uidvalidity": self.key.uidvalidity,
            "uid": self.key.uid,
            "size": self.size,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class MailboxHealth:
    state: Literal["connecting", "connected", "degraded"]
    error: str | None
    since: float


StoreAttachment = Callable[[MessageKey, AttachmentInfo, bytes], Awaitable[str]]
"""Stores one attachment's bytes; answers the reference a job fetches it by."""
HealthCallback = Callable[[MailboxHealth], Awaitable[None]]


class _ConnectionLostError(Exception):
    """The connection closed under us."""


class _Connection:
    """One logged-in IMAP connection with a folder selected."""

    def __init__(
        self, client: aioimaplib.IMAP4, lost: asyncio.Event, uidvalidity: int, timeout_s: float
    ) -> None:
        self.client = client
        self.lost = lost
        self.uidvalidity = uidvalidity
        self.timeout_s = timeout_s
        self.plain_transport: asyncio.Transport | None = None

    async def run(self, command: Awaitable[Any]) -> Any:
        """The command's answer; _ConnectionLostError as soon as the connection drops, TimeoutError after the
        command timeout. aioimaplib leaves a command whose connection dropped waiting forever,
        and some (IDLE) have no timeout of their own."""
        return await _unless_lost(asyncio.wait_for(command, self.timeout_s), self)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if not self.lost.is_set():
                await asyncio.wait_for(self.client.logout(), 2.0)
        # Aborted, not closed: after LOGOUT (or a dropped connection) there is nothing left to
        # say, and a TLS transport's close waits for a shutdown handshake that a dead server
        # never answers, keeping the socket open. The plain transport under STARTTLS goes too.
        for transport in (self.client.protocol.transport, self.plain_transport):
            if transport is not None and not transport.is_closing():
                transport.abort()


class MailboxWatcher:
    """Watches one IMAP folder (see the module docstring).

    Args:
        settings: the server, login, folder, filters and limits.
        on_health: hears each change of health (connected, degraded with the error).
        store_attachment: stores each attachment's bytes and answers its reference; without
            it attachments are listed with ``skipped`` and no bytes are kept. An error it raises
            ends :meth:`messages` (the message stays unseen and comes back on the next run).
    """

    def __init__(
        self,
        settings: MailboxSettings,
        *,
        on_health: HealthCallback | None = None,
        store_attachment: StoreAttachment | None = None,
    ) -> None:
        self.settings = settings
        self._on_health = on_health
        self._store = store_attachment
        self._health = MailboxHealth("connecting", None, time.time())
        self._pending: set[MessageKey] = set()
        self._commands: _Connection | None = None
        self._commands_lock = asyncio.Lock()
        self._closed = False

    @property
    def health(self) -> MailboxHealth:
        return self._health

    async def messages(self) -> AsyncIterator[MailMessage]:
        """Yield each new message that passes the filters, for as long as the watcher runs.

        Never raises for a connection failure: it reports ``degraded`` and reconnects.
        """
        failures = 0
        while not self._closed:
            connection: _Connection | None = None
            try:
                connection = await self._connect()
                self._pending.clear()  # unmarked messages come back: the caller dedups them
                failures = 0
                await self._report("connected", None)
                while not self._closed:
                    for message in await self._new_messages(connection):
                        self._pending.add(message.key)
                        yield message
                    await self._wait_for_mail(connection)
            except (
                MailboxError,
                _ConnectionLostError,
                OSError,
                TimeoutError,
                aioimaplib.AioImapException,
            ) as exc:
                failures += 1
                await self._report("degraded", _describe(exc))
                log.warning(
                    "mailbox %s: %s",
                    self._where,
                    _describe(exc).removeprefix(f"mailbox {self._where}: "),
                )
            finally:
                if connection is not None:
                    await connection.close()
            if not self._closed:
                await asyncio.sleep(self._backoff(failures))

    async def mark_seen(self, key: MessageKey) -> None:
        """Set ``\\Seen`` on the message: call it once the job it started is committed.

        Raises:
            MailboxError: the folder was recreated (another UIDVALIDITY) or the server refused.
        """
        await self._command(key, lambda c: self._store_flags(c, key, "\\Seen"))

    async def move(self, key: MessageKey, folder: str) -> None:
        """Move the message to ``folder``: call it once the job it started is committed.

        Raises:
            MailboxError: the folder was recreated, the target does not exist, or the server
                refused.
        """
        if not _FOLDER.match(folder) or '"' in folder or "\\" in folder:
            raise ConfigError(
                f"mailbox folder {folder!r} must be printable ASCII", setting="folder"
            )
        await self._command(key, lambda c: self._move(c, key, folder))

    async def aclose(self) -> None:
        self._closed = True
        async with self._commands_lock:
            if self._commands is not None:
                await self._commands.close()
                self._commands = None

    # --- connecting ------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        s = self.settings
        return f"{s.username}@{s.host}:{s.port}/{s.folder}"

    async def _connect(self) -> _Connection:
        s = self.settings
        lost = asyncio.Event()
        context = s.tls_context or ssl.create_default_context()
        try:
            address = await connect_address(s.host_policy, s.host, s.port, tls=s.security == "tls")
        except ServiceError as exc:
            raise MailboxError(
                f"mailbox {self._where}: {exc.message}", retryable=exc.retryable
            ) from None
        client = aioimaplib.IMAP4(
            address,
            s.port,
            timeout=s.command_timeout_s,
            conn_lost_cb=lambda _exc: lost.set(),
            ssl_context=context if s.security == "tls" else None,
        )
        connection = _Connection(client, lost, 0, s.command_timeout_s)
        try:
            await client.wait_hello_from_server()
            if s.security == "starttls":
                connection.plain_transport = client.protocol.transport
                await self._starttls(client, context)
            password = await s.password()
            with hidden_from_logs([password, aioimaplib.quoted(password)]):
                response = await connection.run(client.login(s.username, password))
            if response.result != "OK":
                raise MailboxError(
                    f"mailbox {self._where}: the server refused the login of {s.username!r} "
                    f"({_text(response.lines)}); check the username and the stored password",
                    retryable=True,
                )
            # What the server offers once logged in (IDLE, MOVE) may differ from before.
            await asyncio.wait_for(client.protocol.capability(), s.command_timeout_s)
            response = await connection.run(client.select(aioimaplib.quoted(s.folder)))
            if response.result != "OK":
                raise MailboxError(
                    f"mailbox {self._where}: cannot open folder {s.folder!r} "
                    f"({_text(response.lines)}); check that it exists",
                    retryable=True,
                )
            connection.uidvalidity = _uidvalidity(response.lines)
            return connection
        except BaseException:
            await connection.close()
            raise

    async def _starttls(self, client: aioimaplib.IMAP4, context: ssl.SSLContext) -> None:
        if not client.has_capability("STARTTLS"):
            raise MailboxError(
                f"mailbox {self._where}: the server does not offer STARTTLS; use security tls",
                retryable=False,
            )
        protocol = client.protocol
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await asyncio.wait_for(
            protocol.execute(command), self.settings.command_timeout_s
        )
        if response.result != "OK":
            raise MailboxError(f"mailbox {self._where}: STARTTLS refused ({_text(response.lines)})")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=self.settings.host
        )
        # Capabilities said before TLS may have been tampered with: ask again (RFC 3501 6.2.1).
        await asyncio.wait_for(protocol.capability(), self.settings.command_timeout_s)

    async def _report(self, state: Literal["connected", "degraded"], error: str | None) -> None:
        if self._health.state == state and self._health.error == error:
            return
        self._health = MailboxHealth(state, error, time.time())
        if self._on_health is not None:
            await self._on_health(self._health)

    def _backoff(self, failures: int) -> float:
        s = self.settings
        step = min(s.reconnect_max_s, s.reconnect_min_s * 2.0 ** (failures - 1))
        return step / 2 + random.uniform(0, step / 2)

    # --- watching --------------------------------------------------------------------------

    async def _wait_for_mail(self, connection: _Connection) -> None:
        """Return when the folder may have changed (or it is time to look again)."""
        client = connection.client
        s = self.settings
        if not client.has_capability("IDLE"):
            await _unless_lost(asyncio.sleep(s.poll_interval_s), connection)
            await self._ok(await connection.run(client.noop()), "NOOP")
            return
        idle = await connection.run(client.idle_start(timeout=s.idle_renew_s))
        try:
            while True:
                push = await _unless_lost(
                    client.wait_server_push(timeout=s.idle_renew_s + s.command_timeout_s),
                    connection,
                )
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH or _announces_mail(push):
                    break
        finally:
            if client.has_pending_idle() and not connection.lost.is_set():
                client.idle_done()
                # The server must answer DONE: a dead connection shows here within the timeout.
                await connection.run(idle)

    async def _new_messages(self, connection: _Connection) -> list[MailMessage]:
        s = self.settings
        criteria = ["UNSEEN"]
        # Server-side filters narrow what is fetched; ASCII only, since servers differ on
        # charsets. The same filters are applied again to the parsed message, exactly.
        if s.from_filter and s.from_filter.isascii():
            criteria += ["FROM", aioimaplib.quoted(s.from_filter)]
        if s.subject_filter and s.subject_filter.isascii():
            criteria += ["SUBJECT", aioimaplib.quoted(s.subject_filter)]
        response = await connection.run(connection.client.uid_search(*criteria, charset=None))
        await self._ok(response, "SEARCH")
        uids = sorted(_search_uids(response.lines))
        found = []
        for uid in uids:
            key = MessageKey(s.folder, connection.uidvalidity, uid)
            if key in self._pending:
                continue
            message = await self._fetch(connection, key)
            if message is not None and self._passes(message):
                found.append(message)
        return found

    def _passes(self, message: MailMessage) -> bool:
        s = self.settings
        if s.from_filter:
            sender = f"{message.sender_name} <{message.sender}>".casefold()
            if s.from_filter.casefold() not in sender:
                return False
        return not (
            s.subject_filter and s.subject_filter.casefold() not in message.subject.casefold()
        )

    async def _fetch(self, connection: _Connection, key: MessageKey) -> MailMessage | None:
        client = connection.client
        response = await connection.run(client.uid("fetch", str(key.uid), "(RFC822.SIZE)"))
        await self._ok(response, "FETCH")
        size = _fetched_size(response.lines)
        if size is None:
            return None  # expunged meanwhile
        truncated = size > self.settings.max_message_bytes
        part = "BODY.PEEK[HEADER]" if truncated else "BODY.PEEK[]"
        response = await connection.run(client.uid("fetch", str(key.uid), f"({part})"))
        await self._ok(response, "FETCH")
        raw = _literal(response.lines)
        if raw is None:
            return None
        try:
            if len(raw) > _PARSE_OFF_LOOP_BYTES:
                parsed, parts = await asyncio.to_thread(_parse, raw, self.settings)
            else:
                parsed, parts = _parse(raw, self.settings)
        except (ValueError, LookupError, IndexError, TypeError) as exc:
            # A message the parser chokes on still starts its job (with what can be said of
            # it) rather than stopping the watcher, or being skipped without a trace.
            log.warning(
                "mailbox %s: message %s does not parse: %s", self._where, key.dedup_key, exc
            )
            parsed, parts = _unparsed(), []
        if truncated:  # the headers only: no body to speak of, rather than an empty one
            parsed.update(text=None, html=None)
        attachments = []
        for info, data in parts:
            if data is not None and self._store is not None:
                info = AttachmentInfo(
                    info.filename, info.content_type, info.size, await self._store(key, info, data)
                )
            elif data is not None:
                info = AttachmentInfo(
                    info.filename, info.content_type, info.size, None, "no attachment store"
                )
            attachments.append(info)
        return MailMessage(
            key=key,
            attachments=tuple(attachments),
            size=size,
            truncated=truncated,
            **parsed,
        )

    async def _ok(self, response: Any, command: str) -> None:
        if response.result != "OK":
            raise MailboxError(f"mailbox {self._where}: {command} failed ({_text(response.lines)})")

    # --- marking ---------------------------------------------------------------------------

    async def _command(
        self, key: MessageKey, act: Callable[[_Connection], Awaitable[None]]
    ) -> None:
        if key.folder != self.settings.folder:
            raise MailboxError(
                f"message {key.dedup_key} is of folder {key.folder!r}, not of this watcher's "
                f"{self.settings.folder!r}",
                retryable=False,
            )
        async with self._commands_lock:
            for attempt in (1, 2):
                try:
                    if self._commands is None or self._commands.lost.is_set():
                        self._commands = await self._connect()
                    if self._commands.uidvalidity != key.uidvalidity:
                        raise MailboxError(
                            f"mailbox {self._where}: the folder was recreated (UIDVALIDITY "
                            f"{self._commands.uidvalidity}, the message's is {key.uidvalidity}); "
                            "the message is gone",
                            retryable=False,
                        )
                    await act(self._commands)
                    self._pending.discard(key)
                    return
                except (
                    OSError,
                    TimeoutError,
                    _ConnectionLostError,
                    aioimaplib.AioImapException,
                ) as exc:
                    if self._commands is not None:
                        await self._commands.close()
                        self._commands = None
                    if attempt == 2:
                        raise MailboxError(
                            f"mailbox {self._where}: {_describe(exc)}", retryable=True
                        ) from exc

    async def _store_flags(self, connection: _Connection, key: MessageKey, flag: str) -> None:
        response = await connection.run(
            connection.client.uid("store", str(key.uid), "+FLAGS.SILENT", f"({flag})")
        )
        await self._ok(response, "STORE")

    async def _move(self, connection: _Connection, key: MessageKey, folder: str) -> None:
        client = connection.client
        target = aioimaplib.quoted(folder)
        if client.has_capability("MOVE"):
            await self._ok(await connection.run(client.uid("move", str(key.uid), target)), "MOVE")
            return
        await self._ok(await connection.run(client.uid("copy", str(key.uid), target)), "COPY")
        await self._store_flags(connection, key, "\\Deleted")
        if client.has_capability("UIDPLUS"):
            await self._ok(await connection.run(client.uid("expunge", str(key.uid))), "EXPUNGE")
        else:
            await self._ok(await connection.run(client.expunge()), "EXPUNGE")


# --- helpers -------------------------------------------------------------------------------


async def _unless_lost(waiting: Awaitable[Any], connection: _Connection) -> Any:
    """``waiting``'s result, or _ConnectionLostError as soon as the connection closes."""
    task = asyncio.ensure_future(waiting)
    lost = asyncio.ensure_future(connection.lost.wait())
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise _ConnectionLostError("the server closed the connection")
    finally:
        waiting_on = [t for t in (task, lost) if not t.done()]
        for pending in waiting_on:
            pending.cancel()
        # gather, not a suppressed await: a cancellation of the caller itself must go through.
        await asyncio.gather(*waiting_on, return_exceptions=True)


def _announces_mail(push: Any) -> bool:
    lines = push if isinstance(push, list) else [push]
    return any(
        isinstance(line, bytes | bytearray) and (b"EXISTS" in line or b"RECENT" in line)
        for line in lines
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FluxoError):
        return exc.message
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, _ConnectionLostError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _text(lines: list[Any]) -> str:
    parts = [bytes(line).decode("utf-8", "replace") for line in lines[-1:]]
    return " ".join(parts)[:200] or "no reason given"


def _uidvalidity(lines: list[Any]) -> int:
    for line in lines:
        match = re.search(rb"UIDVALIDITY (\d+)", bytes(line))
        if match:
            return int(match.group(1))
    raise MailboxError("the server sent no UIDVALIDITY for the folder; it is not IMAP4rev1")


def _search_uids(lines: list[Any]) -> list[int]:
    # aioimaplib hands the untagged SEARCH line on without its name ("1 5 9"), then the tagged
    # status line; older versions kept the name.
    uids: list[int] = []
    for line in lines:
        tokens = bytes(line).split()
        if tokens[:1] == [b"SEARCH"]:
            tokens = tokens[1:]
        if tokens and all(t.isdigit() for t in tokens):
            uids.extend(int(t) for t in tokens)
    return uids


def _fetched_size(lines: list[Any]) -> int | None:
    for line in lines:
        match = _SIZE.search(bytes(line))
        if match:
            return int(match.group(1))
    return None


def _literal(lines: list[Any]) -> bytes | None:
    for line in lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None


def _strict_policy() -> HostPolicy:
    # Imported when needed: the built-in services' package is heavy to load.
    from services.http.policy import HostPolicy

    return HostPolicy()


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse(
    raw: bytes, settings: MailboxSettings
) -> tuple[dict[str, Any], list[tuple[AttachmentInfo, bytes | None]]]:
    """The message's fields and its attachments (with bytes where within the limits)."""
    # The default policy makes EmailMessage objects.
    message = BytesParser(policy=email_policy.default).parsebytes(raw)
    sender_name, sender = "", ""
    addresses = _addresses(message, "From")
    if addresses:
        sender_name, sender = addresses[0]
    text = _body(message, "plain")
    html = _body(message, "html")
    parts: list[tuple[AttachmentInfo, bytes | None]] = []
    for index, part in enumerate(message.iter_attachments()):
        filename = _filename(part, index)
        content_type = part.get_content_type()
        data = part.get_payload(decode=True)
        body = data if isinstance(data, bytes) else b""
        info = AttachmentInfo(filename, content_type, len(body))
        if index >= settings.max_attachments:
            parts.append((_skipped(info, f"over the limit of {settings.max_attachments}"), None))
        elif len(body) > settings.max_attachment_bytes:
            parts.append(
                (_skipped(info, f"over the limit of {settings.max_attachment_bytes} bytes"), None)
            )
        else:
            parts.append((info, body))
    fields = {
        "message_id": _header(message, "Message-ID") or None,
        "sender": sender,
        "sender_name": sender_name,
        "to": tuple(a for _, a in _addresses(message, "To")),
        "cc": tuple(a for _, a in _addresses(message, "Cc")),
        "subject": _header(message, "Subject"),
        "date": _date(message),
        "text": text,
        "html": html,
    }
    return fields, parts


def _unparsed() -> dict[str, Any]:
    return {
        "message_id": None,
        "sender": "",
        "sender_name": "",
        "to": (),
        "cc": (),
        "subject": "",
        "date": None,
        "text": None,
        "html": None,
    }


def _skipped(info: AttachmentInfo, reason: str) -> AttachmentInfo:
    return AttachmentInfo(info.filename, info.content_type, info.size, None, reason)


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError):  # a malformed header the parser cannot fold
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _addresses(message: Message, name: str) -> list[tuple[str, str]]:
    try:
        header = message.get(name)
        found = [(a.display_name, a.addr_spec) for a in getattr(header, "addresses", ())]
    except (ValueError, IndexError, TypeError):
        return []
    return found


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_disposition() == "attachment":
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None


def _filename(part: Message, index: int) -> str:
    raw = part.get_filename() or f"attachment-{index + 1}"
    # A name is shown and may be used to save the file: no folders, no control characters.
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()[:255]
    return name or f"attachment-{index + 1}"


def _date(message: Message) -> str | None:
    raw = _header(message, "Date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw).isoformat()
    except (TypeError, ValueError):
        return None
