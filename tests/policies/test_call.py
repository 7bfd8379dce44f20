"""The guarded call (policies.call): the one rule for breaker outcomes, budget tokens, retries and
waits, and that every driver in both worlds goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas_sim.clocks import ManualClock
from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    BreakerState,
    BudgetConfig,
    ClientPolicy,
    Guard,
    RetryPolicy,
    counts_as_breaker_failure,
)
from atlas_sim.sim import Fault, Scenario, simulate
from atlas_sim.workload import Load

NO_JITTER = Backoff(base=0.1, multiplier=2.0, cap=10.0, jitter="none")


def guard(*, retry=None, budget=None, breaker=None, clock=None):
    clock = clock or ManualClock()
    return Guard(retry=retry, budget=budget.build() if budget else None,
                 breaker=breaker.build(clock) if breaker else None,
                 rng=np.random.default_rng(0))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 598, 599])
def test_server_errors_and_missing_answers_are_breaker_failures(status):
    assert counts_as_breaker_failure(status)
    g = guard(breaker=BreakerConfig(failure_threshold=1))
    call = g.call()
    assert call.before_attempt()
    assert call.after_attempt(status) is None
    assert g.breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 404, 422, 429])
def test_any_other_answer_is_a_breaker_success(status):
    assert not counts_as_breaker_failure(status)
    g = guard(breaker=BreakerConfig(mode="failure_rate", window_size=2, minimum_calls=2,
                                    failure_rate_threshold=0.5))
    for _ in range(3):
        call = g.call()
        assert call.before_attempt()
        call.after_attempt(status)
    assert g.breaker.state is BreakerState.CLOSED
    assert g.breaker.failure_rate == 0.0


def test_a_refusal_by_the_breaker_sends_nothing_and_ends_597():
    g = guard(retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER),
              breaker=BreakerConfig(failure_threshold=1, recovery_timeout=60))
    first = g.call()
    assert first.before_attempt()
    assert first.after_attempt(503) == pytest.approx(0.1)  # opens the breaker; retry allowed...
    assert not first.before_attempt()  # ...but the breaker refuses it
    assert (first.status, first.attempts) == (597, 1)
    second = g.call()
    assert not second.before_attempt()
    assert (second.status, second.attempts) == (597, 0)


def test_only_retryable_failures_cost_a_token_and_only_successes_earn_one():
    g = guard(retry=RetryPolicy(max_attempts=1, retry_on=frozenset({503})),
              budget=BudgetConfig(max_tokens=10, token_ratio=0.5))
    for status in (429, 404, 500, 599):  # not in retry_on: free
        call = g.call()
        call.before_attempt()
        call.after_attempt(status)
    assert g.budget.tokens == 10
    call = g.call()
    call.before_attempt()
    call.after_attempt(503)  # retryable, even on the last attempt: one token (gRFC A6)
    assert g.budget.tokens == 9
    call = g.call()
    call.before_attempt()
    call.after_attempt(200)
    assert g.budget.tokens == 9.5


def test_a_retry_the_budget_refuses_ends_596_after_the_attempt_made():
    g = guard(retry=RetryPolicy(max_attempts=5, backoff=NO_JITTER),
              budget=BudgetConfig(max_tokens=4, token_ratio=0.1))
    statuses = []
    for _ in range(3):
        call = g.call()
        while call.before_attempt():
            if call.after_attempt(503) is None:
                break
        statuses.append((call.status, call.attempts))
    # tokens 4 -> 3 (retry: 3 > 2) -> 2 (2 > 2 is false: refused)
    assert statuses == [(596, 2), (596, 1), (596, 1)]


def test_waits_follow_the_backoff_and_the_call_ends_with_the_last_status():
    g = guard(retry=RetryPolicy(max_attempts=4, backoff=NO_JITTER))
    call = g.call()
    waits = []
    while call.before_attempt():
        delay = call.after_attempt(504)
        if delay is None:
            break
        waits.append(delay)
    assert waits == pytest.approx([0.1, 0.2, 0.4])
    assert (call.status, call.attempts) == (504, 4)


def test_non_retryable_statuses_and_successes_end_at_once():
    g = guard(retry=RetryPolicy(max_attempts=4, retry_on=frozenset({503})))
    for status in (200, 404, 429):
        call = g.call()
        assert call.before_attempt()
        assert call.after_attempt(status) is None
        assert (call.status, call.attempts) == (status, 1)


@pytest.mark.parametrize(("honor", "retry_after", "expected"),
                         [(False, 5.0, 0.1), (True, 5.0, 5.0), (True, 0.01, 0.1),
                          (True, None, 0.1)])
def test_retry_after_is_a_floor_only_when_honoured(honor, retry_after, expected):
    g = guard(retry=RetryPolicy(max_attempts=2, backoff=NO_JITTER, honor_retry_after=honor))
    call = g.call()
    call.before_attempt()
    assert call.after_attempt(429, retry_after=retry_after) == pytest.approx(expected)


def test_an_abandoned_attempt_is_a_failure_without_a_retry():
    g = guard(retry=RetryPolicy(max_attempts=3), budget=BudgetConfig(max_tokens=10),
              breaker=BreakerConfig(failure_threshold=1))
    call = g.call()
    call.before_attempt()
    call.abandon()
    assert call.status == 599
    assert g.breaker.state is BreakerState.OPEN
    assert g.budget.tokens == 9


def test_a_late_outcome_from_before_a_state_change_is_ignored():
    clock = ManualClock()
    g = guard(breaker=BreakerConfig(failure_threshold=1, recovery_timeout=1.0), clock=clock)
    slow = g.call()
    assert slow.before_attempt()  # admitted while CLOSED
    fast = g.call()
    fast.before_attempt()
    fast.after_attempt(503)  # opens
    clock.advance(1.0)
    probe = g.call()
    assert probe.before_attempt()  # HALF_OPEN: the probe
    slow.after_attempt(200)  # generation of CLOSED: not the probe's answer
    assert g.breaker.state is BreakerState.HALF_OPEN
    probe.after_attempt(200)
    assert g.breaker.state is BreakerState.CLOSED


@given(statuses=st.lists(st.sampled_from([200, 404, 429, 500, 503, 504, 598, 599]),
                         min_size=1, max_size=12),
       max_attempts=st.integers(1, 6))
def test_a_call_never_makes_more_attempts_than_allowed_and_ends_once(statuses, max_attempts):
    g = guard(retry=RetryPolicy(max_attempts=max_attempts, backoff=NO_JITTER),
              budget=BudgetConfig(max_tokens=5), breaker=BreakerConfig(failure_threshold=3))
    outcomes = iter(statuses)
    call = g.call()
    ended = False
    while call.before_attempt():
        status = next(outcomes, 200)
        if call.after_attempt(status) is None:
            ended = True
            break
    assert 1 <= call.attempts <= max_attempts or (not ended and call.status == 597)
    assert call.status in {*statuses, 200, 596, 597}


def test_the_outage_after_a_shedding_spell_is_retried_in_the_simulator():
    """The issue's example: 30 s of overload shed with 429s, then a 2 s outage. The 429s are
    not in retry_on, so they must not drain a budget that pays for retrying 503s (before the
    rule was shared, every request in the outage ended 596 after one attempt)."""
    scenario = Scenario(
        load=Load(rate=150.0, duration=32.0), servers=2, service_time_mean=0.02,
        max_concurrent=4,
        client=ClientPolicy(
            retry=RetryPolicy(max_attempts=3, retry_on=frozenset({503}),
                              backoff=Backoff(base=0.05, cap=1.0)),
            budget=BudgetConfig(max_tokens=10, token_ratio=0.1)),
        faults=(Fault(start=30.0, end=32.0, capacity=0.0),), seed=3)
    run = simulate(scenario)
    assert (run.attempts["status"] == 429).sum() > 1000  # the overload was real
    outage = run.window(30.0, 32.0).requests
    # The budget is full when the outage starts, so its first requests are retried to the end;
    # after five 503s (tokens 10 -> 5) it refuses retries: what a budget is for.
    assert outage["attempts"].iloc[0] == 3 and (outage["attempts"] > 1).sum() >= 3
    assert (outage["status"] == 596).sum() >= len(outage) - 3


def test_the_sequencing_lives_in_one_module_and_every_driver_uses_it():
    root = Path(__file__).resolve().parents[2] / "atlas_sim"
    drivers = [root / "sim" / "engine.py", root / "service" / "resilience.py",
               root / "service" / "loadgen" / "driver.py"]
    recording = re.compile(r"\.(record_failure|record_success|can_retry|should_retry)\(")
    for path in root.rglob("*.py"):
        if path.parent.name == "policies":
            continue
        text = path.read_text()
        assert not recording.search(text), f"{path} drives a policy itself"
    for path in drivers:
        text = path.read_text()
        assert "before_attempt()" in text and "after_attempt(" in text, path
