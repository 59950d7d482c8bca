"""Webhook triggers: who may call ``POST /hooks/{account}/{trigger}``, and what the job gets.

A request proves it comes from the sender in one of two ways (``spec.webhook.auth``):

- ``hmac`` (default): ``X-Fluxo-Timestamp: <unix seconds>`` and ``X-Fluxo-Signature:
  sha256=<hex>``, the HMAC-SHA256 with the trigger's secret of ``<timestamp>.<body bytes>``.
  A timestamp more than :data:`MAX_SKEW_S` from the server's clock is refused, so a captured
  request cannot be replayed later; signatures are compared in constant time.
- ``bearer``: ``Authorization: Bearer <the secret>``.

``X-Fluxo-Delivery`` (optional, up to 128 characters) names the delivery: the same id again
gives the job the first one made. Without it, a signed request is deduplicated by its
signature (a replay within the window), a bearer one not at all.

The body becomes the job's payload ``{"body", "headers", "query", "contentType"}``: JSON
(``application/json`` or ``+json``) parsed within the document limits, a form
(``application/x-www-form-urlencoded``) as an object of fields, anything else as text. Headers
that authenticate (``Authorization``, ``Cookie``, the signature) are left out.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from fluxo_core.errors import AuthError, MalformedRequestError, ValidationError
from fluxo_core.ir.documents import DocumentLimits, parse_json

__all__ = [
    "DELIVERY_HEADER",
    "MAX_SKEW_S",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "delivery_id",
    "payload_of",
    "sign",
    "verify",
]

TIMESTAMP_HEADER: Final = "X-Fluxo-Timestamp"
SIGNATURE_HEADER: Final = "X-Fluxo-Signature"
DELIVERY_HEADER: Final = "X-Fluxo-Delivery"
MAX_SKEW_S: Final = 300.0
_DELIVERY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_HIDDEN: Final = frozenset({"authorization", "cookie", "proxy-authorization", "x-fluxo-signature"})
MAX_HEADERS: Final = 100
MAX_FORM_FIELDS: Final = 1000


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Fluxo-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def _refused(why: str) -> AuthError:
    # One message for a wrong secret and for a trigger that does not exist: the answer must not
    # tell a stranger which trigger names an account has.
    return AuthError(
        f"the webhook request is not authenticated: {why}. Sign '<timestamp>.<body>' with "
        f"HMAC-SHA256 and the trigger's secret ({TIMESTAMP_HEADER}, {SIGNATURE_HEADER}: "
        "sha256=<hex>), or send the secret as a bearer token, as the trigger's webhook.auth says"
    )


def check_timestamp(headers: Mapping[str, str], now: float) -> int | None:
    """What a request must carry whatever its trigger, checked before the trigger is looked up:
    a signature (a timestamp within :data:`MAX_SKEW_S` and ``X-Fluxo-Signature``) or a bearer
    token. The signed timestamp, or None for a bearer request."""
    raw = headers.get(TIMESTAMP_HEADER)
    if raw is None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _refused(
                f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (or Authorization: Bearer) are required"
            )
        return None
    if not re.fullmatch(r"[0-9]{1,12}", raw.strip()):
        raise _refused(f"{TIMESTAMP_HEADER} must be whole Unix seconds, e.g. 1800000000")
    stamp = int(raw.strip())
    if abs(now - stamp) > MAX_SKEW_S:
        raise _refused(
            f"{TIMESTAMP_HEADER} is {int(now - stamp)} s from the server's time; requests more "
            f"than {int(MAX_SKEW_S)} s old (or ahead) are refused as replays"
        )
    if not headers.get(SIGNATURE_HEADER, "").strip():
        raise _refused(f"{SIGNATURE_HEADER} is required with {TIMESTAMP_HEADER}")
    return stamp


# After the trigger is looked up, one answer for every mismatch: a wrong secret, the other
# scheme than the trigger's, and a trigger that does not exist look the same to the sender.
_MISMATCH = (
    "the signature or bearer token does not match: check the URL, the trigger's secret and "
    "its webhook.auth"
)


def verify(
    auth: str, secret: str | None, headers: Mapping[str, str], body: bytes, stamp: int | None
) -> str:
    """Check the request against the trigger's secret (None: no such trigger, or no secret);
    the signature's hex digest (``hmac``) or "" (``bearer``).

    Raises:
        AuthError: the same message whatever does not match, and whether or not the trigger
            exists.
    """
    # Computed even when the trigger is unknown, so the answer takes as long.
    known = secret is not None
    key = secret if secret is not None else "\x00unknown"
    if auth == "bearer":
        _, _, token = headers.get("Authorization", "").partition(" ")
        matches = hmac.compare_digest(token.strip().encode(), key.encode())
        if not (matches and known and stamp is None):
            raise _refused(_MISMATCH)
        return ""
    expected = sign(key, stamp or 0, body)
    given = headers.get(SIGNATURE_HEADER, "").strip()
    if not (hmac.compare_digest(given.encode(), expected.encode()) and known and stamp):
        raise _refused(_MISMATCH)
    return expected.removeprefix("sha256=")


def delivery_id(headers: Mapping[str, str], signature: str) -> str | None:
    """The event id a delivery is deduplicated by (None: not deduplicated)."""
    raw = headers.get(DELIVERY_HEADER)
    if raw is not None:
        if not _DELIVERY.fullmatch(raw):
            raise ValidationError(
                f"{DELIVERY_HEADER} must be 1 to 128 letters, digits or . _ : -",
                problems=[(f"headers.{DELIVERY_HEADER}", "invalid delivery id")],
            )
        return f"d:{raw}"
    return f"s:{signature[:32]}" if signature else None


def payload_of(
    body: bytes,
    content_type: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    *,
    limits: DocumentLimits,
) -> dict[str, Any]:
    """The job's payload for a webhook request (CPU-bound for a large JSON body: the API runs
    it off the event loop then).

    Raises:
        MalformedRequestError: JSON that does not parse, text that is not UTF-8.
        DocumentTooComplexError: JSON nested or sized beyond ``limits``.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    parsed: Any
    if not body:
        parsed = None
    elif media == "application/json" or media.endswith("+json"):
        parsed = parse_json(body, limits=limits, where="body")
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequestError(
                "the webhook body is not UTF-8 text; send JSON, a form or UTF-8 text",
                problems=[("body", "not UTF-8")],
            ) from None
        if "\x00" in text:
            raise MalformedRequestError(
                "the webhook body holds a NUL character", problems=[("body", "NUL character")]
            )
        if media == "application/x-www-form-urlencoded":
            try:
                fields = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
            except ValueError:
                raise MalformedRequestError(
                    f"the form has more than {MAX_FORM_FIELDS} fields",
                    problems=[("body", "too many form fields")],
                ) from None
            form: dict[str, Any] = {}
            for key, value in fields:
                if key in form:  # a repeated field is a list, in order
                    prior = form[key]
                    form[key] = [*prior, value] if isinstance(prior, list) else [prior, value]
                else:
                    form[key] = value
            parsed = form
        else:
            parsed = text
    kept = {
        k.lower(): v for k, v in list(headers.items())[:MAX_HEADERS] if k.lower() not in _HIDDEN
    }
    return {"body": parsed, "headers": kept, "query": dict(query), "contentType": media}
