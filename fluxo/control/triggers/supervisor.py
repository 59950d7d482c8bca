"""The trigger supervisor ``fluxo up`` runs: the cron scheduler, and a task per source.

Every ``tick_s`` (and at once after an apply or delete in this process: :meth:`wake`) it fires
the cron slots that are due (:mod:`fluxo.control.triggers.cron`) and makes the running sources
match the enabled triggers of the types that have one (a source of a changed trigger is
restarted; one of a deleted, disabled or paused trigger is cancelled). State lives in the
database, so several processes may run it on one database: cron slots fire once (see
:mod:`~fluxo.control.triggers.cron`), and a source's events are deduplicated by their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fluxo.control.triggers.cron import idle, plan, slot_id
from fluxo.control.triggers.service import TriggerService, trigger_principal
from fluxo.control.triggers.source import SourceFactory
from fluxo_core.errors import FluxoError, TriggerHeldError
from fluxo_core.storage.triggers import TriggerRow

__all__ = ["TriggerSupervisor"]

log = logging.getLogger(__name__)


class TriggerSupervisor:
    """Args:
    service: fires the triggers.
    sources: the source of each trigger type that needs one (``email``: a mailbox watcher).
    tick_s: how often it looks for due slots and changed triggers (real seconds).
    """

    def __init__(
        self,
        service: TriggerService,
        *,
        sources: dict[str, SourceFactory] | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.service = service
        self.sources = dict(sources or {})
        self.tick_s = tick_s
        self._wake = asyncio.Event()
        self._running: dict[tuple[str, str], tuple[int, asyncio.Task[None]]] = {}

    def wake(self) -> None:
        """Look again now (a trigger was applied or deleted)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.tick()
                    await self.reconcile_sources()
                except FluxoError as exc:  # a database that is away: try again next tick
                    log.warning("trigger supervisor: %s", exc.message)
                waker = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(idle(stop, self.tick_s))
                await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                stopper.cancel()
        finally:
            for _, task in self._running.values():
                task.cancel()
            for _, task in self._running.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._running.clear()

    # -- cron ---------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Fire the cron slots due now; the number of slots fired."""
        now = self.service.clock.time()
        fired = 0
        for row in await self.service.store.due("cron", now):
            fired += await self._fire_cron(row, now)
        return fired

    async def _fire_cron(self, row: TriggerRow, now: float) -> int:
        assert row.next_fire_at is not None
        reason = await self.service.held(row)
        if reason is not None:
            # Held: the slot stays where it is, so resuming makes up the missed slots as the
            # catch-up rule says.
            if row.held != reason:
                await self.service.store.record(row.account_id, row.name, held=reason)
            return 0
        schedule = plan(row.spec, row.next_fire_at, now)
        concurrency = (row.spec.get("cron") or {}).get("concurrency", "allow")
        fired = 0
        current = row
        for slot in schedule.fire:
            if concurrency != "allow":
                running = await self.service.running_job(current)
                if running is not None and concurrency == "forbid":
                    continue  # this slot is skipped: the last job still runs
                if running is not None:
                    await self.service.jobs.cancel(trigger_principal(current), running)
            try:
                await self.service.fire(
                    current,
                    slot_id(slot),
                    dict(row.spec.get("input") or {}),
                    headers={"fluxo-scheduled-at": slot_id(slot)},
                    event_time=slot,
                )
            except TriggerHeldError:
                return fired  # held meanwhile: the slot stays for after the hold
            except FluxoError as exc:
                # Recorded as the trigger's last error (failing); the slot passes, so a
                # workflow that is not there does not make it retry every tick.
                log.warning("cron trigger %s/%s: %s", row.account_id, row.name, exc.message)
            fired += 1
            current = await self.service.store.get(row.account_id, row.name)
        await self.service.store.advance(
            row.account_id,
            row.name,
            expected=row.next_fire_at,
            to=schedule.next_at,
            generation=row.generation,
        )
        return fired

    # -- sources ------------------------------------------------------------------------------

    async def reconcile_sources(self) -> None:
        if not self.sources:
            return
        wanted = {
            (r.account_id, r.name): r
            for r in await self.service.store.list()
            if r.type in self.sources and r.enabled and not r.paused
        }
        for key, (generation, task) in list(self._running.items()):
            row = wanted.get(key)
            if row is None or row.generation != generation or task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                del self._running[key]
        for key, row in wanted.items():
            if key not in self._running:
                self._running[key] = (row.generation, asyncio.create_task(self._source(row)))

    async def _source(self, row: TriggerRow) -> None:
        sink = self.service.sink(row)
        try:
            await self.sources[row.type](row).run(sink)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next reconcile starts it again
            log.warning(
                "trigger source %s/%s stopped: %s", row.account_id, row.name, type(exc).__name__
            )
            await sink.health("failing", f"the source stopped: {type(exc).__name__}")
