"""How a trigger type plugs in: a source watches the outside world, a sink turns events into jobs.

A :class:`TriggerSource` (an IMAP mailbox, a queue, ...) runs as long as its trigger is enabled:
the supervisor calls :meth:`TriggerSource.run` with the trigger's :class:`TriggerSink` and
cancels the task when the trigger is deleted, disabled or changed. The source hands each event
to :meth:`TriggerSink.fire` with an id the outside world gives it (a Message-ID, a queue message
id): the job is created with an idempotency key made of the trigger's name and that id, in one
transaction with the message that starts it, so an event delivered again makes no second job.
A source acknowledges an event (marks the mail seen, acks the queue message) only after
``fire`` returned. It reports its connection with :meth:`TriggerSink.health`.

Cron needs no source per trigger: one scheduler (:mod:`fluxo.control.triggers.cron`) serves
every cron trigger of the database. A webhook is pushed by the API (``POST /hooks/...``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fluxo_core.storage.triggers import Health, TriggerRow

__all__ = ["FireResult", "SourceFactory", "TriggerSink", "TriggerSource"]


@dataclass(frozen=True)
class FireResult:
    """What a firing made: its job, and whether the job is new (False: the event was seen
    before, and this is the job it made then)."""

    job_id: str
    created: bool
    status: str


class TriggerSink(Protocol):
    async def fire(
        self,
        event_id: str,
        payload: Any,
        *,
        headers: dict[str, str] | None = None,
        event_time: float | None = None,
    ) -> FireResult:
        """Create the event's job (once per ``event_id``).

        Raises:
            TriggerHeldError: the trigger may not fire now (nothing was created); the source
                keeps the event and offers it again later.
            AdmissionDeniedError: a quota refused it.
        """
        ...

    async def health(self, state: Health, error: str | None = None) -> None:
        """The source's connection: ``connected``, ``degraded`` (retrying) or ``failing``."""
        ...


class TriggerSource(Protocol):
    async def run(self, sink: TriggerSink) -> None:
        """Watch until cancelled; reconnect on errors (reporting ``degraded``)."""
        ...


SourceFactory = Callable[[TriggerRow], TriggerSource]
"""Builds the source of a trigger type from its stored row (spec, account, name)."""
