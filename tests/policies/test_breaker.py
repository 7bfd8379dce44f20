"""The circuit breaker: consecutive and failure-rate modes, exact thresholds, half-open probes,
generations and listeners, on a manual clock."""

from __future__ import annotations

from collections import deque
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_sim.clocks import ManualClock
from atlas_sim.policies import BreakerConfig, BreakerState, BreakerTransition, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make(**kwargs) -> tuple[CircuitBreaker, ManualClock, list[BreakerTransition]]:
    clock = ManualClock()
    breaker = CircuitBreaker(clock=clock, **kwargs)
    seen: list[BreakerTransition] = []
    breaker.add_listener(seen.append)
    return breaker, clock, seen


def trace(seen: list[BreakerTransition]) -> list[tuple[float, str, str]]:
    return [(t.time, t.old.value, t.new.value) for t in seen]


def test_opens_after_threshold_consecutive_failures_and_a_success_resets_the_count():
    breaker, clock, seen = make(failure_threshold=3)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # resets
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is CLOSED
    clock.advance(1.5)
    breaker.record_failure()
    assert breaker.state is OPEN and not breaker.allow()
    assert trace(seen) == [(1.5, "closed", "open")]
    assert seen[0].reason == "3 consecutive failures"


def test_open_refuses_until_the_recovery_timeout_then_half_opens_at_that_time():
    breaker, clock, seen = make(failure_threshold=1, recovery_timeout=60)
    clock.advance(10)
    breaker.record_failure()
    clock.advance(59.999)
    assert not breaker.allow() and breaker.state is OPEN
    clock.advance(5)  # noticed late, reported at the moment the timeout ran out
    assert breaker.state is HALF_OPEN
    assert trace(seen) == [(10, "closed", "open"), (70, "open", "half_open")]


def test_half_open_admits_only_its_probes_and_closes_after_enough_successes():
    breaker, clock, seen = make(failure_threshold=1, recovery_timeout=5,
                                half_open_max_calls=2, success_threshold=3)
    breaker.record_failure()
    clock.advance(5)
    assert [breaker.allow() for _ in range(3)] == [True, True, False]
    assert breaker.probes_in_flight == 2
    breaker.record_success()
    assert breaker.state is HALF_OPEN and breaker.allow()  # a slot came free
    breaker.record_success()
    clock.advance(1)
    breaker.record_success()
    assert breaker.state is CLOSED and breaker.allow()
    assert trace(seen)[-1] == (6, "half_open", "closed")


def test_a_failed_probe_reopens_and_restarts_the_timer():
    breaker, clock, seen = make(failure_threshold=1, recovery_timeout=5)
    breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()
    clock.advance(0.5)
    breaker.record_failure()
    assert breaker.state is OPEN
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
    assert trace(seen) == [(0, "closed", "open"), (5, "open", "half_open"),
                           (5.5, "half_open", "open"), (10.5, "open", "half_open")]


def test_outcomes_from_an_earlier_generation_are_ignored():
    breaker, clock, _ = make(failure_threshold=1, recovery_timeout=1)
    assert breaker.allow()
    slow_call = breaker.generation  # sent while closed
    breaker.record_failure()  # another call fails: open
    clock.advance(1)
    assert breaker.allow()  # the probe
    breaker.record_success(slow_call)  # the slow call's answer arrives: not the probe's
    assert breaker.state is HALF_OPEN and breaker.probes_in_flight == 1
    breaker.record_success(breaker.generation)
    assert breaker.state is CLOSED


def test_answers_arriving_while_open_change_nothing():
    breaker, _, seen = make(failure_threshold=2, recovery_timeout=10)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is OPEN and len(seen) == 1


def test_failure_rate_mode_waits_for_minimum_calls_and_uses_a_sliding_window():
    breaker, _, seen = make(mode="failure_rate", window_size=10, minimum_calls=4,
                            failure_rate_threshold=0.5)
    for outcome in [False, False, False]:  # 3 failures, but fewer than minimum_calls
        breaker.record_success() if outcome else breaker.record_failure()
    assert breaker.state is CLOSED
    breaker.record_success()  # 3 of 4 failed: 75% >= 50%
    assert breaker.state is OPEN and seen[0].reason == "failure rate 3/4"


def test_failure_rate_window_forgets_old_calls():
    breaker, _, _ = make(mode="failure_rate", window_size=4, minimum_calls=4,
                         failure_rate_threshold=0.75)
    for ok in [False, False, True, True, True, True, False, False]:
        breaker.record_success() if ok else breaker.record_failure()
    assert breaker.state is CLOSED and breaker.failure_rate == 0.5
    breaker.record_failure()  # window: T, F, F, F -> 3/4
    assert breaker.state is OPEN


def test_a_failure_rate_equal_to_the_threshold_opens_the_circuit():
    # 0.55 * 100 is 55.00000000000001 in floating point: 55 failures must still open it
    breaker, _, seen = make(mode="failure_rate", window_size=100, minimum_calls=100,
                            failure_rate_threshold=0.55)
    for _ in range(45):
        breaker.record_success()
    for _ in range(54):
        breaker.record_failure()
    assert breaker.state is CLOSED  # 99 calls: fewer than minimum_calls
    assert breaker.failure_rate == 54 / 99
    breaker.record_failure()
    assert breaker.state is OPEN and seen[0].reason == "failure rate 55/100"


def test_every_two_decimal_threshold_opens_at_exactly_its_count():
    # the smallest failure count k with k / n >= p / 100 opens a full window of n calls;
    # one failure fewer does not
    wrong = []
    for n in range(1, 41):
        for p in range(1, 101):
            k = -(-p * n // 100)  # ceil(p * n / 100), in integers
            for failures, expected in ((k, OPEN), (k - 1, CLOSED)):
                breaker = CircuitBreaker(clock=lambda: 0.0, mode="failure_rate", window_size=n,
                                         minimum_calls=n, failure_rate_threshold=p / 100)
                for _ in range(n - failures):
                    breaker.record_success()
                for _ in range(failures):
                    breaker.record_failure()
                if breaker.state is not expected:
                    wrong.append((n, p / 100, failures))
    assert wrong == []


def _typed(d: int) -> list[float]:
    return [p / d for p in range(1, d + 1)]  # what a user types: 0.3, 0.55, 0.125


# Thresholds whose floating-point product with some window of up to 150 calls lies above the
# exact count (0.55 * 100 == 55.00000000000001): where ``failures >= threshold * n`` goes wrong.
HAZARDS = sorted({t for d in (10, 100, 1000) for t in _typed(d) for n in range(1, 151)
                  if (Fraction(str(t)) * n).denominator == 1 and t * n > Fraction(str(t)) * n})
thresholds = st.one_of(st.sampled_from(HAZARDS), st.sampled_from([10, 100, 1000]).flatmap(
    lambda d: st.sampled_from(_typed(d))))
runs = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=3)


@settings(max_examples=300)
@given(thresholds, st.data(), runs)
def test_failure_rate_mode_opens_exactly_when_the_rate_reaches_the_threshold(
        threshold, data, runs):
    exact = Fraction(str(threshold))  # the decimal the user typed
    # Some runs of successes and failures, then a run aimed at the boundary: n calls in the
    # window, n - k successes then k failures, k the least count that reaches the threshold.
    # n is a multiple of the threshold's denominator when one fits, so k / n can equal it.
    multiples = range(exact.denominator, 151, exact.denominator) or range(1, 151)
    n = data.draw(st.sampled_from(multiples), label="calls at the boundary")
    fresh = data.draw(st.booleans(), label="from a fresh window")
    window_size = data.draw(st.integers(n, 150), label="window_size") if fresh else n
    minimum_calls = data.draw(st.integers(1, n), label="minimum_calls")
    runs = [] if fresh else [*runs, (window_size, 0)]  # the last run flushes the window
    k = -(-exact.numerator * n // exact.denominator)  # ceil(threshold * n), in integers
    outcomes = [bad for ok, fail in runs for bad in [False] * ok + [True] * fail]
    outcomes += [False] * (n - k) + [True] * k
    breaker, _, seen = make(mode="failure_rate", window_size=window_size,
                            minimum_calls=minimum_calls, failure_rate_threshold=threshold)
    window: deque[bool] = deque(maxlen=window_size)
    for failed in outcomes:
        breaker.record_failure() if failed else breaker.record_success()
        window.append(failed)
        calls, failures = len(window), sum(window)
        should_open = calls >= minimum_calls and Fraction(failures, calls) >= exact
        assert (breaker.state is OPEN) == should_open, (failures, calls)
        if should_open:
            assert [t.reason for t in seen] == [f"failure rate {failures}/{calls}"]
            return
    raise AssertionError("the run aimed at the threshold never reached it")


def test_config_builds_independent_breakers():
    config = BreakerConfig(failure_threshold=1)
    clock = ManualClock()
    a, b = config.build(clock), config.build(clock)
    a.record_failure()
    assert a.state is OPEN and b.state is CLOSED and a.config == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be an integer >= 1, got 0"),
        ({"recovery_timeout": -1}, "recovery_timeout must be a number >= 0, got -1"),
        ({"half_open_max_calls": 0}, "half_open_max_calls must be an integer >= 1"),
        ({"success_threshold": 0}, "success_threshold must be an integer >= 1"),
        ({"mode": "sometimes"}, "mode must be one of 'consecutive', 'failure_rate'"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold must be a number > 0 and <= 1"),
        ({"failure_rate_threshold": 0}, "failure_rate_threshold must be a number > 0 and <= 1"),
        ({"window_size": 10, "minimum_calls": 11},
         "minimum_calls must be an integer >= 1 and <= 10, got 11"),
    ],
)
def test_impossible_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(clock=ManualClock(), **kwargs)


def test_a_clock_is_required():
    with pytest.raises(ValueError, match="clock must be a callable"):
        CircuitBreaker(clock=0.0)  # type: ignore[arg-type]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("allow"), st.just(0)),
        st.tuples(st.sampled_from(["succeed", "fail"]), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.integers(0, 30)),
    ),
    max_size=120,
)


@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.booleans(), operations)
def test_never_more_probes_in_flight_than_allowed(threshold, max_probes, successes, exact, ops):
    clock = ManualClock()
    breaker = CircuitBreaker(clock=clock, failure_threshold=threshold, recovery_timeout=10,
                             half_open_max_calls=max_probes, success_threshold=successes)
    outstanding: list[tuple[int, BreakerState]] = []  # calls admitted, not yet answered
    for op, arg in ops:
        if op == "allow":
            state = breaker.state
            if breaker.allow():
                outstanding.append((breaker.generation, state))
        elif op == "advance":
            clock.advance(arg)
        elif outstanding:
            generation, _ = outstanding.pop(arg % len(outstanding))
            report = breaker.record_success if op == "succeed" else breaker.record_failure
            report(generation if exact else None)
        assert breaker.probes_in_flight <= max_probes
        if exact and breaker.state is HALF_OPEN:
            probes = [g for g, s in outstanding if g == breaker.generation]
            assert len(probes) == breaker.probes_in_flight <= max_probes
