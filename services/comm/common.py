"""What the communication services share: credentials by reference, located payload problems,
attachments by reference, and a bounded backoff.

Credentials. A field that holds a credential (an SMTP password, a provider's auth token, a signing
key) only takes a reference to a stored secret, ``{"secret": "NAME"}``: a literal value would be
stored in the call record, the queue and the job's steps. The value is read from the account's
:class:`~services.http.credentials.SecretSource` in the worker, when the message is sent, and is
blanked out of every log record made meanwhile, of results and of error messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import httpx

from fluxo_core.errors import FluxoError, ServiceError, ValidationError
from fluxo_core.redaction import is_secret_reference
from services.http.credentials import REDACTED, SECRET_NAME, SecretSource
from services.http.policy import HostPolicy

__all__ = [
    "AttachmentSource",
    "Problems",
    "StoredAttachment",
    "backoff_delay",
    "connect_vetted",
    "decode_base64",
    "hide_secrets",
    "one_message",
    "read_capped",
    "read_secrets",
]


class Problems:
    """The problems of one payload, each with its location; raised together."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, message: str) -> None:
        self.items.append((where, message))

    def raise_if_any(self, service: str) -> None:
        if self.items:
            self.refuse(service)

    def refuse(self, service: str) -> NoReturn:
        raise ValidationError(
            f"invalid {service} request: fix the fields listed below", problems=self.items
        )

    def string(
        self, item: Mapping[str, Any], key: str, where: str, *, required: bool
    ) -> str | None:
        """A one-line string field (no line breaks: it may end up in a header)."""
        value = item.get(key)
        if value is None:
            if required:
                self.add(f"{where}.{key}", "required")
            return None
        if not isinstance(value, str) or (required and not value):
            self.add(f"{where}.{key}", "must be a non-empty string")
            return None
        if "\r" in value or "\n" in value or "\0" in value:
            self.add(f"{where}.{key}", "must not contain line breaks or NUL")
            return None
        return value

    def secret_ref(
        self, item: Mapping[str, Any], key: str, where: str, *, required: bool
    ) -> str | None:
        """The name of the stored secret a credential field refers to; a literal is refused."""
        value = item.get(key)
        at = f"{where}.{key}"
        if value is None:
            if required:
                self.add(at, 'required: a stored secret, {"secret": NAME}')
            return None
        if not is_secret_reference(value) or "prefix" in value:
            # Never quote the value: it is a credential that was put where it does not belong.
            self.add(
                at,
                'takes a stored secret only, {"secret": NAME}: store the value with '
                "`fluxo secret set NAME` (or PUT /v1/secrets/NAME) and name it here",
            )
            return None
        name = str(value["secret"])
        if not SECRET_NAME.match(name):
            self.add(f"{at}.secret", "not a secret name (letters, digits, '_', '.', '-')")
            return None
        return name

    def number(
        self, item: Mapping[str, Any], key: str, where: str, default: float, *, cap: float
    ) -> float:
        value = item.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            self.add(f"{where}.{key}", "must be a number above zero")
            return default
        return min(float(value), cap)

    def unknown(self, item: Mapping[str, Any], known: Iterable[str], where: str) -> None:
        allowed = sorted(known)
        for key in sorted(set(item) - set(allowed), key=str):
            self.add(f"{where}.{key}", f"unknown field; use {', '.join(allowed)}")


def one_message(payload: Any, service: str, what: str) -> None:
    """Refuse an array: each of these services sends one ``what`` per call, so a retry or a
    duplicate delivery repeats exactly one effect under the call's idempotency key.

    Raises:
        ServiceError: ``payload`` is an array (not retryable; split it first).
    """
    if isinstance(payload, list):
        raise ServiceError(
            f"{service} sends one {what} per call; give an object, not an array (split the "
            "array first)",
            retryable=False,
        )


async def read_secrets(
    secrets: SecretSource | None, account_id: str, names: Sequence[str], service: str
) -> dict[str, str]:
    """The values of the stored secrets ``names`` of ``account_id``, for sending only.

    Raises:
        ServiceError: no secret store (not retryable), a secret is missing (not retryable, the
            message says how to set it) or unreadable.
    """
    wanted = sorted(set(names))
    if not wanted:
        return {}
    if secrets is None:
        raise ServiceError(
            f"the {service} service needs stored secrets, but it has no secret store; run it in "
            "a Fluxo worker (fluxo up, fluxo worker)",
            retryable=False,
            secrets=wanted,
        )
    try:
        return await secrets.reveal(account_id, wanted)
    except FluxoError as exc:
        raise ServiceError(exc.message, retryable=exc.retryable, secrets=wanted) from exc


def hide_secrets(text: str, values: Iterable[str]) -> str:
    """``text`` with every value (longest first) blanked: for provider answers and errors."""
    for value in sorted((v for v in values if v), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment read from where it is stored: its name, media type and bytes."""

    filename: str
    content_type: str
    data: bytes


class AttachmentSource(Protocol):
    """Where attachments named by reference are read from (e.g. those an email trigger stored)."""

    async def read_attachment(
        self, account_id: str, ref: str, *, max_bytes: int
    ) -> StoredAttachment:
        """The attachment ``ref`` of the account; a FluxoError names a missing or oversized one."""
        ...


def decode_base64(value: str, where: str, problems: Problems) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        problems.add(where, "not valid base64")
        return None


def backoff_delay(
    attempt: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """The wait after the ``attempt``-th failure: exponential, capped, half of it random (so
    retries of many calls spread out but none comes back sooner than half the step)."""
    step = min(max_s, base_s * 2.0 ** (attempt - 1))
    return step / 2 + (rng or random).uniform(0, step / 2)


async def connect_vetted(
    policy: HostPolicy, host: str, port: int, timeout_s: float
) -> socket.socket:
    """A TCP socket connected to an address of ``host`` that ``policy`` allows.

    The name is resolved and vetted here and the socket connects to the vetted address, so a name
    that resolves elsewhere a moment later (DNS rebinding) cannot steer the connection inside.

    Raises:
        ServiceError: the policy refuses the host (not retryable), or no address answered
            (retryable).
    """
    addresses = await policy.vet(host, port)
    loop = asyncio.get_running_loop()
    failure: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(sock, (str(address), port))
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            failure = (
                exc if isinstance(exc, OSError) else OSError(f"timed out after {timeout_s:g}s")
            )
    raise ServiceError(
        f"could not connect to {host} port {port}: {failure}", retryable=True, host=host, port=port
    )


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a streamed response's body (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)
