"""Services the console's browser tests run jobs with (``fluxo up --module tests.console.services``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fluxo_core.errors import ServiceError
from service_runtime import Price, RetryPolicy, service


@service("console-wait", timeout_s=120.0, price=Price(per_call="0.25"))
async def wait(payload: dict[str, Any]) -> dict[str, Any]:
    """Waits ``payload["sleep"]`` seconds: a job that is still running when the test looks."""
    await asyncio.sleep(float(payload.get("sleep", 0)))
    return {**payload, "waited": True}


@service("console-price", inline=True, price=Price(per_call="1.50"))
def price(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "priced": True}


@service("console-refuse", retry=RetryPolicy(max_attempts=1))
async def refuse(payload: dict[str, Any]) -> dict[str, Any]:
    raise ServiceError(f"order {payload.get('order')} has no customer email", retryable=False)


SERVICES = [wait, price, refuse]
