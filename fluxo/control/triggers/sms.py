"""SMS triggers: an incoming text message, pushed by the provider to
``POST /hooks/{account}/{trigger}/sms``, starts one job.

Two providers (``spec.sms.provider``):

- ``twilio``: Twilio's form webhook (``From``, ``To``, ``Body``, ``MessageSid``, ``NumMedia``,
  ``MediaUrl0``...). It is checked as Twilio signs it: ``X-Twilio-Signature`` is the Base64 of
  the HMAC-SHA1, keyed with the account's auth token (the stored secret ``spec.sms.secret``),
  of the full URL Twilio called followed by each POST parameter's name and value, sorted by
  name. Behind a proxy the URL Fluxo sees is not the one Twilio called: ``spec.sms.publicUrl``
  names it. The answer is an empty TwiML ``<Response/>``: no reply is sent.
- ``json``: a JSON body ``{"id", "from", "to", "text"}`` (more fields are kept), signed like a
  webhook: ``X-Fluxo-Timestamp`` and ``X-Fluxo-Signature: sha256=<hex>`` over
  ``<timestamp>.<body>`` (replays older than five minutes refused).

A request without a valid signature gets 403 and creates nothing, with one message whether the
trigger exists or not. The message id (``MessageSid``, ``id``) is the event id: a provider's
retry gives the first job back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

from fluxo.control.triggers.webhook import check_timestamp, sign
from fluxo_core.errors import (
    AuthError,
    MalformedRequestError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from fluxo_core.ir.documents import DocumentLimits, parse_json
from fluxo_core.storage import SecretStore
from fluxo_core.storage.triggers import TriggerRow, TriggerStore

__all__ = [
    "EMPTY_TWIML",
    "MAX_SMS_BYTES",
    "TWILIO_SIGNATURE_HEADER",
    "SmsRequest",
    "sms_request",
    "twilio_signature",
]

TWILIO_SIGNATURE_HEADER: Final = "X-Twilio-Signature"
EMPTY_TWIML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_SMS_BYTES: Final = 65_536
"""A text message's webhook is small (Twilio's is a few hundred bytes): larger is refused."""
MAX_FIELDS: Final = 200
MAX_MEDIA: Final = 10
_MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a POST of ``params`` to ``url``."""
    data = url + "".join(name + value for name, value in sorted(params))
    mac = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _refused(provider: str) -> PermissionDeniedError:
    # One message for a wrong signature and for a trigger that does not exist.
    how = (
        f"{TWILIO_SIGNATURE_HEADER} must be Twilio's signature with the account's auth token "
        "over the URL Twilio calls (set spec.sms.publicUrl when a proxy changes it)"
        if provider == "twilio"
        else "sign '<timestamp>.<body>' with HMAC-SHA256 and the trigger's secret "
        "(X-Fluxo-Timestamp, X-Fluxo-Signature: sha256=<hex>)"
    )
    return PermissionDeniedError(
        f"the SMS request is not signed for this trigger: {how}; nothing was created"
    )


class SmsRequest:
    """An authenticated SMS of a trigger: its event id and the job's payload."""

    def __init__(self, row: TriggerRow, event_id: str, payload: dict[str, Any]) -> None:
        self.row = row
        self.event_id = event_id
        self.payload = payload

    @property
    def provider(self) -> str:
        return str(self.row.spec["sms"].get("provider", "twilio"))


async def sms_request(
    store: TriggerStore,
    secrets: SecretStore | None,
    account_id: str,
    name: str,
    *,
    url: str,
    headers: Mapping[str, str],
    content_type: str,
    body: bytes,
    now: float,
    limits: DocumentLimits,
) -> SmsRequest:
    """Check an SMS delivery to trigger ``name`` of ``account_id`` and read it.

    ``url``: the URL the request came to, as this server saw it.

    Raises:
        PermissionDeniedError: not signed for an SMS trigger of that name (403).
        PayloadTooLargeError, MalformedRequestError, ValidationError: a body that is too
            large, does not parse, or lacks the message's fields.
    """
    row = await store.find(account_id, name)
    config = row.spec.get("sms") if row is not None and row.type == "sms" else None
    provider = str(config.get("provider", "twilio")) if config else _provider_of(headers)
    secret = await _secret(secrets, account_id, config["secret"]) if config else None
    if len(body) > MAX_SMS_BYTES:
        raise MalformedRequestError(
            f"the SMS request is {len(body)} bytes, over {MAX_SMS_BYTES}; nothing was created",
            problems=[("body", "too large")],
        )
    if provider == "twilio":
        params = _form(body)
        signed_url = (config or {}).get("publicUrl") or url
        given = headers.get(TWILIO_SIGNATURE_HEADER, "")
        expected = twilio_signature(secret or "\x00unknown", signed_url, params)
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise _refused("twilio")
        if row is None or secret is None:
            raise _refused("twilio")
        return SmsRequest(row, *_twilio_event(params))
    try:
        stamp = check_timestamp(headers, now)
    except AuthError:
        raise _refused("json") from None
    given = headers.get("X-Fluxo-Signature", "")
    expected = sign(secret or "\x00unknown", stamp or 0, body)
    if stamp is None or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise _refused("json")
    if row is None or secret is None:
        raise _refused("json")
    return SmsRequest(row, *_json_event(body, limits))


def _provider_of(headers: Mapping[str, str]) -> str:
    """For a trigger that does not exist: refuse in the words of the provider that called."""
    return "twilio" if TWILIO_SIGNATURE_HEADER in headers else "json"


async def _secret(secrets: SecretStore | None, account_id: str, name: str) -> str | None:
    if secrets is None:
        return None
    try:
        return (await secrets.reveal(account_id, [name]))[name]
    except NotFoundError:
        return None


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise MalformedRequestError(
            "the SMS form is not UTF-8", problems=[("body", "not UTF-8")]
        ) from None
    except ValueError:
        raise MalformedRequestError(
            f"the SMS form has more than {MAX_FIELDS} fields", problems=[("body", "too many")]
        ) from None


def _message_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _MESSAGE_ID.fullmatch(value):
        raise ValidationError(
            f"{where} must be the message's id: 1 to 128 letters, digits or . _ : -",
            problems=[(where, "missing or invalid message id")],
        )
    return value


def _twilio_event(params: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    fields = dict(params)
    sid = _message_id(fields.get("MessageSid") or fields.get("SmsSid"), "body.MessageSid")
    try:
        media_count = min(int(fields.get("NumMedia", "0") or 0), MAX_MEDIA)
    except ValueError:
        media_count = 0
    media = [
        {"url": fields.get(f"MediaUrl{i}"), "contentType": fields.get(f"MediaContentType{i}")}
        for i in range(media_count)
    ]
    payload = {
        "provider": "twilio",
        "id": sid,
        "from": fields.get("From", ""),
        "to": fields.get("To", ""),
        "text": fields.get("Body", ""),
        "media": media,
        "fields": fields,
    }
    return f"sms:{sid}", payload


def _json_event(body: bytes, limits: DocumentLimits) -> tuple[str, dict[str, Any]]:
    document = parse_json(body, limits=limits, where="body")
    if not isinstance(document, dict):
        raise ValidationError(
            'the SMS body must be an object {"id", "from", "to", "text"}',
            problems=[("body", "expected an object")],
        )
    message_id = _message_id(document.get("id"), "body.id")
    for field in ("from", "to", "text"):
        if not isinstance(document.get(field, ""), str):
            raise ValidationError(
                f"body.{field} must be text", problems=[(f"body.{field}", "expected a string")]
            )
    payload = {
        "provider": "json",
        "id": message_id,
        "from": document.get("from", ""),
        "to": document.get("to", ""),
        "text": document.get("text", ""),
        "fields": document,
    }
    return f"sms:{message_id}", payload
