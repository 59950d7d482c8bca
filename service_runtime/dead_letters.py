"""The dead-letter queues: see what failed for good, and send it through again once fixed.

A message lands in ``<queue>.dlq`` when its handler failed without retry or ran out of attempts;
its call is ``failed`` and its inbox row records that outcome. Replaying moves it back to its
queue as a first attempt, re-opens the call and forgets the recorded outcome, all in one
transaction, so the fixed handler runs it exactly once more.

Only calls that someone still waits for are replayed: direct calls, whose callers read the call
record. The dead letter of a job step's call stays where it is: its job has already handled the
failure (the step's retry made a new call, ``on_error`` went on, or the job failed), so a replay
would run and bill a call whose result no step takes (and the call of an ended job is refused
by admission and dead-lettered again). :meth:`DeadLetters.replay` reports those by job; running
the job again is the way to redo them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from fluxo_core.errors import UnsupportedFeatureError, ValidationError
from fluxo_core.storage import CallStore, Database, InboxStore, QueueStore, Transaction
from service_runtime.transports import Transport, queue_channel

__all__ = ["DeadLetter", "DeadLetters", "JobLetters", "Replay"]

_SUFFIX = ".dlq"


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # the queue it failed on (without .dlq)
    message_id: str
    error: str | None
    dead_at: float
    job_id: str | None = None  # the job whose step made the call; None for a direct call


@dataclass(frozen=True)
class JobLetters:
    """The dead letters of one job's step calls, kept in the dead-letter queue by a replay."""

    job_id: str
    job_status: str
    message_ids: tuple[str, ...]


@dataclass(frozen=True)
class Replay:
    """What a replay did: how many dead letters went back, and which it kept, by job."""

    queue: str
    replayed: int
    kept: tuple[JobLetters, ...] = ()


class DeadLetters:
    def __init__(self, db: Database, transport: Transport) -> None:
        if not transport.capabilities.transactional_enqueue:
            raise UnsupportedFeatureError(
                f"dead-letter replay is done with the broker's own tools for the "
                f"{transport.name!r} transport (e.g. a RabbitMQ shovel); Fluxo replays SQL queues"
            )
        self.db = db
        self._queues = QueueStore(db)
        self._calls = CallStore(db)
        self._inbox = InboxStore(db)

    async def list(
        self,
        queue: str | None = None,
        *,
        limit: int = 100,
        account_id: str | None = None,
        message_ids: Sequence[str] | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first: of ``queue`` (or every queue), of the calls of
        ``account_id`` and of these ``message_ids`` when given."""
        dead_queue = queue + _SUFFIX if queue else None
        rows = await self._queues.dead_letters(
            queue=dead_queue,
            suffix=_SUFFIX,
            limit=limit,
            account_id=account_id,
            message_ids=message_ids,
        )
        return [
            DeadLetter(r.queue[: -len(_SUFFIX)], r.message_id, r.error, r.dead_at, r.job_id)
            for r in rows
        ]

    async def replay(self, queue: str, message_ids: Sequence[str] | None = None) -> Replay:
        """Move dead letters of ``queue`` (all, or these ids) back onto it, but for the calls of
        job steps, which stay (see the module docstring) and are reported in ``kept``."""
        if queue.endswith(_SUFFIX):
            raise ValidationError(
                f"name the queue the messages failed on, without {_SUFFIX}: "
                f"{queue[: -len(_SUFFIX)]!r}",
                problems=[("queue", "ends with .dlq")],
            )
        dead_queue = queue + _SUFFIX

        def run(tx: Transaction) -> Replay:
            ids: list[str] = []
            by_job: dict[str, tuple[str, list[str]]] = {}
            for letter in self._queues.letter_owners(tx, dead_queue, message_ids):
                if letter.job_id is None or letter.job_status is None:
                    ids.append(letter.message_id)
                else:
                    by_job.setdefault(letter.job_id, (letter.job_status, []))[1].append(
                        letter.message_id
                    )
            kept = tuple(
                JobLetters(job_id, status, tuple(sorted(kept_ids)))
                for job_id, (status, kept_ids) in sorted(by_job.items())
            )
            if not ids:
                return Replay(queue, 0, kept)
            self._inbox.forget(tx, queue, ids)
            self._calls.reopen_failed(tx, ids)
            self._queues.requeue(tx, dead_queue, queue, ids, time.time())
            tx.notify(queue_channel(queue))
            return Replay(queue, len(ids), kept)

        return await self.db.transact(run)
