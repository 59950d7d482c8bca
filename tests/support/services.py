"""Services used by tests, also loaded by worker subprocesses (``fluxo worker --module``).

Handlers that must be observed from outside a process append lines to the file named by
``FLUXO_TEST_EFFECTS`` (one line per handler execution), so a test can tell how often a handler
RAN, as opposed to how often its effect was committed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fluxo_core.errors import ServiceError
from service_runtime import Call, Outputs, Price, RetryPolicy, service


def _record(line: str) -> None:
    path = os.environ.get("FLUXO_TEST_EFFECTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


@service("echo", inline=True, price=Price(per_call="0.001"))
def echo(payload: Any) -> Any:
    return payload


@service("fan-out", inline=True, price=Price(per_call="0.01", per_item="0.002"))
def fan_out(payload: dict[str, Any]) -> Outputs:
    """1 -> N: one output packet per element of ``payload["items"]``."""
    return Outputs({"item": item, "index": i} for i, item in enumerate(payload["items"]))


@service(
    "slow",
    timeout_s=3.0,
    retry=RetryPolicy(max_attempts=5, backoff_base_s=0.05, backoff_max_s=0.2),
    price=Price(per_call="0.5"),
)
async def slow(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``payload["sleep"]`` seconds, so a test can kill the process mid-handler."""
    _record(f"start {payload['n']}")
    await asyncio.sleep(float(payload.get("sleep", 0)))
    _record(f"end {payload['n']}")
    return {"n": payload["n"], "done": True}


@service("notify", timeout_s=10.0, price=Price(per_call="0.002"))
async def notify(payload: dict[str, Any]) -> dict[str, Any]:
    """Sends a notification (a line ``notify <n>`` in the effects file: its side effect, done
    before it answers), then waits ``payload["sleep"]`` seconds for the provider's answer.

    No fsync: a test kills the process, not the machine, and the page cache keeps the line."""
    path = os.environ.get("FLUXO_TEST_EFFECTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"notify {payload['n']}\n")
    await asyncio.sleep(float(payload.get("sleep", 0)))
    return {**payload, "notified": True}


@service("flaky", retry=RetryPolicy(max_attempts=4, backoff_base_s=0.05, backoff_max_s=0.2))
async def flaky(payload: dict[str, Any]) -> dict[str, Any]:
    """Fails (retryably) until its ``fail_times``-th attempt has passed."""
    _record(f"try {payload['n']}")
    count = sum(1 for line in _lines() if line == f"try {payload['n']}")
    if count <= int(payload.get("fail_times", 0)):
        raise ServiceError(f"transient failure {count}", retryable=True)
    return {"n": payload["n"], "attempts": count}


@service("broken", retry=RetryPolicy(max_attempts=5, backoff_base_s=0.01))
async def broken(payload: dict[str, Any]) -> dict[str, Any]:
    raise ServiceError("this input can never work", retryable=False)


@service("inc", inline=True, price=Price(per_call="0.001"))
def inc(payload: dict[str, Any]) -> dict[str, Any]:
    """Adds ``by`` (default 1) to ``n`` and records the step in ``trail``."""
    return {**payload, "n": payload.get("n", 0) + payload.get("by", 1)}


@service("listed", inline=True, price=Price(per_call="0.001"))
def listed(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One output packet whose payload is an array: ``[payload]``."""
    return [payload]


@service("jitter", price=Price(per_call="0.001"))
async def jitter(payload: dict[str, Any]) -> dict[str, Any]:
    """Finishes after a delay that shrinks with ``i``: later items finish first."""
    await asyncio.sleep(max(0.0, 0.2 - 0.02 * int(payload.get("i", 0))))
    return {**payload, "seen": True}


@service("once-broken", retry=RetryPolicy(max_attempts=1))
async def once_broken(payload: dict[str, Any]) -> dict[str, Any]:
    """Fails the first call for each ``n`` (not retried by the runtime), then succeeds."""
    _record(f"once {payload['n']}")
    if sum(1 for line in _lines() if line == f"once {payload['n']}") == 1:
        raise ServiceError("first call fails", retryable=False)
    return {"n": payload["n"], "ok": True}


@service("gated", retry=RetryPolicy(max_attempts=1), price=Price(per_call="0.002"))
async def gated(payload: dict[str, Any]) -> dict[str, Any]:
    """Fails (not retried by the runtime) until the effects file holds the line ``open``: a
    fault fixed from outside, as an operator fixes what failed a job before retrying it."""
    _record(f"gated {payload['n']}")
    if "open" not in _lines():
        raise ServiceError("the gate is closed", retryable=False)
    return {**payload, "passed": True}


def open_gate() -> None:
    """Let ``gated`` pass from now on (in the current effects file)."""
    _record("open")


@service(
    "deliver",
    timeout_s=10.0,
    retry=RetryPolicy(max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.2),
    price=Price(per_call="0.001"),
)
async def deliver(payload: dict[str, Any], call: Call) -> dict[str, Any]:
    """Sends ``n`` to the outside world with the call's idempotency key (a line ``deliver <n>
    <key> <attempt>``), then waits ``sleep`` seconds for the answer; fails (retryably) while
    fewer than ``fail_times`` sends of ``n`` were made."""
    _record(f"deliver {payload['n']} {call.idempotency_key} {call.attempt}")
    await asyncio.sleep(float(payload.get("sleep", 0)))
    sent = sum(1 for line in _lines() if line.startswith(f"deliver {payload['n']} "))
    if sent <= int(payload.get("fail_times", 0)):
        raise ServiceError(f"the provider did not answer ({sent})", retryable=True)
    return {"n": payload["n"], "key": call.idempotency_key, "job": call.job_id}


def effects() -> list[str]:
    """The lines handlers wrote to ``FLUXO_TEST_EFFECTS`` so far, in order."""
    return _lines()


def _lines() -> list[str]:
    path = os.environ.get("FLUXO_TEST_EFFECTS")
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


SERVICES = [
    echo,
    fan_out,
    slow,
    notify,
    flaky,
    broken,
    inc,
    listed,
    jitter,
    once_broken,
    gated,
    deliver,
]
