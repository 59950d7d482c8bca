"""Service output triggers: each output message of a Fluxo service starts one job.

A ``queue`` trigger with ``source: fluxo`` names a service (and optionally one version). Every
output message of a call of that service **made in the trigger's own account** starts a job:
the output queue is shared by every account, so the source reads the call records, which hold
the same output packets, committed in the same transaction as the output queue's messages, and
carry the account (:class:`~fluxo_core.storage.outputs.ServiceOutputStore`). Another account's
calls are never read.

- **Once per output.** The event id is the output message's id (``out:<packet id>``), so the
  job's idempotency key is committed with the job: an output read again gives the first job.
- **Durable.** Where the trigger has read up to (the finish time of the calls it fired) is
  stored with the trigger and moved forward after their jobs committed; a restarted Fluxo goes
  on from there, so outputs made while it was down start their jobs then. Each pass reads again
  the calls that finished within ``LATE_COMMIT_S`` before that position, since a call's finish
  time is taken before its transaction commits: one that committed late is still found (and
  one already fired is skipped in memory, or by its key after a restart).
- **Poison.** An output no job can take (refused for good, such as an input the workflow does not
  accept) goes to the dead-letter queue ``trigger.<account>.<name>.dead`` of the SQL queue table
  with the reason, once, and the trigger goes on.
- **No loop.** Calls made by the trigger's own jobs are not read: a workflow that calls the
  service it is triggered by would otherwise start itself forever.

A held trigger (paused, blocked) stops reading and offers the same output again every
``HELD_RETRY_S``; its position does not move, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import orjson

from fluxo.control.triggers.queue import fire_settled
from fluxo.control.triggers.source import TriggerSink
from fluxo_core.errors import FluxoError
from fluxo_core.storage.outputs import FinishedCall, ServiceOutputStore
from fluxo_core.storage.triggers import TriggerRow

__all__ = ["LATE_COMMIT_S", "ServiceOutputSource", "dead_queue"]

log = logging.getLogger(__name__)

T = TypeVar("T")

LATE_COMMIT_S: Final = 10.0
"""How long after its finish time a call's transaction may still commit and be found."""
PAGE: Final = 256


def dead_queue(row: TriggerRow) -> str:
    """Where a service output trigger buries the outputs no job could take."""
    return f"trigger.{row.account_id}.{row.name}.dead"


async def _whole(step: Awaitable[T]) -> T:
    """Await ``step``; if cancelled meanwhile, let it end first, then stop. A read runs in a
    database thread (PostgreSQL) that a cancel does not stop: left running, it could still hold
    its connection when the database closes."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class ServiceOutputSource:
    """The source of one ``source: fluxo`` queue trigger (see the module docstring)."""

    def __init__(self, row: TriggerRow, store: ServiceOutputStore, *, retry_s: float = 1.0) -> None:
        self.row = row
        self.store = store
        self.retry_s = retry_s
        config: dict[str, Any] = row.spec["queue"]
        self.service: str = config["service"]
        self.version: str | None = config.get("version")
        self.poll_s = float(config.get("pollIntervalS", 1.0))
        # The trigger's own jobs act as this user (trigger_principal): their calls are skipped.
        self.own_user = f"trigger:{row.name}"
        self.position = row.cursor if row.cursor is not None else time.time()
        self.fired: dict[str, float] = {}  # event ids fired within the late-commit window

    @property
    def where(self) -> str:
        return f"{self.row.account_id}/{self.row.name}"

    async def run(self, sink: TriggerSink) -> None:
        connected = False
        while True:
            try:
                await self.read_once(sink)
                if not connected:
                    await sink.health("connected")
                    connected = True
                await asyncio.sleep(self.poll_s)
            except FluxoError as exc:  # the database away: retried
                connected = False
                await sink.health("degraded", f"service {self.service} outputs: {exc.message}")
                log.warning("output trigger %s: %s", self.where, exc.message)
                await asyncio.sleep(self.retry_s)

    async def read_once(self, sink: TriggerSink) -> int:
        """Fire every output not fired yet; the number of outputs fired."""
        after, after_id = self.position - LATE_COMMIT_S, ""
        newest = self.position
        count = 0
        while True:
            page = await _whole(
                self.store.finished(
                    self.row.account_id, self.service, after=after, after_id=after_id, limit=PAGE
                )
            )
            wanted = [c for c in page if self._wanted(c)]
            results = await asyncio.gather(*(self._fire_call(sink, c) for c in wanted))
            count += sum(results)
            if page:
                newest = max(newest, page[-1].finished_at)
            if len(page) < PAGE:
                break
            after, after_id = page[-1].finished_at, page[-1].id
        if newest > self.position:
            self.position = newest
            await _whole(self.store.move_cursor(self.row.account_id, self.row.name, newest))
        horizon = self.position - LATE_COMMIT_S
        self.fired = {k: at for k, at in self.fired.items() if at >= horizon}
        return count

    def _wanted(self, call: FinishedCall) -> bool:
        if call.user_id == self.own_user:
            return False
        return self.version is None or call.version == self.version

    async def _fire_call(self, sink: TriggerSink, call: FinishedCall) -> int:
        fired = 0
        try:
            packets = orjson.loads(call.result or b"[]")
        except orjson.JSONDecodeError:
            packets = None
        if not isinstance(packets, list):
            await self._bury(call, f"call:{call.id}", call.result or b"", "the result is not JSON")
            return 0
        for index, packet in enumerate(packets):
            message_id = str(packet.get("id")) if isinstance(packet, dict) else f"{call.id}#{index}"
            event_id = f"out:{message_id}"
            if event_id in self.fired:
                continue
            payload = {
                "output": packet.get("payload") if isinstance(packet, dict) else None,
                "messageId": message_id,
                "service": self.service,
                "version": call.version,
                "callId": call.id,
                "jobId": call.job_id,
                "outputIndex": index,
            }
            refused = await fire_settled(sink, event_id, payload, where=self.where)
            if refused is not None:
                await self._bury(call, message_id, orjson.dumps(packet), refused)
            else:
                fired += 1
            self.fired[event_id] = call.finished_at
        return fired

    async def _bury(self, call: FinishedCall, message_id: str, body: bytes, reason: str) -> None:
        headers = {
            "x-fluxo-dead-reason": reason[:1000],
            "x-fluxo-trigger": self.row.name,
            "x-fluxo-call": call.id,
        }
        consumer = f"trigger:{self.row.account_id}:{self.row.name}"
        await self.store.bury(
            consumer, dead_queue(self.row), message_id, body, headers, reason[:1000], time.time()
        )
        log.warning(
            "output trigger %s: output %s went to %s: %s",
            self.where,
            message_id,
            dead_queue(self.row),
            reason,
        )
