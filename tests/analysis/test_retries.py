"""Retries against independent faults in closed form, with and without a retry budget, against
the simulated twin of notebook 01's live experiment (the same policy objects)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atlas_sim import Backoff, ClientPolicy, Fault, Load, RetryBudget, RetryPolicy, Settings
from atlas_sim.analysis.retries import retry_theory
from atlas_sim.experiments.live import compose_twin
from atlas_sim.policies import BudgetConfig
from atlas_sim.sim import simulate


def test_without_a_budget_a_request_fails_only_if_every_attempt_fails():
    theory = retry_theory(0.3, max_attempts=3)
    assert theory.failed == pytest.approx(0.027) and theory.attempts == pytest.approx(1.39)
    assert retry_theory(1.0, max_attempts=4).attempts == 4
    assert retry_theory(0.3, max_attempts=1, budget=BudgetConfig()).failed == pytest.approx(0.3)


def test_a_budget_above_its_balance_point_stays_full_and_below_it_empties():
    # balance at r / (1 + r): 9.1% for gRPC's 0.1
    full = retry_theory(0.05, max_attempts=3, budget=BudgetConfig())
    assert full.covered and full.failed == pytest.approx(0.05**3)
    empty = retry_theory(0.3, max_attempts=3, budget=BudgetConfig(), requests=500)
    # (M / 2) / (|d| A) = 5 / (0.23 * 1.39) = 15.6 requests retry, the rest do not
    early = 5 / (0.23 * 1.39)
    assert empty.failed == pytest.approx((early * 0.027 + (500 - early) * 0.3) / 500)
    assert retry_theory(0.3, max_attempts=3, budget=BudgetConfig()).failed == 0.3  # long run
    near = retry_theory(0.3, max_attempts=3, budget=BudgetConfig(token_ratio=0.4))
    assert not near.covered and math.isnan(near.failed) and "does not cover" in near.note


def test_the_closed_form_is_the_budget_state_machine_drained_by_independent_failures():
    # the drift argument, checked on the state machine itself: failures at p = 0.3 with every
    # retry attempted while allowed; retries stop after about (M / 2) / |d| attempts
    rng = np.random.default_rng(0)
    stops = []
    for _ in range(2000):
        budget, attempts = RetryBudget(), 0
        while budget.can_retry():
            attempts += 1
            if rng.random() < 0.3:
                budget.record_failure()
            else:
                budget.record_success()
        stops.append(attempts)
    assert np.mean(stops) == pytest.approx(5 / 0.23, rel=0.15)


@pytest.mark.parametrize(("error_rate", "budget"), [
    (0.3, BudgetConfig()), (0.05, BudgetConfig()),
    (0.3, BudgetConfig(max_tokens=100, token_ratio=0.2)), (0.3, None)])
def test_the_simulated_twin_of_the_live_experiment_agrees_with_the_closed_form(error_rate, budget):
    settings = Settings(retry_max_attempts=1, circuit_breaker_failure_threshold=50,
                        circuit_breaker_recovery_timeout=2.0)
    client = ClientPolicy(timeout=2.0, budget=budget, retry=RetryPolicy(
        max_attempts=3, backoff=Backoff(base=0.05, cap=1.0, jitter="full")))
    failed, sent = 0, 0
    for seed in range(6):
        run = simulate(compose_twin(settings, load=Load(rate=50.0, duration=10.0), seed=seed,
                                    client=client,
                                    faults=[Fault(start=0.0, dependency_error_rate=error_rate)]))
        failed += int((~run.requests["ok"]).sum())
        sent += len(run.requests)
    theory = retry_theory(error_rate, max_attempts=3, budget=budget, requests=sent // 6)
    error = math.sqrt(theory.failed * (1 - theory.failed) / sent)
    assert abs(failed / sent - theory.failed) < 4 * error + 1 / sent


def test_the_retry_table_leaves_theory_empty_for_a_policy_it_does_not_cover():
    from atlas_sim.experiments import live
    from atlas_sim.policies import BreakerConfig

    run = simulate(compose_twin(Settings(retry_max_attempts=1), load=Load(rate=50.0, duration=2.0),
                                seed=1, faults=[Fault(start=0.0, dependency_error_rate=0.3)]))
    for client in (ClientPolicy(retry=RetryPolicy(max_attempts=3), breaker=BreakerConfig()),
                   ClientPolicy(retry=RetryPolicy(max_attempts=3),
                                budget=BudgetConfig(token_ratio=0.4))):
        table = live.retry_table({"simulated": run, "live": run}, error_rate=0.3, client=client)
        assert math.isnan(table.loc["theory", "errors (%)"])
        verdict = live.theory_verdict(table)
        assert verdict.startswith("theory does not cover this policy") and "chance" not in verdict
