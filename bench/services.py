"""The services benchmarks run: a no-op, so the figures measure the runtime and nothing else."""

from __future__ import annotations

from typing import Any

from service_runtime import Price, service


@service("noop", inline=True, price=Price(per_call="0.0001"))
def noop(payload: Any) -> Any:
    return payload


SERVICES = [noop]
