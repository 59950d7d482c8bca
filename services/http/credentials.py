"""Credentials of ``http`` requests: secret references, and keeping credentials out of what
leaves (responses, errors, redirects to another origin)."""

from __future__ import annotations

import re
from collections.abc import (
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from fluxo_core.redaction import is_credential_key

__all__ = [
    "REDACTED",
    "SECRET_NAME",
    "SecretRef",
    "SecretSource",
    "carries_credentials",
    "drop_credentials",
    "scrub",
    "scrub_bytes",
]


class SecretSource(Protocol):
    """Where the values of secret references come from (the platform's ``SecretStore``)."""

    async def reveal(self, account_id: str, names: Iterable[str]) -> dict[str, str]:
        """The values of the account's secrets ``names``; a FluxoError names a missing one."""
        ...


@dataclass(frozen=True)
class SecretRef:
    name: str
    prefix: str


REDACTED = "[redacted]"

# On a redirect to another origin these go (besides the headers set from secrets): the standard
# credential headers and any header whose name says it carries one (X-Api-Key, PRIVATE-TOKEN,
# X-Auth-Email, Ocp-Apim-Subscription-Key, X-Amz-Security-Token, X-Hub-Signature, ...).
_CREDENTIAL_HEADER_WORDS = (
    "auth",
    "token",
    "key",
    "secret",
    "passw",
    "cookie",
    "session",
    "signature",
    "credential",
)


def carries_credentials(name: str, secret_headers: frozenset[str] = frozenset()) -> bool:
    lowered = name.lower()
    return (
        lowered in secret_headers
        or is_credential_key(lowered)
        or any(word in lowered for word in _CREDENTIAL_HEADER_WORDS)
    )


def drop_credentials(headers: httpx.Headers, secret_headers: frozenset[str]) -> None:
    """Remove every header that may carry a credential (the request goes to another origin)."""
    for name in [n for n in headers if carries_credentials(n, secret_headers)]:
        del headers[name]


def scrub_bytes(body: bytes, hidden: Sequence[str], truncated: bool) -> bytes:
    for value in hidden:
        body = body.replace(value.encode(), REDACTED.encode())
    if truncated:
        # The cut may fall inside an echoed value: drop a tail that begins one (four bytes or
        # more; a shorter piece tells nothing and would eat ordinary text).
        for value in hidden:
            raw = value.encode()
            for size in range(min(len(raw) - 1, len(body)), 3, -1):
                if body.endswith(raw[:size]):
                    body = body[:-size]
                    break
    return body


def scrub(value: Any, hidden: Sequence[str]) -> Any:
    """``value`` (a result) with every string holding one of ``hidden`` blanked, at any depth.

    Parsed JSON may spell a value differently from the raw bytes (``\\/`` for ``/``), so the
    scrub of the bytes alone is not enough.
    """
    if isinstance(value, str):
        for secret in hidden:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {scrub(k, hidden): scrub(v, hidden) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, hidden) for v in value]
    return value


# The names fluxo secret set accepts (fluxo_core.storage.secrets.NAME_PATTERN).
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
