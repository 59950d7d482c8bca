"""Service declarations: names, prices, retry backoff, schemas."""

from __future__ import annotations

import random

import pytest

from fluxo_core.errors import ConfigError
from service_runtime import Price, RetryPolicy, service


def test_per_call_price_bills_one_unit() -> None:
    assert Price(per_call="0.002").charge(output_items=5) == (1, 2000, 2000)


def test_per_item_price_bills_each_output_item_plus_the_call() -> None:
    assert Price(per_call="0.01", per_item="0.002").charge(output_items=3) == (3, 2000, 16000)


@pytest.mark.parametrize("bad", ["-1", "abc"])
def test_bad_prices_are_refused_at_declaration(bad: str) -> None:
    with pytest.raises(ConfigError, match="price"):
        service("x", price=Price(per_call=bad))(lambda p: p)


@pytest.mark.parametrize("name", ["Upper", "-lead", "trail-", "under_score", "x" * 64])
def test_service_names_are_dns_like(name: str) -> None:
    with pytest.raises(ConfigError, match="service name"):
        service(name)(lambda p: p)


def test_invalid_input_schema_is_refused() -> None:
    with pytest.raises(ConfigError, match="input_schema is not a valid JSON Schema"):
        service("x", input_schema={"type": "nonsense"})(lambda p: p)


def test_backoff_is_exponential_with_equal_jitter_and_capped() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=10.0)
    rng = random.Random(7)
    for attempt, nominal in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= nominal / 2
        assert max(delays) <= nominal
        assert max(delays) - min(delays) > nominal / 4  # jitter really spreads retries
