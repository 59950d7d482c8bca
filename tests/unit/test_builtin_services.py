"""Built-in services: noop, transform (with JSONata), http (against a real local server), demos.

The http tests talk only to an aiohttp server on 127.0.0.1; every other address is refused by the
host policy before any connection is attempted, so no test touches a network beyond loopback.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError, PayloadSchemaError, ServiceError, ValidationError
from fluxo_core.ir import Packet
from service_runtime.sdk import Service
from services import (
    BuiltinConfig,
    HostPolicy,
    HttpService,
    Transform,
    apply_transform,
    builtin_services,
    demo_services,
    enrich_customer,
    guarded_transport,
    make_enrich_customer,
    make_notify_log,
    noop,
    notify_log,
    parse_order,
    parse_path,
    transform_service,
)
from services.demo import CustomerProfile

pytestmark = pytest.mark.timeout(30)

ACTOR = {"user": {"id": "u-1"}, "account": {"id": "acct-1"}}


def packet(payload: Any) -> Packet:
    return Packet.model_validate({"actor": ACTOR, "payload": payload})


def call(svc: Service, payload: Any) -> Any:
    """Run a sync handler directly, as the worker does after validating the input."""
    assert not svc.is_async
    return svc.handler(payload)


def locations(exc: ValidationError) -> list[str]:
    return [loc for loc, _ in exc.problems]


# --- noop ----------------------------------------------------------------------------------------


def test_noop_returns_the_payload_unchanged_and_runs_inline() -> None:
    payload = {"a": 1, "b": [{"c": None}]}
    assert call(noop, payload) == {"a": 1, "b": [{"c": None}]}
    assert call(noop, [{"x": 1}, {"y": 2}]) == [{"x": 1}, {"y": 2}]
    assert noop.inline
    assert not noop.is_async
    assert noop.ref == "noop@1"


# --- transform: paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("a", ("a",)),
        ("a.b.c", ("a", "b", "c")),
        ("items[0].sku", ("items", 0, "sku")),
        ("m[2][10]", ("m", 2, 10)),
        ('headers["x.request.id"]', ("headers", "x.request.id")),
        ('["a.b"].c', ("a.b", "c")),
        ("first name", ("first name",)),
    ],
)
def test_parse_path_splits_keys_and_indexes(path: str, keys: tuple[Any, ...]) -> None:
    assert parse_path(path) == keys


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("a..b", "expected a key at character 2"),
        ("a.", "expected a key at character 2"),
        (".a", "expected a key at character 0"),
        ("a[x]", "bad bracket"),
        ("a[1", "bad bracket"),
        ("a[0]b", "expected '.' or '['"),
    ],
)
def test_parse_path_rejects_malformed_paths(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_path(path)


# --- transform: ops ------------------------------------------------------------------------------


def test_set_creates_missing_objects_and_arrays_and_leaves_the_input_alone() -> None:
    original = {"a": {"keep": 1}}
    given = copy.deepcopy(original)
    ops: list[dict[str, Any]] = [
        {"op": "set", "path": "a.b.c", "value": {"deep": [1, 2]}},
        {"op": "set", "path": "list[0].name", "value": "first"},
        {"op": "set", "path": "list[1]", "value": "appended"},
        {"op": "set", "path": "a.keep", "value": 2},
    ]
    out = apply_transform(ops, given)
    assert out == {
        "a": {"keep": 2, "b": {"c": {"deep": [1, 2]}}},
        "list": [{"name": "first"}, "appended"],
    }
    assert given == original
    # The output must not share objects with the ops: changing it cannot change the next call.
    assert isinstance(out, dict)
    out["a"]["b"]["c"]["deep"].append(3)
    assert ops[0]["value"] == {"deep": [1, 2]}


def test_set_past_the_end_of_an_array_or_through_a_scalar_is_located() -> None:
    with pytest.raises(ValidationError) as past:
        apply_transform([{"op": "set", "path": "xs[3]", "value": 1}], {"xs": [0]})
    assert locations(past.value) == ["ops[0].path"]
    assert "index 3 is past the end of xs (length 1)" in past.value.problems[0][1]

    with pytest.raises(ValidationError) as scalar:
        apply_transform(
            [{"op": "delete", "path": "a"}, {"op": "set", "path": "name.first", "value": "x"}],
            {"name": "Ada"},
        )
    assert locations(scalar.value) == ["ops[1].path"]
    assert "name: it is a string, not an object" in scalar.value.problems[0][1]
    assert not scalar.value.retryable


def test_set_with_jsonata_expressions_distinguishes_null_from_undefined() -> None:
    order = {"items": [{"qty": 2, "price": 1.5}, {"qty": 1, "price": 3}], "note": None}
    out = apply_transform(
        [
            {"op": "set", "path": "total", "expr": "$sum(items.(qty * price))"},
            {"op": "set", "path": "skus", "expr": "$count(items)"},
            {"op": "set", "path": "missing", "expr": "nothing.here"},  # undefined: not set
            {"op": "set", "path": "copied_note", "expr": "note"},  # JSON null: set to null
            {"op": "set", "path": "label", "expr": "'total ' & $string(total)"},
        ],
        order,
    )
    assert out == {**order, "total": 6, "skus": 2, "copied_note": None, "label": "total 6"}
    assert "missing" not in out


def test_jsonata_results_are_fresh_copies() -> None:
    # {"c": a} returns the very object under "a"; a later op on "c" must not change "a".
    out = apply_transform(
        [
            {"op": "set", "path": "c", "expr": "a"},
            {"op": "set", "path": "c.changed", "value": True},
        ],
        {"a": {"x": 1}},
    )
    assert out == {"a": {"x": 1}, "c": {"x": 1, "changed": True}}


def test_move_and_delete() -> None:
    data = {"customer": {"mail": "a@b.c", "tmp": 1}, "items": [{"sku": "A"}, {"sku": "B"}]}
    out = apply_transform(
        [
            {"op": "move", "from": "customer.mail", "to": "customer.email"},
            {"op": "move", "from": "customer", "to": "buyer.profile"},
            {"op": "delete", "path": "buyer.profile.tmp"},
            {"op": "delete", "path": "items[0]"},
            {"op": "delete", "path": "does.not.exist"},  # absent: nothing to do
            {"op": "move", "from": "nowhere", "to": "somewhere"},  # absent source: nothing
        ],
        data,
    )
    assert out == {"buyer": {"profile": {"email": "a@b.c"}}, "items": [{"sku": "B"}]}


def test_move_into_an_impossible_target_blames_the_to_field() -> None:
    with pytest.raises(ValidationError) as caught:
        apply_transform([{"op": "move", "from": "a", "to": "s.x"}], {"a": 1, "s": "text"})
    assert locations(caught.value) == ["ops[0].to"]


def test_jsonata_op_replaces_each_item_of_an_array() -> None:
    items = [
        {"id": 1, "items": [{"qty": 2}, {"qty": 3}]},
        {"id": 2, "items": [{"qty": 1}]},
    ]
    out = apply_transform(
        [
            {"op": "jsonata", "expr": "{'order': id, 'units': $sum(items.qty)}"},
            {"op": "set", "path": "checked", "value": True},
        ],
        items,
    )
    assert out == [
        {"order": 1, "units": 5, "checked": True},
        {"order": 2, "units": 1, "checked": True},
    ]


def test_jsonata_op_must_give_an_object_and_names_the_failing_item() -> None:
    with pytest.raises(ValidationError) as caught:
        apply_transform([{"op": "jsonata", "expr": "n * 2"}], [{"n": 1}, {"n": 2}])
    assert locations(caught.value) == ["ops[0].expr"]
    assert caught.value.problems[0][1] == (
        "item 0: the expression gave a number; it must give an object"
    )

    with pytest.raises(ValidationError, match="gave nothing"):
        apply_transform([{"op": "jsonata", "expr": "absent"}], {"n": 1})


def test_every_bad_op_is_reported_with_its_location() -> None:
    ops = [
        {"op": "sett", "path": "a", "value": 1},
        {"op": "set", "value": 1},
        {"op": "set", "path": "x", "expr": "$sum("},
        {"op": "set", "path": "x", "value": 1, "expr": "1"},
        {"op": "delete", "path": "a..b"},
        {"op": "move", "from": "a", "to": "b", "extra": True},
        "not an op",
        {"op": "jsonata", "expr": "   "},
        {"op": "set", "path": 5, "value": 1},
    ]
    with pytest.raises(ValidationError) as caught:
        Transform.parse(ops)
    problems = dict(caught.value.problems)
    assert list(problems) == [
        "ops[0].op",
        "ops[1].path",
        "ops[2].expr",
        "ops[3]",
        "ops[4].path",
        "ops[5].extra",
        "ops[6]",
        "ops[7].expr",
        "ops[8].path",
    ]
    assert "did you mean 'set'?" in problems["ops[0].op"]
    assert problems["ops[2].expr"].startswith("invalid JSONata: Expected ) before end")
    assert "exactly one" in problems["ops[3]"]
    assert not caught.value.retryable
    assert caught.value.to_dict()["code"] == "invalid"


def test_ops_must_be_a_list_and_locations_follow_the_callers_prefix() -> None:
    with pytest.raises(ValidationError) as not_a_list:
        apply_transform({"op": "set"}, {})
    assert locations(not_a_list.value) == ["ops"]

    with pytest.raises(ValidationError) as nested:
        Transform.parse([{"op": "jsonata", "expr": "(("}], where="spec.steps[3].ops")
    assert locations(nested.value) == ["spec.steps[3].ops[0].expr"]


def test_input_items_must_be_objects() -> None:
    with pytest.raises(ValidationError) as caught:
        apply_transform([], [{"a": 1}, 7])
    assert locations(caught.value) == ["payload[1]"]


def test_evaluation_errors_become_validation_errors_on_the_expression() -> None:
    with pytest.raises(ValidationError) as bad_data:
        apply_transform([{"op": "set", "path": "n", "expr": "$number(s)"}], {"s": "abc"})
    assert locations(bad_data.value) == ["ops[0].expr"]
    assert not bad_data.value.retryable


def test_runaway_expressions_are_stopped() -> None:
    # A tail call loops forever without growing the stack: the time budget stops it.
    endless = "( $f := function($n) { $f($n + 1) }; $f(0) )"
    with pytest.raises(ValidationError) as slow:
        Transform.parse([{"op": "set", "path": "x", "expr": endless}], timeout_ms=100).apply({})
    assert slow.value.problems == [("ops[0].expr", "the expression ran longer than 100 ms")]

    # Real recursion is stopped by the depth limit, long before Python's own.
    deep = "( $f := function($n) { 1 + $f($n + 1) }; $f(0) )"
    with pytest.raises(ValidationError) as nested:
        Transform.parse([{"op": "set", "path": "x", "expr": deep}], max_depth=50).apply({})
    assert nested.value.problems == [("ops[0].expr", "the expression nested calls deeper than 50")]


def test_transform_service_returns_the_transformed_input() -> None:
    svc = transform_service()
    assert svc.ref == "transform@1"
    assert not svc.inline  # expressions may run long: keep them off the event loop
    out = call(
        svc,
        {
            "input": {"first": "Ada", "last": "Lovelace"},
            "ops": [
                {"op": "set", "path": "full", "expr": "first & ' ' & last"},
                {"op": "delete", "path": "last"},
            ],
        },
    )
    assert out == {"first": "Ada", "full": "Ada Lovelace"}

    # An array payload: each call contributes its results to one array.
    out = call(
        svc,
        [
            {"input": {"n": 1}, "ops": [{"op": "set", "path": "m", "expr": "n * 10"}]},
            {"input": [{"n": 2}, {"n": 3}], "ops": [{"op": "delete", "path": "n"}]},
        ],
    )
    assert out == [{"n": 1, "m": 10}, {}, {}]


def test_transform_service_locations_point_into_the_payload() -> None:
    svc = transform_service()
    with pytest.raises(ValidationError) as bad_expr:
        call(
            svc,
            {
                "input": {},
                "ops": [{"op": "set", "path": "a", "value": 1}, {"op": "jsonata", "expr": "}{"}],
            },
        )
    assert locations(bad_expr.value) == ["payload.ops[1].expr"]

    with pytest.raises(ValidationError) as missing:
        call(svc, {"input": {}, "data": {}})
    assert locations(missing.value) == ["payload.ops"]

    # The data form: a failing op is located in the payload itself.
    with pytest.raises(ValidationError) as bad_data:
        call(svc, {"n": "x", "ops": [{"op": "set", "path": "n.m", "value": 1}]})
    assert locations(bad_data.value) == ["payload.ops[0].path"]

    with pytest.raises(PayloadSchemaError):
        svc.validate_input(packet({"input": 3, "ops": []}))
    with pytest.raises(PayloadSchemaError):
        svc.validate_input(packet({"n": 1, "ops": "not a list"}))


def test_transform_service_takes_the_data_with_its_ops_beside_it() -> None:
    """What a service step sends with ``with: {ops: [...]}``: its input, each item with ops."""
    svc = transform_service()
    ops = [{"op": "set", "path": "total", "expr": "qty * price"}, {"op": "delete", "path": "qty"}]
    svc.validate_input(packet({"qty": 2, "price": 5, "ops": ops}))
    assert call(svc, {"qty": 2, "price": 5, "ops": ops}) == {"price": 5, "total": 10}
    # A field named input is data too, unless the call is exactly {input, ops}.
    assert call(svc, {"input": "x", "qty": 1, "price": 3, "ops": ops}) == {
        "input": "x",
        "price": 3,
        "total": 3,
    }
    assert call(svc, [{"qty": 1, "price": 1, "ops": ops}, {"qty": 3, "price": 1, "ops": ops}]) == [
        {"price": 1, "total": 1},
        {"price": 1, "total": 3},
    ]


# --- http: a real local server -------------------------------------------------------------------


@dataclass
class LocalServer:
    base: str
    port: int
    hits: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    app = web.Application()
    runner = web.AppRunner(app)
    state: dict[str, LocalServer] = {}

    def record(request: web.Request, body: bytes = b"") -> None:
        state["s"].hits.append(
            {
                "path": request.path,
                "method": request.method,
                "host": request.host,
                "query": list(request.query.items()),
                "headers": dict(request.headers),
                "body": body,
            }
        )

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        record(request, body)
        return web.json_response(
            {
                "method": request.method,
                "query": dict(request.query),
                "x_test": request.headers.get("X-Test"),
                "content_type": request.headers.get("Content-Type"),
                "body": body.decode(),
            },
            headers={"X-Served-By": "local"},
        )

    async def text(request: web.Request) -> web.Response:
        record(request)
        size = int(request.query.get("size", "5"))
        return web.Response(text="é" * size, content_type="text/plain", charset="utf-8")

    async def big_json(request: web.Request) -> web.Response:
        record(request)
        return web.json_response({"data": "x" * 5000})

    async def binary(request: web.Request) -> web.Response:
        record(request)
        return web.Response(body=bytes(range(8)), content_type="application/octet-stream")

    async def status(request: web.Request) -> web.Response:
        record(request)
        # Like many debugging endpoints, it echoes the credential it got.
        auth = request.headers.get("Authorization")
        text = "upstream says no" + (f" to {auth}" if auth else "")
        return web.Response(status=int(request.match_info["code"]), text=text)

    async def slow(request: web.Request) -> web.Response:
        record(request)
        await asyncio.wait_for(state["s"].release.wait(), 10)
        return web.Response(text="late")

    async def redirect(request: web.Request) -> web.Response:
        record(request)
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        record(request)
        raise web.HTTPFound("/loop")

    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/text", text)
    app.router.add_get("/big-json", big_json)
    app.router.add_get("/binary", binary)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state["s"] = LocalServer(base=f"http://127.0.0.1:{port}", port=port)
    try:
        yield state["s"]
    finally:
        state["s"].release.set()
        await runner.cleanup()


async def send(svc: Service, payload: Any) -> Any:
    """Run the http service's handler as the worker does: it takes the whole packet."""
    return await svc.handler(packet(payload))


def local_http(**settings: Any) -> HttpService:
    """The http service with loopback allowed, as the tests' server needs."""
    settings.setdefault("http_allow", ("127.0.0.1",))
    resolver = settings.pop("resolver", None)
    return HttpService(BuiltinConfig(**settings), resolver=resolver)


class TableResolver:
    """A resolver that answers from a table (one answer list per call, the last one repeating)."""

    def __init__(self, table: dict[str, Sequence[Sequence[str]]]) -> None:
        self._table = {host: list(answers) for host, answers in table.items()}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        answers = self._table.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]


async def test_http_get_sends_query_and_headers_and_parses_json(server: LocalServer) -> None:
    svc = local_http().service
    result = await send(
        svc,
        {
            "url": server.url("/echo?fixed=1"),
            "query": {"page": 2, "tag": ["a", "b"]},
            "headers": {"X-Test": "yes"},
        },
    )
    assert result["status"] == 200
    assert result["truncated"] is False
    assert result["headers"]["x-served-by"] == "local"
    assert result["headers"]["content-type"].startswith("application/json")
    assert result["json"]["method"] == "GET"
    assert result["json"]["x_test"] == "yes"
    assert server.hits[0]["query"] == [("fixed", "1"), ("page", "2"), ("tag", "a"), ("tag", "b")]
    assert "text" not in result
    assert svc.is_async
    assert svc.ref == "http@1"


async def test_http_post_json_and_raw_body(server: LocalServer) -> None:
    svc = local_http().service
    sent = await send(
        svc, {"url": server.url("/echo"), "method": "post", "json": {"n": 1, "s": "é"}}
    )
    assert sent["json"]["method"] == "POST"
    assert sent["json"]["content_type"] == "application/json"
    assert sent["json"]["body"] == '{"n": 1, "s": "é"}'

    raw = await send(
        svc,
        {
            "url": server.url("/echo"),
            "method": "PUT",
            "body": "a=1&b=2",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
    )
    assert raw["json"]["body"] == "a=1&b=2"
    assert raw["json"]["content_type"] == "application/x-www-form-urlencoded"

    null = await send(svc, {"url": server.url("/echo"), "method": "POST", "json": None})
    assert null["json"]["body"] == "null"


async def test_http_text_and_binary_bodies(server: LocalServer) -> None:
    svc = local_http().service
    text = await send(svc, {"url": server.url("/text?size=3")})
    assert text["text"] == "ééé"
    assert "json" not in text
    binary = await send(svc, {"url": server.url("/binary")})
    assert binary["base64"] == "AAECAwQFBgc="


async def test_http_non_2xx_is_a_result_unless_raise_for_status(server: LocalServer) -> None:
    svc = local_http().service
    result = await send(svc, {"url": server.url("/status/404")})
    assert result["status"] == 404
    assert result["text"] == "upstream says no"


@pytest.mark.parametrize(
    ("code", "retryable"), [(503, True), (500, True), (429, True), (404, False), (401, False)]
)
async def test_http_raise_for_status_maps_retryable(
    server: LocalServer, code: int, retryable: bool
) -> None:
    svc = local_http().service
    with pytest.raises(ServiceError) as caught:
        await send(
            svc,
            {
                "url": server.url(f"/status/{code}"),
                "headers": {"Authorization": "Bearer s3cr3t-token"},
                "raise_for_status": True,
            },
        )
    assert caught.value.retryable is retryable
    assert caught.value.context["status"] == code
    assert f"HTTP {code}" in caught.value.message
    # The credential was sent (the server saw it) but is in no part of the error.
    assert server.hits[0]["headers"]["Authorization"] == "Bearer s3cr3t-token"
    assert "s3cr3t" not in str(caught.value.to_dict())
    assert caught.value.context["body"] == "upstream says no to [redacted]"


async def test_http_timeout_is_retryable_and_capped(server: LocalServer) -> None:
    svc = local_http(http_max_timeout_s=0.3).service
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceError) as caught:
        await send(svc, {"url": server.url("/slow"), "timeout_s": 100})
    assert caught.value.retryable
    assert "timed out after 0.3s" in caught.value.message
    assert loop.time() - started < 5
    assert server.hits[0]["path"] == "/slow"


async def test_http_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    svc = local_http().service
    with pytest.raises(ServiceError) as caught:
        await send(svc, {"url": f"http://127.0.0.1:{port}/", "timeout_s": 5})
    assert caught.value.retryable
    assert "ConnectError" in caught.value.message
    # What went wrong, for callers that word it as another client would (no secrets in it).
    assert caught.value.context["network"] == {
        "kind": "refused",
        "code": "ECONNREFUSED",
        "address": "127.0.0.1",
        "port": port,
        "attempts": 1,
    }


async def test_http_network_failures_say_what_went_wrong(server: LocalServer) -> None:
    svc = local_http(http_max_timeout_s=0.3).service
    with pytest.raises(ServiceError) as caught:
        await send(svc, {"url": server.url("/slow"), "timeout_s": 100})
    assert caught.value.context["network"] == {"kind": "timeout", "timeout_s": 0.3}

    async def nothing_here(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    missing = local_http(http_allow=("svc.test",), resolver=nothing_here).service
    with pytest.raises(ServiceError) as caught:
        await send(missing, {"url": "http://svc.test/"})
    assert not caught.value.retryable
    assert caught.value.context["network"] == {"kind": "not_found", "host": "svc.test"}

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.close()  # no answer

    closing = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with closing:
        port = closing.sockets[0].getsockname()[1]
        with pytest.raises(ServiceError) as caught:
            await send(local_http().service, {"url": f"http://127.0.0.1:{port}/"})
    assert caught.value.context["network"] == {"kind": "closed"}
    # Other failures (the host policy's, an HTTP status) have none.
    with pytest.raises(ServiceError) as caught:
        await send(local_http(http_allow=()).service, {"url": server.url("/text")})
    assert "network" not in caught.value.context


async def test_http_truncates_large_bodies_with_a_marker(server: LocalServer) -> None:
    svc = local_http(http_max_body_bytes=1001).service
    # 600 two-byte characters: the limit falls inside one, which must not become U+FFFD.
    text = await send(svc, {"url": server.url("/text?size=600")})
    assert text["truncated"] is True
    body, marker = text["text"].split("\n", 1)
    assert body == "é" * 500
    assert marker == "...[truncated: the response body is over 1001 bytes]"

    # JSON cut in the middle cannot be parsed: it comes back as marked text.
    big = await send(svc, {"url": server.url("/big-json")})
    assert big["truncated"] is True
    assert "json" not in big
    assert big["text"].startswith('{"data": "xxx')
    assert big["text"].endswith("bytes]")

    small = await send(svc, {"url": server.url("/text?size=3")})
    assert small["truncated"] is False


async def test_http_follows_redirects_within_the_limit(server: LocalServer) -> None:
    svc = local_http(http_max_redirects=2).service
    followed = await send(svc, {"url": server.url("/redirect?to=/echo")})
    assert followed["status"] == 200
    assert [h["path"] for h in server.hits] == ["/redirect", "/echo"]

    not_followed = await send(
        svc, {"url": server.url("/redirect?to=/echo"), "follow_redirects": False}
    )
    assert not_followed["status"] == 302
    assert not_followed["headers"]["location"] == "/echo"

    with pytest.raises(ServiceError, match="redirected more than 2 times") as caught:
        await send(svc, {"url": server.url("/loop")})
    assert not caught.value.retryable


async def test_http_redirect_to_an_internal_address_is_refused(server: LocalServer) -> None:
    svc = local_http().service
    with pytest.raises(ServiceError) as caught:
        await send(
            svc, {"url": server.url("/redirect?to=http://169.254.169.254/latest/meta-data/")}
        )
    assert not caught.value.retryable
    assert caught.value.context["host"] == "169.254.169.254"
    assert caught.value.context["setting"] == "FLUXO_HTTP_ALLOW"


async def test_http_array_payload_makes_one_request_per_item(server: LocalServer) -> None:
    svc = local_http(http_concurrency=2).service
    results = await send(svc, [{"url": server.url(f"/echo?i={i}")} for i in range(5)])
    assert [r["json"]["query"]["i"] for r in results] == ["0", "1", "2", "3", "4"]
    assert sorted(h["query"][0] for h in server.hits) == [("i", str(i)) for i in range(5)]


async def test_http_array_payload_over_the_item_limit_is_rejected(server: LocalServer) -> None:
    svc = local_http(http_max_items=2).service
    with pytest.raises(ValidationError, match="at most 2 requests"):
        await send(svc, [{"url": server.url("/echo")}] * 3)
    assert server.hits == []


@pytest.mark.parametrize(
    ("url", "host", "reason"),
    [
        ("http://127.0.0.1/", "127.0.0.1", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "link-local"),
        ("http://10.0.0.1/", "10.0.0.1", "private"),
        ("http://192.168.1.10:8080/", "192.168.1.10", "private"),
        ("http://[::1]/", "::1", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "loopback"),
        ("http://[fe80::1]/", "fe80::1", "link-local"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
        ("http://100.100.100.200/", "100.100.100.200", "non-public"),
        ("http://localhost/", "localhost", "loopback"),
    ],
)
async def test_http_refuses_internal_addresses_by_default(url: str, host: str, reason: str) -> None:
    svc = HttpService(BuiltinConfig()).service
    with pytest.raises(ServiceError) as caught:
        await send(svc, {"url": url})
    error = caught.value
    assert not error.retryable
    assert error.context["host"] == host
    assert error.context["setting"] == "FLUXO_HTTP_ALLOW"
    assert reason in error.message
    assert f"refused to connect to {host}" in error.message
    assert "FLUXO_HTTP_ALLOW" in error.message


async def test_http_deny_wins_over_allow(server: LocalServer) -> None:
    svc = local_http(http_allow=("127.0.0.1",), http_deny=("127.0.0.0/8",)).service
    with pytest.raises(ServiceError) as caught:
        await send(svc, {"url": server.url("/echo")})
    assert not caught.value.retryable
    assert caught.value.context["setting"] == "FLUXO_HTTP_DENY"
    assert "'127.0.0.0/8'" in caught.value.message
    assert server.hits == []


async def test_http_denied_hostname_is_refused_without_resolving_it() -> None:
    resolver = TableResolver({})
    svc = HttpService(
        BuiltinConfig(http_allow=("*.corp.test",), http_deny=("*.secret.corp.test",)),
        resolver=resolver,
    ).service
    with pytest.raises(ServiceError, match=r"FLUXO_HTTP_DENY entry '\*\.secret\.corp\.test'"):
        await send(svc, {"url": "https://vault.secret.corp.test/v1/keys"})
    assert resolver.calls == []


async def test_http_hostname_allow_rules_and_pinned_resolution(server: LocalServer) -> None:
    # The name exists only in the test resolver: reaching the server proves the connection went to
    # the address the policy vetted, not to one the system resolver chose afterwards.
    resolver = TableResolver({"api.svc.test": [["127.0.0.1"]], "svc.test": [["127.0.0.1"]]})
    svc = HttpService(BuiltinConfig(http_allow=("*.svc.test",)), resolver=resolver).service
    result = await send(svc, {"url": server.url("/echo", host="api.svc.test")})
    assert result["status"] == 200
    assert server.hits[0]["host"] == f"api.svc.test:{server.port}"

    # A wildcard covers subdomains only, not the bare suffix.
    with pytest.raises(ServiceError, match=r"refused to connect to svc\.test"):
        await send(svc, {"url": server.url("/echo", host="svc.test")})


async def test_http_dns_rebinding_is_caught_at_connect_time(server: LocalServer) -> None:
    # First answer public (the pre-send check passes), second answer loopback (the connection).
    resolver = TableResolver({"rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})
    svc = HttpService(BuiltinConfig(), resolver=resolver).service
    with pytest.raises(ServiceError) as caught:
        await send(svc, {"url": server.url("/echo", host="rebind.test")})
    assert not caught.value.retryable
    assert caught.value.context["address"] == "127.0.0.1"
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert server.hits == []


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for ``secure.test``: ``(cert, key)``."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a throwaway certificate; install openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=secure.test",
            "-addext",
            "subjectAltName=DNS:secure.test",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_keeps_sni_and_certificate_checks_on_the_hostname(
    tls_cert: tuple[Path, Path],
) -> None:
    cert, key = tls_cert
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"host": request.host})

    app.router.add_get("/", hello)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    port = runner.addresses[0][1]
    try:
        resolver = TableResolver({"secure.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
        config = BuiltinConfig(http_allow=("127.0.0.1",))
        policy = HostPolicy.from_config(config, resolver=resolver)
        trust = ssl.create_default_context(cafile=str(cert))
        transport = guarded_transport(policy, verify=trust)
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            svc = HttpService(config, client=client, resolver=resolver).service
            # Connected to the vetted 127.0.0.1, yet TLS verified the certificate for the name.
            ok = await send(svc, {"url": f"https://secure.test:{port}/"})
            assert ok["json"] == {"host": f"secure.test:{port}"}
            with pytest.raises(ServiceError, match="not valid for this host") as caught:
                await send(svc, {"url": f"https://other.test:{port}/"})
            assert not caught.value.retryable
    finally:
        await runner.cleanup()


async def test_http_name_resolving_to_a_mix_is_refused_as_a_whole() -> None:
    resolver = TableResolver({"mixed.test": [["93.184.216.34", "10.1.2.3"]]})
    policy = HostPolicy(resolver=resolver)
    with pytest.raises(ServiceError, match=r"mixed\.test \(10\.1\.2\.3\)"):
        await policy.vet("mixed.test", 443)


async def test_http_unresolvable_host_is_not_retryable_but_eai_again_is() -> None:
    policy = HostPolicy(resolver=TableResolver({}))
    with pytest.raises(ServiceError, match=r"could not resolve host nope\.test") as caught:
        await policy.vet("nope.test", 80)
    assert not caught.value.retryable

    async def flaky(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(ServiceError) as again:
        await HostPolicy(resolver=flaky).vet("api.test", 80)
    assert again.value.retryable


async def test_host_policy_allows_mapped_forms_of_allowed_addresses() -> None:
    policy = HostPolicy(allow=("127.0.0.1", "fd00::/8"))
    assert [str(a) for a in await policy.vet("::ffff:127.0.0.1", 80)] == ["::ffff:7f00:1"]
    assert [str(a) for a in await policy.vet("[fd00::5]", 80)] == ["fd00::5"]
    with pytest.raises(ServiceError):
        await policy.vet("127.0.0.2", 80)


def test_host_policy_rejects_bad_entries_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        HostPolicy(allow=("ok.example", "not a host!"))
    assert caught.value.context["setting"] == "FLUXO_HTTP_ALLOW"
    with pytest.raises(ConfigError, match="FLUXO_HTTP_DENY"):
        BuiltinConfig(http_deny=("http://x",))
    with pytest.raises(ConfigError, match="http_max_body_bytes"):
        BuiltinConfig(http_max_body_bytes=0)


def test_builtin_config_comes_from_fluxo_config(tmp_path: Any) -> None:
    env = {
        "FLUXO_HOME": str(tmp_path),
        "FLUXO_HTTP_ALLOW": "127.0.0.1, *.svc.test",
        "FLUXO_HTTP_DENY": "10.9.0.0/16",
    }
    config = BuiltinConfig.from_fluxo_config(FluxoConfig.from_env(env))
    assert config.http_allow == ("127.0.0.1", "*.svc.test")
    assert config.http_deny == ("10.9.0.0/16",)


async def test_http_rejects_bad_requests_with_locations_and_without_secrets() -> None:
    svc = HttpService(BuiltinConfig()).service
    with pytest.raises(ValidationError) as caught:
        await send(
            svc,
            [
                {"url": "ftp://files.example/x"},
                {
                    "url": "https://api.example/x",
                    "method": "FETCH",
                    "headers": {"Authorization": ["Bearer s3cr3t"], "X-Ok": "fine"},
                    "json": {},
                    "body": "also",
                    "timeout_s": 0,
                    "raise_for_status": "yes",
                    "retries": 3,
                },
                {"method": "GET"},
                {"url": "https://api.example/x", "headers": {"X-Evil": "a\r\nInjected: 1"}},
            ],
        )
    assert locations(caught.value) == [
        "payload[0].url",
        "payload[1].retries",
        "payload[1].method",
        "payload[1].headers.Authorization",
        "payload[1]",
        "payload[1].timeout_s",
        "payload[1].raise_for_status",
        "payload[2].url",
        "payload[3].headers.X-Evil",
    ]
    assert "s3cr3t" not in str(caught.value)
    assert "Injected" not in str(caught.value)
    assert not caught.value.retryable


async def test_http_uses_an_injected_client_and_still_vets_hosts() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"created": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        svc = HttpService(BuiltinConfig(), client=client).service
        result = await send(
            svc, {"url": "http://93.184.216.34/items", "method": "POST", "json": {"a": 1}}
        )
        assert result == {
            "status": 201,
            "headers": result["headers"],
            "json": {"created": True},
            "truncated": False,
        }
        assert seen[0].url == httpx.URL("http://93.184.216.34/items")

        with pytest.raises(ServiceError, match="loopback"):
            await send(svc, {"url": "http://127.0.0.1:8240/api"})
    assert len(seen) == 1


async def test_http_service_timeout_covers_the_largest_call() -> None:
    svc = HttpService(
        BuiltinConfig(http_max_timeout_s=10, http_max_items=20, http_concurrency=4)
    ).service
    assert svc.timeout_s == 10 * 5 + 5


# --- demo services -------------------------------------------------------------------------------


ORDER = {
    "id": 1001,
    "customer": {"email": " Ada@Example.com ", "name": "Ada"},
    "items": [
        {"sku": "book-1", "qty": 2, "price": 12.5},
        {"sku": "PEN", "qty": 3, "price": 0.1},
        {"sku": "BOOK-1", "qty": 1, "price": "12.50"},
    ],
}


def test_parse_order_normalizes_lines_and_totals_in_exact_decimals() -> None:
    out = call(parse_order, copy.deepcopy(ORDER))
    assert out == {
        "order_id": "1001",
        "customer": {"email": "ada@example.com", "name": "Ada"},
        "currency": "EUR",
        "lines": [
            {"sku": "BOOK-1", "qty": 3, "unit_price": "12.50", "amount": "37.50"},
            {"sku": "PEN", "qty": 3, "unit_price": "0.10", "amount": "0.30"},
        ],
        "item_count": 6,
        "subtotal": "37.80",
    }
    assert parse_order.price.per_call_micros == 2000
    assert parse_order.ref == "parse-order@1"


def test_parse_order_schema_locates_every_problem() -> None:
    bad = {
        "id": "",
        "customer": {"email": "not-an-email"},
        "items": [{"sku": "A", "qty": 0, "price": -1}, {"qty": 1, "price": 1}],
    }
    with pytest.raises(PayloadSchemaError) as caught:
        parse_order.validate_input(packet(bad))
    assert set(locations(caught.value)) == {
        "payload.id",
        "payload.customer.email",
        "payload.items[0].qty",
        "payload.items[0].price",
        "payload.items[1]",
    }
    parse_order.validate_input(packet([ORDER, ORDER]))  # a valid array passes


def test_parse_order_handles_an_array_of_orders() -> None:
    out = call(parse_order, [ORDER, {**ORDER, "id": "A-2", "currency": "USD"}])
    assert isinstance(out, list)
    assert [o["order_id"] for o in out] == ["1001", "A-2"]
    assert out[1]["currency"] == "USD"


def test_enrich_customer_adds_tier_and_discount() -> None:
    order = call(parse_order, copy.deepcopy(ORDER))
    out = call(enrich_customer, order)
    assert out["customer"] == {
        "email": "ada@example.com",
        "name": "Ada",
        "tier": "gold",
        "known": True,
    }
    assert (out["discount_rate"], out["discount"], out["total"]) == ("0.10", "3.78", "34.02")
    assert out["lines"] == order["lines"]
    assert enrich_customer.price.per_call_micros == 1000


def test_enrich_customer_defaults_unknown_customers_and_takes_a_table() -> None:
    unknown = call(enrich_customer, {"customer": {"email": "who@nowhere.test"}})
    assert unknown["customer"]["tier"] == "standard"
    assert unknown["customer"]["known"] is False
    assert "total" not in unknown  # no subtotal, nothing to discount

    custom = make_enrich_customer({"VIP@Shop.test": CustomerProfile("vip", Decimal("0.25"), "V")})
    out = call(custom, [{"customer": {"email": "vip@shop.test"}, "subtotal": "10.00"}])
    assert out == [
        {
            "customer": {"email": "vip@shop.test", "tier": "vip", "known": True, "name": "V"},
            "subtotal": "10.00",
            "discount_rate": "0.25",
            "discount": "2.50",
            "total": "7.50",
        }
    ]


def test_notify_log_writes_one_line_per_item_and_is_priced_per_item(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.notify")
    svc = make_notify_log(logger)
    with caplog.at_level(logging.INFO, logger="test.notify"):
        out = call(
            svc,
            [
                {"message": "hello\nFORGED line"},
                {
                    "order_id": "A-1",
                    "total": "9.00",
                    "currency": "EUR",
                    "customer": {"email": "a@b.test"},
                },
            ],
        )
    assert out == [
        {"notified": True, "channel": "log", "message": "hello FORGED line"},
        {
            "notified": True,
            "channel": "log",
            "message": "order A-1 for a@b.test: total 9.00 EUR",
            "order_id": "A-1",
        },
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "test.notify"]
    assert lines == [
        "notification: hello FORGED line",
        "notification: order A-1 for a@b.test: total 9.00 EUR",
    ]
    assert svc.price.charge(2) == (2, 500, 1000)
    assert notify_log.ref == "notify-log@1"


def test_demo_pipeline_end_to_end(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fluxo.demo.notify"):
        order = call(parse_order, copy.deepcopy(ORDER))
        enriched = call(enrich_customer, order)
        notified = call(notify_log, enriched)
    assert notified["message"] == "order 1001 for ada@example.com: total 34.02 EUR"
    assert any("total 34.02 EUR" in r.getMessage() for r in caplog.records)


def test_service_lists() -> None:
    builtins = builtin_services(BuiltinConfig(transform_timeout_ms=50))
    assert [s.ref for s in builtins] == [
        "noop@1",
        "http@1",
        "transform@1",
        "nodered-node@1",
        "email-send@1",
        "sms-send@1",
        "webhook-send@1",
    ]
    assert [s.ref for s in demo_services()] == [
        "parse-order@1",
        "enrich-customer@1",
        "notify-log@1",
    ]
    # The catalog shows descriptions; the price decides the bill of each call.
    assert all(svc.description for svc in builtins + demo_services())
    assert [s.price.per_call_micros for s in builtins] == [0] * 7
    assert builtins[0].inline
    assert not builtins[2].inline


def test_a_first_jsonata_op_may_replace_a_value_that_is_not_an_object() -> None:
    # A Node-RED template or change node that replaces the payload starts from whatever the
    # inject sent (a timestamp): the expression reads any JSON value and must give an object.
    replace = Transform.parse(
        [{"op": "jsonata", "expr": '{"at": $}'}, {"op": "set", "path": "x", "value": 1}]
    )
    assert replace.apply(1700000000000) == {"at": 1700000000000, "x": 1}
    assert replace.apply("text") == {"at": "text", "x": 1}
    with pytest.raises(ValidationError) as info:
        Transform.parse([{"op": "set", "path": "x", "value": 1}]).apply(42)
    assert info.value.problems == [("payload", "is a number, not an object")]
