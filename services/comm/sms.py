"""The ``sms-send`` built-in service: one text message through a Twilio-compatible REST API.

A payload item describes one message::

    {"provider": {"account_sid": "AC...", "auth_token": {"secret": "twilio"},
                  "base_url": "https://api.twilio.com"},
     "to": "+15558675310", "from": "+15017122661", "body": "Your order has shipped"}

(``messaging_service_sid`` may replace ``from``; ``media_urls`` adds MMS media.) The request is
Twilio's: ``POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json``, form-encoded
(``To``, ``From`` or ``MessagingServiceSid``, ``Body``, ``MediaUrl``), with HTTP basic auth
(the account SID and the auth token, or ``api_key_sid`` and its secret). Providers that copy
Twilio's API (and Twilio's own test and regional endpoints) take a ``base_url``.

The call id goes along as ``I-Twilio-Idempotency-Token``: a run again of the same call (a retry
after a timeout, a run after a crash) is recognised by the provider and sends no second message.

The result is what the provider answered::

    {"sid": "SM...", "status": "queued", "to": "+15558675310", "from": "+15017122661"}

A refusal (HTTP 4xx, with Twilio's ``code`` and ``message``) fails the call at once, naming the
code; 429, 5xx, timeouts and connection failures are retried. The base URL passes the host policy
of the ``http`` service (``FLUXO_HTTP_ALLOW`` / ``FLUXO_HTTP_DENY``), checked at connect time;
redirects are not followed.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from fluxo_core.errors import ServiceError
from fluxo_core.ir import Packet, Payload
from fluxo_core.redaction import hidden_from_logs
from service_runtime.sdk import Call, RetryPolicy, Service
from services.comm.common import Problems, hide_secrets, one_message, read_capped, read_secrets
from services.config import BuiltinConfig
from services.http.credentials import SecretSource
from services.http.policy import HostPolicy, Resolver, guarded_transport

__all__ = ["IDEMPOTENCY_HEADER", "SmsService"]

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
DEFAULT_BASE_URL = "https://api.twilio.com"
_FIELDS = frozenset({"provider", "to", "from", "messaging_service_sid", "body", "media_urls"})
_PROVIDER_FIELDS = frozenset({"base_url", "account_sid", "api_key_sid", "auth_token", "timeout_s"})
_SID = re.compile(r"^[A-Za-z]{2}[0-9a-fA-F]{32}$")
# E.164, optionally behind a channel ("whatsapp:+1..."); a sender may also be an alphanumeric id.
_PHONE = re.compile(r"^([a-z]{2,16}:)?\+[1-9][0-9]{6,14}$")
_SENDER_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_MAX_BODY_CHARS = 1600  # Twilio's limit for one message's Body
_MAX_MEDIA = 10
_MAX_ANSWER_BYTES = 65_536

SMS_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["provider", "to"],
    "properties": {
        "provider": {"type": "object"},
        "to": {"type": "string"},
        "from": {"type": "string"},
        "messaging_service_sid": {"type": "string"},
        "body": {"type": "string"},
        "media_urls": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

SMS_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sid", "status"],
    "properties": {
        "sid": {"type": "string"},
        "status": {"type": "string"},
        "to": {"type": ["string", "null"]},
        "from": {"type": ["string", "null"]},
    },
}


@dataclass(frozen=True)
class _Sms:
    url: httpx.URL
    username: str
    token_secret: str
    timeout_s: float
    form: tuple[tuple[str, str], ...]


class SmsService:
    """The ``sms-send`` built-in service (see the module docstring for payload and result).

    Args:
        config: limits and the host policy settings.
        secrets: where the auth token is read from.
        client: an ``httpx.AsyncClient`` to send with (its owner closes it); without one each call
            uses a short-lived client with :func:`~services.http.policy.guarded_transport`.
        resolver: name resolution for the host policy (tests inject a fixed table).
    """

    def __init__(
        self,
        config: BuiltinConfig | None = None,
        *,
        secrets: SecretSource | None = None,
        client: httpx.AsyncClient | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._config = config or BuiltinConfig()
        self._secrets = secrets
        self._client = client
        self._policy = HostPolicy.from_config(self._config, resolver=resolver)
        self._ssl_context: ssl.SSLContext | None = None
        self.service = Service(
            name="sms-send",
            version="1",
            handler=self._handle,
            takes="packet",
            description="Send a text message through a Twilio-compatible API.",
            input_schema=SMS_REQUEST_SCHEMA,
            output_schema=SMS_RESULT_SCHEMA,
            retry=RetryPolicy(max_attempts=5, backoff_base_s=1.0, backoff_max_s=60.0),
            timeout_s=self._config.comm_timeout_s + 10.0,
        )

    async def _handle(self, packet: Packet, call: Call | None = None) -> Payload:
        # The runtime passes the call (the handler declares it); the default keeps the
        # handler a one-argument callable, as Service types it.
        return await self.send(packet.payload, call=call or Call.of(packet))

    async def send(self, payload: Payload, *, call: Call) -> Payload:
        """Send the message the payload describes, as ``call`` (its account, its idempotency key).

        Raises:
            ValidationError: the payload is not a valid message (every problem, located).
            ServiceError: the provider refused the message or the credentials (not retryable,
                with the provider's code); 429, 5xx, a timeout or a connection failure
                (retryable).
        """
        one_message(payload, "sms-send", "message")
        spec = self._parse(payload)
        token = (
            await read_secrets(self._secrets, call.account_id, [spec.token_secret], "sms-send")
        )[spec.token_secret]
        with hidden_from_logs([token]):
            response, body = await self._post(spec, token, call.idempotency_key)
        return _outcome(spec, response, hide_secrets(body, [token]))

    async def _post(self, spec: _Sms, token: str, key: str) -> tuple[httpx.Response, str]:
        where = f"POST to {spec.url.host}"
        await self._policy.vet(
            spec.url.host, spec.url.port or (443 if spec.url.scheme == "https" else 80)
        )
        try:
            if self._client is not None:
                return await _exchange(self._client, spec, token, key)
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            transport = guarded_transport(self._policy, verify=self._ssl_context)
            async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
                return await _exchange(client, spec, token, key)
        except httpx.TimeoutException as exc:
            raise ServiceError(
                f"{where} timed out after {spec.timeout_s:g}s; the message may have been sent: "
                "the retry carries the same idempotency key",
                retryable=True,
                host=spec.url.host,
            ) from exc
        except httpx.TransportError as exc:
            raise ServiceError(
                f"{where} failed: {type(exc).__name__}: {hide_secrets(str(exc), [token])[:200]}",
                retryable=True,
                host=spec.url.host,
            ) from exc

    def _parse(self, item: Any) -> _Sms:
        problems = Problems()
        if not isinstance(item, Mapping):
            problems.add("payload", "a message must be an object")
            problems.refuse("sms-send")
        problems.unknown(item, _FIELDS, "payload")
        provider = item.get("provider")
        url = httpx.URL(DEFAULT_BASE_URL)
        username, token, timeout, sid = "", None, 0.0, ""
        if not isinstance(provider, Mapping):
            problems.add("payload.provider", "required: an object with account_sid and auth_token")
        else:
            problems.unknown(provider, _PROVIDER_FIELDS, "payload.provider")
            sid = problems.string(provider, "account_sid", "payload.provider", required=True) or ""
            if sid and not _SID.match(sid):
                problems.add(
                    "payload.provider.account_sid",
                    "not an account SID (AC followed by 32 hex digits)",
                )
            key_sid = problems.string(provider, "api_key_sid", "payload.provider", required=False)
            if key_sid is not None and not _SID.match(key_sid):
                problems.add(
                    "payload.provider.api_key_sid",
                    "not an API key SID (SK followed by 32 hex digits)",
                )
            username = key_sid or sid
            token = problems.secret_ref(provider, "auth_token", "payload.provider", required=True)
            base = problems.string(provider, "base_url", "payload.provider", required=False)
            if base is not None:
                try:
                    url = httpx.URL(base)
                except httpx.InvalidURL:
                    problems.add("payload.provider.base_url", "not a valid URL")
                if url.scheme not in ("http", "https") or not url.host:
                    problems.add("payload.provider.base_url", "must be an http(s) URL with a host")
                elif url.userinfo or url.query:
                    problems.add("payload.provider.base_url", "must hold no credentials or query")
            timeout = problems.number(
                provider, "timeout_s", "payload.provider", 15.0, cap=self._config.comm_timeout_s
            )
        form: list[tuple[str, str]] = []
        to = problems.string(item, "to", "payload", required=True)
        if to is not None and not _PHONE.match(to):
            problems.add("payload.to", "not a phone number in E.164 form (e.g. +15558675310)")
        form.append(("To", to or ""))
        sender = problems.string(item, "from", "payload", required=False)
        service_sid = problems.string(item, "messaging_service_sid", "payload", required=False)
        if (sender is None) == (service_sid is None):
            problems.add("payload.from", "give either from (a number) or messaging_service_sid")
        if sender is not None:
            if not (_PHONE.match(sender) or _SENDER_ID.match(sender)):
                problems.add("payload.from", "not a phone number in E.164 form or a sender id")
            form.append(("From", sender))
        if service_sid is not None:
            if not _SID.match(service_sid):
                problems.add("payload.messaging_service_sid", "not a messaging service SID (MG...)")
            form.append(("MessagingServiceSid", service_sid))
        body = item.get("body")
        if body is not None:
            if not isinstance(body, str):
                problems.add("payload.body", "must be a string")
            elif len(body) > _MAX_BODY_CHARS:
                problems.add("payload.body", f"at most {_MAX_BODY_CHARS} characters")
            else:
                form.append(("Body", body))
        media = item.get("media_urls", [])
        if (
            not isinstance(media, list)
            or len(media) > _MAX_MEDIA
            or not all(isinstance(m, str) and m.startswith(("https://", "http://")) for m in media)
        ):
            problems.add(
                "payload.media_urls", f"must be a list of at most {_MAX_MEDIA} http(s) URLs"
            )
        else:
            form.extend(("MediaUrl", m) for m in media)
        if not body and not media:
            problems.add("payload.body", "give a body, media_urls or both")
        problems.raise_if_any("sms-send")
        path = f"{url.path.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        return _Sms(url.copy_with(path=path), username, token or "", timeout, tuple(form))


async def _exchange(
    client: httpx.AsyncClient, spec: _Sms, token: str, key: str
) -> tuple[httpx.Response, str]:
    request = client.build_request(
        "POST",
        spec.url,
        data=_group(spec.form),
        headers={IDEMPOTENCY_HEADER: key, "Accept": "application/json"},
        timeout=spec.timeout_s,
    )
    response = await client.send(
        request, auth=(spec.username, token), stream=True, follow_redirects=False
    )
    try:
        body = await read_capped(response, _MAX_ANSWER_BYTES)
    finally:
        await response.aclose()
    return response, body.decode("utf-8", errors="replace")


def _group(form: tuple[tuple[str, str], ...]) -> dict[str, str | list[str]]:
    grouped: dict[str, str | list[str]] = {}
    for name, value in form:
        if name == "MediaUrl":
            existing = grouped.setdefault(name, [])
            if isinstance(existing, list):
                existing.append(value)
        else:
            grouped[name] = value
    return grouped


def _outcome(spec: _Sms, response: httpx.Response, body: str) -> dict[str, Any]:
    host = spec.url.host
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if (
        response.status_code in (200, 201)
        and isinstance(answer, dict)
        and isinstance(answer.get("sid"), str)
    ):
        return {
            "sid": answer["sid"],
            "status": str(answer.get("status", "")),
            "to": answer.get("to"),
            "from": answer.get("from"),
        }
    status = response.status_code
    detail = ""
    if isinstance(answer, dict) and ("code" in answer or "message" in answer):
        detail = f": code {answer.get('code')}: {str(answer.get('message', ''))[:300]}"
    elif body:
        detail = f": {body[:300]}"
    if 200 <= status < 300:
        raise ServiceError(
            f"the SMS provider at {host} answered HTTP {status} without a message sid{detail}",
            retryable=False,
            host=host,
            status=status,
        )
    if status in (401, 403):
        hint = "; check account_sid and the stored auth_token secret"
    elif 300 <= status < 400:
        hint = "; redirects are not followed: give the provider's API address as base_url"
    else:
        hint = ""
    raise ServiceError(
        f"the SMS provider at {host} refused the message: HTTP {status}{detail}{hint}",
        retryable=status >= 500 or status == 429,
        host=host,
        status=status,
    )
