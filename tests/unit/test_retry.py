"""Backoff policies: the delay before retry number n, for fixed and exponential backoff."""

from __future__ import annotations

import random

import pytest

from taskq import Backoff, Retry


def test_fixed_backoff_waits_the_same_every_time() -> None:
    backoff = Backoff.fixed(2.5)
    assert [backoff.delay(n) for n in (1, 2, 10)] == [2.5, 2.5, 2.5]


def test_exponential_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    backoff = Backoff.exponential(0.2, max_delay=1.0, jitter=False)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])


def test_exponential_backoff_uses_its_factor() -> None:
    backoff = Backoff.exponential(1, factor=3, jitter=False)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [1, 3, 9]


def test_full_jitter_draws_between_zero_and_the_capped_bound() -> None:
    backoff = Backoff.exponential(1, max_delay=5)
    rng = random.Random(7)
    for retry, bound in ((1, 1), (2, 2), (3, 4), (4, 5), (9, 5)):
        draws = [backoff.delay(retry, rng) for _ in range(200)]
        assert all(0 <= draw <= bound for draw in draws)
        # Spread over the whole range, not stuck at either end
        assert min(draws) < bound * 0.2 and max(draws) > bound * 0.8


@pytest.mark.parametrize(("base", "factor", "max_delay"), [(-1, 2, 10), (1, 2, -1), (1, 0.5, 10)])
def test_backoff_refuses_nonsense(base: float, factor: float, max_delay: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff.exponential(base, factor=factor, max_delay=max_delay)


def test_retry_carries_its_delay_and_a_reason() -> None:
    assert Retry(delay=0.3).delay == 0.3
    assert Retry().delay is None
    assert str(Retry(reason="rate limited")) == "rate limited"
