"""The packet envelope: what is accepted, what is refused, and where the problem is."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest

from fluxo_core.errors import PacketValidationError
from fluxo_core.ir import (
    Packet,
    PacketTemplate,
    dump_json,
    json_schema,
    keyed_id,
    new_packet_id,
    parse_packet,
)

ACTOR = {"user": {"id": "u-1"}, "account": {"id": "acme"}}


def test_one_object_or_an_array_of_objects_is_a_payload() -> None:
    assert parse_packet({"actor": ACTOR, "payload": {"a": 1}}).items == [{"a": 1}]
    many = parse_packet({"actor": ACTOR, "payload": [{"a": 1}, {"b": 2}]})
    assert many.items == [{"a": 1}, {"b": 2}]


def test_defaults_give_a_fresh_id_and_trace() -> None:
    a = parse_packet({"actor": ACTOR, "payload": {}})
    b = parse_packet({"actor": ACTOR, "payload": {}})
    assert a.id != b.id
    assert len(a.trace_id) == 32
    assert a.attempt == 1


def test_new_ids_are_uuid7_and_sort_by_creation_time() -> None:
    first = new_packet_id()
    time.sleep(0.002)  # the order is by millisecond; ids of the same millisecond are random
    later = [new_packet_id() for _ in range(50)]
    assert all(first < other for other in later)
    assert len(set(later)) == 50
    parsed = uuid.UUID(first)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert abs((parsed.int >> 80) - time.time() * 1000) < 5_000  # the prefix is the time in ms


def test_keyed_ids_are_stable_and_sort_with_their_anchor() -> None:
    job = new_packet_id()
    call = keyed_id(job, f"{job}/step/1")
    assert call == keyed_id(job, f"{job}/step/1")
    assert call != keyed_id(job, f"{job}/step/2")
    assert call[:12] == job[:12]
    assert len(call) == 32
    # An anchor that is not one of ours (a caller's own packet id) gives a plain digest.
    foreign = keyed_id("order-1", "order-1/0")
    assert re.fullmatch(r"[0-9a-f]{32}", foreign)
    assert foreign == keyed_id("order-1", "order-1/0")


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        ("text", "payload"),
        (42, "payload"),
        ([{"ok": 1}, 7], "payload[1]"),
        ([[{"nested": 1}]], "payload[0]"),
    ],
)
def test_a_payload_must_be_an_object_or_objects(payload: object, location: str) -> None:
    with pytest.raises(PacketValidationError) as info:
        parse_packet({"actor": ACTOR, "payload": payload})
    assert location in [loc for loc, _ in info.value.problems]


def test_every_problem_is_reported_with_its_location() -> None:
    raw = json.dumps(
        {
            "actor": {"user": {}, "account": {"id": ""}},
            "payload": {},
            "trace_id": "not-hex",
            "workflow": "Orders",
            "attempt": 0,
            "colour": "red",
        }
    )
    with pytest.raises(PacketValidationError) as info:
        parse_packet(raw)
    locations = {loc for loc, _ in info.value.problems}
    assert {
        "actor.user.id",
        "actor.account.id",
        "trace_id",
        "workflow",
        "attempt",
        "colour",
    } <= locations
    assert "unknown field" in dict(info.value.problems)["colour"]
    assert "colour" in str(info.value)


def test_header_names_are_checked() -> None:
    with pytest.raises(PacketValidationError, match="header name"):
        parse_packet({"actor": ACTOR, "payload": {}, "headers": {"bad name": "x"}})


def test_malformed_json_is_a_located_error() -> None:
    with pytest.raises(PacketValidationError):
        parse_packet(b'{"actor": ')


def test_derive_copies_the_envelope_with_a_stable_id() -> None:
    source = parse_packet(
        {"actor": ACTOR, "payload": {}, "job_id": "j1", "step_id": "s1", "workflow": "orders@3"}
    )
    first = source.derive({"x": 1}, index=0, span_id="ab" * 8)
    again = source.derive({"x": 1}, index=0, span_id="cd" * 8)
    other = source.derive({"x": 2}, index=1, span_id="ab" * 8)
    assert first.id == again.id != other.id
    assert (first.job_id, first.step_id, first.workflow, first.trace_id) == (
        "j1",
        "s1",
        "orders@3",
        source.trace_id,
    )
    assert first.parent_id == "ab" * 8


def test_derive_json_writes_what_derive_makes() -> None:
    source = parse_packet(
        {
            "actor": {"user": {"id": "u-1", "name": "Ann"}, "account": {"id": "acme"}},
            "payload": {},
            "job_id": "j1",
            "headers": {"x-source": "form"},
        }
    )
    payloads: list[Any] = [{"x": 1}, [{"y": 2}, {"z": None}]]
    derived = source.derive_json(payloads, span_id="ab" * 8)
    for index, (packet_id, body) in enumerate(derived):
        expected = source.derive(payloads[index], index=index, span_id="ab" * 8)
        parsed = parse_packet(body)
        assert parsed.id == packet_id == expected.id
        assert parsed.created_at.tzinfo is not None
        keep = {"created_at"}
        assert parsed.model_dump(exclude=keep) == expected.model_dump(exclude=keep)


def test_derive_json_writes_values_as_pydantic_would_and_refuses_the_rest() -> None:
    source = parse_packet({"actor": ACTOR, "payload": {}})
    when = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    [(_, body)] = source.derive_json([{"at": when, "tags": {"a"}}], span_id="ab" * 8)
    assert json.loads(body)["payload"] == {"at": "2026-12-03T08:00:00Z", "tags": ["a"]}
    with pytest.raises(TypeError):
        source.derive_json([{"handle": object()}], span_id="ab" * 8)


def template_source() -> Packet:
    return parse_packet(
        {
            "actor": {"user": {"id": "u-1"}, "account": {"id": "acme"}},
            "payload": {},
            "job_id": "j1",
            "headers": {"x-source": "form"},
        }
    )


def test_a_template_writes_the_packet_the_model_would() -> None:
    source = template_source()
    template = PacketTemplate(source, workflow="orders@3")
    body = template.json(
        id="c1", step_id="ship", payload=[{"n": 1}], headers={"k": "v"}, where="step 'ship'"
    )
    parsed = parse_packet(body)
    assert (parsed.id, parsed.job_id, parsed.step_id, parsed.workflow) == (
        "c1",
        "j1",
        "ship",
        "orders@3",
    )
    assert (parsed.trace_id, parsed.actor, parsed.payload) == (
        source.trace_id,
        source.actor,
        [{"n": 1}],
    )
    assert parsed.headers == {"x-source": "form", "k": "v"}  # the source's, and its own


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"payload": "a string"}, "payload"),
        ({"payload": [{"a": 1}, 2]}, "payload"),
        ({"id": "bad id"}, "id"),
        ({"headers": {"bad name": "x"}}, "headers"),
        ({"payload": {"handle": object()}}, "payload"),
    ],
)
def test_a_template_refuses_what_the_model_refuses_with_the_location(
    change: dict[str, Any], location: str
) -> None:
    fields: dict[str, Any] = {"id": "c1", "step_id": "ship", "payload": {}, "headers": {}}
    with pytest.raises(PacketValidationError) as caught:
        PacketTemplate(template_source(), workflow=None).json(**{**fields, **change}, where="x")
    assert caught.value.message.startswith("invalid x")
    assert any(loc.startswith(location) for loc, _ in caught.value.problems)


def test_exported_schema_validates_packets() -> None:
    schema = json_schema("packet")
    packet = Packet.model_validate({"actor": ACTOR, "payload": [{"a": 1}]})
    jsonschema.validate(json.loads(packet.model_dump_json()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"actor": ACTOR, "payload": "text"}, schema)


def test_an_integral_float_is_written_as_an_integer_as_every_engine_writes_it() -> None:
    """Node-RED (JavaScript) and Argo (Go) write 30.0 as 30; Fluxo's packets do too."""
    source = parse_packet({"actor": ACTOR, "payload": {"n": 1}})
    payload = {"total": 30.0, "half": 2.5, "big": 1e15, "huge": 1e300, "text": "30.0", "n": 3}
    ((_, body),) = source.derive_json([payload], span_id="0" * 16)
    assert orjson.loads(body)["payload"] == payload
    assert b'"total":30,' in body
    assert b'"big":1000000000000000,' in body
    assert b'"half":2.5,' in body
    assert b'"text":"30.0"' in body
    assert b'"huge":1e+300' in body  # beyond 2**53 no double is an exact integer: kept
    template = PacketTemplate(source, workflow="w@1")
    call = template.json(id="c1", step_id="s", payload=[{"x": -4.0}], headers={}, where="t")
    assert b'"payload":[{"x":-4}]' in call
    assert dump_json({"nested": [[1.0], {"y": 0.0}]}) == b'{"nested":[[1],{"y":0}]}'
