"""What a call costs: input split into its uncached, cache-read and cache-written parts,
each at its own price (LiteLLM's names), a missing cache price falling back to the input price."""

from __future__ import annotations

import pytest

from modelport.limits.pricing import cost_of, reserved_cost_of

PRICES = {
    "input_cost_per_token": 3e-6,
    "output_cost_per_token": 15e-6,
    "cache_read_input_cost_per_token": 0.3e-6,
    "cache_creation_input_cost_per_token": 3.75e-6,
}


def test_each_part_of_the_input_costs_its_own_price() -> None:
    cost = cost_of(PRICES, 1520, 4, cached_prompt_tokens=1200, cache_creation_tokens=300)
    assert cost == pytest.approx(20 * 3e-6 + 1200 * 0.3e-6 + 300 * 3.75e-6 + 4 * 15e-6)


def test_a_missing_cache_price_is_the_input_price() -> None:
    plain = {"input_cost_per_token": 3e-6, "output_cost_per_token": 15e-6}
    cached = cost_of(plain, 1520, 4, cached_prompt_tokens=1200, cache_creation_tokens=300)
    assert cached == pytest.approx(cost_of(plain, 1520, 4)) == pytest.approx(1520 * 3e-6 + 4 * 15e-6)


def test_a_cache_price_of_zero_makes_cached_tokens_free() -> None:
    free_reads = {**PRICES, "cache_read_input_cost_per_token": 0}
    assert cost_of(free_reads, 1000, 0, cached_prompt_tokens=1000) == 0


def test_cached_parts_larger_than_the_prompt_never_make_a_negative_cost() -> None:
    # A vendor's report that does not add up bills what it says was cached, nothing less than 0.
    cost = cost_of(PRICES, 10, 0, cached_prompt_tokens=50)
    assert cost == pytest.approx(50 * 0.3e-6)


def test_the_reservation_prices_the_prompt_at_the_highest_input_price() -> None:
    """A reservation is an upper bound on the bill whatever the vendor caches: here every
    prompt token written to the cache, at its price above the input price."""
    reserved = reserved_cost_of(PRICES, 1520, 4)
    assert reserved == pytest.approx(1520 * 3.75e-6 + 4 * 15e-6)
    assert reserved >= cost_of(PRICES, 1520, 4, cache_creation_tokens=1520)
    plain = {"input_cost_per_token": 3e-6, "output_cost_per_token": 15e-6}
    assert reserved_cost_of(plain, 1520, 4) == pytest.approx(cost_of(plain, 1520, 4))
