"""The Run form: fields from the input schema, and a submission back to the payload.

Errors come from the same validation ``JobService.create`` runs on a job's input; the test
``test_the_api_s_problems_land_beside_the_same_fields`` checks the two agree on locations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fluxo.console.forms import MAX_DEPTH, MAX_ITEMS, FormField, InputForm, field_errors
from fluxo_core.ir import load_workflows_yaml
from service_runtime.sdk import _schema_problems

ROOT = Path(__file__).resolve().parents[2]

ORDER: dict[str, Any] = (
    load_workflows_yaml((ROOT / "examples/order-intake.yaml").read_text())[0].spec.input_schema
    or {}
)

GOOD = {
    "id": "A-1",
    "customer.email": "ada@example.com",
    "items.#": "1",
    "items.0.sku": "kb-1",
    "items.0.qty": "2",
    "items.0.price": "12.5",
}


def _flat(fields: tuple[FormField, ...]) -> dict[str, FormField]:
    return {f.name: f for top in fields for f in top.walk()}


def test_the_blank_form_follows_the_schema() -> None:
    fields = _flat(InputForm(ORDER).fields())
    assert list(fields) == [
        "id", "customer", "customer.email", "customer.name", "currency",
        "items", "items.0", "items.0.sku", "items.0.qty", "items.0.price",
    ]  # fmt: skip
    assert fields["customer"].widget == "fieldset"
    assert fields["items"].widget == "array"
    assert fields["items.0.qty"].widget == "integer"
    assert ("min", "1") in fields["items.0.qty"].attrs
    assert fields["items.0.price"].widget == "json"  # anyOf: number or numeric string
    assert fields["id"].required
    assert not fields["customer.name"].required
    assert fields["items"].addable
    assert not fields["items.0"].removable  # minItems: 1


def test_a_good_submission_gives_the_payload_with_typed_values() -> None:
    result = InputForm(ORDER).submit(GOOD)
    assert result.ok, result.errors
    assert result.payload == {
        "id": "A-1",
        "customer": {"email": "ada@example.com"},
        "items": [{"sku": "kb-1", "qty": 2, "price": 12.5}],
    }


def test_each_error_is_beside_its_field_and_the_values_are_kept() -> None:
    result = InputForm(ORDER).submit(
        {**GOOD, "customer.email": "not-an-email", "items.0.qty": "two", "id": ""}
    )
    assert not result.ok
    assert result.payload is None
    assert result.errors["items.0.qty"] == ("Enter a whole number, such as 42.",)
    assert "does not match" in result.errors["customer.email"][0]
    assert result.errors["id"] == ("Required.",)
    shown = _flat(result.fields)
    assert shown["customer.email"].value == "not-an-email"
    assert shown["items.0.qty"].value == "two"


def test_schema_bounds_are_errors_of_their_field() -> None:
    result = InputForm(ORDER).submit({**GOOD, "items.0.qty": "0", "currency": "eur"})
    assert set(result.errors) == {"items.0.qty", "currency"}
    assert result.errors["items.0.qty"] == ("Enter 1 or more.",)


def test_the_api_s_problems_land_beside_the_same_fields() -> None:
    # JobService.create reports the problems of _schema_problems with "payload" renamed "input".
    form = InputForm(ORDER)
    payload = {"id": "x", "customer": {}, "items": [{"sku": "a", "qty": 0, "price": 1}]}
    api = [(loc.replace("payload", "input", 1), m) for loc, m in _schema_problems(ORDER, payload)]
    located = field_errors(api, form.fields())
    assert set(located) == {"customer.email", "items.0.qty"}
    assert located["customer.email"] == ["Required."]


def test_enums_are_selects_whose_values_come_back_typed() -> None:
    schema = {
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"enum": ["s", "m", "l"]},
            "level": {"enum": [1, 2, 3]},
        },
    }
    fields = _flat(InputForm(schema).fields())
    assert [o.value for o in fields["size"].options] == ['"s"', '"m"', '"l"']
    assert fields["size"].value == '"s"'  # required: the first option is chosen
    assert [o.value for o in fields["level"].options] == ["", "1", "2", "3"]  # optional: a blank
    result = InputForm(schema).submit({"size": '"m"', "level": "2"})
    assert result.payload == {"size": "m", "level": 2}
    forged = InputForm(schema).submit({"size": '"xl"'})
    assert forged.errors == {"size": ("Choose one of the options.",)}


def test_booleans_numbers_and_formats() -> None:
    schema = {
        "type": "object",
        "properties": {
            "urgent": {"type": "boolean", "default": True},
            "ratio": {"type": "number"},
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "mail": {"type": "string", "format": "email"},
        },
    }
    fields = _flat(InputForm(schema).fields())
    assert fields["urgent"].checked
    assert [fields[k].widget for k in ("ratio", "when", "day", "mail")] == [
        "number", "datetime", "date", "email",
    ]  # fmt: skip
    result = InputForm(schema).submit({"ratio": "0,5", "when": "2026-12-06T10:30"})
    assert result.payload == {"urgent": False, "ratio": 0.5, "when": "2026-12-06T10:30:00Z"}
    bad = InputForm(schema).submit({"ratio": "nan"})
    assert bad.errors == {"ratio": ("Enter a number, such as 12.5.",)}


def test_an_optional_object_left_blank_is_left_out() -> None:
    schema = {
        "type": "object",
        "properties": {
            "contact": {
                "type": "object",
                "required": ["email"],
                "properties": {"email": {"type": "string"}, "phone": {"type": "string"}},
            }
        },
    }
    assert InputForm(schema).submit({}).payload == {}
    half = InputForm(schema).submit({"contact.phone": "123"})
    assert half.errors == {"contact.email": ("Required.",)}


def test_array_items_are_added_and_removed_without_creating_anything() -> None:
    form = InputForm(ORDER)
    added = form.submit({**GOOD, "_action": "add:items"})
    assert added.action == "add:items"
    assert not added.ok
    fields = _flat(added.fields)
    assert fields["items"].value == "2"
    assert fields["items.0.sku"].value == "kb-1"
    assert fields["items.1.sku"].value == ""
    assert fields["items.1"].removable

    two = {**GOOD, "items.#": "2", "items.1.sku": "mouse", "items.1.qty": "1", "items.1.price": "3"}
    removed = form.submit({**two, "_action": "remove:items.0"})
    fields = _flat(removed.fields)
    assert fields["items"].value == "1"
    assert fields["items.0.sku"].value == "mouse"  # the second item moved up
    assert "items.1" not in fields
    assert form.submit(two).payload["items"][1] == {"sku": "mouse", "qty": 1, "price": 3}


def test_arrays_of_scalars_and_their_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}}},
    }
    result = InputForm(schema).submit({"tags.#": "2", "tags.0": "a", "tags.1": ""})
    assert result.payload == {"tags": ["a"]}
    full = _flat(InputForm(schema).submit({"tags.#": "2"}).fields)
    assert not full["tags"].addable
    forged = _flat(InputForm(schema).submit({"tags.#": "99999"}).fields)
    assert forged["tags"].value == "2"  # never past maxItems
    unbounded = {"type": "object", "properties": {"t": {"type": "array", "items": {}}}}
    huge = _flat(InputForm(unbounded).submit({"t.#": "5000"}).fields)
    assert huge["t"].value == str(MAX_ITEMS)


def test_keys_with_dots_are_escaped_in_names_and_read_back() -> None:
    schema = {"type": "object", "properties": {"a.b": {"type": "string"}, "c%": {"type": "string"}}}
    fields = _flat(InputForm(schema).fields())
    assert set(fields) == {"a%2Eb", "c%25"}
    assert InputForm(schema).submit({"a%2Eb": "x", "c%25": "y"}).payload == {"a.b": "x", "c%": "y"}
    assert fields["a%2Eb"].dom_id == "f-a_25_2Eb"


def test_without_a_schema_or_with_a_deep_one_json_text_is_edited() -> None:
    (only,) = InputForm(None).fields()
    assert (only.name, only.widget, only.value) == ("input", "json", "{}")
    assert InputForm(None).submit({"input": '{"a": [1]}'}).payload == {"a": [1]}
    bad = InputForm(None).submit({"input": "{oops"})
    assert list(bad.errors) == ["input"]
    assert bad.errors["input"][0].startswith("This is not valid JSON")

    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_DEPTH + 3):
        deep = {"type": "object", "properties": {"n": deep}}
    widgets = [f.widget for f in _flat(InputForm(deep).fields()).values()]
    assert widgets.count("fieldset") == MAX_DEPTH
    assert widgets[-1] == "json"


def test_local_refs_are_followed() -> None:
    schema = {
        "type": "object",
        "$defs": {"money": {"type": "number", "minimum": 0}},
        "properties": {"total": {"$ref": "#/$defs/money"}},
    }
    assert _flat(InputForm(schema).fields())["total"].widget == "number"
    assert InputForm(schema).submit({"total": "-1"}).errors["total"]


@pytest.mark.parametrize(
    ("words", "expected"), [({}, "Required."), ({"Required.": "Obrigatório."}, "Obrigatório.")]
)
def test_messages_go_through_the_gettext_given(words: dict[str, str], expected: str) -> None:
    form = InputForm(ORDER, gettext=lambda s: words.get(s, s))
    assert form.submit({**GOOD, "id": ""}).errors["id"] == (expected,)
