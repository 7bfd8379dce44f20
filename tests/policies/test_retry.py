"""RetryPolicy and the retry budget (gRPC retry throttling): attempts, retryable statuses,
tokens counted exactly."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas_sim.policies import (
    Backoff,
    BudgetConfig,
    Guard,
    RetryBudget,
    RetryPolicy,
    Status,
)


def should_retry(policy: RetryPolicy, attempts_made: int, status: int) -> bool:
    """Does the one rule that runs (``GuardedCall``) try again after ``attempts_made``
    attempts, each ending with ``status``?"""
    call = Guard(retry=policy, rng=np.random.default_rng(0)).call()
    delay = None
    for _ in range(attempts_made):
        assert call.before_attempt()
        delay = call.after_attempt(status)
    return delay is not None


def is_retryable(policy: RetryPolicy, status: int) -> bool:
    return should_retry(policy, 1, status)


def test_max_attempts_counts_the_first_call():
    policy = RetryPolicy(max_attempts=3)
    assert should_retry(policy, 1, 503) and should_retry(policy, 2, 503)
    assert not should_retry(policy, 3, 503)
    assert not should_retry(RetryPolicy(max_attempts=1), 1, 503)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, Status.CLIENT_TIMEOUT,
                                    Status.CONNECTION_ERROR])
def test_default_retries_overload_server_faults_and_timeouts(status):
    assert is_retryable(RetryPolicy(), status)


@pytest.mark.parametrize("status", [200, 400, 404, 422, Status.BREAKER_OPEN,
                                    Status.BUDGET_EXHAUSTED])
def test_default_does_not_retry_client_errors_or_local_refusals(status):
    assert not is_retryable(RetryPolicy(), status)


def test_retryable_outcomes_are_configurable():
    policy = RetryPolicy(retry_on={503})
    assert policy.retry_on == frozenset({503})
    assert is_retryable(policy, 503) and not is_retryable(policy, 500)


def test_delays_come_from_the_backoff():
    policy = RetryPolicy(backoff=Backoff(base=1, jitter="none"))
    waits = policy.delays()
    assert [next(waits), next(waits)] == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1 and <= 100, got 0"),
        ({"max_attempts": 2.5}, "max_attempts must be an integer"),
        ({"backoff": 0.1}, "backoff must be a Backoff"),
        ({"retry_on": {"503"}}, "retry_on must be an integer >= 100 and <= 599"),
        ({"retry_on": "503"}, "retry_on must be a set of status codes"),
    ],
)
def test_bad_policies_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RetryPolicy(**kwargs)


def test_budget_starts_full_and_throttles_below_half():
    budget = RetryBudget(max_tokens=10, token_ratio=0.1)
    assert budget.tokens == 10 and budget.can_retry()
    for _ in range(4):
        budget.record_failure()
    assert budget.tokens == 6 and budget.can_retry()
    budget.record_failure()
    assert budget.tokens == 5 and not budget.can_retry()  # at half: no retries
    for _ in range(9):
        budget.record_success()
    assert budget.tokens == pytest.approx(5.9) and budget.can_retry()


def test_budget_is_capped_and_floored():
    budget = RetryBudget(max_tokens=2, token_ratio=0.5)
    budget.record_success()
    assert budget.tokens == 2
    for _ in range(5):
        budget.record_failure()
    assert budget.tokens == 0


def test_ten_refunds_of_a_tenth_add_up_exactly():
    budget = RetryBudget(max_tokens=10, token_ratio=0.1)
    for _ in range(6):
        budget.record_failure()  # 4 tokens
    for _ in range(10):
        budget.record_success()  # exactly 5, not 4.999... nor 5.000...1
    assert budget.tokens == 5 and not budget.can_retry()
    budget.record_success()
    assert budget.can_retry()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be a number >= 0.001 and <= 1000, got 0"),
        ({"max_tokens": 5000}, "max_tokens must be a number >= 0.001 and <= 1000"),
        ({"token_ratio": 0}, "token_ratio must be a number >= 0.001 and <= 10, got 0"),
        ({"max_tokens": 1, "token_ratio": 2}, "token_ratio must be a number >= 0.001 and <= 1"),
    ],
)
def test_bad_budgets_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetryBudget(**kwargs)
    with pytest.raises(ValueError, match=message):
        BudgetConfig(**kwargs)


def test_budget_config_builds_fresh_budgets():
    config = BudgetConfig(max_tokens=4, token_ratio=0.5)
    a = config.build()
    a.record_failure()
    assert config.build().tokens == 4 and a.tokens == 3
    assert a.config == config


@given(
    st.integers(1, 1000),
    st.integers(1, 1000),
    st.lists(st.booleans(), max_size=300),
)
def test_budget_never_lets_retries_through_at_or_below_half(max_tokens, ratio_milli, outcomes):
    ratio_milli = min(ratio_milli, max_tokens * 1000)
    budget = RetryBudget(max_tokens=max_tokens, token_ratio=ratio_milli / 1000)
    exact = Fraction(max_tokens)  # the same rules in exact arithmetic
    for success in outcomes:
        if success:
            budget.record_success()
            exact = min(Fraction(max_tokens), exact + Fraction(ratio_milli, 1000))
        else:
            budget.record_failure()
            exact = max(Fraction(0), exact - 1)
        assert budget.tokens == float(exact)
        assert budget.can_retry() == (exact > Fraction(max_tokens, 2))


@given(
    st.integers(1, 1_000_000),
    st.integers(1, 1000),
    st.lists(st.booleans(), max_size=300),
)
def test_budget_with_three_decimal_settings_stops_retrying_at_exactly_half(
        max_milli, ratio_milli, outcomes):
    # gRFC A6: retries stop when token_count <= maxTokens / 2; both settings may have three
    # decimals (maxTokens 0.001..1000), so half of max_tokens may itself be a half-thousandth
    ratio_milli = min(ratio_milli, max_milli)
    max_tokens, ratio = Fraction(max_milli, 1000), Fraction(ratio_milli, 1000)
    budget = RetryBudget(max_tokens=float(max_tokens), token_ratio=float(ratio))
    exact = max_tokens
    for success in [False] * (max_milli // 2000) + outcomes:  # start near the half-way point
        if success:
            budget.record_success()
            exact = min(max_tokens, exact + ratio)
        else:
            budget.record_failure()
            exact = max(Fraction(0), exact - 1)
        assert budget.can_retry() == (exact > max_tokens / 2)


def test_budget_at_exactly_half_of_an_odd_number_of_thousandths():
    budget = RetryBudget(max_tokens=2.001, token_ratio=0.001)  # half is 1.0005
    budget.record_failure()  # 1.001 > 1.0005
    assert budget.can_retry()
    budget = RetryBudget(max_tokens=2.0, token_ratio=0.001)
    budget.record_failure()  # 1.0, exactly half: no retry
    assert budget.tokens == 1 and not budget.can_retry()
