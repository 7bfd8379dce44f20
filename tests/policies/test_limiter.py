"""The concurrency limiter: admits up to its limit, refuses beyond, and releases exactly."""

from __future__ import annotations

import pytest

from atlas_sim.policies import ConcurrencyLimiter


def test_admits_up_to_the_limit_and_refuses_the_rest():
    limiter = ConcurrencyLimiter(2)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    assert limiter.in_flight == 2
    limiter.release()
    assert limiter.try_acquire() and limiter.in_flight == 2


def test_releasing_more_than_was_acquired_is_an_error():
    limiter = ConcurrencyLimiter(1)
    limiter.try_acquire()
    limiter.release()
    with pytest.raises(RuntimeError, match="release"):
        limiter.release()
    assert limiter.in_flight == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_the_limit_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="max_concurrent must be an integer >= 1"):
        ConcurrencyLimiter(bad)
