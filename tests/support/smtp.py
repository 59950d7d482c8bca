"""A local SMTP server (aiosmtpd) that records what it receives: STARTTLS required, AUTH
required, and answers a test can script (a refused recipient, a temporary failure)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer  # noqa: N811 (aiosmtpd's name for the server)
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.support.tls import SelfSigned


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """The handler: records each message; ``refuse`` recipients get 550, ``fail_data`` answers
    DATA with that reply instead of accepting."""

    received: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    fail_data: str | None = None

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTPServer, session: Session, envelope: Envelope
    ) -> str:
        if self.fail_data is not None:
            return self.fail_data
        login = (
            session.auth_data.login.decode()
            if isinstance(session.auth_data, LoginPassword)
            else None
        )
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                login=login,
                tls=session.ssl is not None,
            )
        )
        return f"250 2.0.0 Ok: queued as TEST{len(self.received)}"


class _Authenticator:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.attempts: list[str] = []

    def __call__(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.attempts.append(login)
        if self.users.get(login) != password:
            return AuthResult(success=False, handled=False)  # the server answers 535
        return AuthResult(success=True, auth_data=auth_data)


@dataclass
class SmtpServer:
    host: str
    port: int
    recorder: Recorder
    authenticator: _Authenticator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_smtp(cert: SelfSigned, users: dict[str, str]) -> Iterator[SmtpServer]:
    """Serve on loopback until the generator is closed (use it as a fixture's body)."""
    recorder = Recorder()
    authenticator = _Authenticator(users)
    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        tls_context=cert.server_context(),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        server_hostname="localhost",
    )
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, recorder, authenticator)
    finally:
        controller.stop()
