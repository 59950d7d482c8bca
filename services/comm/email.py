"""The ``email-send`` built-in service: one email over SMTP (STARTTLS or TLS, with a login).

A payload item describes one message::

    {"smtp": {"host": "smtp.example.com", "port": 587, "security": "starttls",
              "username": "orders@example.com", "password": {"secret": "smtp-orders"}},
     "from": "Orders <orders@example.com>", "to": ["ada@example.com"], "cc": [], "bcc": [],
     "reply_to": "help@example.com", "subject": "Your order", "text": "...", "html": "...",
     "attachments": [{"ref": "att-0193..."},
                     {"filename": "a.csv", "content_type": "text/csv", "content_base64": "..."}]}

and the result says what the server accepted::

    {"message_id": "<CALL_ID@example.com>", "accepted": ["ada@example.com"], "refused": {},
     "response": "250 2.0.0 Ok: queued"}

An address is ``"ada@example.com"``, ``"Ada <ada@example.com>"`` or ``{"name": "Lovelace, Ada",
"address": "ada@example.com"}`` (a display name with a comma needs the object form). Bcc
recipients get the message but appear in no header.

The Message-ID is made from the call id, so every run of one call (a retry after a timeout, a
run again after a crash) sends the same Message-ID: receivers and mail clients recognise the
repeat. SMTP has no idempotency key; this is what it offers.

Header injection is impossible: every value that goes into a header is refused if it holds a
line break, addresses are parsed and re-rendered by the standard library, and Bcc is never
rendered. Credentials are stored secrets (``password: {"secret": NAME}``); they are sent only
over TLS (``security: none`` with a login is refused). The SMTP host passes the same host policy as
the ``http`` service (``FLUXO_HTTP_ALLOW`` / ``FLUXO_HTTP_DENY``), checked at connect time.
"""

from __future__ import annotations

import contextlib
import mimetypes
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, Literal

import aiosmtplib

from fluxo_core.errors import FluxoError, ServiceError
from fluxo_core.ir import Packet, Payload
from fluxo_core.redaction import hidden_from_logs
from service_runtime.sdk import Call, RetryPolicy, Service
from services.comm.common import (
    AttachmentSource,
    Problems,
    StoredAttachment,
    connect_vetted,
    decode_base64,
    hide_secrets,
    one_message,
    read_secrets,
)
from services.config import BuiltinConfig
from services.http.credentials import SecretSource
from services.http.policy import HostPolicy, Resolver

__all__ = ["EmailService"]

Security = Literal["starttls", "tls", "none"]
_SECURITY: tuple[Security, ...] = ("starttls", "tls", "none")
_DEFAULT_PORTS: dict[Security, int] = {"starttls": 587, "tls": 465, "none": 25}
_FIELDS = frozenset(
    {"smtp", "from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments"}
)
_SMTP_FIELDS = frozenset({"host", "port", "security", "username", "password", "timeout_s"})
_ATTACHMENT_FIELDS = frozenset({"ref", "filename", "content_type", "content_base64"})
_MAX_RECIPIENTS = 100
_MAX_BODY_CHARS = 1_000_000

EMAIL_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["smtp", "from", "to", "subject"],
    "properties": {
        "smtp": {"type": "object"},
        "from": {},
        "to": {},
        "cc": {},
        "bcc": {},
        "reply_to": {},
        "subject": {"type": "string"},
        "text": {"type": "string"},
        "html": {"type": "string"},
        "attachments": {"type": "array"},
    },
    "additionalProperties": False,
}

EMAIL_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["message_id", "accepted", "refused", "response"],
    "properties": {
        "message_id": {"type": "string"},
        "accepted": {"type": "array", "items": {"type": "string"}},
        "refused": {"type": "object", "additionalProperties": {"type": "string"}},
        "response": {"type": "string"},
    },
}


@dataclass(frozen=True)
class _Attachment:
    ref: str | None
    filename: str | None
    content_type: str | None
    data: bytes | None


@dataclass(frozen=True)
class _Email:
    host: str
    port: int
    security: Security
    username: str | None
    password_secret: str | None
    timeout_s: float
    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[_Attachment, ...] = field(default=())

    @property
    def recipients(self) -> list[str]:
        return list(dict.fromkeys(a.addr_spec for a in (*self.to, *self.cc, *self.bcc)))


class EmailService:
    """The ``email-send`` built-in service (see the module docstring for payload and result).

    Args:
        config: limits and the host policy settings.
        secrets: where the SMTP password is read from; without it a login is refused.
        attachments: where attachments named by ``ref`` are read from; without it a ``ref`` is
            refused (inline ``content_base64`` still works).
        tls_context: the TLS settings to verify the server with (default: the system's CAs);
            tests pass one that trusts their own certificate.
        resolver: name resolution for the host policy (tests inject a fixed table).
    """

    def __init__(
        self,
        config: BuiltinConfig | None = None,
        *,
        secrets: SecretSource | None = None,
        attachments: AttachmentSource | None = None,
        tls_context: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._config = config or BuiltinConfig()
        self._secrets = secrets
        self._attachments = attachments
        self._tls_context = tls_context
        self._policy = HostPolicy.from_config(self._config, resolver=resolver)
        self._local_hostname = socket.gethostname() or "localhost"
        self.service = Service(
            name="email-send",
            version="1",
            handler=self._handle,
            takes="packet",
            description="Send an email over SMTP (STARTTLS or TLS, with a stored password).",
            input_schema=EMAIL_REQUEST_SCHEMA,
            output_schema=EMAIL_RESULT_SCHEMA,
            retry=RetryPolicy(max_attempts=5, backoff_base_s=2.0, backoff_max_s=120.0),
            timeout_s=self._config.comm_timeout_s + 10.0,
        )

    async def _handle(self, packet: Packet, call: Call | None = None) -> Payload:
        # The runtime passes the call (the handler declares it); the default keeps the
        # handler a one-argument callable, as Service types it.
        return await self.send(packet.payload, call=call or Call.of(packet))

    async def send(self, payload: Payload, *, call: Call) -> Payload:
        """Send the message the payload describes, as ``call`` (its account, its Message-ID).

        Raises:
            ValidationError: the payload is not a valid message (every problem, located).
            ServiceError: the host is refused, the login or every recipient was refused, the
                server answered a permanent error (not retryable); a connection failure, a
                timeout or a temporary (4xx) answer (retryable).
        """
        one_message(payload, "email-send", "message")
        spec = self._parse(payload)
        secrets = await read_secrets(
            self._secrets,
            call.account_id,
            [spec.password_secret] if spec.password_secret else [],
            "email-send",
        )
        password = secrets.get(spec.password_secret or "")
        hidden = [password] if password else []
        attachments = await self._read_attachments(spec, call.account_id)
        message = _build(spec, call.idempotency_key, attachments)
        with hidden_from_logs(hidden), _map_errors(spec, hidden):
            refused, response = await self._deliver(spec, password, message)
        accepted = [r for r in spec.recipients if r not in refused]
        return {
            "message_id": str(message["Message-ID"]),
            "accepted": accepted,
            "refused": {
                r: hide_secrets(f"{code} {text}", hidden) for r, (code, text) in refused.items()
            },
            "response": hide_secrets(response, hidden),
        }

    async def _deliver(
        self, spec: _Email, password: str | None, message: EmailMessage
    ) -> tuple[dict[str, tuple[int, str]], str]:
        sock = await connect_vetted(self._policy, spec.host, spec.port, spec.timeout_s)
        smtp = aiosmtplib.SMTP(
            hostname=spec.host,  # for TLS: SNI and the certificate check are against the name
            sock=sock,
            use_tls=spec.security == "tls",
            start_tls=spec.security == "starttls",
            tls_context=self._tls_context,
            timeout=spec.timeout_s,
            local_hostname=self._local_hostname,
        )
        try:
            await smtp.connect()
            if spec.username is not None and password is not None:
                await _login(smtp, spec.username, password)
            errors, response = await smtp.send_message(
                message, sender=spec.sender.addr_spec, recipients=spec.recipients
            )
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                if smtp.is_connected:
                    await smtp.quit()
            # The socket is the transport's from connect() on (asyncio closes it with the
            # transport, also when the TLS handshake fails); closing it here as well would
            # free its descriptor under a transport still registered on it.
            smtp.close()
        refused = {r: (int(e.code), str(e.message)) for r, e in errors.items()}
        return refused, response

    async def _read_attachments(self, spec: _Email, account_id: str) -> list[StoredAttachment]:
        budget = self._config.comm_max_attachment_bytes
        result: list[StoredAttachment] = []
        for index, item in enumerate(spec.attachments):
            where = f"payload.attachments[{index}]"
            if item.data is not None:
                data, filename, content_type = (
                    item.data,
                    item.filename or "attachment",
                    item.content_type,
                )
            else:
                if self._attachments is None:
                    raise ServiceError(
                        f"{where}.ref: this email-send service has no attachment store; run it "
                        "in a Fluxo worker, or give the content inline as content_base64",
                        retryable=False,
                    )
                try:
                    stored = await self._attachments.read_attachment(
                        account_id, item.ref or "", max_bytes=budget
                    )
                except FluxoError as exc:
                    raise ServiceError(
                        f"{where}.ref: {exc.message}", retryable=exc.retryable
                    ) from exc
                data = stored.data
                filename = item.filename or stored.filename
                content_type = item.content_type or stored.content_type
            budget -= len(data)
            if budget < 0:
                raise ServiceError(
                    f"the attachments of this email add up to more than "
                    f"{self._config.comm_max_attachment_bytes} bytes (at {where}); send a link "
                    "instead, or fewer files",
                    retryable=False,
                )
            guessed = mimetypes.guess_type(filename)[0]
            result.append(
                StoredAttachment(
                    filename, content_type or guessed or "application/octet-stream", data
                )
            )
        return result

    def _parse(self, item: Any) -> _Email:
        problems = Problems()
        if not isinstance(item, Mapping):
            problems.add("payload", "an email must be an object")
            problems.refuse("email-send")
        problems.unknown(item, _FIELDS, "payload")
        smtp = item.get("smtp")
        host, port, username, password, timeout = "", 0, None, None, 0.0
        security: Security = "starttls"
        if not isinstance(smtp, Mapping):
            problems.add(
                "payload.smtp", "required: an object with host, port, security, username, password"
            )
        else:
            problems.unknown(smtp, _SMTP_FIELDS, "payload.smtp")
            host = problems.string(smtp, "host", "payload.smtp", required=True) or ""
            raw_security = smtp.get("security", "starttls")
            for known in _SECURITY:
                if raw_security == known:
                    security = known
                    break
            else:
                problems.add("payload.smtp.security", f"use one of {', '.join(_SECURITY)}")
            port = smtp.get("port", _DEFAULT_PORTS[security])
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                problems.add("payload.smtp.port", "must be a port number (1-65535)")
            username = problems.string(smtp, "username", "payload.smtp", required=False)
            password = problems.secret_ref(
                smtp, "password", "payload.smtp", required=username is not None
            )
            if password is not None and username is None:
                problems.add("payload.smtp.username", "required with a password")
            if username is not None and security == "none":
                problems.add(
                    "payload.smtp.security",
                    "a login is sent only over TLS: use starttls (port 587) or tls (port 465)",
                )
            timeout = problems.number(
                smtp, "timeout_s", "payload.smtp", 30.0, cap=self._config.comm_timeout_s
            )
        sender = _addresses(item.get("from"), "payload.from", problems, required=True, single=True)
        to = _addresses(item.get("to"), "payload.to", problems, required=True)
        cc = _addresses(item.get("cc"), "payload.cc", problems)
        bcc = _addresses(item.get("bcc"), "payload.bcc", problems)
        reply_to = _addresses(item.get("reply_to"), "payload.reply_to", problems)
        if len(to) + len(cc) + len(bcc) > _MAX_RECIPIENTS:
            problems.add(
                "payload.to", f"at most {_MAX_RECIPIENTS} recipients (to, cc and bcc) per email"
            )
        subject = problems.string(item, "subject", "payload", required=False)
        if item.get("subject") is None:
            problems.add("payload.subject", "required (it may be empty)")
        bodies: dict[str, str | None] = {}
        for key in ("text", "html"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                problems.add(f"payload.{key}", "must be a string")
                value = None
            elif isinstance(value, str) and len(value) > _MAX_BODY_CHARS:
                problems.add(f"payload.{key}", f"at most {_MAX_BODY_CHARS} characters")
            bodies[key] = value
        if bodies["text"] is None and bodies["html"] is None:
            problems.add("payload.text", "give text, html or both")
        attachments = self._parse_attachments(item.get("attachments", []), problems)
        problems.raise_if_any("email-send")
        return _Email(
            host=host,
            port=int(port),
            security=security,
            username=username,
            password_secret=password,
            timeout_s=timeout,
            sender=sender[0],
            to=to,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            subject=subject or "",
            text=bodies["text"],
            html=bodies["html"],
            attachments=attachments,
        )

    def _parse_attachments(self, raw: Any, problems: Problems) -> tuple[_Attachment, ...]:
        if not isinstance(raw, list):
            problems.add("payload.attachments", "must be a list of attachments")
            return ()
        if len(raw) > self._config.comm_max_attachments:
            problems.add(
                "payload.attachments",
                f"at most {self._config.comm_max_attachments} attachments per email",
            )
            return ()
        result = []
        for index, item in enumerate(raw):
            where = f"payload.attachments[{index}]"
            if not isinstance(item, Mapping):
                problems.add(
                    where,
                    'an attachment is an object: {"ref": ...} or {"filename", "content_base64"}',
                )
                continue
            problems.unknown(item, _ATTACHMENT_FIELDS, where)
            ref = problems.string(item, "ref", where, required=False)
            filename = problems.string(item, "filename", where, required=False)
            content_type = problems.string(item, "content_type", where, required=False)
            if content_type is not None and (content_type.count("/") != 1 or " " in content_type):
                problems.add(f"{where}.content_type", "must be a media type, e.g. application/pdf")
            encoded = item.get("content_base64")
            data = None
            if (ref is None) == (encoded is None):
                problems.add(where, "give either ref (a stored attachment) or content_base64")
            elif encoded is not None:
                if not isinstance(encoded, str):
                    problems.add(f"{where}.content_base64", "must be a base64 string")
                else:
                    data = decode_base64(encoded, f"{where}.content_base64", problems)
                if filename is None:
                    problems.add(f"{where}.filename", "required with content_base64")
            result.append(_Attachment(ref, filename, content_type, data))
        return tuple(result)


def _addresses(
    raw: Any, where: str, problems: Problems, *, required: bool = False, single: bool = False
) -> tuple[Address, ...]:
    if raw is None or raw == []:
        if required:
            problems.add(where, "required: an address such as ada@example.com")
        return ()
    items = raw if isinstance(raw, list) and not single else [raw]
    if isinstance(raw, list) and single:
        problems.add(where, "one address, not a list")
        return ()
    result = []
    for index, item in enumerate(items):
        at = f"{where}[{index}]" if isinstance(raw, list) else where
        address = _address(item, at, problems)
        if address is not None:
            result.append(address)
    return tuple(result)


def _address(item: Any, where: str, problems: Problems) -> Address | None:
    if isinstance(item, Mapping):
        name = item.get("name", "")
        spec = item.get("address")
        if set(item) - {"name", "address"}:
            problems.add(where, "an address object has name and address only")
            return None
    elif isinstance(item, str):
        if any(c in item for c in "\r\n\0"):
            problems.add(where, "must not contain line breaks or NUL")
            return None
        name, spec = parseaddr(item)
        # parseaddr reads the first address of a list and drops the rest; a comma outside the
        # angle brackets means several addresses (or a name that needs the object form).
        if "," in item.split("<")[0] or ";" in item:
            problems.add(
                where, 'one address per entry; for a name with a comma use {"name", "address"}'
            )
            return None
    else:
        problems.add(where, 'an address is a string or {"name": ..., "address": ...}')
        return None
    if (
        not isinstance(name, str)
        or not isinstance(spec, str)
        or any(c in name + spec for c in "\r\n\0")
    ):
        problems.add(where, "name and address must be strings without line breaks")
        return None
    try:
        address = Address(display_name=name, addr_spec=spec)
    except (ValueError, IndexError, TypeError):
        problems.add(where, "not an email address (expected e.g. ada@example.com)")
        return None
    if not address.username or not address.domain or "." not in address.domain.strip("."):
        problems.add(where, "not an email address (expected e.g. ada@example.com)")
        return None
    return address


async def _login(smtp: aiosmtplib.SMTP, username: str, password: str) -> None:
    """Log in with ONE method the server offers. aiosmtplib's ``login`` tries every method in
    turn after a refusal, and some servers hang up on, or stall at, a second attempt: a wrong
    password would then look like a network failure and be retried."""
    await smtp.ehlo()
    offered = smtp.supported_auth_methods
    for method in ("plain", "login", "cram-md5"):
        if method in offered:
            await getattr(smtp, "auth_" + method.replace("-", ""))(username, password)
            return
    raise aiosmtplib.SMTPException(
        "the server offers no login method Fluxo speaks (PLAIN, LOGIN, CRAM-MD5)"
        + ("" if offered else "; it offers none at all: is it the submission port?")
    )


def _build(spec: _Email, call_id: str, attachments: list[StoredAttachment]) -> EmailMessage:
    # The SMTP policy: CRLF line ends, and its header folding refuses values with line breaks.
    message = EmailMessage(policy=email_policy.SMTP)
    message["From"] = spec.sender
    message["To"] = spec.to
    if spec.cc:
        message["Cc"] = spec.cc
    if spec.reply_to:
        message["Reply-To"] = spec.reply_to
    message["Subject"] = spec.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    # From the call id: every run of this call sends the same Message-ID.
    message["Message-ID"] = f"<{call_id}@{spec.sender.domain}>"
    if spec.text is not None:
        message.set_content(spec.text)
        if spec.html is not None:
            message.add_alternative(spec.html, subtype="html")
    elif spec.html is not None:
        message.set_content(spec.html, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message


@contextlib.contextmanager
def _map_errors(spec: _Email, hidden: list[str]) -> Iterator[None]:
    """SMTP and TLS failures as ServiceErrors naming the server, retryable where it can help."""
    server = f"the SMTP server {spec.host}:{spec.port}"
    try:
        yield
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise ServiceError(
            f"{server} refused the login of {spec.username!r} ({exc.code} "
            f"{hide_secrets(exc.message, hidden)}); check the stored secret "
            f"{spec.password_secret!r} and the username",
            retryable=False,
            host=spec.host,
            status=exc.code,
        ) from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{e.recipient} ({e.code} {e.message})" for e in exc.recipients)
        raise ServiceError(
            f"{server} refused every recipient: {hide_secrets(refused, hidden)}",
            retryable=False,
            host=spec.host,
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        temporary = 400 <= exc.code < 500
        raise ServiceError(
            f"{server} answered {exc.code} {hide_secrets(exc.message, hidden)}"
            + (" (a temporary failure; it will be retried)" if temporary else ""),
            retryable=temporary,
            host=spec.host,
            status=exc.code,
        ) from exc
    except (
        aiosmtplib.SMTPConnectError,
        aiosmtplib.SMTPTimeoutError,
        aiosmtplib.SMTPServerDisconnected,
        TimeoutError,
        ConnectionError,
    ) as exc:
        raise ServiceError(
            f"{server} failed: {type(exc).__name__}: {hide_secrets(str(exc), hidden)[:200]}",
            retryable=True,
            host=spec.host,
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        raise ServiceError(
            f"{server}: its TLS certificate is not valid for {spec.host}: {exc.verify_message}",
            retryable=False,
            host=spec.host,
        ) from exc
    except aiosmtplib.SMTPException as exc:
        # What is left is a mismatch with the server (no STARTTLS offered, no AUTH method in
        # common): trying again will not change it.
        message = hide_secrets(str(exc), hidden)[:200]
        hint = (
            "; use security: tls for a server that speaks TLS from the start"
            if "STARTTLS" in message.upper()
            else ""
        )
        raise ServiceError(f"{server}: {message}{hint}", retryable=False, host=spec.host) from exc
