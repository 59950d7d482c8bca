"""The usage query as checked before any read, and amounts shown as exact decimals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fluxo.control.usage import decimal_text, parse_usage_query
from fluxo_core.errors import ValidationError


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0"),
        (1, "0.000001"),
        (12_500, "0.0125"),
        (1_000_000, "1"),
        (10_000_000, "10"),  # never 1E+1
        (-12_500, "-0.0125"),  # a credit
        (2**63 - 1, "9223372036854.775807"),  # the largest BIGINT, to the last digit
    ],
)
def test_micros_are_shown_as_exact_decimals(micros: int, text: str) -> None:
    assert decimal_text(micros) == text


def test_a_period_and_times_become_a_half_open_utc_range() -> None:
    november = parse_usage_query({"period": "2026-11", "group_by": "service, day"})
    assert november.where.since == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert november.where.until == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert november.group_by == ("service", "day")
    shifted = parse_usage_query({"from": "2026-11-01T01:00:00+01:00", "to": "2026-11-02 00:00:00z"})
    assert shifted.where.since == november.where.since
    assert shifted.where.until == datetime(2026, 11, 2, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "value",
    ["2026-11-01", "2026-11-01T00:00:00", "2026-11-01T00:00Z", "2026-02-30T00:00:00Z", "now"],
)
def test_a_time_needs_seconds_and_a_zone(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_usage_query({"from": value})
    assert [where for where, _ in caught.value.problems] == ["query.from"]
