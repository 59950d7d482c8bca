"""Node-RED semantics shared by the translator, the nodered-node service and the step engine:
one reading of a node, whichever of them reads it."""

from __future__ import annotations

from typing import Any

import pytest

from nodered_semantics.msg_paths import payload_keys, property_keys
from nodered_semantics.support import NODERED_NODE_SERVICE, SUPPORTED_TYPES, node_problem
from nodered_semantics.typed_values import constant_value, typed_value
from services import run_node
from translators._nodered_map import map_node


@pytest.mark.parametrize(
    ("expr", "keys"),
    [
        ("payload", ()),
        ("payload.a['b'][0]", ("a", "b", 0)),
        ('payload["c.d"].e', ("c.d", "e")),
        ("topic", None),
        ("payload[msg.topic]", None),  # depends on the message: not a static path
        ("payload.my key", None),  # Node-RED refuses a space in a property expression
        ("payload..a", None),
        ("", None),
        (7, None),
    ],
)
def test_payload_keys_parse_a_property_as_node_red_does(expr: Any, keys: Any) -> None:
    assert payload_keys(expr) == keys


def test_property_keys_keep_the_msg_prefix_as_a_key() -> None:
    assert property_keys("msg.payload") == ("msg", "payload")
    assert payload_keys("payload.a", "flow") is None


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("text", "str", (True, "text")),
        ("TRUE", "bool", (True, True)),  # evaluateNodeProperty matches /^true$/i
        ("false", "bool", (True, False)),
        ("5", "num", (True, 5)),
        ("0x10", "num", (True, 16)),
        ("abc", "num", (False, None)),  # NaN: a JSON document cannot hold it
        ('{"a": [1]}', "json", (True, {"a": [1]})),
        ("{bad", "json", (False, None)),
        ("NaN", "json", (False, None)),  # JSON.parse refuses what Python's json accepts
        (None, "null", (True, None)),
        ("payload", "msg", (False, None)),
        ("$now()", "jsonata", (False, None)),
        ("iso", "date", (False, None)),
        ("HOME", "env", (False, None)),
    ],
)
def test_constant_value_reads_a_typed_input_as_the_node_would(
    value: Any, kind: str, expected: tuple[bool, Any]
) -> None:
    assert constant_value(value, kind) == expected
    if expected[0] and kind != "null":
        assert typed_value(value, kind, {}, {}, {}) == expected[1]


def test_the_translator_maps_a_change_node_with_the_value_the_node_sets() -> None:
    node = {
        "id": "c1",
        "type": "change",
        "rules": [{"t": "set", "p": "payload.flag", "pt": "msg", "to": "TRUE", "tot": "bool"}],
        "wires": [[]],
    }
    mapping = map_node(node, {})
    assert mapping.kind == "transform"
    assert mapping.steps[0]["ops"] == [{"op": "set", "path": "flag", "value": True}]
    (sent,) = run_node(node, {"payload": {}})
    assert sent == (0, {"payload": {"flag": True}})


def test_a_property_node_red_refuses_stays_native() -> None:
    node = {"id": "s1", "type": "switch", "property": "payload.my key", "rules": [{"t": "else"}]}
    assert map_node(node, {}).kind == "native"


def test_template_and_json_nodes_write_properties_as_red_util_does() -> None:
    # setMessageProperty does not go below a value that is not an object: the message is unchanged.
    template = {"id": "t1", "type": "template", "field": "payload.a.b", "template": "x"}
    assert run_node(template, {"payload": {"a": 5}}) == [(0, {"payload": {"a": 5}})]
    # ['quoted'] keys and missing objects on the way, as in Node-RED.
    template["field"] = "payload['x'].y"
    assert run_node(template, {"payload": {}}) == [(0, {"payload": {"x": {"y": "x"}}})]
    parse = {"id": "j1", "type": "json", "property": "msg.payload['raw']"}
    assert run_node(parse, {"payload": {"raw": "[1]"}}) == [(0, {"payload": {"raw": [1]}})]


def test_the_engine_and_the_service_share_one_support_check() -> None:
    assert NODERED_NODE_SERVICE == "nodered-node"
    assert {"change", "switch", "function", "template"} <= SUPPORTED_TYPES
    problem = node_problem({"id": "x", "type": "exec"})
    assert problem is not None
    assert "runs only on Node-RED" in problem
