"""The guarded call (policies.call): the one rule for breaker outcomes, budget tokens, retries and
waits, and that every driver in both worlds goes through it."""

from __future__ import annotations

import math
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
    FixedLimit,
    Guard,
    HedgePolicy,
    RetryPolicy,
    counts_as_breaker_failure,
)
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Fault, Scenario, simulate
from atlas_sim.workload import Distribution, Load

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
        load=Load(rate=150.0, duration=32.0),
        server=ServerConfig(workers=2, service_time=Distribution(mean=0.02),
                            admission=FixedLimit(max_concurrent=4)),
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
    drivers = [root / "sim" / "client.py", root / "sim" / "dependency.py",
               root / "sim" / "fanout.py",
               root / "service" / "resilience.py", root / "service" / "loadgen" / "driver.py"]
    recording = re.compile(r"\.(record_failure|record_success|can_retry|should_retry)\(")
    for path in root.rglob("*.py"):
        if path.parent.name == "policies":
            continue
        text = path.read_text()
        assert not recording.search(text), f"{path} drives a policy itself"
    for path in drivers:
        text = path.read_text()
        steps = "before_attempt()" in text and "after_attempt(" in text
        actions = ".start()" in text and ".on_answer(" in text and ".on_timer(" in text
        assert steps or actions, path
        # no driver keeps hedge timers and their staleness by hand any more: the actions do
        assert "before_hedge(" not in text and "hedge_delay(" not in text, path


# -- hedged calls (gRFC A6's hedging policy, driven by the same GuardedCall) -----------------

def hedged(*, delay=0.05, max_extra=1, budget=None, breaker=None, clock=None, **hedge):
    clock = clock or ManualClock()
    return Guard(hedge=HedgePolicy(delay=delay, max_extra=max_extra, **hedge),
                 budget=budget.build() if budget else None,
                 breaker=breaker.build(clock) if breaker else None)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"delay": -0.1}, "delay"), ({"delay": math.inf}, "delay"), ({"delay": "1"}, "delay"),
    ({"delay": 0.1, "max_extra": 0}, "max_extra"), ({"delay": 0.1, "max_extra": 5}, "max_extra"),
    ({"delay": 0.1, "non_fatal": "503"}, "non_fatal"),
    ({"delay": 0.1, "non_fatal": {200}}, "non_fatal"),
])
def test_a_bad_hedge_policy_is_refused_naming_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HedgePolicy(**kwargs)


def test_a_call_is_retried_or_hedged_never_both():
    with pytest.raises(ValueError, match="retry and hedge"):
        ClientPolicy(retry=RetryPolicy(), hedge=HedgePolicy(delay=0.1))
    with pytest.raises(ValueError, match="hedge must be a HedgePolicy"):
        ClientPolicy(hedge=0.1)
    assert ClientPolicy().hedge is None  # nothing changes for existing users


def test_a_call_that_answers_before_the_delay_sends_one_copy():
    call = hedged(delay=0.05).call()
    assert call.before_attempt()
    assert call.hedge_delay() == 0.05
    assert call.after_attempt(200, attempt=1) is None
    assert (call.done, call.status, call.winner, call.attempts, call.cancelled) == (
        True, 200, 1, 1, ())
    assert call.hedge_delay() is None and not call.before_hedge(1)


def test_a_slow_first_copy_gets_a_hedge_and_the_loser_counts_for_nothing():
    g = hedged(delay=0.05, budget=BudgetConfig(max_tokens=10, token_ratio=0.5),
               breaker=BreakerConfig(failure_threshold=1))
    g.budget._milli = 8000  # 8 tokens: room to earn
    call = g.call()
    call.before_attempt()
    assert call.before_hedge(1)  # the timer fired: copy 2 now
    assert call.attempts == 2 and call.in_flight == (1, 2)
    assert call.hedge_delay() is None  # max_extra=1: no third copy
    assert call.after_attempt(200, attempt=2) is None
    assert (call.status, call.winner, call.cancelled) == (200, 2, (1,))
    assert g.budget.tokens == 8.5  # one success earned, once
    # the loser's late answer is ignored: no breaker failure, no token spent, no retry
    assert call.after_attempt(503, attempt=1) is None
    assert g.breaker.state is BreakerState.CLOSED and g.budget.tokens == 8.5
    assert call.status == 200


def test_a_cancelled_probe_gives_its_half_open_slot_back():
    clock = ManualClock()
    g = hedged(breaker=BreakerConfig(failure_threshold=1, recovery_timeout=1.0,
                                     half_open_max_calls=2, success_threshold=2), clock=clock)
    first = g.call()
    first.before_attempt()
    first.after_attempt(503, attempt=1)  # opens (503 is non-fatal: a copy is asked for...)
    assert not first.before_hedge(first.attempts)  # ...and refused by the open breaker
    assert first.status == 597
    clock.advance(1.0)
    call = g.call()
    assert call.before_attempt() and call.before_hedge(1)  # two probes
    assert g.breaker.probes_in_flight == 2
    call.after_attempt(200, attempt=1)
    assert call.cancelled == (2,)
    assert g.breaker.state is BreakerState.HALF_OPEN and g.breaker.probes_in_flight == 0


def test_hedges_are_throttled_by_the_retry_budget_first_copies_never():
    g = hedged(budget=BudgetConfig(max_tokens=4))
    g.budget._milli = 2000  # exactly half: gRPC sends no hedge ("greater than the threshold")
    call = g.call()
    assert call.before_attempt()  # the first copy is always sent
    assert not call.before_hedge(1)
    assert not call.done and call.hedge_delay() is None  # hedging stopped; copy 1 still out
    assert call.after_attempt(200, attempt=1) is None
    assert (call.status, call.attempts) == (200, 1)


def test_a_non_fatal_failure_sends_the_next_copy_at_once_and_a_fatal_one_ends_the_call():
    call = hedged(max_extra=2).call()
    call.before_attempt()
    assert call.after_attempt(503, attempt=1) == 0.0  # gRFC A6: shortcut the delay
    assert call.before_hedge(call.attempts) and call.attempts == 2
    assert not call.before_hedge(1)  # the timer armed for copy 1 is stale now
    assert call.before_hedge(2)  # copy 2's own timer fired: copy 3
    assert call.after_attempt(404, attempt=3) is None  # fatal: another copy would only repeat
    assert (call.status, call.winner, call.cancelled) == (404, 3, (2,))


def test_when_every_copy_fails_the_call_ends_with_the_last_failure_or_the_refusal():
    g = hedged(max_extra=1, budget=BudgetConfig(max_tokens=10))
    call = g.call()
    call.before_attempt()
    assert call.before_hedge(1)
    assert call.after_attempt(503, attempt=1) is None  # no copy left; copy 2 still out
    assert not call.done
    assert call.after_attempt(599, attempt=2) is None
    assert (call.status, call.winner) == (599, 0)
    assert g.budget.tokens == 8  # each non-fatal failure costs a token, as a retryable one
    g.budget._milli = 5000  # half: the next copy the failure asks for is refused
    call = g.call()
    call.before_attempt()
    assert call.after_attempt(503, attempt=1) == 0.0
    assert not call.before_hedge(1)
    assert call.status == 596


def test_abandoning_a_hedged_call_records_each_copy_out_as_a_timeout():
    g = hedged(breaker=BreakerConfig(failure_threshold=2), budget=BudgetConfig(max_tokens=10))
    call = g.call()
    call.before_attempt()
    call.before_hedge(1)
    call.abandon()
    assert call.status == 599 and call.in_flight == ()
    assert g.breaker.state is BreakerState.OPEN and g.budget.tokens == 8


def test_without_hedging_the_hedging_loop_sends_one_attempt():
    call = guard(retry=None).call()
    assert call.before_attempt()
    assert call.hedge_delay() is None and not call.before_hedge(1)
    assert call.after_attempt(200) is None and call.status == 200


@given(answers=st.lists(st.tuples(st.integers(1, 5), st.sampled_from([200, 404, 503, 599])),
                        max_size=12),
       timers=st.lists(st.integers(1, 5), max_size=6), max_extra=st.integers(1, 4),
       tokens=st.integers(0, 10))
def test_a_hedged_call_never_exceeds_its_copies_and_counts_each_copy_at_most_once(
        answers, timers, max_extra, tokens):
    g = hedged(max_extra=max_extra, budget=BudgetConfig(max_tokens=10, token_ratio=1))
    g.budget._milli = tokens * 1000
    call = g.call()
    assert call.before_attempt()
    counted = []
    events = [("answer", a) for a in answers] + [("timer", t) for t in timers]
    for kind, value in events:
        if kind == "timer":
            call.before_hedge(value)
        else:
            copy, status = value
            before = g.budget.tokens, call.in_flight
            if call.after_attempt(status, attempt=copy) == 0.0:
                call.before_hedge(call.attempts)
            if copy in before[1]:
                counted.append(copy)
            else:
                assert g.budget.tokens == before[0]  # not in flight: not counted
        assert 1 <= call.attempts <= 1 + max_extra
        assert set(call.in_flight) <= set(range(1, call.attempts + 1))
        if call.done:
            assert call.in_flight == () and call.status in {200, 404, 503, 599, 596}
    assert len(counted) == len(set(counted))
    if not call.done:
        assert call.in_flight  # a call that is not over still waits for a copy
