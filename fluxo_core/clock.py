"""The clock Fluxo reads, injectable so that expiry can be tested without waiting.

Components that expire something (caches, leases, schedules) take a ``Clock`` and default to
:data:`SYSTEM_CLOCK`; a test hands them a :class:`ManualClock` and moves time with
:meth:`ManualClock.advance` instead of sleeping. Timeouts of I/O (``asyncio.wait_for``) stay on the
event loop's own clock: they bound waiting, they do not decide state.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for what is stored and compared across processes; monotonic time for intervals."""

    def time(self) -> float:
        """Seconds since the epoch (what rows store: leases, created_at, due times)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (cache lifetimes, intervals in one process)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never back: monotonic time may not)."""
        if seconds < 0:
            raise ValueError(f"a clock moves forward only; advance({seconds}) would go back")
        self._now += seconds
