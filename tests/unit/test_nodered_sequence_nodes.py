"""Node-RED's sort of a message sequence, switch recreating sequences (``repair``) and batch
in count mode, as the step engine runs them on a job's messages: facts from Node-RED 4's
``18-sort.js``, ``10-switch.js`` and ``19-batch.js``."""

from __future__ import annotations

from typing import Any

import pytest

from fluxo_core.errors import ServiceError
from nodered_semantics.support import UNFINISHED_SEQUENCE, is_sequence_node, node_problem
from services.nodered.service import run_sequence_node


def sequence(*payloads: Any, group: str = "g", count: bool = True) -> list[dict[str, Any]]:
    """Messages as a split sends them: ``msg.parts`` with id, index and count."""
    parts = [{"id": group, "index": i, "type": "array", "len": 1} for i in range(len(payloads))]
    if count:
        for p in parts:
            p["count"] = len(payloads)
    return [
        {"payload": p, "parts": pa, "_msgid": f"m{n}"}
        for n, (p, pa) in enumerate(zip(payloads, parts, strict=True))
    ]


def payloads(sent: list[tuple[int, dict[str, Any]]]) -> list[Any]:
    return [msg["payload"] for _, msg in sent]


def sort_seq(**extra: Any) -> dict[str, Any]:
    base = {"id": "o1", "type": "sort", "order": "ascending", "as_num": False}
    return {**base, "targetType": "seq", "seqKey": "payload", "seqKeyType": "msg", **extra}


def test_a_sorted_sequence_is_sent_once_complete_with_its_indexes_renumbered() -> None:
    sent = run_sequence_node(sort_seq(), sequence(3, 10, 1, 2))
    assert payloads(sent) == [1, 2, 3, 10]
    assert [m["parts"]["index"] for _, m in sent] == [0, 1, 2, 3]
    assert {m["parts"]["id"] for _, m in sent} == {"g"}
    # strings compare as text unless as_num; descending reverses
    assert payloads(run_sequence_node(sort_seq(), sequence("10", "9", "1"))) == ["1", "10", "9"]
    assert payloads(run_sequence_node(sort_seq(as_num=True), sequence("10", "9", "1"))) == [
        "1",
        "9",
        "10",
    ]
    assert payloads(run_sequence_node(sort_seq(order="descending"), sequence(1, 3, 2))) == [
        3,
        2,
        1,
    ]


def test_a_sequence_sorts_by_a_jsonata_key_stably_and_groups_stay_apart() -> None:
    items = [{"n": "x", "p": 3}, {"n": "y", "p": 1}, {"n": "a", "p": 3}]
    node = sort_seq(seqKey="payload.p", seqKeyType="jsonata")
    assert [p["n"] for p in payloads(run_sequence_node(node, sequence(*items)))] == ["y", "x", "a"]
    mixed = sequence(2, 1, group="a") + sequence(20, 10, group="b")
    interleaved = [mixed[0], mixed[2], mixed[1], mixed[3]]
    assert payloads(run_sequence_node(sort_seq(), interleaved)) == [1, 2, 10, 20]
    # no msg.parts (or no index): dropped, as Node-RED does
    assert (
        run_sequence_node(sort_seq(), [{"payload": 1}, {"payload": 2, "parts": {"id": "x"}}]) == []
    )


def test_a_sequence_left_incomplete_fails_naming_the_node() -> None:
    with pytest.raises(ServiceError, match=r"sort node o1.*incomplete") as caught:
        run_sequence_node(sort_seq(), sequence(1, 2)[:1])
    assert caught.value.context.get(UNFINISHED_SEQUENCE) is True


def switch(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    base = {"id": "w1", "type": "switch", "property": "payload", "propertyType": "msg"}
    return {**base, "rules": list(rules), "checkall": "true", "repair": True, **extra}


def test_a_recreating_switch_gives_each_port_a_sequence_of_its_own() -> None:
    node = switch({"t": "gt", "v": "2", "vt": "num"}, {"t": "else"})
    assert is_sequence_node(node)
    assert node_problem(node) is None
    sent = run_sequence_node(node, sequence(1, 5, 2, 7, 9))
    by_port: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for port, msg in sent:
        by_port[port].append(msg)
    assert [m["payload"] for m in by_port[0]] == [5, 7, 9]
    assert [m["payload"] for m in by_port[1]] == [1, 2]
    assert [(m["parts"]["index"], m["parts"]["count"]) for m in by_port[0]] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    assert [(m["parts"]["index"], m["parts"]["count"]) for m in by_port[1]] == [(0, 2), (1, 2)]
    ids = {p: {m["parts"]["id"] for m in msgs} for p, msgs in by_port.items()}
    assert len(ids[0]) == len(ids[1]) == 1
    assert ids[0] != ids[1]
    assert "g" not in ids[0] | ids[1]
    # a message that is not part of a sequence is routed at once, as without repair
    assert run_sequence_node(node, [{"payload": 4}]) == [(0, {"payload": 4})]


def test_a_recreating_switch_counts_the_unevaluated_ports_as_node_red_does() -> None:
    # checkall "false": a message stopping at rule 1 has a shorter onward; Node-RED counts
    # the missing slots (undefined !== null) in the new sequences' count
    node = switch({"t": "lt", "v": "5", "vt": "num"}, {"t": "else"}, checkall="false")
    sent = run_sequence_node(node, sequence(1, 9))
    assert [(port, m["payload"], m["parts"]["count"]) for port, m in sent] == [
        (0, 1, 1),
        (1, 9, 2),
    ]


def test_a_recreating_switch_reading_context_is_refused() -> None:
    node = switch({"t": "eq", "v": "limit", "vt": "flow"})
    assert "context" in (node_problem(node) or "")


def batch(**extra: Any) -> dict[str, Any]:
    return {"id": "b1", "type": "batch", "mode": "count", "count": "2", "overlap": "0", **extra}


def test_a_batch_sends_sequences_of_count_messages() -> None:
    messages = [{"payload": n, "_msgid": f"m{n}"} for n in range(4)]
    sent = run_sequence_node(batch(), messages)
    assert payloads(sent) == [0, 1, 2, 3]
    assert [(m["parts"]["id"], m["parts"]["index"], m["parts"]["count"]) for _, m in sent] == [
        ("m0", 0, 2),
        ("m0", 1, 2),
        ("m2", 0, 2),
        ("m2", 1, 2),
    ]


def test_a_batch_with_overlap_repeats_the_last_messages_and_drops_the_tail() -> None:
    messages = [{"payload": n, "_msgid": f"m{n}"} for n in range(5)]
    sent = run_sequence_node(batch(count="3", overlap="1"), messages)
    assert payloads(sent) == [0, 1, 2, 2, 3, 4]
    assert [m["parts"]["index"] for _, m in sent] == [0, 1, 2, 0, 1, 2]


def test_a_batch_honouring_parts_ends_at_a_sequence_end_and_reset_drops_the_queue() -> None:
    node = batch(count="10", honourParts=True)
    sent = run_sequence_node(node, sequence("a", "b", "c"))
    assert payloads(sent) == ["a", "b", "c"]
    assert [m["parts"]["count"] for _, m in sent] == [3, 3, 3]
    assert [m["parts"]["type"] for _, m in sent] == ["array"] * 3  # parts updated, not replaced
    messages = [{"payload": 1}, {"reset": True}, {"payload": 2}, {"payload": 3}]
    assert payloads(run_sequence_node(batch(), messages)) == [2, 3]


def test_a_batch_sends_its_complete_batches_and_other_modes_are_refused() -> None:
    # the message still short of a batch at the job's end is dropped (Node-RED keeps it)
    assert payloads(run_sequence_node(batch(), [{"payload": n} for n in (1, 2, 3)])) == [1, 2]
    assert "interval" in (node_problem(batch(mode="interval", interval="5")) or "")
    assert "not above its overlap" in (node_problem(batch(count="2", overlap="2")) or "")
    assert "positive integer" in (node_problem(batch(count="x")) or "")


def concat(*topics: str) -> dict[str, Any]:
    return batch(mode="concat", topics=[{"topic": t} for t in topics])


def topic_sequence(topic: str, *values: Any) -> list[dict[str, Any]]:
    return [{**m, "topic": topic} for m in sequence(*values, group=topic)]


def test_concatenate_sends_the_sequences_of_its_topics_in_their_order_once_complete() -> None:
    node = concat("B", "A")
    assert node_problem(node) is None
    messages = topic_sequence("A", 1, 2) + topic_sequence("C", 9) + topic_sequence("B", 3)
    sent = run_sequence_node(node, messages)
    assert payloads(sent) == [3, 1, 2]
    assert [(m["parts"]["index"], m["parts"]["count"]) for _, m in sent] == [(0, 3), (1, 3), (2, 3)]
    assert len({m["parts"]["id"] for _, m in sent}) == 1
    # a topic listed twice takes its oldest sequence twice
    assert payloads(run_sequence_node(concat("S", "S"), topic_sequence("S", 1, 2))) == [1, 2, 1, 2]
    # a topic whose sequence is incomplete holds the others back (dropped at the job's end)
    assert run_sequence_node(node, topic_sequence("A", 1, 2)) == []


def test_concatenate_fails_on_a_message_of_its_topics_without_parts() -> None:
    with pytest.raises(ServiceError, match=r"batch node b1.*msg\.parts"):
        run_sequence_node(concat("A"), [{"payload": 1, "topic": "A"}])
