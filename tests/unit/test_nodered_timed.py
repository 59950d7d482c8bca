"""The trigger and delay nodes' semantics (services.nodered.timed), as Node-RED 4.1 has them."""

from __future__ import annotations

from typing import Any

from nodered_semantics.support import node_problem
from nodered_semantics.timed import RELEASE_PORT, SCHEDULE_PORT
from services.nodered.timed import run_timed


def trigger(**config: Any) -> dict[str, Any]:
    base = {"id": "t1", "type": "trigger", "op1": "1", "op2": "0", "op1type": "str"}
    return {**base, "op2type": "str", "duration": "2", "units": "s", "extend": False, **config}


def delay(**config: Any) -> dict[str, Any]:
    return {"id": "d1", "type": "delay", "timeoutUnits": "seconds", "rateUnits": "second", **config}


def fire(node: dict[str, Any], state: Any, schedule: dict[str, Any]) -> tuple[Any, Any]:
    sent, later, kept = run_timed(
        node, dict(schedule["msg"]), state, schedule["at"], schedule["tick"]
    )
    assert later == []
    return sent, kept


def test_trigger_sends_op1_now_op2_later_and_blocks_meanwhile() -> None:
    node = trigger()
    sent, later, state = run_timed(node, {"payload": "x", "_msgid": "a"}, None, 100.0)
    assert sent == [(0, {"payload": "1", "_msgid": "a"})]
    assert [(s["at"], s["msg"]["payload"], s["tick"]["out"]) for s in later] == [(102.0, "0", 0)]
    # Blocked until the timer ends: a second message sends nothing and schedules nothing.
    sent2, later2, state = run_timed(node, {"payload": "y"}, state, 101.0)
    assert (sent2, later2) == ([], [])
    out, state = fire(node, state, later[0])
    assert out == [(0, {"payload": "0", "_msgid": "a"})]
    # Over: the next message starts again.
    sent3, later3, _ = run_timed(node, {"payload": "z"}, state, 103.0)
    assert sent3 == [(0, {"payload": "1"})]
    assert len(later3) == 1


def test_trigger_extend_cancels_the_earlier_timer_and_sends_the_latest_message() -> None:
    node = trigger(op1type="nul", op2="timeout", extend=True, duration="5")
    sent, first, state = run_timed(node, {"payload": 1, "n": 1}, None, 0.0)
    assert sent == []
    _, second, state = run_timed(node, {"payload": 2, "n": 2}, state, 3.0)
    assert second[0]["at"] == 8.0
    assert second[0]["msg"] == {"payload": "timeout", "n": 2}
    stale, state = fire(node, state, first[0])
    assert stale == []  # the extension cancelled it
    due, state = fire(node, state, second[0])
    assert due == [(0, {"payload": "timeout", "n": 2})]


def test_trigger_reset_by_message_or_payload_value() -> None:
    node = trigger(reset="stop")
    _, later, state = run_timed(node, {"payload": 1}, None, 0.0)
    _, _, state = run_timed(node, {"payload": "stop"}, state, 1.0)
    assert fire(node, state, later[0])[0] == []
    _, later, state = run_timed(node, {"payload": 1}, state, 1.5)
    _, _, state = run_timed(node, {"payload": 9, "reset": True}, state, 1.6)
    assert fire(node, state, later[0])[0] == []


def test_trigger_per_topic_second_output_and_payload_op2() -> None:
    node = trigger(bytopic="topic", topic="_msgid", op1type="pay", op2type="pay", outputs=2)
    sa, la, state = run_timed(node, {"payload": 5, "_msgid": "a"}, None, 0.0)
    sb, lb, state = run_timed(node, {"payload": 6, "_msgid": "b"}, state, 0.5)
    assert sa == [(0, {"payload": 5, "_msgid": "a"})]
    assert sb == [(0, {"payload": 6, "_msgid": "b"})]
    assert la[0]["tick"]["out"] == 1
    assert la[0]["msg"]["payload"] == 5
    assert run_timed(node, {"payload": 7, "_msgid": "a"}, state, 1.0)[:2] == ([], [])
    assert fire(node, state, lb[0])[0] == [(1, {"payload": 6, "_msgid": "b"})]


def test_trigger_with_nothing_to_send_later_blocks_until_its_time_ends() -> None:
    node = trigger(op1type="pay", op2type="nul", duration="10")
    sent, later, state = run_timed(node, {"payload": "done"}, None, 0.0)
    assert sent == [(0, {"payload": "done"})]
    assert later == []
    assert run_timed(node, {"payload": "again"}, state, 9.0)[0] == []
    assert run_timed(node, {"payload": "after"}, state, 10.5)[0] == [(0, {"payload": "after"})]


def test_delay_by_msg_delay_and_reset() -> None:
    node = delay(pauseType="delayv", timeout="5")
    _, later, state = run_timed(node, {"payload": "a", "delay": 1000}, None, 0.0)
    _, later2, state = run_timed(node, {"payload": "b"}, state, 0.0)
    assert [s["at"] for s in later + later2] == [1.0, 5.0]
    _, _, state = run_timed(node, {"reset": True}, state, 0.5)
    assert fire(node, state, later[0])[0] == []


def test_rate_limit_queues_and_spaces_releases_as_the_interval_does() -> None:
    node = delay(pauseType="rate", rate="1", nbRateUnits="1", drop=False)
    state = None
    released = []
    for i in range(4):
        sent, later, state = run_timed(node, {"payload": i}, state, 10.0 + i * 0.01)
        released += [(10.0 + i * 0.01, m["payload"]) for _, m in sent]
        released += [(s["at"], s["msg"]["payload"]) for s in later]
    assert released == [(10.0, 0), (11.0, 1), (12.0, 2), (13.0, 3)]
    # After the interval found its queue empty, a message goes out at once again.
    sent, later, state = run_timed(node, {"payload": 9}, state, 14.5)
    assert sent == [(0, {"payload": 9})]
    assert later == []


def test_rate_limit_dropping_intermediate_messages() -> None:
    node = delay(pauseType="rate", rate="1", drop=True, outputs=2)
    sent, _, state = run_timed(node, {"payload": 1}, None, 0.0)
    sent2, _, state = run_timed(node, {"payload": 2}, state, 0.5)
    sent3, _, state = run_timed(node, {"payload": 3}, state, 1.2)
    assert [sent, sent2, sent3] == [
        [(0, {"payload": 1})],
        [(1, {"payload": 2})],
        [(0, {"payload": 3})],
    ]


def test_rate_limit_per_topic_sends_the_newest_of_each_topic_each_interval() -> None:
    node = delay(pauseType="timed", rate="1", nbRateUnits="2", drop=True)
    state = None
    schedules = []
    for topic, n in [("apple", 1), ("apple", 2), ("orange", 1), ("apple", 3)]:
        _, later, state = run_timed(node, {"topic": topic, "payload": n}, state, 0.1)
        schedules += later
    kept = state
    out = []
    for s in schedules:
        sent, kept = fire(node, kept, s)
        out += [m["payload"] for _, m in sent]
    assert sorted(out) == [1, 3]
    assert {s["at"] for s in schedules} == {2.1}


def test_node_problem_refuses_what_is_not_reproduced() -> None:
    assert node_problem(trigger()) is None
    assert "repeats" in (node_problem(trigger(duration="-2")) or "")
    assert "flow" in (node_problem(trigger(op2type="flow")) or "")
    assert "mustache" in (node_problem(trigger(op1="{{payload}}")) or "")
    assert node_problem(delay(pauseType="rate", rate="1")) is None
    assert "queue" in (node_problem(delay(pauseType="queue", rate="1")) or "")
    assert "msg.rate" in (node_problem(delay(pauseType="rate", rate="1", allowrate=True)) or "")


def test_rate_limit_per_topic_keeps_the_later_part_of_a_sequence_whatever_the_order() -> None:
    node = delay(pauseType="timed", rate="1", nbRateUnits="2", drop=True, outputs=2)
    late = {"topic": "apple", "payload": 3, "parts": {"id": "s", "index": 2, "count": 3}}
    early = {"topic": "apple", "payload": 1, "parts": {"id": "s", "index": 0, "count": 3}}
    _, kept_later, state = run_timed(node, late, None, 0.0)
    sent, later, state = run_timed(node, early, state, 0.1)
    assert sent == [(1, early)]
    assert later == []
    assert fire(node, state, kept_later[0])[0] == [(0, late)]


def test_flush_releases_the_held_messages_to_their_jobs_and_sends_itself() -> None:
    node = delay(pauseType="delay", timeout="60")
    _, first, state = run_timed(
        node, {"payload": "a"}, None, 0.0, origin={"job": "j1", "parent": "d"}
    )
    _, _, state = run_timed(node, {"payload": "b"}, state, 0.0, origin={"job": "j2", "parent": "d"})
    flush = {"_msgid": "m", "topic": "", "flush": 1}
    sent, out, state = run_timed(node, flush, state, 1.0, origin={"job": "j3", "parent": "d"})
    # Only the first held message is released (msg.flush = 1); the flush itself is held.
    assert sent == []
    assert out[0] == {"port": RELEASE_PORT, "job": "j1", "parent": "d", "tick": "1"}
    assert out[1]["port"] == SCHEDULE_PORT
    assert out[1]["at"] == 61.0
    # The released tick sends; a reset afterwards does not take it back.
    _, _, state = run_timed(node, {"reset": True}, state, 1.5)
    assert fire(node, state, first[0])[0] == [(0, {"payload": "a"})]
    # Nothing held: a flush message with more than _msgid and flush goes out itself.
    assert run_timed(node, {**flush, "flush": True}, state, 2.0)[0] == [
        (0, {**flush, "flush": True})
    ]


def test_a_trigger_a_split_feeds_is_refused_with_the_reason() -> None:
    from engines.step import step_runnable
    from translators.nodered import from_nodered

    def flow(after_split: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"id": "tab", "type": "tab", "label": "t"},
            {"id": "in", "type": "inject", "z": "tab", "wires": [["sp"]]},
            {"id": "sp", "type": "split", "z": "tab", "wires": [["node"]]},
            {**after_split, "id": "node", "z": "tab", "wires": [[]]},
        ]

    ok, reasons = step_runnable(from_nodered(flow(trigger())).workflows[0])
    assert not ok
    assert any("a split feeds it" in r for r in reasons)
    # A rate limit that queues sends every message: the order does not change what it sends.
    ok, reasons = step_runnable(
        from_nodered(flow(delay(pauseType="rate", rate="1", drop=False))).workflows[0]
    )
    assert ok, reasons


def test_the_reserved_ports_of_the_nodered_node_service_are_all_different() -> None:
    """Each kind of packet beside a node's outputs has its own negative port; two kinds on one
    port would hand, say, a file write to the timer code."""
    from nodered_semantics.context import CONTEXT_PORT
    from nodered_semantics.events import COMPLETE_PORT, STATUS_PORT
    from nodered_semantics.files import FILES_PORT
    from nodered_semantics.support import REPORTED_PORT

    ports = [
        REPORTED_PORT, CONTEXT_PORT, FILES_PORT, STATUS_PORT, COMPLETE_PORT, SCHEDULE_PORT,
        RELEASE_PORT,
    ]  # fmt: skip
    assert len(set(ports)) == len(ports)
    assert all(port < 0 for port in ports)
