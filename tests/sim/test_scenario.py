"""Scenario, Load and Fault validation, dotted replace, determinism across runs and processes,
and a full-stack run that exercises every mechanism."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    FixedLimit,
    RetryPolicy,
)
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Dependency, Fault, Scenario, simulate
from atlas_sim.workload import Distribution, Load

FULL_STACK = Scenario(
    load=Load(rate=150.0, duration=20.0),
    server=ServerConfig(
        workers=4, service_time=Distribution(mean=0.02, kind="lognormal", shape=1.0),
        admission=FixedLimit(max_concurrent=40), timeout=1.0, drop_expired=True,
        dependency=Dependency(
            latency=Distribution(mean=0.005), error_rate=0.01,
            client=ClientPolicy(
                timeout=0.2, retry=RetryPolicy(max_attempts=2, backoff=Backoff(base=0.01)),
                breaker=BreakerConfig(failure_threshold=5, recovery_timeout=0.5)))),
    client=ClientPolicy(
        timeout=0.5,
        retry=RetryPolicy(max_attempts=4, backoff=Backoff(base=0.05, cap=1.0, jitter="full")),
        budget=BudgetConfig(max_tokens=10, token_ratio=0.1),
        breaker=BreakerConfig(failure_threshold=20, recovery_timeout=1.0)),
    faults=(Fault(start=5.0, end=8.0, capacity=0.3),
            Fault(start=12.0, end=14.0, dependency_error_rate=1.0)),
    seed=42,
)


ONE_PER_SECOND = Load(rate=1, duration=10)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Load(), "give exactly one of rate"),
        (lambda: Load(rate=1, clients=5, duration=1), "give exactly one of rate"),
        (lambda: Load(rate=-1, duration=1), "rate must be a number >= 0"),
        (lambda: Load(rate=1, duration=0), "duration must be a number > 0"),
        (lambda: Load(rate=1), "needs duration"),
        (lambda: Load(clients=3), "needs duration"),
        (lambda: Load(rate=1, duration=10, steps=[(5.0, 2.0), (4.0, 1.0)]),
         r"steps\[1\] time must be a number > 5"),
        (lambda: Load(clients=3, duration=10, steps=[(1.0, 2.0)]), "steps need an open-loop"),
        (lambda: Load(clients=0, duration=1), "clients must be an integer >= 1"),
        (lambda: Scenario(), "load"),
        (lambda: Scenario(load={"rate": 1}), "load must be a Load"),
        (lambda: Scenario(load=ONE_PER_SECOND, server=ServerConfig(workers=0)),
         "workers must be an integer >= 1"),
        (lambda: Scenario(load=ONE_PER_SECOND, server={"workers": 2}),
         "server must be a ServerConfig or a tuple of them"),
        (lambda: Scenario(load=ONE_PER_SECOND, server=()), "non-empty tuple"),
        (lambda: Scenario(load=ONE_PER_SECOND, server=(ServerConfig(), 3)),
         r"server\[1\] must be a ServerConfig"),
        (lambda: Scenario(load=ONE_PER_SECOND, server=(ServerConfig(),) * 2, instances=3),
         "instances must be 1 or len"),
        (lambda: Scenario(load=ONE_PER_SECOND, instances=0),
         "instances must be an integer >= 1 and <= 1000"),
        (lambda: Scenario(load=ONE_PER_SECOND, path="/api/other"), "path must be one of"),
        (lambda: Scenario(load=ONE_PER_SECOND, path="/api/compose"),
         "server.dependency must be a Dependency when path is '/api/compose'"),
        (lambda: Scenario(load=ONE_PER_SECOND, instances=2,
                          faults=(Fault(start=0, end=1, instances=(2,)),)),
         r"faults\[0\].instances must be instance indexes 0..1"),
        (lambda: Scenario(load=ONE_PER_SECOND, client=ClientPolicy(timeout=-1)),
         "timeout must be a number > 0"),
        (lambda: Scenario(load=ONE_PER_SECOND, client=ClientPolicy(retry=3)),
         "retry must be a RetryPolicy or None"),
        (lambda: Scenario(load=ONE_PER_SECOND, client=None), "client must be a ClientPolicy"),
        (lambda: Scenario(load=ONE_PER_SECOND, faults=[1]), r"faults\[0\] must be a Fault"),
        (lambda: Scenario(load=ONE_PER_SECOND, seed=-3), "seed must be an integer >= 0"),
    ],
)
def test_impossible_scenarios_fail_at_construction_naming_the_field(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


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
        Dependency(client=ClientPolicy(timeout=0))


def test_replace_reaches_nested_fields_and_validates():
    s = Scenario(load=Load(rate=5, duration=60), client=ClientPolicy(retry=RetryPolicy()))
    t = s.replace({"client.retry.max_attempts": 5, "client.retry.backoff.jitter": "none",
                   "load.rate": 7.0, "server.service_time.mean": 0.02}, instances=3)
    assert t.client.retry.max_attempts == 5 and t.client.retry.backoff.jitter == "none"
    assert t.instances == 3 and t.load.rate == 7.0 and t.server.service_time.mean == 0.02
    assert t.configs == (t.server,) * 3 and t.capacity == 3 / 0.02
    assert s.client.retry.max_attempts == 3  # the original is unchanged
    with pytest.raises(ValueError, match=r"cannot set breaker\.failure_threshold"):
        s.replace({"client.breaker.failure_threshold": 3})
    with pytest.raises(ValueError, match="Scenario has no field 'speed'"):
        s.replace(speed=2)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        s.replace({"server.workers": 0})
    assert s.replace({"server.workers": 4}).server.workers == 4


def test_same_seed_same_tables_and_another_seed_other_tables():
    a, b = simulate(FULL_STACK), simulate(FULL_STACK)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.attempts, b.attempts)
    pd.testing.assert_frame_equal(a.events, b.events)
    c = simulate(FULL_STACK.replace(seed=43))
    assert not a.requests.equals(c.requests)


def test_same_seed_same_tables_in_another_process():
    code = (
        "import pandas as pd, sys; from tests.sim.test_scenario import FULL_STACK; "
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


OLD_NAMES = [
    ("servers", 2, r"server=ServerConfig\(workers=\.\.\.\)"),
    ("service_time_mean", 0.1, r"server=ServerConfig\(service_time=Distribution\(mean=\.\.\.\)\)"),
    ("service_time_dist", "constant", r"Distribution\(kind=\.\.\.\)"),
    ("service_time_shape", 1.5, r"Distribution\(shape=\.\.\.\)"),
    ("max_concurrent", 10, r"admission=FixedLimit\(max_concurrent=\.\.\.\)"),
    ("retry_after", 2, r"server=ServerConfig\(retry_after=\.\.\.\)"),
    ("server_timeout", 1.0, r"server=ServerConfig\(timeout=\.\.\.\)"),
    ("drop_expired", True, r"server=ServerConfig\(drop_expired=True\)"),
    ("dependency", Dependency(), r"server=ServerConfig\(dependency=Dependency"),
]


@pytest.mark.parametrize(("name", "value", "says"), OLD_NAMES)
def test_the_old_flat_server_fields_are_refused_saying_what_to_write(name, value, says):
    with pytest.raises(ValueError, match=rf"Scenario\({name}=\.\.\.\) is no longer a parameter"):
        Scenario(load=ONE_PER_SECOND, **{name: value})
    with pytest.raises(ValueError, match=says):
        Scenario(load=ONE_PER_SECOND, **{name: value})
    s = Scenario(load=ONE_PER_SECOND)
    with pytest.raises(ValueError, match=says):  # replace says the same, keyword or mapping
        s.replace(**{name: value})
    with pytest.raises(ValueError, match=says):
        s.replace({name: value})


def test_old_names_inside_the_server_config_are_refused_by_dotted_replace():
    s = Scenario(load=ONE_PER_SECOND)
    with pytest.raises(ValueError, match=r"ServerConfig\(servers=\.\.\.\) .* workers="):
        s.replace({"server.servers": 2})


def test_a_tuple_of_configs_is_one_instance_each_and_dotted_replace_reaches_every_one():
    a, b = ServerConfig(workers=1), ServerConfig(workers=3)
    s = Scenario(load=ONE_PER_SECOND, server=[a, b])
    assert s.server == (a, b) and s.instances == 2 and s.configs == (a, b)
    assert s.capacity == 20 + 60 and s.utilisation == pytest.approx(1 / 80)
    t = s.replace({"server.timeout": 2.0})
    assert [c.timeout for c in t.configs] == [2.0, 2.0]
    assert [c.workers for c in t.configs] == [1, 3]
    one = Scenario(load=ONE_PER_SECOND, server=b, instances=3)
    assert one.configs == (b, b, b) and one.capacity == 180

