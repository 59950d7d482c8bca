"""``fluxo call``: one service call through a Fluxo gateway, for engines that run containers.

Argo runs a step as ``fluxo call SERVICE --gateway URL --packet JSON --wait N`` when the call may
outlast an HTTP template (see ``translators.argo``). The call record is printed on stdout (Argo
makes it the step's ``outputs.result``); the exit status is 0 only when the call succeeded, so
Argo's ``retryStrategy`` retries a failure. The packet's id makes the call idempotent: asking
again, after a lost answer or to keep waiting, never runs the service twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import httpx

from fluxo_core.errors import (
    AuthError,
    CallFailedError,
    CallTimeoutError,
    ConfigError,
    MalformedRequestError,
    PermissionDeniedError,
)
from fluxo_core.ir.documents import DEFAULT_LIMITS, DocumentLimits, parse_json

__all__ = ["call_service"]

MAX_WAIT_PER_REQUEST_S = 300.0
NETWORK_RETRIES = 5


def authorization_header() -> str:
    """``FLUXO_AUTHORIZATION`` (the whole header, as a Kubernetes Secret holds it) or
    ``FLUXO_TOKEN``."""
    header = os.environ.get("FLUXO_AUTHORIZATION", "").strip()
    if header:
        return header
    token = os.environ.get("FLUXO_TOKEN", "").strip()
    if token:
        return f"Bearer {token}"
    raise AuthError(
        "fluxo call needs a token: set FLUXO_AUTHORIZATION='Bearer <token>' or FLUXO_TOKEN"
    )


def parse_packet(text: str, *, limits: DocumentLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    packet = parse_json(text, limits=limits, where="--packet")
    if not isinstance(packet, dict) or not isinstance(packet.get("id"), str):
        raise MalformedRequestError(
            "--packet must be a packet object with an 'id' (the id makes a repeat the same call)",
            problems=[("--packet.id", "missing")],
        )
    return packet


async def call_service(
    service: str,
    gateway: str,
    packet: dict[str, Any],
    *,
    wait_s: float,
    authorization: str,
    client: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """The call record once the call ended (succeeded or failed).

    Raises:
        CallTimeoutError: still running after ``wait_s``.
        AuthError, PermissionDeniedError, CallFailedError: the gateway refused the call (its
            message is kept).
    """
    if not gateway.startswith(("http://", "https://")):
        raise ConfigError(f"--gateway {gateway!r} is not an http(s) URL")
    url = f"{gateway.rstrip('/')}/v1/services/{service}/calls"
    deadline = time.monotonic() + wait_s
    own = client is None
    http = client or httpx.AsyncClient(timeout=None)
    failures = 0
    try:
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            wait = min(left, MAX_WAIT_PER_REQUEST_S)
            try:
                response = await http.post(
                    url,
                    params={"wait": f"{wait:.3f}"},
                    json=packet,
                    headers={"Authorization": authorization},
                    timeout=wait + 30,
                )
            except httpx.TransportError as exc:
                failures += 1
                if failures > NETWORK_RETRIES or time.monotonic() >= deadline:
                    raise CallTimeoutError(
                        f"the gateway at {gateway} could not be reached ({type(exc).__name__})",
                        service=service,
                    ) from exc
                await asyncio.sleep(min(2.0**failures, 30.0))
                continue
            body = response.json() if response.content else {}
            if response.status_code == 200:
                return dict(body)
            if response.status_code == 202:
                if time.monotonic() >= deadline:
                    raise CallTimeoutError(
                        f"call {packet['id']} of {service} did not finish in {wait_s:g} s",
                        service=service,
                        call_id=packet["id"],
                    )
                continue  # same packet id: keep waiting for the same call
            error = body.get("error", {}) if isinstance(body, dict) else {}
            message = error.get("message") or f"the gateway answered HTTP {response.status_code}"
            if response.status_code == 401:
                raise AuthError(message)
            if response.status_code == 403:  # blocked account, cancelled job: not retried
                raise PermissionDeniedError(message)
            if response.status_code >= 500 and failures < NETWORK_RETRIES:
                failures += 1
                await asyncio.sleep(min(2.0**failures, 30.0))
                continue
            raise CallFailedError(message, status=response.status_code, service=service)
    finally:
        if own:
            await http.aclose()


async def run(
    service: str,
    gateway: str,
    packet_text: str,
    wait_s: float,
    *,
    limits: DocumentLimits = DEFAULT_LIMITS,
) -> int:
    record = await call_service(
        service,
        gateway,
        parse_packet(packet_text, limits=limits),
        wait_s=wait_s,
        authorization=authorization_header(),
    )
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    return 0 if record.get("status") == "succeeded" else 1
