"""Credits are checked before anything is written; money prints as exact decimals."""

from __future__ import annotations

from typing import Any

import pytest

from fluxo.control.billing import money_text, parse_credit, parse_period
from fluxo_core.errors import ValidationError


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0.00"),
        (1_500_000, "1.50"),
        (12_500, "0.0125"),
        (7, "0.000007"),
        (-20_000, "-0.02"),
        (123_456_789_000_000, "123456789.00"),
    ],
)
def test_money_has_two_decimals_or_as_many_as_it_needs(micros: int, text: str) -> None:
    assert money_text(micros) == text


def test_a_credit_takes_a_decimal_string_up_to_six_places() -> None:
    credit = parse_credit({"amount": "12.345678", "currency": "USD", "reason": " outage "})
    assert (credit.amount_micros, credit.currency, credit.reason, credit.service) == (
        12_345_678,
        "USD",
        "outage",
        "credit",
    )


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"amount": 12.5, "reason": "x"}, "body.amount"),  # a float: never money
        ({"amount": "NaN", "reason": "x"}, "body.amount"),
        ({"amount": "0", "reason": "x"}, "body.amount"),
        ({"amount": "1e30", "reason": "x"}, "body.amount"),
        ({"amount": "1", "reason": "x" * 501}, "body.reason"),
        ({"amount": "1", "reason": "x", "currency": "euro"}, "body.currency"),
        ({"amount": "1", "reason": "x", "service": ""}, "body.service"),
        ({"amount": "1", "reason": "x", "account": "other"}, "body.account"),
    ],
)
def test_a_bad_credit_names_the_field(body: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_credit(body)
    assert [w for w, _ in raised.value.problems] == [where]


def test_a_period_is_a_utc_month() -> None:
    assert parse_period("2026-11") == "2026-11"
    with pytest.raises(ValidationError):
        parse_period("2026-1")
