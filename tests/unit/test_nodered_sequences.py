"""Node-RED's split and join (manual, reduce, auto) and the http request node, as the step
engine runs them: facts from Node-RED 4's ``17-split.js`` and ``21-httprequest.js``."""

from __future__ import annotations

from typing import Any

import pytest

from fluxo_core.errors import ServiceError
from nodered_semantics.http_request import (
    http_failure,
    http_request_problem,
    http_response_msg,
    http_service_request,
)
from nodered_semantics.jsonata import reads_payload_only
from nodered_semantics.support import node_problem
from services.nodered.service import run_node, run_sequence_node


def split(**extra: Any) -> dict[str, Any]:
    return {"id": "s1", "type": "split", "splt": "\\n", "spltType": "str", "arraySplt": 1, **extra}


def join(**extra: Any) -> dict[str, Any]:
    base = {"id": "j1", "type": "join", "mode": "custom", "build": "array", "property": "payload"}
    return {**base, "propertyType": "msg", "key": "topic", "joiner": "\\n", "count": "", **extra}


def parts_of(payload: Any, **node: Any) -> list[dict[str, Any]]:
    return [msg for _, msg in run_node(split(**node), {"payload": payload, "_msgid": "m"})]


def payloads(sent: list[tuple[int, dict[str, Any]]]) -> list[Any]:
    return [msg.get("payload") for _, msg in sent]


def test_split_of_a_string_sends_each_part_with_msg_parts() -> None:
    sent = parts_of("Apple\nOrange\nKiwi")
    assert [m["payload"] for m in sent] == ["Apple", "Orange", "Kiwi"]
    assert [(m["parts"]["index"], m["parts"]["count"]) for m in sent] == [(0, 3), (1, 3), (2, 3)]
    assert {m["parts"]["type"] for m in sent} == {"string"}
    assert sent[0]["parts"]["ch"] == "\n"
    assert len({m["parts"]["id"] for m in sent}) == 1
    assert "_msgid" not in sent[0]


def test_split_in_chunks_keeps_the_remainder_and_objects_name_their_keys() -> None:
    assert [m["payload"] for m in parts_of("abcdefg", spltType="len", splt="3")] == [
        "abc",
        "def",
        "g",
    ]
    assert [m["payload"] for m in parts_of([1, 2, 3, 4, 5], arraySplt=2)] == [[1, 2], [3, 4], [5]]
    named = parts_of({"a": 1, "b": 2}, addname="topic")
    assert [(m["payload"], m["topic"], m["parts"]["key"]) for m in named] == [
        (1, "a", "a"),
        (2, "b", "b"),
    ]
    assert parts_of(42) == []  # Node-RED drops what it cannot split


def test_split_of_a_message_with_parts_pushes_them_and_join_restores_them() -> None:
    outer = {"id": "x", "index": 0, "count": 1}
    inner = [m for _, m in run_node(split(), {"payload": "a\nb", "parts": outer})]
    assert inner[0]["parts"]["parts"] == outer
    [(_, joined)] = run_sequence_node({"id": "j", "type": "join", "mode": "auto"}, inner)
    assert joined["payload"] == "a\nb"
    assert joined["parts"] == outer


def test_manual_join_by_count_and_by_msg_parts_count() -> None:
    fruit = parts_of("Apple\nOrange\nBanana\nKiwi")
    by_two = run_sequence_node(join(build="string", joiner=",", count="2"), fruit)
    assert payloads(by_two) == ["Apple,Orange", "Banana,Kiwi"]
    assert "parts" not in by_two[0][1]
    assert payloads(run_sequence_node(join(), fruit)) == [["Apple", "Orange", "Banana", "Kiwi"]]


def test_manual_join_sends_at_msg_complete_and_drops_the_group_at_msg_reset() -> None:
    fruit = parts_of("a\nb\nc\nd\ne")
    fruit[1]["complete"] = True
    fruit[2]["reset"] = True  # the group so far (nothing since the complete) is dropped
    sent = run_sequence_node(join(build="string", joiner="+", count="2"), fruit)
    assert payloads(sent) == ["a+b", "d+e"]
    assert "complete" not in sent[0][1]


def test_manual_join_builds_objects_by_key_and_merged_objects() -> None:
    msgs = [{"topic": "Apple", "payload": 100}, {"topic": "Kiwi", "payload": 120}]
    assert payloads(run_sequence_node(join(build="object", count="2"), msgs)) == [
        {"Apple": 100, "Kiwi": 120}
    ]
    keyed = [{"fruit": {"n": "a"}, "payload": 1}, {"fruit": {"n": "b"}, "payload": 2}]
    assert payloads(run_sequence_node(join(build="object", key="fruit.n", count="2"), keyed)) == [
        {"a": 1, "b": 2}
    ]
    merged = [{"payload": {"a": 1, "_msgid": "no"}}, {"payload": {"b": 2, "a": 3}}]
    assert payloads(run_sequence_node(join(build="merged", count="2"), merged)) == [
        {"a": 3, "b": 2}
    ]


def test_a_group_still_incomplete_when_the_job_ends_fails_naming_the_node() -> None:
    with pytest.raises(ServiceError, match=r"join node j1: a group is still incomplete"):
        run_sequence_node(join(count="3"), parts_of("a\nb\nc\nd"))


def test_reduce_averages_right_to_left_and_passes_unsplit_messages_on() -> None:
    mean = join(
        mode="reduce",
        reduceExp="$A+payload",
        reduceInit="0",
        reduceInitType="num",
        reduceFixup="$A/$N",
    )
    assert payloads(run_sequence_node(mean, parts_of(list(range(1, 11))))) == [5.5]
    backwards = join(
        mode="reduce",
        reduceRight=True,
        reduceExp='$append($A, [{"p": payload, "i": $I}])',
        reduceInit="[]",
        reduceInitType="json",
    )
    sent = run_sequence_node(backwards, parts_of("a\nb\nc"))
    assert payloads(sent) == [[{"p": "c", "i": 2}, {"p": "b", "i": 1}, {"p": "a", "i": 0}]]
    assert payloads(run_sequence_node(mean, [{"payload": "alone"}])) == ["alone"]


def test_what_cannot_be_equal_is_refused_with_a_reason() -> None:
    assert "timeout" in (node_problem(join(timeout="2")) or "")
    assert "accumulates" in (node_problem(join(accumulate=True)) or "")
    assert "Buffer" in (node_problem(join(build="buffer")) or "")
    # A streaming split keeps its remainder in its node state (tests/unit/test_nodered_state.py).
    assert node_problem(split(stream=True)) is None
    assert "Buffer" in (node_problem(split(stream=True, spltType="bin")) or "")
    assert node_problem(join(mode="reduce", reduceExp="$A + payload")) is None
    assert node_problem(join(count="2")) is None
    assert "Buffer" in (http_request_problem({"type": "http request", "ret": "bin"}) or "")
    assert "mustache" in (http_request_problem({"url": "http://x/{{topic}}"}) or "")


def test_only_payload_expressions_map_to_the_ir() -> None:
    assert reads_payload_only('payload.a & "topic"')
    assert reads_payload_only("$A + payload")
    assert not reads_payload_only("topic & payload")
    assert not reads_payload_only("msg.topic")
    assert not reads_payload_only('payload[name = "x"]')  # conservative: name may be msg's


def test_http_request_from_the_message() -> None:
    node = {"id": "h", "type": "http request", "method": "use", "url": "", "ret": "obj"}
    node["headers"] = [
        {"keyType": "other", "keyValue": "x-from", "valueType": "other", "valueValue": "node"}
    ]
    msg = {
        "url": "example.test/items?a=1",
        "method": "put",
        "headers": {"X-From": "msg", "X-Keep": "1"},
        "payload": {"n": 1},
        "requestTimeout": 2500,
    }
    assert http_service_request(node, msg) == {
        "url": "http://example.test/items?a=1",
        "method": "PUT",
        "read_as": "text",
        "body": '{"n":1}',
        "headers": {"X-Keep": "1", "x-from": "node", "Content-Type": "application/json"},
        "timeout_s": 2.5,
    }
    get = {"id": "h", "type": "http request", "method": "GET", "paytoqs": "query"}
    query = http_service_request(get, {"url": "http://e.test/q?x=1", "payload": {"a": "b c"}})
    assert query["url"] == "http://e.test/q?x=1&a=b%20c"
    assert "body" not in query


def test_http_response_as_the_nodes_message_and_its_headers_not_sent_again() -> None:
    node = {"id": "h", "type": "http request", "method": "GET", "ret": "obj"}
    result = {"status": 200, "headers": {"Content-Type": "application/json"}, "text": '{"a":1}'}
    out = http_response_msg(node, {"topic": "t"}, {"url": "http://e.test/"}, result)
    assert (out["payload"], out["statusCode"], out["topic"], out["retry"]) == (
        {"a": 1},
        200,
        "t",
        0,
    )
    assert out["headers"]["content-type"] == "application/json"
    assert "headers" not in http_service_request(node, {**out, "url": "http://e.test/2"})
    out["headers"]["x-new"] = "1"  # changed: all of them go
    assert "x-new" in http_service_request(node, {**out, "url": "http://e.test/2"})["headers"]
    text = http_response_msg(node, {}, {"url": "u"}, {"status": 200, "headers": {}, "text": "hi"})
    assert text["payload"] == "hi"  # not JSON: stays text


def test_http_network_failure_is_reported_and_sent_on_unless_senderr() -> None:
    node = {"id": "h", "type": "http request", "method": "GET", "ret": "txt"}
    url = "http://localhost:1880/hello"
    refused = {"kind": "refused", "address": "127.0.0.1", "port": 1880, "attempts": 1}
    failure = http_failure(node, {"payload": 1, "topic": "t"}, url, refused)
    assert failure is not None
    assert failure.sent is not None
    text = "RequestError: connect ECONNREFUSED 127.0.0.1:1880"
    assert failure.report == text
    assert failure.msg == {"payload": 1, "topic": "t"}  # what catch nodes get: the message in
    assert failure.sent == {
        "payload": f"{text} : {url}",
        "statusCode": "ECONNREFUSED",
        "topic": "t",
    }
    quiet = http_failure({**node, "senderr": True}, {"payload": 1}, url, refused)
    assert quiet is not None
    assert quiet.sent is None
    timeout = http_failure(
        node, {"requestTimeout": 1500}, url, {"kind": "timeout", "timeout_s": 1.5}
    )
    assert timeout is not None
    assert timeout.sent is not None
    assert timeout.report == "no response from server"
    assert timeout.sent["payload"] == f"TimeoutError: Timeout awaiting 'request' for 1500ms : {url}"
    assert timeout.sent["statusCode"] == "ETIMEDOUT"


def test_http_network_failure_without_node_reds_words_fails_the_step() -> None:
    node = {"id": "h", "type": "http request", "method": "GET"}
    url = "http://svc.test/"
    several = {"kind": "refused", "address": "::1", "port": 80, "attempts": 2}
    assert http_failure(node, {}, url, several) is None  # Node tries all the addresses at once
    cut = {"kind": "timeout", "timeout_s": 60.0}  # the service's cap, not the node's 120 s
    assert http_failure(node, {}, url, cut) is None
    assert http_failure(node, {}, url, None) is None  # refused by the host policy, say
    assert http_failure(node, {}, url, {"kind": "tls"}) is None


def test_http_network_failure_drops_the_headers_of_an_earlier_response() -> None:
    node = {"id": "h", "type": "http request", "method": "GET", "ret": "obj"}
    result = {"status": 200, "headers": {"X-A": "1"}, "text": "{}"}
    earlier = http_response_msg(node, {}, {"url": "http://e.test/"}, result)
    failure = http_failure(node, earlier, "http://e.test/2", {"kind": "closed"})
    assert failure is not None
    assert failure.sent is not None
    assert "headers" not in failure.sent
    assert "headers" not in failure.msg
    assert failure.sent["payload"] == "RequestError: socket hang up : http://e.test/2"
