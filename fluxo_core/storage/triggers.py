"""The state of each trigger: what the supervisor runs, its health, and a cron's next slot.

The trigger controller writes a row's spec (:meth:`TriggerStore.upsert`) when a Trigger
resource is applied, and removes it on delete. Whichever Fluxo process fires the trigger writes
its health (:meth:`TriggerStore.record`). A cron trigger's next fire time moves forward only by
compare-and-set (:meth:`TriggerStore.advance`): of two processes that fired the same slot, one
moves it and the other learns it lost, so the slot is counted once (its job is made once by
its idempotency key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson
import sqlalchemy as sa

from fluxo_core.clock import SYSTEM_CLOCK, Clock
from fluxo_core.errors import NotFoundError
from fluxo_core.storage.database import Database, Transaction
from fluxo_core.storage.tables import trigger_state, workflow_pauses

__all__ = ["Health", "TriggerHold", "TriggerRow", "TriggerStore"]

Health = Literal["connected", "degraded", "failing"]


class TriggerHold(NamedTuple):
    """Who paused the trigger (None: nobody), whether it is enabled, who paused its workflow."""

    paused_by: str | None
    enabled: bool
    workflow_paused_by: str | None


@dataclass(frozen=True, slots=True)
class TriggerRow:
    account_id: str
    name: str
    workflow: str
    type: str
    spec: dict[str, Any]
    generation: int
    enabled: bool
    paused_by: str | None
    paused_at: float | None
    health: str
    held: str | None
    next_fire_at: float | None
    last_event_id: str | None
    last_event_at: float | None
    last_job_id: str | None
    last_error: str | None
    jobs_created: int
    lag_s: float | None
    updated_at: float
    cursor: float | None = None  # a service output trigger's read position (a finish time)

    @property
    def paused(self) -> bool:
        return self.paused_by is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workflow": self.workflow,
            "type": self.type,
            "enabled": self.enabled,
            "paused": self.paused,
            "pausedBy": self.paused_by,
            "health": self.health,
            "held": self.held,
            "nextFireAt": self.next_fire_at,
            "lastEventId": self.last_event_id,
            "lastEventAt": self.last_event_at,
            "lastJobId": self.last_job_id,
            "lastError": self.last_error,
            "jobsCreated": self.jobs_created,
            "lagS": self.lag_s,
            "generation": self.generation,
        }


def _row(r: Any) -> TriggerRow:
    return TriggerRow(
        account_id=r.account_id,
        name=r.name,
        workflow=r.workflow,
        type=r.type,
        spec=orjson.loads(r.spec),
        generation=r.generation,
        enabled=bool(r.enabled),
        paused_by=r.paused_by,
        paused_at=r.paused_at,
        health=r.health,
        held=r.held,
        next_fire_at=r.next_fire_at,
        last_event_id=r.last_event_id,
        last_event_at=r.last_event_at,
        last_job_id=r.last_job_id,
        last_error=r.last_error,
        jobs_created=int(r.jobs_created),
        lag_s=r.lag_s,
        updated_at=r.updated_at,
        cursor=r.cursor,
    )


def _key(account_id: str, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(trigger_state.c.account_id == account_id, trigger_state.c.name == name)


class TriggerStore:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        by_key = sa.and_(
            trigger_state.c.account_id == sa.bindparam("b_account"),
            trigger_state.c.name == sa.bindparam("b_name"),
        )
        # The trigger's pause and switch, and its workflow's pause, in one statement.
        self._hold = (
            sa.select(
                trigger_state.c.paused_by,
                trigger_state.c.enabled,
                workflow_pauses.c.paused_by.label("workflow_paused_by"),
            )
            .select_from(
                trigger_state.outerjoin(
                    workflow_pauses,
                    sa.and_(
                        workflow_pauses.c.account_id == trigger_state.c.account_id,
                        workflow_pauses.c.workflow == trigger_state.c.workflow,
                    ),
                )
            )
            .where(by_key)
        )
        self._fired = (
            sa.update(trigger_state)
            .where(by_key)
            .values(
                health="connected",
                held=None,
                last_error=None,
                last_event_id=sa.bindparam("b_event"),
                last_event_at=sa.bindparam("b_now"),
                last_job_id=sa.bindparam("b_job"),
                lag_s=sa.func.coalesce(
                    sa.bindparam("b_lag", type_=sa.Float), trigger_state.c.lag_s
                ),
                jobs_created=trigger_state.c.jobs_created
                + sa.bindparam("b_created", type_=sa.Integer),
                updated_at=sa.bindparam("b_now"),
            )
        )

    async def upsert(
        self,
        account_id: str,
        name: str,
        *,
        workflow: str,
        type: str,
        spec: dict[str, Any],
        generation: int,
        enabled: bool,
        next_fire_at: float | None,
        reschedule: bool,
    ) -> TriggerRow:
        """Write the spec of a trigger; its health and counters stay. ``reschedule``: set
        ``next_fire_at`` (a new or changed schedule); otherwise a stored one is kept."""
        now = self.clock.time()
        values = {
            "workflow": workflow,
            "type": type,
            "spec": orjson.dumps(spec).decode(),
            "generation": generation,
            "enabled": enabled,
            "updated_at": now,
        }

        def run(tx: Transaction) -> TriggerRow:
            found = tx.conn.execute(sa.select(trigger_state).where(_key(account_id, name))).first()
            if found is None:
                tx.execute(
                    sa.insert(trigger_state).values(
                        account_id=account_id,
                        name=name,
                        health="connected",
                        jobs_created=0,
                        next_fire_at=next_fire_at,
                        # A source that reads a history (service outputs) starts from now.
                        cursor=now,
                        **values,
                    )
                )
            else:
                update = dict(values)
                if reschedule or found.next_fire_at is None:
                    update["next_fire_at"] = next_fire_at
                tx.execute(sa.update(trigger_state).where(_key(account_id, name)).values(update))
            row = tx.conn.execute(sa.select(trigger_state).where(_key(account_id, name))).one()
            return _row(row)

        return await self.db.transact(run)

    async def delete(self, account_id: str, name: str) -> None:
        def run(tx: Transaction) -> None:
            tx.execute(sa.delete(trigger_state).where(_key(account_id, name)))

        await self.db.transact(run)

    async def get(self, account_id: str, name: str) -> TriggerRow:
        query = sa.select(trigger_state).where(_key(account_id, name))
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFoundError(
                f"no trigger {name!r} in account {account_id!r}; list them with fluxo triggers "
                "list",
                kind="Trigger",
                name=name,
            )
        return _row(row)

    async def find(self, account_id: str, name: str) -> TriggerRow | None:
        try:
            return await self.get(account_id, name)
        except NotFoundError:
            return None

    async def list(self, account_id: str | None = None) -> Sequence[TriggerRow]:
        """The account's triggers by name (``None``: every account's, for the supervisor)."""
        query = sa.select(trigger_state).order_by(trigger_state.c.account_id, trigger_state.c.name)
        if account_id is not None:
            query = query.where(trigger_state.c.account_id == account_id)
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_row(r) for r in rows]

    async def due(self, type: str, now: float) -> Sequence[TriggerRow]:
        """The enabled triggers of ``type`` whose next fire time has come, soonest first."""
        query = (
            sa.select(trigger_state)
            .where(
                trigger_state.c.type == type,
                trigger_state.c.next_fire_at <= now,
                trigger_state.c.enabled.is_(True),
            )
            .order_by(trigger_state.c.next_fire_at)
            .limit(500)
        )
        rows = await self.db.read(lambda conn: conn.execute(query).all())
        return [_row(r) for r in rows]

    async def set_paused(self, account_id: str, name: str, paused_by: str | None) -> TriggerRow:
        """Pause (``paused_by``: who) or resume (None) a trigger; the first pause is kept."""
        now = self.clock.time()

        def run(tx: Transaction) -> TriggerRow:
            found = tx.conn.execute(sa.select(trigger_state).where(_key(account_id, name))).first()
            if found is None:
                raise NotFoundError(
                    f"no trigger {name!r} in account {account_id!r}; list them with fluxo "
                    "triggers list",
                    kind="Trigger",
                    name=name,
                )
            if paused_by is None or found.paused_by is None:
                tx.execute(
                    sa.update(trigger_state)
                    .where(_key(account_id, name))
                    .values(
                        paused_by=paused_by,
                        paused_at=None if paused_by is None else now,
                        updated_at=now,
                    )
                )
            return _row(
                tx.conn.execute(sa.select(trigger_state).where(_key(account_id, name))).one()
            )

        return await self.db.transact(run)

    async def record(
        self,
        account_id: str,
        name: str,
        *,
        health: Health | None = None,
        held: str | Literal[False] | None = False,
        error: str | Literal[False] | None = False,
        event_id: str | None = None,
        job_id: str | None = None,
        lag_s: float | None = None,
        created: int = 0,
    ) -> None:
        """Write what happened (only the fields given; ``False``: leave as it is). ``created``:
        how many new jobs to add to ``jobs_created``."""

        def run(tx: Transaction) -> None:
            self.record_on(
                tx,
                account_id,
                name,
                health=health,
                held=held,
                error=error,
                event_id=event_id,
                job_id=job_id,
                lag_s=lag_s,
                created=created,
            )

        await self.db.transact(run)

    def record_on(
        self,
        tx: Transaction,
        account_id: str,
        name: str,
        *,
        health: Health | None = None,
        held: str | Literal[False] | None = False,
        error: str | Literal[False] | None = False,
        event_id: str | None = None,
        job_id: str | None = None,
        lag_s: float | None = None,
        created: int = 0,
    ) -> None:
        """:meth:`record` in the caller's transaction (the one that creates the jobs)."""
        values: dict[str, Any] = {"updated_at": self.clock.time()}
        if health is not None:
            values["health"] = health
        if held is not False:
            values["held"] = held
        if error is not False:
            values["last_error"] = None if error is None else error[:2000]
        if event_id is not None:
            values["last_event_id"] = event_id[:200]
            values["last_event_at"] = values["updated_at"]
        if job_id is not None:
            values["last_job_id"] = job_id
        if lag_s is not None:
            values["lag_s"] = lag_s
        if created:
            values["jobs_created"] = trigger_state.c.jobs_created + created
        tx.execute(sa.update(trigger_state).where(_key(account_id, name)).values(values))

    def hold_on(self, tx: Transaction, account_id: str, name: str) -> TriggerHold | None:
        """What may hold the trigger's firing, as this transaction sees it (None: the trigger
        is gone): checked again in the transaction of its jobs."""
        row = tx.conn.execute(self._hold, {"b_account": account_id, "b_name": name}).first()
        if row is None:
            return None
        return TriggerHold(row.paused_by, bool(row.enabled), row.workflow_paused_by)

    def record_fired(
        self,
        tx: Transaction,
        account_id: str,
        name: str,
        *,
        event_id: str,
        job_id: str,
        lag_s: float | None,
        created: int,
    ) -> None:
        """A batch of firings, in the transaction of its jobs: connected, no hold or error, the
        last event and job, the lag (if known) and ``created`` more jobs. One statement built
        once (a firing's hot path)."""
        now = self.clock.time()
        tx.execute(
            self._fired,
            {
                "b_account": account_id,
                "b_name": name,
                "b_now": now,
                "b_event": event_id[:200],
                "b_job": job_id,
                "b_lag": lag_s,
                "b_created": created,
            },
        )

    async def advance(
        self, account_id: str, name: str, *, expected: float, to: float, generation: int
    ) -> bool:
        """Move a cron trigger's next fire time from ``expected`` to ``to``; False if another
        process moved it first (or the spec changed: ``generation``), so this one lost the
        slot."""

        def run(tx: Transaction) -> bool:
            result = tx.execute(
                sa.update(trigger_state)
                .where(
                    _key(account_id, name),
                    trigger_state.c.next_fire_at == expected,
                    trigger_state.c.generation == generation,
                )
                .values(next_fire_at=to, updated_at=self.clock.time())
            )
            return bool(result.rowcount)

        return await self.db.transact(run)
