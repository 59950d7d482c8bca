"""The ``webhook-send`` built-in service: a signed outbound webhook, retried with backoff.

A payload item describes one delivery::

    {"url": "https://hooks.example.com/fluxo", "json": {"order": "SO-1042"},
     "signing_secret": {"secret": "hooks-acme"}, "headers": {"X-Tenant": "acme"},
     "timeout_s": 10, "max_attempts": 5}

(``body`` with an optional ``content_type`` sends text instead of ``json``.) It is sent as a POST
with these headers, the scheme Fluxo's own inbound webhooks verify:

``X-Fluxo-Timestamp``
    the time of this attempt, in Unix seconds;
``X-Fluxo-Signature``
    ``sha256=`` and the hex HMAC-SHA256, keyed with the secret, of ``<timestamp>.<body>`` (the
    timestamp's digits, a dot, the body's exact bytes); a receiver recomputes it, compares in
    constant time and refuses timestamps older than five minutes (replays);
``X-Fluxo-Delivery``
    the call id: the same on every attempt and every run of the call, so a receiver that sees
    it twice knows the delivery is a repeat.

A 2xx answer is a success. 408, 429, 5xx, timeouts and connection failures are tried again within
the call, with exponential backoff, up to ``max_attempts`` (capped by the configuration); then the
call fails as retryable, so the runtime's retry policy takes over with the same delivery id. Any
other answer fails the call at once. Redirects are not followed unless ``follow_redirects`` is set,
and then only 307/308 (they keep the method and body), each hop through the host policy of the
``http`` service, so a redirect never reaches an internal address that is not allowed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from fluxo_core.errors import ServiceError
from fluxo_core.ir import Packet, Payload
from fluxo_core.redaction import hidden_from_logs
from service_runtime.sdk import Call, RetryPolicy, Service
from services.comm.common import (
    Problems,
    backoff_delay,
    hide_secrets,
    one_message,
    read_capped,
    read_secrets,
)
from services.config import BuiltinConfig
from services.http.credentials import SecretSource, carries_credentials
from services.http.policy import HostPolicy, Resolver, guarded_transport

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookService",
    "sign_webhook",
    "verify_webhook",
]

TIMESTAMP_HEADER = "X-Fluxo-Timestamp"
SIGNATURE_HEADER = "X-Fluxo-Signature"
DELIVERY_HEADER = "X-Fluxo-Delivery"
_FIELDS = frozenset(
    {
        "url",
        "json",
        "body",
        "content_type",
        "headers",
        "signing_secret",
        "timeout_s",
        "max_attempts",
        "follow_redirects",
    }
)
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding"})
_RETRY_STATUSES = frozenset({408, 429})
_MAX_ANSWER_BYTES = 4096

WEBHOOK_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url", "signing_secret"],
    "properties": {name: {} for name in sorted(_FIELDS)},
    "additionalProperties": False,
}

WEBHOOK_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "attempts", "delivery_id"],
    "properties": {
        "status": {"type": "integer"},
        "attempts": {"type": "integer"},
        "delivery_id": {"type": "string"},
        "body": {"type": "string"},
    },
}


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Fluxo-Signature`` value of ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_webhook(
    secret: str,
    timestamp: str,
    signature: str,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """Whether a webhook's headers fit its body and it is fresh (within ``tolerance_s`` of ``now``)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, int(timestamp), body), signature)


@dataclass(frozen=True)
class _Webhook:
    url: httpx.URL
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...]
    secret_name: str
    timeout_s: float
    max_attempts: int
    follow_redirects: bool


class WebhookService:
    """The ``webhook-send`` built-in service (see the module docstring for payload and result).

    Args:
        config: limits, the attempt cap and backoff, the host policy settings.
        secrets: where the signing secret is read from.
        client: an ``httpx.AsyncClient`` to send with (its owner closes it); without one each call
            uses a short-lived client with :func:`~services.http.policy.guarded_transport`.
        resolver: name resolution for the host policy (tests inject a fixed table).
        sleep: how the backoff waits (tests may record the waits).
        clock: the time the timestamps are taken from, in Unix seconds.
    """

    def __init__(
        self,
        config: BuiltinConfig | None = None,
        *,
        secrets: SecretSource | None = None,
        client: httpx.AsyncClient | None = None,
        resolver: Resolver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config or BuiltinConfig()
        self._secrets = secrets
        self._client = client
        self._policy = HostPolicy.from_config(self._config, resolver=resolver)
        self._sleep = sleep
        self._clock = clock
        self._ssl_context: ssl.SSLContext | None = None
        self.service = Service(
            name="webhook-send",
            version="1",
            handler=self._handle,
            takes="packet",
            description="POST a signed webhook (HMAC-SHA256), retried with backoff.",
            input_schema=WEBHOOK_REQUEST_SCHEMA,
            output_schema=WEBHOOK_RESULT_SCHEMA,
            retry=RetryPolicy(max_attempts=5, backoff_base_s=5.0, backoff_max_s=300.0),
            # Every attempt may take the whole cap, plus the backoff between them.
            timeout_s=(self._config.comm_timeout_s + 30.0) * self._config.webhook_max_attempts,
        )

    async def _handle(self, packet: Packet, call: Call | None = None) -> Payload:
        # The runtime passes the call (the handler declares it); the default keeps the
        # handler a one-argument callable, as Service types it.
        return await self.send(packet.payload, call=call or Call.of(packet))

    async def send(self, payload: Payload, *, call: Call) -> Payload:
        """Deliver the webhook the payload describes, as ``call`` (its account, its delivery id).

        Raises:
            ValidationError: the payload is not a valid delivery (every problem, located).
            ServiceError: the receiver refused it (4xx but 408/429) or the host is refused (not
                retryable); every attempt met a 5xx, 408, 429, timeout or connection failure
                (retryable).
        """
        one_message(payload, "webhook-send", "delivery")
        spec = self._parse(payload)
        secret = (
            await read_secrets(self._secrets, call.account_id, [spec.secret_name], "webhook-send")
        )[spec.secret_name]
        with hidden_from_logs([secret]):
            return await self._deliver(spec, secret, call.idempotency_key)

    async def _deliver(self, spec: _Webhook, secret: str, delivery_id: str) -> dict[str, Any]:
        host = spec.url.host
        last_failure = ""
        for attempt in range(1, spec.max_attempts + 1):
            if attempt > 1:
                await self._sleep(backoff_delay(attempt - 1, self._config.webhook_backoff_s, 30.0))
            try:
                status, answer = await self._attempt(spec, secret, delivery_id)
            except ServiceError as exc:
                if not exc.retryable:
                    raise
                last_failure = exc.message
                continue
            answer = hide_secrets(answer, [secret])
            if 200 <= status < 300:
                return {
                    "status": status,
                    "attempts": attempt,
                    "delivery_id": delivery_id,
                    "body": answer,
                }
            if status >= 500 or status in _RETRY_STATUSES:
                last_failure = f"HTTP {status}"
                continue
            hint = (
                "; redirects are followed only with follow_redirects: true, and only 307/308"
                if 300 <= status < 400
                else ""
            )
            raise ServiceError(
                f"the webhook receiver at {host} refused delivery {delivery_id}: HTTP {status}"
                f"{': ' + answer[:300] if answer else ''}{hint}",
                retryable=False,
                host=host,
                status=status,
            )
        raise ServiceError(
            f"the webhook receiver at {host} did not take delivery {delivery_id} in "
            f"{spec.max_attempts} attempts (last: {last_failure}); it will be tried again later "
            "with the same delivery id",
            retryable=True,
            host=host,
        )

    async def _attempt(self, spec: _Webhook, secret: str, delivery_id: str) -> tuple[int, str]:
        timestamp = int(self._clock())
        headers = httpx.Headers(list(spec.headers))
        headers["Content-Type"] = spec.content_type
        headers["User-Agent"] = "Fluxo-Webhook/1"
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign_webhook(secret, timestamp, spec.body)
        headers[DELIVERY_HEADER] = delivery_id
        where = f"POST to {spec.url.host}"
        try:
            if self._client is not None:
                return await self._exchange(self._client, spec, headers)
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            transport = guarded_transport(self._policy, verify=self._ssl_context)
            async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
                return await self._exchange(client, spec, headers)
        except httpx.TimeoutException as exc:
            raise ServiceError(
                f"{where} timed out after {spec.timeout_s:g}s", retryable=True
            ) from exc
        except httpx.TransportError as exc:
            raise ServiceError(
                f"{where} failed: {type(exc).__name__}: {str(exc)[:200]}", retryable=True
            ) from exc

    async def _exchange(
        self, client: httpx.AsyncClient, spec: _Webhook, headers: httpx.Headers
    ) -> tuple[int, str]:
        url = spec.url
        for _hop in range(self._config.http_max_redirects + 1):
            # Vetted before sending for a clear error; the guarded transport vets again at connect.
            await self._policy.vet(url.host, url.port or (443 if url.scheme == "https" else 80))
            request = client.build_request(
                "POST", url, headers=headers, content=spec.body, timeout=spec.timeout_s
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                if (
                    spec.follow_redirects
                    and response.status_code in (307, 308)
                    and response.next_request is not None
                ):
                    target = response.next_request.url
                    if target.scheme not in ("http", "https"):
                        raise ServiceError(
                            f"the webhook receiver redirected to a {target.scheme!r} URL; only "
                            "http and https are followed",
                            retryable=False,
                        )
                    url = target
                    continue
                body = await read_capped(response, _MAX_ANSWER_BYTES)
                return response.status_code, body.decode("utf-8", errors="replace")
            finally:
                await response.aclose()
        raise ServiceError(
            f"the webhook to {spec.url.host} was redirected more than "
            f"{self._config.http_max_redirects} times",
            retryable=False,
        )

    def _parse(self, item: Any) -> _Webhook:
        problems = Problems()
        if not isinstance(item, Mapping):
            problems.add("payload", "a webhook must be an object")
            problems.refuse("webhook-send")
        problems.unknown(item, _FIELDS, "payload")
        url = httpx.URL("http://invalid")
        raw_url = problems.string(item, "url", "payload", required=True)
        if raw_url is not None:
            try:
                url = httpx.URL(raw_url)
            except httpx.InvalidURL:
                problems.add("payload.url", "not a valid URL")
            if url.scheme not in ("http", "https") or not url.host:
                problems.add("payload.url", "must be an http(s) URL with a host")
            elif url.userinfo:
                problems.add("payload.url", "must hold no credentials; the signature authenticates")
        body = b""
        content_type = "application/json"
        if "json" in item and "body" in item:
            problems.add("payload", "set json or body, not both")
        elif "body" in item:
            if not isinstance(item["body"], str):
                problems.add("payload.body", "must be a string (use json for structured data)")
            else:
                body = item["body"].encode()
            content_type = (
                problems.string(item, "content_type", "payload", required=False)
                or "text/plain; charset=utf-8"
            )
        else:
            body = json.dumps(item.get("json"), ensure_ascii=False, separators=(",", ":")).encode()
        if len(body) > self._config.http_max_body_bytes:
            problems.add("payload", f"the body is over {self._config.http_max_body_bytes} bytes")
        headers: list[tuple[str, str]] = []
        raw_headers = item.get("headers", {})
        if not isinstance(raw_headers, Mapping):
            problems.add("payload.headers", "must be an object of names to strings")
        else:
            for name in raw_headers:
                at = f"payload.headers.{name}"
                value = problems.string(raw_headers, name, "payload.headers", required=True)
                lowered = str(name).lower()
                if lowered.startswith("x-fluxo-") or lowered in _RESERVED_HEADERS:
                    problems.add(at, "set by Fluxo; leave it out")
                elif carries_credentials(lowered):
                    problems.add(
                        at,
                        "a credential header would be stored in the call; the signature "
                        "(signing_secret) authenticates the delivery",
                    )
                elif value is not None:
                    headers.append((str(name), value))
        secret_name = problems.secret_ref(item, "signing_secret", "payload", required=True)
        timeout = problems.number(
            item, "timeout_s", "payload", 10.0, cap=self._config.comm_timeout_s
        )
        attempts = item.get("max_attempts", 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            problems.add("payload.max_attempts", "must be a whole number, at least 1")
            attempts = 1
        follow = item.get("follow_redirects", False)
        if not isinstance(follow, bool):
            problems.add("payload.follow_redirects", "must be true or false")
        problems.raise_if_any("webhook-send")
        return _Webhook(
            url=url,
            body=body,
            content_type=content_type,
            headers=tuple(headers),
            secret_name=secret_name or "",
            timeout_s=timeout,
            max_attempts=min(attempts, self._config.webhook_max_attempts),
            follow_redirects=bool(follow),
        )
