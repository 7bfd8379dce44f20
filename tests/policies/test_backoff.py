"""Backoff: the four jitter strategies' ranges and ceilings, the cap, and bad arguments."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_sim.policies import JITTER_STRATEGIES, Backoff


def take(backoff: Backoff, n: int, seed: int = 0) -> list[float]:
    return list(islice(backoff.delays(np.random.default_rng(seed)), n))


def test_no_jitter_is_the_reference_cards_sequence():
    backoff = Backoff(base=0.1, multiplier=2, cap=10, jitter="none")
    assert take(backoff, 9) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10])
    assert list(islice(backoff.delays(), 3)) == pytest.approx([0.1, 0.2, 0.4])  # no rng needed


def test_ceiling_is_capped_and_never_overflows():
    backoff = Backoff(base=0.5, multiplier=3, cap=7)
    assert [backoff.ceiling(n) for n in range(4)] == pytest.approx([0.5, 1.5, 4.5, 7])
    assert backoff.ceiling(100_000) == 7
    assert Backoff(base=0, cap=0).ceiling(5) == 0


def test_same_seed_same_waits_and_different_seed_different_waits():
    backoff = Backoff(jitter="full")
    assert take(backoff, 20, seed=7) == take(backoff, 20, seed=7)
    assert take(backoff, 20, seed=7) != take(backoff, 20, seed=8)


def test_decorrelated_follows_the_aws_recurrence():
    base, cap = 0.05, 2.0
    waits = take(Backoff(base=base, cap=cap, jitter="decorrelated"), 200, seed=3)
    previous = base
    for w in waits:
        assert base <= w <= min(cap, 3 * previous) + 1e-12
        previous = w
    assert max(waits) == pytest.approx(cap)  # it does reach the cap


def test_equal_jitter_keeps_half_of_the_ceiling():
    backoff = Backoff(base=1, multiplier=2, cap=8, jitter="equal")
    for n, w in enumerate(take(backoff, 50, seed=1)):
        c = backoff.ceiling(n)
        assert c / 2 <= w <= c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": -0.1}, "base must be a number >= 0, got -0.1"),
        ({"multiplier": 0.5}, "multiplier must be a number >= 1, got 0.5"),
        ({"base": 2.0, "cap": 1.0}, "cap must be a number >= base (2), got 1.0"),
        ({"jitter": "random"}, "jitter must be one of 'none', 'full', 'equal', 'decorrelated'"),
        ({"base": float("nan")}, "base must be a finite number >= 0"),
        ({"cap": "10"}, "cap must be a number >= 0, got '10'"),
    ],
)
def test_impossible_values_are_refused_with_the_parameter_and_range(kwargs, message):
    with pytest.raises(ValueError) as err:
        Backoff(**kwargs)
    assert message in str(err.value)


def test_jitter_needs_a_generator():
    with pytest.raises(ValueError, match="rng is required for jitter='full'"):
        next(Backoff(jitter="full").delays())


def test_backoff_is_frozen_keyword_only_and_comparable():
    with pytest.raises(TypeError):
        Backoff(0.1)  # type: ignore[misc]
    b = Backoff(base=0.2)
    with pytest.raises(AttributeError):
        b.base = 1.0  # type: ignore[misc]
    assert b == Backoff(base=0.2) and hash(b) == hash(Backoff(base=0.2))
    assert "base=0.2" in repr(b)


backoffs = st.builds(
    lambda base, mult, extra, jitter: Backoff(base=base, multiplier=mult, cap=base + extra,
                                              jitter=jitter),
    st.floats(0, 5), st.floats(1, 4), st.floats(0, 50), st.sampled_from(JITTER_STRATEGIES),
)


@given(backoffs, st.integers(0, 2**32 - 1))
def test_delays_never_exceed_the_cap_nor_go_negative(backoff, seed):
    for w in take(backoff, 40, seed):
        assert 0 <= w <= backoff.cap


@settings(max_examples=30)
@given(st.floats(0.001, 5), st.floats(1, 4), st.floats(0, 50), st.integers(0, 8),
       st.integers(0, 2**32 - 1))
def test_full_jitter_is_uniform_up_to_the_ceiling(base, mult, extra, n, seed):
    backoff = Backoff(base=base, multiplier=mult, cap=base + extra, jitter="full")
    rng = np.random.default_rng(seed)
    ceiling = backoff.ceiling(n)
    draws = np.array([next(islice(backoff.delays(rng), n, None)) for _ in range(3000)])
    assert draws.min() >= 0 and draws.max() <= ceiling
    # Kolmogorov-Smirnov distance to uniform(0, ceiling); the bound has a false-alarm
    # probability of 1e-6 per example, while equal jitter or no jitter would be 0.5 or 1 away.
    u = np.sort(draws / ceiling)
    i = np.arange(1, u.size + 1)
    distance = max(np.max(i / u.size - u), np.max(u - (i - 1) / u.size))
    assert distance < np.sqrt(-np.log(0.5e-6) / 2) / np.sqrt(u.size)
