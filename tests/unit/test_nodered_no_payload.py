"""A Node-RED message without a payload stays without one between the step engine's steps: a
change node that sets msg.payload to a JSONata value that is nothing deletes it, and the next
node must see it undefined (Node-RED), not null."""

from __future__ import annotations

import pytest

from engines.step._nodered import NO_PAYLOAD, node_message, token_of
from nodered_semantics.events import status_event
from nodered_semantics.support import REPORTED_PORT
from services.nodered.change import run_change
from services.nodered.file_node import run_file_node
from services.nodered.service import run_node


def test_a_message_without_a_payload_comes_back_without_one() -> None:
    node = {
        "type": "change",
        "rules": [
            {"t": "set", "p": "payload", "pt": "msg", "to": "payload.none", "tot": "jsonata"}
        ],
    }
    [(_, msg)] = run_change(node, {"payload": {"a": 1}, "topic": "t"}, {})
    assert msg == {"topic": "t"}
    payload, meta = token_of(msg)
    assert (payload, meta) == (None, {"topic": "t", NO_PAYLOAD: True})
    assert node_message(meta, payload) == {"topic": "t"}


def test_a_null_payload_and_a_new_payload_are_payloads() -> None:
    assert token_of({"payload": None, "topic": "t"}) == (None, {"topic": "t"})
    assert node_message({"topic": "t"}, None) == {"topic": "t", "payload": None}
    # A step after it (a service, a transform) gave the token a payload: the mark is stale.
    assert node_message({"topic": "t", NO_PAYLOAD: True}, {"b": 2}) == {
        "topic": "t",
        "payload": {"b": 2},
    }


def test_a_status_nodes_message_has_no_payload() -> None:
    function = {"id": "f1", "type": "function", "name": "f"}
    event = status_event(function, {"fill": "red", "text": "x"})
    assert "payload" not in event
    payload, meta = token_of(event)
    assert meta[NO_PAYLOAD] is True
    # the status node passes it on as it got it: still without a payload
    status = {"id": "s1", "type": "status", "scope": None}
    [(port, sent)] = run_node(status, node_message(meta, payload))
    assert port == 0
    assert "payload" not in sent
    assert sent["status"] == {"fill": "red", "text": "x", "source": {"id": "f1", "type":
                              "function", "name": "f"}}  # fmt: skip


def test_a_function_after_it_sees_no_payload() -> None:
    function = {"id": "f2", "type": "function", "func": "msg.payload = {has: 'payload' in msg, "
                "type: typeof msg.payload}; return msg;"}  # fmt: skip
    payload, meta = token_of({"status": {"text": "x"}})
    [(_, sent)] = run_node(function, node_message(meta, payload))
    assert sent["payload"] == {"has": False, "type": "undefined"}


@pytest.mark.parametrize("send_error", [True, None])
def test_a_file_in_that_sends_on_error_sends_no_payload(send_error: bool | None) -> None:
    reader = {"id": "r1", "type": "file in", "filename": "/none", "format": "utf8"}
    if send_error is not None:
        reader["sendError"] = send_error
    sent, ops = run_file_node(reader, {"payload": "p", "topic": "t"}, {})
    assert ops == []
    assert [port for port, _ in sent] == [REPORTED_PORT, 0]
    msg = sent[1][1]
    assert "payload" not in msg
    assert msg["error"]["code"] == "ENOENT"
    payload, meta = token_of(msg)
    assert node_message(meta, payload) == msg  # the next node gets it without a payload
