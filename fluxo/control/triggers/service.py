"""Triggers as the platform runs them: firing (holds, admission, one job per event), webhooks,
and what ``fluxo triggers`` and ``/v1/triggers`` read and change.

Every firing goes through :meth:`TriggerService.fire`. It first asks whether the trigger is
**held**: paused (``fluxo triggers pause``), disabled (``spec.enabled: false``), blocked (a
Block of kind ``trigger``, or of the whole account), or its workflow paused or blocked. A held
trigger creates nothing (:class:`~fluxo_core.errors.TriggerHeldError`, 423 to a webhook).
Otherwise the job is created by :meth:`JobService.create` (admission: blocks and quotas) with
the idempotency key ``trigger:<name>:<event id>``: the job row and the message that starts it
commit in one transaction, and the same event again gives that job back instead of a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fluxo.control.auth import require
from fluxo.control.blocks import BlockIndex
from fluxo.control.jobs import FINAL, JobService
from fluxo.control.triggers.source import FireResult
from fluxo.control.triggers.webhook import check_timestamp, delivery_id, verify
from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import (
    BlockedError,
    FluxoError,
    NotFoundError,
    TriggerHeldError,
    ValidationError,
)
from fluxo_core.ir import new_packet_id
from fluxo_core.storage import Principal, Role, SecretStore, Transaction
from fluxo_core.storage.blocks import BlockStore
from fluxo_core.storage.triggers import Health, TriggerRow, TriggerStore

__all__ = ["HealthListener", "TriggerService", "trigger_principal"]

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""At most this many events of one trigger commit in one transaction."""
ROW_CACHE_S = 0.5
"""How long a webhook's trigger is kept in memory (the admission caches' staleness)."""
SECRET_CACHE_S = 5.0
"""How long a webhook's secret is kept decrypted in memory: a rotated secret takes this long."""


HealthListener = Callable[[str, str, Health, str | None], Awaitable[None]]
"""``(account, trigger, health, error)``: called when a trigger's health changes."""


def trigger_principal(row: TriggerRow) -> Principal:
    """Who a trigger's jobs are from: the account, and the trigger as its user."""
    return Principal(account_id=row.account_id, user_id=f"trigger:{row.name}")


class TriggerService:
    def __init__(
        self,
        store: TriggerStore,
        jobs: JobService,
        blocks: BlockIndex,
        *,
        secrets: SecretStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_health: HealthListener | None = None,
    ) -> None:
        self.store = store
        # Told when a trigger's health changes (the platform writes it into the resource's
        # status, where fluxo get/describe show it).
        self.on_health = on_health
        # Told when a trigger is paused or resumed (its Kubernetes CronJob is suspended then).
        self.on_pause: Callable[[], None] = lambda: None
        self.jobs = jobs
        self.blocks = blocks
        self.pauses = BlockStore(store.db, clock=clock)
        self.secrets = secrets
        self.clock = clock
        self._secrets: dict[tuple[str, str], tuple[str, float]] = {}
        self._pending: dict[tuple[str, str], list[_Event]] = {}
        self._rows: dict[tuple[str, str], tuple[TriggerRow, float]] = {}
        self._flushing: dict[tuple[str, str], asyncio.Task[None]] = {}

    # -- firing -------------------------------------------------------------------------------

    async def held(self, row: TriggerRow) -> str | None:
        """Why ``row`` may not fire now, or None."""
        reason = _trigger_hold(row.name, row.paused_by, row.enabled)
        if reason is None:
            reason = await self._blocked(row)
        if reason is None:
            pause = await self.store.db.read(
                lambda conn: self.pauses.pause_on(conn, row.account_id, row.workflow)
            )
            if pause is not None:
                reason = _workflow_pause(row.workflow, pause.paused_by)
        return reason

    async def _blocked(self, row: TriggerRow) -> str | None:
        """The block that holds ``row`` (the in-memory index, reloaded at most every 0.5 s)."""
        await self.blocks.refresh()
        # The trigger's own block and the account's; a block of the workflow is found by the
        # job's admission (BlockedError below), which holds the trigger the same way.
        block = self.blocks.match_trigger(row.account_id, row.name)
        if block is None:
            return None
        return (
            f"{block.kind} {block.target!r} is blocked: {block.reason} (block {block.id}); "
            f"lift it with fluxo block lift {block.id}"
        )

    def _held_on(self, tx: Transaction, row: TriggerRow) -> str | None:
        """Why ``row`` may not fire, as the jobs' own transaction sees the trigger and its
        workflow: a pause or a disable committed anywhere before it holds the batch.

        Raises:
            NotFoundError: the trigger was deleted.
        """
        hold = self.store.hold_on(tx, row.account_id, row.name)
        if hold is None:
            raise NotFoundError(f"trigger {row.name!r} was deleted; nothing was created")
        reason = _trigger_hold(row.name, hold.paused_by, hold.enabled)
        if reason is None and hold.workflow_paused_by is not None:
            reason = _workflow_pause(row.workflow, hold.workflow_paused_by)
        return reason

    async def fire(
        self,
        row: TriggerRow,
        event_id: str | None,
        payload: Any,
        *,
        headers: dict[str, str] | None = None,
        event_time: float | None = None,
    ) -> FireResult:
        """Create the job of one event of trigger ``row`` (see the module docstring).

        ``event_id``: what makes a repeated event the same (None: never deduplicated).
        ``event_time``: when the event happened, for the trigger's lag.

        Events of one trigger that arrive while its last batch commits are committed together
        (:meth:`JobService.create_many_once`: one transaction, one hold check and one state
        write for all of them), so a burst of webhooks costs one commit per batch, not per
        request; each caller still gets its own job or its own refusal.

        Raises:
            TriggerHeldError: the trigger is held; nothing was created.
            AdmissionDeniedError, ValidationError, NotFoundError: the job was refused (quota,
                an input the workflow does not take, a workflow that is not applied).
        """
        key = (row.account_id, row.name)
        done: asyncio.Future[FireResult] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(
            _Event(event_id, payload, headers, event_time, done)
        )
        if key not in self._flushing:
            self._flushing[key] = asyncio.create_task(self._flush(key), name="trigger-batch")
        # Shielded: a caller that goes away (a client hanging up) leaves the batch committing.
        return await asyncio.shield(done)

    async def _flush(self, key: tuple[str, str]) -> None:
        try:
            while True:
                # Let the requests already read reach fire() first: one more loop pass makes
                # the batch larger, and a batch costs the same few statements whatever its size.
                await asyncio.sleep(0)
                events = self._pending.pop(key, None)
                if not events:
                    break
                for at in range(0, len(events), MAX_BATCH):
                    chunk = events[at : at + MAX_BATCH]
                    try:
                        await self._fire_batch(key, chunk)
                    except Exception as exc:  # every caller learns it; the next batch goes on
                        for event in chunk:
                            if not event.done.done():
                                event.done.set_exception(exc)
        finally:
            del self._flushing[key]

    async def _fire_batch(self, key: tuple[str, str], events: list[_Event]) -> None:
        # The spec as read at most ROW_CACHE_S ago (at once after an apply here); what holds a
        # trigger (a pause, a disable, a paused workflow) is read in the jobs' transaction
        # below, so it counts exactly, with no read of its own.
        row = await self._row(*key)
        if row is None:
            raise NotFoundError(f"trigger {key[1]!r} is not applied; nothing was created")
        reason = await self._blocked(row)
        if reason is not None:
            await self._hold(row, events, reason)
            return
        keys = [f"trigger:{row.name}:{e.event_id or new_packet_id()}"[:200] for e in events]
        headers = []
        for event in events:
            packet_headers = {"fluxo-trigger": row.name, "fluxo-trigger-type": row.type}
            if event.event_id is not None:
                packet_headers["fluxo-event"] = event.event_id
            packet_headers.update(event.headers or {})
            headers.append(packet_headers)
        now = self.clock.time()
        lags = [now - e.event_time for e in events if e.event_time is not None]

        def counters(tx: Transaction, made: list[tuple[str, bool]]) -> None:
            held = self._held_on(tx, row)
            if held is not None:  # the whole transaction rolls back: nothing was created
                raise TriggerHeldError(f"{held}; nothing was created", held=held)
            # With the jobs, in their transaction: the count is exact whatever crashes.
            self.store.record_fired(
                tx,
                row.account_id,
                row.name,
                event_id=events[-1].event_id or keys[-1],
                job_id=made[-1][0],
                lag_s=max(0.0, max(lags)) if lags else None,
                created=sum(new for _, new in made),
            )

        try:
            made = await self.jobs.create_many_once(
                trigger_principal(row),
                row.workflow,
                [e.payload for e in events],
                idempotency_keys=keys,
                headers=headers,
                with_jobs=counters,
            )
        except TriggerHeldError as exc:
            await self._hold(row, events, str(exc.context.get("held") or exc.message))
            return
        except BlockedError as exc:
            # A block of the workflow or the account that admission found: a hold too.
            await self.store.record(row.account_id, row.name, held=exc.message)
            held = TriggerHeldError(f"{exc.message}; nothing was created", held=exc.message)
            _refuse(events, held)
            return
        except ValidationError as exc:
            if len(events) > 1:  # one event's bad input refuses the batch: each on its own
                for event in events:
                    await self._fire_batch(key, [event])
                return
            await self._failed(row, events, exc)
            return
        except FluxoError as exc:
            await self._failed(row, events, exc)
            return
        # Written before the callers learn: what they see next (status) already says so.
        await self._health_changed(row, "connected", None)
        self._remember(dataclasses.replace(row, health="connected", last_error=None, held=None))
        for event, (job, new) in zip(events, made, strict=True):
            if not event.done.done():
                event.done.set_result(FireResult(job.id, new, job.status))

    async def _hold(self, row: TriggerRow, events: list[_Event], reason: str) -> None:
        await self.store.record(row.account_id, row.name, held=reason)
        self.forget(row.account_id, row.name)
        _refuse(events, TriggerHeldError(f"{reason}; nothing was created", held=reason))

    async def _health_changed(self, row: TriggerRow, health: Health, error: str | None) -> None:
        if self.on_health is not None and (row.health != health or row.last_error != error):
            try:
                await self.on_health(row.account_id, row.name, health, error)
            except FluxoError as exc:  # the firing stands; the status catches up next change
                log.warning(
                    "trigger %s/%s: status not written: %s", row.account_id, row.name, exc.message
                )

    async def _failed(self, row: TriggerRow, events: list[_Event], error: FluxoError) -> None:
        await self.store.record(
            row.account_id, row.name, health="failing", error=error.message, held=None
        )
        await self._health_changed(row, "failing", error.message)
        _refuse(events, error)

    def sink(self, row: TriggerRow) -> _Sink:
        """What a :class:`~fluxo.control.triggers.source.TriggerSource` of ``row`` fires into."""
        return _Sink(self, row)

    # -- webhooks -----------------------------------------------------------------------------

    async def webhook_target(
        self, account_id: str, name: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[TriggerRow, str | None]:
        """The webhook trigger a request authenticates for, and its event id.

        Raises:
            AuthError: a missing, stale or wrong signature or token, and (with the same
                message) a trigger that does not exist or is no webhook.
        """
        stamp = check_timestamp(headers, self.clock.time())
        row = await self._row(account_id, name)
        if row is None or row.type != "webhook":
            verify("hmac" if stamp is not None else "bearer", None, headers, body, stamp)
            raise AssertionError("verify refuses an unknown trigger")  # verify always raised
        config = row.spec["webhook"]
        secret = await self._secret(row.account_id, config["secret"])
        signature = verify(config.get("auth", "hmac"), secret, headers, body, stamp)
        return row, delivery_id(headers, signature)

    async def _row(self, account_id: str, name: str) -> TriggerRow | None:
        """The trigger, read at most every :data:`ROW_CACHE_S` (a burst of webhooks reads it
        once). What may not wait (a pause, a hold) is read again when its batch commits."""
        now = self.clock.monotonic()
        cached = self._rows.get((account_id, name))
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await self.store.find(account_id, name)
        if row is not None:
            self._remember(row)
        return row

    def _remember(self, row: TriggerRow) -> None:
        if len(self._rows) >= 10_000:  # bounded: many names of many accounts
            self._rows.clear()
        self._rows[(row.account_id, row.name)] = (row, self.clock.monotonic() + ROW_CACHE_S)

    def forget(self, account_id: str, name: str) -> None:
        """Read the trigger again on its next webhook (it was applied or deleted here)."""
        self._rows.pop((account_id, name), None)

    async def _secret(self, account_id: str, name: str) -> str | None:
        now = self.clock.monotonic()
        cached = self._secrets.get((account_id, name))
        if cached is not None and cached[1] > now:
            return cached[0]
        if self.secrets is None:
            return None
        try:
            value = (await self.secrets.reveal(account_id, [name]))[name]
        except NotFoundError:
            return None
        self._secrets[(account_id, name)] = (value, now + SECRET_CACHE_S)
        return value

    # -- what the CLI and the API read and change ----------------------------------------------

    async def list(self, principal: Principal) -> Sequence[TriggerRow]:
        return await self.store.list(principal.account_id)

    async def get(self, principal: Principal, name: str) -> TriggerRow:
        return await self.store.get(principal.account_id, name)

    async def pause(self, principal: Principal, name: str) -> TriggerRow:
        require(principal, Role.ACCOUNT_ADMIN, "pause triggers")
        self.forget(principal.account_id, name)
        row = await self.store.set_paused(
            principal.account_id, name, f"{principal.account_id}/{principal.user_id}"
        )
        self.on_pause()
        return row

    async def resume(self, principal: Principal, name: str) -> TriggerRow:
        require(principal, Role.ACCOUNT_ADMIN, "resume triggers")
        row = await self.store.set_paused(principal.account_id, name, None)
        await self.store.record(row.account_id, row.name, held=None)
        self.forget(principal.account_id, name)
        self.on_pause()
        return await self.store.get(row.account_id, row.name)

    async def fire_now(
        self, principal: Principal, name: str, payload: Any, *, event_id: str | None = None
    ) -> FireResult:
        """Fire a trigger by hand (``fluxo triggers fire``): its spec's ``input`` unless
        ``payload`` is given; the same ``event_id`` again gives the first job."""
        require(principal, Role.MEMBER, "fire triggers")
        row = await self.store.get(principal.account_id, name)
        if payload is None:
            payload = dict(row.spec.get("input") or {})
        if event_id is not None and not 0 < len(event_id) <= 128:
            raise ValidationError(
                "an event id is 1 to 128 characters", problems=[("event_id", "length")]
            )
        return await self.fire(
            row, f"manual:{event_id}" if event_id else None, payload, event_time=None
        )

    async def running_job(self, row: TriggerRow) -> str | None:
        """The trigger's last job if it has not ended (cron's concurrency rule reads it)."""
        if row.last_job_id is None:
            return None
        try:
            job = await self.jobs.get(trigger_principal(row), row.last_job_id, steps=False)
        except NotFoundError:
            return None
        return None if job.status in FINAL else job.id


def _trigger_hold(name: str, paused_by: str | None, enabled: bool) -> str | None:
    if paused_by is not None:
        return (
            f"trigger {name!r} is paused (by {paused_by}); resume it with "
            f"fluxo triggers resume {name}"
        )
    if not enabled:
        return f"trigger {name!r} is disabled (spec.enabled: false); apply it enabled"
    return None


def _workflow_pause(workflow: str, paused_by: str) -> str:
    return (
        f"workflow {workflow!r} is paused (by {paused_by}); resume it with "
        f"fluxo workflow resume {workflow}"
    )


@dataclass(slots=True)
class _Event:
    """One event waiting for its trigger's next batch."""

    event_id: str | None
    payload: Any
    headers: dict[str, str] | None
    event_time: float | None
    done: asyncio.Future[FireResult]


def _refuse(events: list[_Event], error: BaseException) -> None:
    for event in events:
        if not event.done.done():
            event.done.set_exception(error)


class _Sink:
    """A trigger's sink: fires with the trigger's current row, reports its health."""

    def __init__(self, service: TriggerService, row: TriggerRow) -> None:
        self.service = service
        self.row = row

    async def fire(
        self,
        event_id: str,
        payload: Any,
        *,
        headers: dict[str, str] | None = None,
        event_time: float | None = None,
    ) -> FireResult:
        # The batch reads the trigger as it is then (fire needs only its key).
        return await self.service.fire(
            self.row, event_id, payload, headers=headers, event_time=event_time
        )

    async def health(self, state: Health, error: str | None = None) -> None:
        row = await self.service.store.get(self.row.account_id, self.row.name)
        await self.service.store.record(row.account_id, row.name, health=state, error=error)
        await self.service._health_changed(row, state, error)
