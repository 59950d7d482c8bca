"""The Run form's schema problems in the page's language, located as the API locates them."""

from __future__ import annotations

from typing import Any

from fluxo.console import i18n
from fluxo.console.forms import InputForm
from fluxo.console.schema_errors import schema_problems
from service_runtime.sdk import _schema_problems

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sku"],
    "properties": {
        "sku": {"type": "string", "minLength": 3},
        "qty": {"type": "integer", "maximum": 10},
        "size": {"enum": ["S", "M"]},
        "tags": {"type": "array", "uniqueItems": True},
        "code": {"type": "string", "pattern": "^[A-Z]+$"},
    },
}
BAD = {"qty": 11.5, "size": "XL", "tags": ["a", "a"], "code": "abc"}


def test_each_problem_is_worded_in_portuguese_where_the_api_puts_it() -> None:
    pt = i18n.translations("pt_BR").gettext
    found = sorted(schema_problems(SCHEMA, BAD, pt))
    assert found == [
        ("payload", "'sku' is a required property"),  # the form words it "Required." itself
        ("payload.code", "O valor não corresponde ao padrão esperado."),
        ("payload.qty", "Informe 10 ou menos."),
        ("payload.qty", "Informe um número inteiro."),
        ("payload.size", "Escolha uma destas opções: S, M."),
        ("payload.tags", "Todos os itens da lista devem ser diferentes."),
    ]
    # The same problems at the same places as the API's check: only the words differ.
    api = sorted(loc for loc, _ in _schema_problems(SCHEMA, BAD))
    assert [loc for loc, _ in found] == api


def test_english_keeps_plain_words_and_a_short_text_says_its_minimum() -> None:
    problems = schema_problems(SCHEMA, {"sku": "ab"}, lambda text: text)
    assert problems == [("payload.sku", "Enter at least 3 characters.")]


def test_the_form_shows_required_in_portuguese_beside_its_field() -> None:
    form = InputForm(SCHEMA, gettext=i18n.translations("pt_BR").gettext)
    submitted = form.submit({"qty": "3"})
    assert submitted.payload is None
    assert submitted.errors["sku"] == ("Obrigatório.",)
