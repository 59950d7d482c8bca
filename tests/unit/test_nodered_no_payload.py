"""A Node-RED message without a payload stays without one between the step engine's steps: a
change node that sets msg.payload to a JSONata value that is nothing deletes it, and the next
node must see it undefined (Node-RED), not null."""

from __future__ import annotations

from engines.step._nodered import NO_PAYLOAD, node_message, token_of
from services.nodered.change import run_change


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
