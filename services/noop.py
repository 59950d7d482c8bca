"""The ``noop`` built-in service: returns its payload unchanged.

Useful as a placeholder step, for wiring tests and for measuring the runtime's own overhead.
"""

from __future__ import annotations

from fluxo_core.ir import Payload
from service_runtime.sdk import Service, service

__all__ = ["noop"]


def _noop(payload: Payload) -> Payload:
    """Return the payload unchanged."""
    return payload


noop: Service = service(
    "noop",
    version="1",
    description="Return the payload unchanged.",
    # Pure and instant: running it on the event loop saves a thread hop per call.
    inline=True,
)(_noop)
