"""Bounded parsing: what a JSON or YAML document may expand to, and values that cannot be stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fluxo_core.errors import (
    DocumentTooComplexError,
    MalformedRequestError,
    PayloadTooLargeError,
    ValidationError,
)
from fluxo_core.ir import (
    DocumentLimits,
    Workflow,
    load_workflows_yaml,
    parse_json,
    parse_yaml,
    workflow_document,
)
from translators import from_nodered

ROOT = Path(__file__).resolve().parents[2]


def alias_bomb(levels: int = 9) -> str:
    """The billion laughs: each level lists the previous one nine times (~500 bytes of text)."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    text = alias_bomb()
    assert len(text) < 600
    with pytest.raises(DocumentTooComplexError) as info:
        parse_yaml(text)
    assert info.value.http_status == 422
    assert info.value.context["limit"] in ("max_nodes", "max_bytes")
    assert "aliases" in info.value.message


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(DocumentTooComplexError, match="cycle"):
        parse_yaml("a: &a [1, *a]\n")


def test_yaml_aliases_are_counted() -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * 11) + "]\n"
    assert parse_yaml(text, limits=DocumentLimits(max_aliases=11))["b"] == ["x"] * 11
    with pytest.raises(DocumentTooComplexError) as info:
        parse_yaml(text, limits=DocumentLimits(max_aliases=10))
    assert info.value.context == {"limit": "max_aliases", "max_aliases": 10}


def test_merge_keys_and_small_aliases_still_work() -> None:
    data = parse_yaml("base: &b {retry: 3}\nstep:\n  <<: *b\n  id: s\n")
    assert data["step"] == {"retry": 3, "id": "s"}


@pytest.mark.parametrize("levels", [101, 999, 5000, 100_000])
def test_deep_json_is_refused_naming_the_depth_limit(levels: int) -> None:
    with pytest.raises(DocumentTooComplexError) as info:
        parse_json("[" * levels + "]" * levels)
    assert info.value.context["max_depth"] == 100


@pytest.mark.parametrize(
    "text",
    ["- " * 3000 + "x", "[" * 5000 + "]" * 5000, "".join(" " * i + "a:\n" for i in range(200))],
)
def test_deep_yaml_is_refused_naming_the_depth_limit(text: str) -> None:
    with pytest.raises(DocumentTooComplexError) as info:
        parse_yaml(text)
    assert info.value.context["limit"] == "max_depth"


def test_a_document_over_the_size_limit_is_a_413() -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        parse_json(b'{"a": "' + b"x" * 2000 + b'"}', limits=DocumentLimits(max_bytes=1024))
    assert info.value.http_status == 413
    assert "FLUXO_MAX_PACKET_BYTES" in info.value.message


def test_too_many_values_are_refused() -> None:
    with pytest.raises(DocumentTooComplexError) as info:
        parse_json("[" + ",".join(["1"] * 101) + "]", limits=DocumentLimits(max_nodes=100))
    assert info.value.context["limit"] == "max_nodes"


@pytest.mark.parametrize(
    ("text", "location"),
    [
        (b'{"payload": {"name": "\\ud800"}}', "body.payload.name"),
        (b'{"a": [1, {"\\udfff": 1}]}', "body.a[1].\udfff"),
        (b'{"a": [1e999]}', "body.a[0]"),
        (b'{"n": 123456789012345678901234567890}', "body.n"),
    ],
)
def test_values_that_cannot_be_stored_are_refused_with_their_location(
    text: bytes, location: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_json(text)
    assert info.value.http_status == 422
    assert [loc for loc, _ in info.value.problems] == [location]


@pytest.mark.parametrize("text", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": "\xff"}', b"{"])
def test_text_that_is_not_json_is_a_400(text: bytes) -> None:
    with pytest.raises(MalformedRequestError):
        parse_json(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("b: .inf\n", "not a JSON number"),
        ("b: {1: x}\n", "not a string"),
        ("on: x\n", "not a string"),
        ("b: !!binary aGVsbG8=\n", "not a JSON value"),
    ],
)
def test_yaml_values_json_cannot_carry_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        parse_yaml(text)


def test_yaml_timestamps_stay_strings() -> None:
    assert parse_yaml("when: 2026-12-06\n") == {"when": "2026-12-06"}


def test_workflow_files_are_read_within_the_limits() -> None:
    with pytest.raises(DocumentTooComplexError):
        load_workflows_yaml(alias_bomb())


def test_flow_import_refuses_deep_flows_with_an_error() -> None:
    with pytest.raises(DocumentTooComplexError):
        from_nodered("[" * 3000 + "]" * 3000)
    nested: list[object] = []
    for _ in range(3000):
        nested = [nested]
    with pytest.raises(DocumentTooComplexError):
        from_nodered(nested)


def example_workflows() -> list[Path]:
    paths = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        if docs and all(isinstance(d, dict) and d.get("kind") == "Workflow" for d in docs):
            paths.append(path)
    assert paths
    return paths


@pytest.mark.parametrize("path", example_workflows(), ids=lambda p: p.name)
def test_every_example_workflow_round_trips(path: Path) -> None:
    for workflow in load_workflows_yaml(path.read_text()):
        document = workflow_document(workflow)
        again = Workflow.model_validate(document)
        assert again == workflow
        assert workflow_document(again) == document


def test_a_null_value_survives_the_round_trip() -> None:
    (workflow,) = load_workflows_yaml(
        "apiVersion: fluxo.dev/v1\nkind: Workflow\nmetadata: {name: w}\n"
        "spec:\n  steps:\n  - id: t\n    kind: transform\n    ops: [{op: set, path: x, value: null}]\n"
        "    next: [s]\n  - id: s\n    kind: switch\n"
        "    cases: [{when: {path: x, op: eq, value: null}, next: [t2]}]\n"
        "  - id: t2\n    kind: delay\n    seconds: 1\n"
    )
    document = workflow_document(workflow)
    assert document["spec"]["steps"][0]["ops"] == [{"op": "set", "path": "x", "value": None}]
    assert Workflow.model_validate(document) == workflow
