"""The admission seam: FixedLimit builds a ConcurrencyLimiter that speaks the AdmissionLimiter
protocol (try_acquire, release(latency=, dropped=), limit, in_flight)."""

from __future__ import annotations

import pytest

from atlas_sim.policies import AdmissionLimiter, ConcurrencyLimiter, FixedLimit


def test_a_fixed_limit_builds_a_fresh_limiter_of_the_protocol():
    config = FixedLimit(max_concurrent=2)
    limiter = config.build()
    assert isinstance(limiter, ConcurrencyLimiter)
    assert isinstance(limiter, AdmissionLimiter)
    assert (limiter.limit, limiter.in_flight) == (2, 0)
    limiter.try_acquire()
    assert config.build().in_flight == 0  # each build is a fresh limiter (one per instance)


def test_the_limiter_admits_up_to_its_limit_and_is_told_how_each_request_ended():
    limiter: AdmissionLimiter = FixedLimit(max_concurrent=2).build()
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    assert limiter.in_flight == 2
    limiter.release(latency=0.05)  # served
    assert limiter.in_flight == 1 and limiter.try_acquire()
    limiter.release(latency=1.0, dropped=True)  # a timeout or a 5xx
    limiter.release()  # no latency known
    assert limiter.in_flight == 0
    assert limiter.limit == 2  # a fixed limit learns nothing from what it is told
    with pytest.raises(RuntimeError, match="release"):
        limiter.release(dropped=True)


def test_something_without_the_protocol_is_not_an_admission_limiter():
    assert not isinstance(object(), AdmissionLimiter)
    assert not isinstance(FixedLimit(max_concurrent=1), AdmissionLimiter)  # a config, not state


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_a_bad_fixed_limit_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match="max_concurrent must be an integer >= 1"):
        FixedLimit(max_concurrent=bad)


def test_a_fixed_limit_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        FixedLimit(5)  # type: ignore[misc]
    config = FixedLimit(max_concurrent=5)
    with pytest.raises(AttributeError):
        config.max_concurrent = 6  # type: ignore[misc]
    assert config == FixedLimit(max_concurrent=5)
