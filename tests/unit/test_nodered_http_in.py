"""Node-RED's http in / http response semantics (Node-RED 4.1 on Express 4.22): routes as
path-to-regexp 0.1.13 matches them, queries as qs parses them, the message an endpoint sends,
and the answer an http response node gives. Expected values were taken from Node-RED's own
node_modules (path-to-regexp, qs, etag)."""

from __future__ import annotations

from typing import Any

import pytest

from nodered_semantics.http_in import (
    HTTP_ENDPOINT,
    Endpoint,
    HttpInError,
    endpoint_for,
    endpoints_of,
    http_in_msg,
    http_response_result,
    parse_query,
    route_problem,
)
from nodered_semantics.http_request import (
    headers_mark,
    http_request_problem,
    http_response_msg,
    http_service_request,
)
from services.nodered.service import run_node
from translators._nodered_http import self_calls


def test_routes_match_as_express_4_matches_them() -> None:
    echo = Endpoint("e", "get", "/echo/:name/:rest?")
    assert echo.match("GET", "/echo/Nick") == {"name": "Nick"}
    assert echo.match("GET", "/ECHO/Nick/") == {"name": "Nick"}  # case, trailing slash
    assert echo.match("HEAD", "/echo/a/b") == {"name": "a", "rest": "b"}  # get answers HEAD
    assert echo.match("POST", "/echo/a") is None
    assert echo.match("GET", "/echo/") is None
    assert echo.match("GET", "/echo/a/b/c") is None
    assert Endpoint("f", "get", "/x/:a.:ext?").match("GET", "/x/f.json") == {
        "a": "f",
        "ext": "json",
    }
    assert Endpoint("g", "get", "/a/:x-:y").match("GET", "/a/p-q") == {"x": "p", "y": "q"}
    assert Endpoint("h", "get", "/p/:n").match("GET", "/p/N%C3%AFck") == {"n": "Nïck"}
    with pytest.raises(HttpInError, match="Failed to decode param"):
        Endpoint("h", "get", "/p/:n").match("GET", "/p/%zz")
    assert route_problem("/files/*") is not None
    assert route_problem("/a/:id(\\d+)") is not None


def test_queries_parse_as_qs_parses_them() -> None:
    text = "name=Nick&a=1&a=2&b[]=x&c[d]=e&s=a+b%21&e=%zz&b[]=y&f[0]=p&f[1]=q"
    assert parse_query(text) == {
        "name": "Nick",
        "a": ["1", "2"],
        "b": ["x", "y"],
        "c": {"d": "e"},
        "s": "a b!",
        "e": "%zz",
        "f": ["p", "q"],
    }
    with pytest.raises(HttpInError):
        parse_query("a[b][c]=1")


def test_the_endpoint_is_the_first_route_that_matches_and_never_the_editor() -> None:
    nodes = [
        {"id": "a", "type": "http in", "method": "get", "url": "/p/:x"},
        {"id": "b", "type": "http in", "method": "get", "url": "p/fixed"},
        {"id": "c", "type": "http in", "method": "post", "url": "/p/fixed", "d": True},
    ]
    endpoints = endpoints_of(nodes)
    assert [e.id for e in endpoints] == ["a", "b"]
    assert endpoint_for(endpoints, "GET", "http://localhost:1880/p/fixed")[0] == endpoints[0]
    assert endpoint_for(endpoints, "POST", "localhost:1880/p/fixed") == (
        None,
        "no http in node of the flow answers POST /p/fixed",
    )
    found, why = endpoint_for(endpoints, "GET", "http://127.0.0.1:1880/flows")
    assert found is None
    assert "Admin API" in str(why)


def test_the_endpoints_message_and_the_answer_as_the_request_node_returns_it() -> None:
    node = {
        "id": "r",
        "type": "http request",
        "method": "POST",
        "ret": "obj",
        "url": "http://localhost:1880/in?x=1",
        "headers": [],
    }
    msg: dict[str, Any] = {"payload": {"n": 1}, "topic": "t"}
    request = http_service_request({**node, HTTP_ENDPOINT: {"id": "e"}}, msg)
    endpoint = Endpoint("e", "post", "/in")
    sent = http_in_msg(endpoint, request, msg, "obj")
    assert sent["payload"] == {"n": 1} == sent["req"]["body"]
    assert sent["req"]["query"] == {"x": "1"}
    assert sent["req"]["headers"]["content-type"] == "application/json"
    assert sent["req"]["headers"]["content-length"] == "7"
    assert "topic" not in sent
    answer = {**sent, "payload": {"ok": True}, "headers": {"X-A": "1"}, "statusCode": "202"}
    stash, result = http_response_result({"headers": {}, "statusCode": ""}, answer, headers_mark)
    assert result == {
        "status": 202,
        "headers": {
            "x-a": "1",
            "content-type": "application/json; charset=utf-8",
            "content-length": "11",
            "etag": 'W/"b-Ai2R8hgEarLmHKwesT1qcY913ys"',
        },
        "text": '{"ok":true}',
    }
    out = http_response_msg({"ret": stash["ret"]}, stash["msg"], {"url": stash["url"]}, result)
    assert (out["payload"], out["statusCode"], out["topic"]) == ({"ok": True}, 202, "t")
    # The node's own status wins; a text payload is text/html; no payload, no body.
    _, page = http_response_result(
        {"statusCode": "404"}, {**sent, "payload": "<p>x</p>"}, headers_mark
    )
    assert (page["status"], page["headers"]["content-type"]) == (404, "text/html; charset=utf-8")
    assert page["headers"]["etag"] == 'W/"8-qkAicn5hhHHbutT+gbZ7Kyrnxss"'
    with pytest.raises(HttpInError, match="No response"):
        http_response_result({}, {"payload": 1}, headers_mark)


def test_posted_bodies_are_parsed_by_their_content_type() -> None:
    endpoint = Endpoint("e", "post", "/in")
    base = {"url": "http://localhost:1880/in", "method": "POST"}

    def body(text: str, content_type: str | None) -> Any:
        headers = {"content-type": content_type} if content_type else {}
        return http_in_msg(endpoint, {**base, "body": text, "headers": headers}, {}, "txt")[
            "payload"
        ]

    assert body("Nick", None) == "Nick"
    assert body("a=1&b=x+y", "application/x-www-form-urlencoded") == {"a": "1", "b": "x y"}
    assert body("[1]", "application/json; charset=utf-8") == [1]
    assert body("<a/>", "application/xml") == "<a/>"
    with pytest.raises(HttpInError, match="400"):
        body("5", "application/json")
    with pytest.raises(HttpInError, match="Buffer"):
        body("x", "application/octet-stream")


def test_the_service_runs_both_ends_and_a_url_of_node_red_itself_is_refused_elsewhere() -> None:
    flow = [
        {"id": "e", "type": "http in", "method": "get", "url": "/h/:n", "wires": [[]]},
        {"id": "i", "type": "inject", "wires": [["r"]]},
        {
            "id": "r",
            "type": "http request",
            "method": "GET",
            "ret": "txt",
            "url": "http://localhost:1880/h/a?q=1",
            "wires": [[]],
        },
    ]
    decision = self_calls(flow)["r"]
    assert decision["id"] == "e"
    node = {**flow[2], HTTP_ENDPOINT: decision}
    assert http_request_problem(node) is None
    ((port, sent),) = run_node(node, {"payload": 1, "topic": "t"})
    assert (port, sent["req"]["params"], sent["payload"]) == (0, {"n": "a"}, {"q": "1"})
    response = {"id": "o", "type": "http response", "statusCode": "", "headers": {}}
    ((_, back),) = run_node(response, {**sent, "payload": "hi"})
    assert (back["payload"], back["topic"], back["statusCode"]) == ("hi", "t", 200)
    assert "refused" not in decision
    assert "Node-RED's own" in str(http_request_problem(flow[2]))
    with pytest.raises(ValueError, match="known at import"):
        http_service_request({"id": "x", "url": ""}, {"url": "localhost:1880/h/a"})
