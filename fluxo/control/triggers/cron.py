"""Cron triggers: when each fires, which missed slots it makes up, and the one scheduler.

Times are slots of the schedule in the trigger's time zone (``spec.cron.timeZone``, IANA), so
``0 9 * * *`` in ``Europe/Paris`` fires at nine in Paris in winter and in summer. The next slot
is stored (``trigger_state.next_fire_at``): a restart carries on from it, and the slots passed
while no Fluxo ran (or while the trigger was held) are made up as ``spec.cron.catchUp`` says.

Several Fluxo processes may run the scheduler on one database. Each due slot's job is created
with the idempotency key ``trigger:<name>:<slot>``, then the stored next slot is moved by
compare-and-set: two processes that fire one slot make one job (the key), and only one of them
moves the slot and counts it. A crash between the job and the move fires the slot again after
the restart, which finds the job it made.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from fluxo_core.errors import ValidationError

__all__ = ["GRACE_S", "CronPlan", "check_schedule", "next_slot", "plan"]

log = logging.getLogger(__name__)

GRACE_S = 60.0
"""A slot up to this late is on time (the scheduler was busy or slow); later it was missed."""


def check_schedule(schedule: str, where: str = "spec.schedule") -> None:
    """Refuse a schedule croniter cannot read, located.

    Raises:
        ValidationError: with an example of a valid one.
    """
    if not croniter.is_valid(schedule):
        raise ValidationError(
            f"{schedule[:80]!r} is not a cron schedule; write five fields (minute hour day "
            "month weekday), e.g. '*/5 * * * *' or '0 9 * * 1-5'",
            problems=[(where, "not a cron expression")],
        )


def next_slot(schedule: str, time_zone: str, after: float) -> float:
    """The first slot of ``schedule`` strictly after epoch ``after``, in ``time_zone``."""
    start = datetime.fromtimestamp(after, ZoneInfo(time_zone))
    return float(croniter(schedule, start).get_next(float))


@dataclass(frozen=True)
class CronPlan:
    """What to do now: the slots to fire (oldest first), and the next slot to store."""

    fire: tuple[float, ...]
    next_at: float


def plan(spec: dict[str, Any], due: float, now: float) -> CronPlan:
    """The slots from ``due`` (the stored next slot) up to ``now``, as the catch-up rule says.

    Slots at most :data:`GRACE_S` late always fire; older ones were missed: ``skip`` fires none
    of them, ``once`` the latest, ``all`` the latest ``maxCatchUp``. The slots are walked back
    from ``now``, so a schedule of every second down for a month costs as much as one down for
    a minute.
    """
    schedule = spec["schedule"]
    cron = spec.get("cron") or {}
    zone = ZoneInfo(cron.get("timeZone", "UTC"))
    rule = cron.get("catchUp", "skip")
    bound = {"skip": 0, "once": 1}.get(rule, int(cron.get("maxCatchUp", 10)))
    # Slots are whole seconds: from the next whole second back, the first is the latest <= now.
    slots = croniter(schedule, datetime.fromtimestamp(math.floor(now) + 1, zone))
    on_time: list[float] = []
    late: list[float] = []
    while True:
        slot = float(slots.get_prev(float))
        if slot < due:
            break
        if now - slot <= GRACE_S:
            on_time.append(slot)
        elif len(late) < bound:
            late.append(slot)
        else:
            break
    return CronPlan(tuple(sorted(late + on_time)), next_slot(schedule, zone.key, now))


def slot_id(slot: float) -> str:
    """A slot as an event id: ``2027-01-15T08:00:00Z``."""
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def idle(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` of real time, or until ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    except TimeoutError:
        return
