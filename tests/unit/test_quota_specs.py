"""Quota specs as users write them: every problem located, spend limits as exact decimals, UTC
periods."""

from __future__ import annotations

import pytest

from fluxo.control.quotas import parse_quota_spec
from fluxo_core.errors import ValidationError
from fluxo_core.storage.quotas import QuotaSpec, period_key


def problems_of(body: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        parse_quota_spec(body)
    return dict(caught.value.problems)


def test_a_spend_limit_is_an_exact_decimal_in_micros() -> None:
    spec = parse_quota_spec({"kind": "spend", "limit": "12.345678", "period": "month"})
    assert (spec.limit, spec.currency) == (12_345_678, "EUR")
    assert "body.limit" in problems_of({"kind": "spend", "limit": "0.0000001", "period": "day"})
    assert "body.limit" in problems_of({"kind": "spend", "limit": 1.5, "period": "day"})


def test_each_kind_says_what_it_needs() -> None:
    assert problems_of({"kind": "calls", "limit": 5}) == {"body.period": "day or month (UTC)"}
    assert "body.period" in problems_of({"kind": "rate", "limit": 5, "period": "day"})
    assert "body.limit" in problems_of({"kind": "rate", "limit": 0, "period": "second"})
    assert problems_of({"kind": "concurrent_jobs", "limit": 1, "scope": "service", "target": "x"})
    assert "body.target" in problems_of(
        {"kind": "calls", "limit": 1, "period": "day", "scope": "workflow"}
    )
    assert "body.currency" in problems_of(
        {"kind": "calls", "limit": 1, "period": "day", "currency": "EUR"}
    )
    assert "body.kind" in problems_of({"kind": "bananas", "limit": 1})
    assert "body.limit" in problems_of({"kind": "calls", "limit": True, "period": "day"})


def test_a_valid_spec_has_no_problems() -> None:
    spec = QuotaSpec(kind="rate", limit=100, period="second", scope="service", target="http")
    assert spec.problems() == []


def test_periods_are_utc_days_and_months() -> None:
    just_before_midnight_utc = 1_798_761_599.0  # 2026-12-31T23:59:59Z
    assert period_key("day", just_before_midnight_utc) == "2026-12-31"
    assert period_key("month", just_before_midnight_utc) == "2026-12"
    assert period_key("month", just_before_midnight_utc + 1) == "2027-01"
