"""Node-RED's ``trigger`` and ``delay`` nodes, as their 4.1 implementations (``89-trigger.js``,
``89-delay.js``) behave, on a state kept outside the node.

:func:`run_timed` takes the node, one message (or a tick: a schedule made earlier, now due), the
node's state (what Node-RED keeps in the running node: :data:`nodered_semantics.timed.STATE_KEY`
of its node context) and the time; it gives back what the node sends now, what it will send
later (schedules, which the caller times durably and hands back as ticks), and the new state. A
tick sends its message only if it is still pending in the state: a reset, an extended trigger or
a newer message of the same topic (rate limit by topic) cancelled it otherwise.

What is reproduced (:func:`nodered_semantics.timed.timed_problem` refuses the rest):

* **trigger**: all messages or each ``msg.<topic>`` separately; op1/op2 as string, number,
  boolean, JSON, null, the payload, nothing, or (op2) the latest message; a timer, extended by
  every message when ``extend``, or none (duration 0: block until reset); ``msg.reset`` and a
  payload equal to the reset value; ``msg.delay`` when ``overrideDelay``; a second output. A
  timer that ends while the engine is late is over for the next message, as it would be on
  Node-RED (its message still goes out when its tick runs).
* **delay**: a fixed delay, ``msg.delay``, a random delay (per message, with ``msg.reset``);
  a rate limit of all messages (queued and released one per interval as Node-RED's interval
  releases them, or the intermediate messages dropped / sent to the second output); a rate
  limit per topic (each interval sends the newest message of every topic; the interval counts
  from the node's first message, where Node-RED counts from the deployment; of the parts of one
  sequence, which reach the node in any order here, the later part is the newer). ``msg.flush``
  sends the messages a fixed, msg.delay or random delay holds at once, each in its own job
  (a packet on :data:`~nodered_semantics.timed.RELEASE_PORT` that the caller turns into an
  immediate timer of that job); to a rate limit it is refused at the message.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import UNDEFINED, JSThrowError, is_nan, js_number, js_string
from nodered_semantics.msg_paths import get_property
from nodered_semantics.timed import RELEASE_PORT, SCHEDULE_PORT
from nodered_semantics.typed_values import typed_value
from services.nodered.common import Sent, node_error

__all__ = ["Schedule", "run_timed"]

Schedule = dict[str, Any]  # {"port": SCHEDULE_PORT, "tick": {...}, "at": epoch s, "msg": {...}}
State = dict[str, Any]


def run_timed(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    state: Mapping[str, Any] | None,
    now: float,
    tick: Mapping[str, Any] | None = None,
    origin: Mapping[str, Any] | None = None,
) -> tuple[Sent, list[Schedule], State]:
    """Run a trigger or delay node on ``msg`` (or on a due ``tick`` carrying ``msg``).

    ``origin``: ``{"job", "parent"}``, the job and step execution the message is in; a delay
    keeps it with each message it holds, so that ``msg.flush`` can release them (a packet on
    :data:`~nodered_semantics.timed.RELEASE_PORT` per message, to its own job)."""
    if tick is not None and str(tick.get("id")) not in (state or {}).get("pending", {}):
        # Cancelled (a reset, an extension, a newer message; or another deployment's tick):
        # nothing sent, nothing changed (so a caller writes nothing back).
        return [], [], copy.deepcopy(dict(state or {}))
    kept: State = copy.deepcopy(dict(state or {}))
    kept.setdefault("pending", {})
    kept.setdefault("n", 0)
    if tick is not None:
        return _tick(node, msg, kept, tick)
    if node.get("type") == "trigger":
        sent, schedules = _trigger(node, msg, kept, now)
    else:
        sent, schedules = _delay(node, msg, kept, now, origin or {})
    return sent, schedules, kept


def _new_tick(state: State, **info: Any) -> dict[str, Any]:
    state["n"] = int(state["n"]) + 1
    tick_id = str(state["n"])
    state["pending"][tick_id] = dict(info)
    return {"id": tick_id, **info}


def _schedule(tick: Mapping[str, Any], at: float, msg: Mapping[str, Any], port: int) -> Schedule:
    return {"port": SCHEDULE_PORT, "tick": {**tick, "out": port}, "at": at, "msg": dict(msg)}


def _tick(
    node: Mapping[str, Any], msg: dict[str, Any], state: State, tick: Mapping[str, Any]
) -> tuple[Sent, list[Schedule], State]:
    tick_id = str(tick.get("id"))
    record = state["pending"].pop(tick_id, None)
    if record is None:
        return [], [], state  # cancelled: a reset, an extension or a newer message
    port = int(tick.get("out") or 0)
    if node.get("type") == "trigger":
        topic = str(tick.get("topic"))
        entry = state.get("topics", {}).get(topic)
        if entry is not None and entry.get("tick") == tick_id:
            del state["topics"][topic]
        if tick.get("latest"):  # op2 "latest message": the newest one of the topic, now
            latest = record["msg"] if "msg" in record else state.get("npay", {}).pop(topic, None)
            return ([(port, latest)] if latest is not None else []), [], state
    elif node.get("pauseType") == "timed":
        buffered = state.get("buffer", {}).get(str(tick.get("topic")))
        if buffered is not None and buffered.get("id") == tick_id:
            del state["buffer"][str(tick.get("topic"))]
    return [(port, msg)], [], state


# -- trigger ------------------------------------------------------------------------------------


def _trigger_value(value: Any, kind: str, msg: Mapping[str, Any]) -> Any:
    if kind == "val":  # an old flow's untyped value, as the node reads it on start
        kind = "bool" if value in ("true", "false") else "null" if value == "null" else "str"
    if kind == "null":
        return None
    if kind == "num" and not is_nan(js_number(value)):
        return js_number(value)
    return typed_value(value, kind, msg, {}, {})


def _trigger_duration_ms(node: Mapping[str, Any], msg: Mapping[str, Any]) -> float:
    duration = js_number(node.get("duration"))
    if is_nan(duration):
        duration = 250
    units = node.get("units") or "ms"
    duration *= {"s": 1000, "min": 60_000, "hr": 3_600_000}.get(units, 1)
    if node.get("overrideDelay") and "delay" in msg:
        override = _parse_float(msg["delay"])
        if not math.isnan(override):
            duration = override
    return float(duration)


def _parse_float(value: Any) -> float:
    """``parseFloat``: the leading number of a string (NaN when there is none)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    found = re.match(r"\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?Infinity)", js_string(value))
    if not found:
        return math.nan
    return float(found.group(1).replace("Infinity", "inf"))


def _truthy(value: Any) -> bool:
    if value is UNDEFINED or value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    return bool(value != "")


def _trigger(
    node: Mapping[str, Any], msg: dict[str, Any], state: State, now: float
) -> tuple[Sent, list[Schedule]]:
    op1type = node.get("op1type") or "str"
    op2type = node.get("op2type") or "str"
    op1 = node.get("op1") or "1"
    op2 = node.get("op2") or "0"
    second = node.get("outputs") in (2, "2")
    out2 = 1 if second else 0
    extend = node.get("extend") in (True, "true")
    duration = _trigger_duration_ms(node, msg)
    topic = "_none"
    if node.get("bytopic", "all") != "all":
        try:
            found = get_property(msg, str(node.get("topic") or "topic"))
        except JSThrowError:
            found = UNDEFINED
        topic = js_string(found) if _truthy(found) else "_none"
    topics: dict[str, Any] = state.setdefault("topics", {})
    npay: dict[str, Any] = state.setdefault("npay", {})
    # A timer that has run out is over, as on Node-RED; a latest-message op2 keeps the message
    # it was due to send (its tick still sends it).
    for name, entry in list(topics.items()):
        if entry.get("until") is not None and entry["until"] <= now:
            del topics[name]
            pending = state["pending"].get(entry.get("tick"))
            if pending is not None and op2type == "payl" and "msg" not in pending:
                pending["msg"] = npay.pop(name, None)
    reset_value = node.get("reset") or ""
    payload = msg.get("payload", UNDEFINED)
    if "reset" in msg or (
        reset_value != ""
        and payload is not UNDEFINED
        and payload is not None
        and js_string(payload) == reset_value
    ):
        entry = topics.pop(topic, None)
        if entry is not None:
            state["pending"].pop(entry.get("tick"), None)
        return [], []
    if op2type == "payl":
        npay[topic] = copy.deepcopy(msg)
    entry = topics.get(topic)
    if entry is None:
        m2: Any = UNDEFINED
        if op2type == "pay":
            m2 = copy.deepcopy(payload)
        elif op2type not in ("nul", "payl"):
            m2 = _trigger_value(op2, op2type, msg)
        if op1type not in ("pay", "nul"):
            msg["payload"] = _trigger_value(op1, op1type, msg)
        schedules = []
        if duration == 0:
            topics[topic] = {"tick": None, "until": None}  # blocked until a reset
        else:
            until = now + duration / 1000
            entry = {"tick": None, "until": until}
            if m2 is not UNDEFINED:  # the state is JSON: no undefined in it
                entry["m2"] = m2
            if op2type != "nul":
                latest = op2type == "payl"
                tick = _new_tick(state, topic=topic, latest=latest)
                entry["tick"] = tick["id"]
                later = copy.deepcopy(msg)
                if not latest:
                    later["payload"] = m2 if m2 is not UNDEFINED else None
                schedules.append(_schedule(tick, until, later, out2))
            topics[topic] = entry
        sent = [(0, copy.deepcopy(msg))] if op1type != "nul" else []
        return sent, schedules
    if extend and duration > 0:
        if op2type == "payl" and payload is not UNDEFINED:
            entry["m2"] = copy.deepcopy(payload)
        state["pending"].pop(entry.get("tick"), None)
        entry["until"] = now + duration / 1000
        entry["tick"] = None
        if op2type == "nul":
            return [], []
        tick = _new_tick(state, topic=topic, latest=False)
        entry["tick"] = tick["id"]
        later = copy.deepcopy(msg)
        m2 = entry.get("m2", UNDEFINED)
        later["payload"] = m2 if m2 is not UNDEFINED else None
        return [], [_schedule(tick, entry["until"], later, out2)]
    return [], []  # blocked until the timer ends or a reset


# -- delay --------------------------------------------------------------------------------------

_TIME_UNITS = {"milliseconds": 1, "minutes": 60_000, "hours": 3_600_000, "days": 86_400_000}
_RATE_UNITS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


def _rate_ms(node: Mapping[str, Any]) -> float:
    """The interval of a rate limit, in ms, as the node computes it on start."""
    rate = _RATE_UNITS.get(str(node.get("rateUnits")), 1000) / js_number(node.get("rate"))
    units = js_number(node.get("nbRateUnits"))
    return float(rate * (units if not is_nan(units) and units > 0 else 1))


def _delay_ms(node: Mapping[str, Any], msg: Mapping[str, Any]) -> float:
    mode = node.get("pauseType") or "delay"
    if mode == "random":
        unit = _TIME_UNITS.get(str(node.get("randomUnits")), 1000)
        first = js_number(node.get("randomFirst")) * unit
        last = js_number(node.get("randomLast")) * unit
        return float(first + (last - first) * random.random())
    timeout = float(
        js_number(node.get("timeout")) * _TIME_UNITS.get(str(node.get("timeoutUnits")), 1000)
    )
    if mode == "delayv":
        if "delay" in msg:
            given = _parse_float(msg["delay"])
            if not math.isnan(given):
                timeout = given
        timeout = max(timeout, 0.0)
    return timeout


def _delay(
    node: Mapping[str, Any],
    msg: dict[str, Any],
    state: State,
    now: float,
    origin: Mapping[str, Any],
) -> tuple[Sent, list[Schedule]]:
    mode = node.get("pauseType") or "delay"
    if mode in ("delay", "delayv", "random"):
        pending: dict[str, Any] = state["pending"]
        if "reset" in msg:  # every message held is dropped, this one too
            state["pending"] = {k: v for k, v in pending.items() if v.get("flushed")}
            return [], []
        at = now + _delay_ms(node, msg) / 1000
        if "flush" not in msg:
            tick = _new_tick(state, job=origin.get("job"), parent=origin.get("parent"))
            return [], [_schedule(tick, at, msg, 0)]
        # msg.flush: the messages held go out now (the first msg.flush of them, when a number),
        # each in its own job; this one with them, unless it is nothing but the flush.
        held = sorted((k for k, v in pending.items() if not v.get("flushed")), key=int)
        queue: list[str | None] = [*held] + ([None] if len(msg) > 2 else [])
        count = len(queue)
        flush = msg["flush"]
        if isinstance(flush, int | float) and not isinstance(flush, bool):
            count = min(math.floor(flush), count)
        sent: Sent = []
        schedules: list[Schedule] = []
        for tick_id in queue[: max(count, 0)]:
            if tick_id is None:
                sent.append((0, msg))
                continue
            record = pending[tick_id]
            record["flushed"] = True
            schedules.append(
                {"port": RELEASE_PORT, "job": record.get("job"), "parent": record.get("parent")}
                | {"tick": tick_id}
            )
        if None in queue[max(count, 0) :]:  # not flushed itself: held as any message
            tick = _new_tick(state, job=origin.get("job"), parent=origin.get("parent"))
            schedules.append(_schedule(tick, at, msg, 0))
        return sent, schedules
    if "flush" in msg:
        raise node_error(
            node,
            "msg.flush to a rate limit sends its queue at once and restarts its interval, which "
            "the step engine does not do (run the flow on Node-RED)",
        )
    rate = _rate_ms(node) / 1000
    if mode == "rate" and not node.get("drop"):
        if "reset" in msg:
            state["pending"].clear()
            state.pop("t0", None)
            state.pop("slot", None)
            return [], []
        t0, slot = state.get("t0"), int(state.get("slot") or 0)
        if t0 is not None and now < t0 + (slot + 1) * rate:  # the interval is running
            state["slot"] = slot + 1
            return [], [_schedule(_new_tick(state), t0 + (slot + 1) * rate, msg, 0)]
        state["t0"], state["slot"] = now, 0  # idle: sent now, and the interval starts
        return [(0, msg)], []
    if mode == "rate":  # drop the intermediate messages (or send them to the second output)
        if "reset" in msg:
            state.pop("last", None)
            return [], []
        last = state.get("last")
        if last is None or (now - last) > rate:
            state["last"] = now
            return [(0, msg)], []
        return ([(1, msg)] if node.get("outputs") in (2, "2") else []), []
    # timed: every interval sends the newest message of each topic
    if "topic" not in msg:
        msg["topic"] = "_none_"
    buffer: dict[str, Any] = state.setdefault("buffer", {})
    if "reset" in msg:
        buffer.clear()
        state["pending"].clear()
        return [], []
    anchor = state.setdefault("anchor", now)
    at = anchor + (math.floor((now - anchor) / rate) + 1) * rate
    for name, held in list(buffer.items()):
        if held["at"] <= now:  # released already
            del buffer[name]
    topic = js_string(msg["topic"]) if not isinstance(msg["topic"], str) else msg["topic"]
    name = f"{type(msg['topic']).__name__}:{topic}"
    second = node.get("outputs") in (2, "2")
    replaced = buffer.get(name)
    if replaced is not None and _earlier_part(msg, replaced):
        # Node-RED gets a sequence's parts in order; here they may come in any order: a part
        # before the held one is the one replaced.
        return ([(1, msg)] if second else []), []
    dropped: Sent = []
    if replaced is not None:
        state["pending"].pop(replaced["id"], None)
        if second:
            dropped.append((1, replaced["msg"]))
    tick = _new_tick(state, topic=name)
    buffer[name] = {"id": tick["id"], "at": at, "msg": msg if second else None, "part": _part(msg)}
    return dropped, [_schedule(tick, at, msg, 0)]


def _part(msg: Mapping[str, Any]) -> list[Any] | None:
    """The message's sequence and place in it (``msg.parts``), if it has them."""
    parts = msg.get("parts")
    if isinstance(parts, Mapping) and isinstance(parts.get("index"), int | float):
        return [parts.get("id"), parts["index"]]
    return None


def _earlier_part(msg: Mapping[str, Any], held: Mapping[str, Any]) -> bool:
    """Whether ``msg`` is a part of the held message's sequence that comes before it."""
    mine, theirs = _part(msg), held.get("part")
    return bool(mine and theirs and mine[0] == theirs[0] and mine[1] < theirs[1])
