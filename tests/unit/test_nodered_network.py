"""What a Node-RED network in node sends when an out node of its own flow sends it a message
(nodered_semantics.network), as Node-RED 4.1's 31-tcpin.js, 32-udp.js and 22-websocket.js do;
and which peers are the flow's own."""

from __future__ import annotations

from typing import Any

from nodered_semantics.network import (
    ENDPOINT_KEY,
    network_problem,
    received,
    receivers,
    websocket_endpoint,
)

TCP_OUT = {"id": "o", "type": "tcp out", "host": "localhost", "port": "1881",
           "beserver": "client", "base64": False, "end": True}  # fmt: skip


def _tcp_in(**over: Any) -> dict[str, Any]:
    return {"id": "i", "type": "tcp in", "server": "server", "host": "", "port": "1881",
            "datamode": "single", "datatype": "utf8", "newline": "", "topic": "", **over}  # fmt: skip


def test_tcp_single_mode_sends_the_whole_text_once_with_topic_and_a_tcp_session() -> None:
    [msg] = received(TCP_OUT, _tcp_in(topic="news"), {"payload": "a\nb"}, "s")
    assert msg["payload"] == "a\nb"
    assert msg["topic"] == "news"
    assert msg["_session"]["type"] == "tcp"
    assert len(msg["_session"]["id"]) == 16
    assert received(TCP_OUT, _tcp_in(), {"payload": "x"}, "s") == [
        received(TCP_OUT, _tcp_in(), {"payload": "x"}, "s")[0]
    ]  # the same delivery, the same session


def test_tcp_stream_mode_splits_lines_and_sends_the_rest_when_the_connection_ends() -> None:
    target = _tcp_in(datamode="stream", newline="\\n")
    sent = [m["payload"] for m in received(TCP_OUT, target, {"payload": "a\nb\n"}, "s")]
    assert sent == ["a", "b"]
    sent = [m["payload"] for m in received(TCP_OUT, target, {"payload": "a\nb"}, "s")]
    assert sent == ["a", "b"]
    trimmed = _tcp_in(datamode="stream", newline="\\n", trim=True)
    assert [m["payload"] for m in received(TCP_OUT, trimmed, {"payload": "a\nb"}, "s")] == [
        "a\n",
        "b\n",
    ]
    # a newline that is not "\n" (the yen sign of an example) splits nothing here
    odd = _tcp_in(datamode="stream", newline="¥n")
    assert [m["payload"] for m in received(TCP_OUT, odd, {"payload": "a\n"}, "s")] == ["a\n"]


def test_tcp_payloads_become_bytes_as_node_red_writes_them() -> None:
    assert received(TCP_OUT, _tcp_in(), {"payload": 42}, "s")[0]["payload"] == "42"
    assert received(TCP_OUT, _tcp_in(), {"payload": {"a": 1}}, "s")[0]["payload"] == (
        "[object Object]"
    )
    assert received(TCP_OUT, _tcp_in(), {"payload": None}, "s") == []
    assert received(TCP_OUT, _tcp_in(), {"payload": ""}, "s") == []  # nothing to end with
    as_b64 = _tcp_in(datatype="base64")
    assert received(TCP_OUT, as_b64, {"payload": "hi"}, "s")[0]["payload"] == "aGk="
    decoding = {**TCP_OUT, "base64": True}
    assert received(decoding, _tcp_in(), {"payload": "aGk="}, "s")[0]["payload"] == "hi"


def test_udp_sends_from_the_in_nodes_own_port() -> None:
    out = {"type": "udp out", "addr": "localhost", "port": "1881", "ipv": "udp4",
           "multicast": "false", "outport": "", "base64": False}  # fmt: skip
    target = {"type": "udp in", "port": "1881", "ipv": "udp4", "multicast": "false",
              "datatype": "utf8"}  # fmt: skip
    assert receivers(out, [target]) == [target]
    assert received(out, target, {"payload": "Hello"}, "s") == [
        {"payload": "Hello", "fromip": "127.0.0.1:1881", "ip": "127.0.0.1", "port": 1881}
    ]
    assert received({**out, "outport": "5000"}, target, {"payload": ""}, "s")[0]["port"] == 5000
    assert received(out, target, {"topic": "no payload"}, "s") == []


def test_websocket_client_and_listener_of_one_path_are_peers() -> None:
    index = {
        "l": {"id": "l", "type": "websocket-listener", "path": "/ws1", "wholemsg": "false"},
        "c": {
            "id": "c",
            "type": "websocket-client",
            "path": "ws://localhost:1880/ws1",
            "wholemsg": "true",
        },
        "far": {"id": "far", "type": "websocket-client", "path": "ws://example.com/ws1"},
    }

    def node(kind: str, **refs: str) -> dict[str, Any]:
        n = {"id": kind, "type": kind, **refs}
        return {**n, ENDPOINT_KEY: websocket_endpoint(n, index)}

    out, listening = node("websocket out", client="c"), node("websocket in", server="l")
    assert receivers(out, [listening]) == [listening]
    assert network_problem(out, [listening]) is None
    # the client sends the whole message (its wholemsg); the listener takes text (its own)
    [msg] = received(out, listening, {"payload": "x", "topic": "t", "_session": {}}, "s")
    assert msg["payload"] in ('{"payload":"x","topic":"t"}', '{"topic":"t","payload":"x"}')
    assert msg["_session"]["type"] == "websocket"
    back = node("websocket out", server="l")
    client_in = node("websocket in", client="c")
    [msg] = received(back, client_in, {"payload": {"a": 1}}, "s")  # parsed: wholemsg
    assert msg["a"] == 1
    assert "payload" not in msg
    assert received(back, client_in, {"payload": ""}, "s") == []  # an empty text is not sent
    far = node("websocket out", client="far")
    assert "network service" in str(network_problem(far, [listening]))
    assert "network service" in str(network_problem(listening, [far]))


def test_a_tcp_request_to_a_tcp_in_of_the_flow_is_refused_as_a_call_and_wait() -> None:
    request = {"id": "r", "type": "tcp request", "server": "localhost", "port": "1883",
               "out": "char", "splitc": "\\n"}  # fmt: skip
    server = _tcp_in(port="1883", datamode="stream")
    reply = {"id": "o", "type": "tcp out", "beserver": "reply", "host": "", "port": ""}
    assert "call-and-wait" in str(network_problem(request, [server, reply]))
    assert "call-and-wait" in str(network_problem(server, [request, reply]))
    assert "reply" in str(network_problem(reply, [request, server]))
    outside = {**request, "server": "example.com"}
    assert "network service" in str(network_problem(outside, [server]))
