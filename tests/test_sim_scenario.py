from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from atlas_sim.policies import Backoff, BreakerConfig, BudgetConfig, RetryPolicy
from atlas_sim.sim import Dependency, Fault, Scenario, simulate

FULL_STACK = Scenario(
    arrival_rate=150.0, duration=20.0, servers=4, service_time_mean=0.02,
    service_time_dist="lognormal", service_time_shape=1.0,
    max_concurrent=40, server_timeout=1.0, client_timeout=0.5, drop_expired=True,
    retry=RetryPolicy(max_attempts=4, backoff=Backoff(base=0.05, cap=1.0, jitter="full")),
    budget=BudgetConfig(max_tokens=10, token_ratio=0.1),
    breaker=BreakerConfig(failure_threshold=20, recovery_timeout=1.0),
    dependency=Dependency(latency_mean=0.005, error_rate=0.01, timeout=0.2,
                          retry=RetryPolicy(max_attempts=2, backoff=Backoff(base=0.01)),
                          breaker=BreakerConfig(failure_threshold=5, recovery_timeout=0.5)),
    faults=(Fault(start=5.0, end=8.0, capacity=0.3), Fault(start=12.0, end=14.0,
                                                            dependency_error_rate=1.0)),
    seed=42,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of arrival_rate"),
        ({"arrival_rate": 1, "clients": 5}, "give exactly one of arrival_rate"),
        ({"arrival_rate": -1}, "arrival_rate must be a number >= 0"),
        ({"arrival_rate": 1, "duration": 0}, "duration must be a number > 0"),
        ({"arrival_rate": 1, "servers": 0}, "servers must be an integer >= 1"),
        ({"arrival_rate": 1, "service_time_mean": -0.1}, "service_time_mean must be a number >= 0"),
        ({"arrival_rate": 1, "service_time_dist": "gamma"}, "service_time_dist must be one of"),
        ({"arrival_rate": 1, "max_concurrent": 0}, "max_concurrent must be an integer >= 1"),
        ({"arrival_rate": 1, "server_timeout": 0}, "server_timeout must be a number > 0"),
        ({"arrival_rate": 1, "client_timeout": -1}, "client_timeout must be a number > 0"),
        ({"arrival_rate": 1, "retry": 3}, "retry must be a RetryPolicy or None"),
        ({"arrival_rate": 1, "faults": [1]}, r"faults\[0\] must be a Fault"),
        ({"arrival_rate": 1, "seed": -3}, "seed must be an integer >= 0"),
        ({"arrival_rate": 1, "load_steps": [(5.0, 2.0), (4.0, 1.0)]},
         r"load_steps\[1\] time must be a number > 5"),
        ({"clients": 3, "load_steps": [(1.0, 2.0)]}, "load_steps needs an open-loop"),
        ({"clients": 0}, "clients must be an integer >= 1"),
    ],
)
def test_impossible_scenarios_fail_at_construction_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Scenario(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"start": 5, "end": 5}, "end must be a number > 5"),
     ({"start": 0, "end": 1, "capacity": 1.5}, "capacity must be a number >= 0 and <= 1"),
     ({"start": 0, "end": 1, "dependency_error_rate": 2}, "dependency_error_rate must be")],
)
def test_impossible_faults_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Fault(**kwargs)


def test_impossible_dependencies_are_refused():
    with pytest.raises(ValueError, match="error_rate must be a number >= 0 and <= 1"):
        Dependency(error_rate=1.5)
    with pytest.raises(ValueError, match="timeout must be a number > 0"):
        Dependency(timeout=0)


def test_replace_reaches_nested_fields_and_validates():
    s = Scenario(arrival_rate=5, retry=RetryPolicy())
    t = s.replace({"retry.max_attempts": 5, "retry.backoff.jitter": "none"}, servers=3)
    assert t.retry.max_attempts == 5 and t.retry.backoff.jitter == "none" and t.servers == 3
    assert s.retry.max_attempts == 3  # the original is unchanged
    with pytest.raises(ValueError, match=r"cannot set breaker\.failure_threshold"):
        s.replace({"breaker.failure_threshold": 3})
    with pytest.raises(ValueError, match="Scenario has no field 'speed'"):
        s.replace(speed=2)
    with pytest.raises(ValueError, match="servers must be an integer >= 1"):
        s.replace(servers=0)


def test_same_seed_same_tables_and_another_seed_other_tables():
    a, b = simulate(FULL_STACK), simulate(FULL_STACK)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.attempts, b.attempts)
    pd.testing.assert_frame_equal(a.events, b.events)
    c = simulate(FULL_STACK.replace(seed=43))
    assert not a.requests.equals(c.requests)


def test_same_seed_same_tables_in_another_process():
    code = (
        "import pandas as pd, sys; from tests.test_sim_scenario import FULL_STACK; "
        "from atlas_sim.sim import simulate; "
        "print(pd.util.hash_pandas_object(simulate(FULL_STACK).requests).sum())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    here = pd.util.hash_pandas_object(simulate(FULL_STACK).requests).sum()
    assert int(other) == int(here)


def test_full_stack_run_exercises_every_mechanism():
    run = simulate(FULL_STACK)
    statuses = set(run.attempts["status"]) | set(run.requests["status"])
    assert {200, 429, 503, 596, 597, 599}.issubset(statuses)
    kinds = set(zip(run.events["kind"], run.events["name"], strict=True))
    assert {("breaker", "client"), ("breaker", "dependency"), ("fault", "fault")} <= kinds
    assert (run.requests["attempts"] > 1).any()  # retries happened
    assert (run.requests["attempts"] <= 4).all()  # and stopped at max_attempts
    rejected = run.requests[run.requests["status"] == 597]
    assert (rejected["attempts"] == 0).any()  # the breaker refused to send at all


def test_dependency_share_is_a_fraction():
    with pytest.raises(ValueError, match="share must be a number >= 0 and <= 1"):
        Dependency(share=1.5)
