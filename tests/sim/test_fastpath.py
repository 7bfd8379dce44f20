"""The fast path of ``simulate`` (``sim.fastpath``): a FIFO queue without policies computed by
the Lindley / Kiefer-Wolfowitz recursion must give the event engine's run, to the last bit, and
only such a queue may take it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_sim.analysis.queueing import MMc
from atlas_sim.analysis.stats import replications
from atlas_sim.policies import (
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    FixedLimit,
    HedgePolicy,
    RetryPolicy,
)
from atlas_sim.server_config import Dependency, ServerConfig
from atlas_sim.sim import Fault, Scenario, simulate
from atlas_sim.sim import scenarios as sc
from atlas_sim.sim.engine import Run
from atlas_sim.sim.fastpath import fifo_queue, qualifies, send_instants
from atlas_sim.workload import Distribution, Load
from tests.helpers import Lifo

PLAIN = Scenario(load=Load(rate=8.0, duration=200.0),
                 server=ServerConfig(service_time=Distribution(mean=0.1)), seed=3)

QUALIFYING = {
    "M/M/1 at 0.8": PLAIN,
    "M/M/1 at 0.95": sc.plain_queue(0.95, seed=1),
    "M/M/4 at 0.9": sc.plain_queue(0.9, 4, seed=2),
    "M/G/2 lognormal": Scenario(
        load=Load(rate=30.0, duration=100.0),
        server=ServerConfig(workers=2, service_time=Distribution(mean=0.05, kind="lognormal",
                                                                 shape=1.5)), seed=4),
    "M/D/3 two_point": Scenario(
        load=Load(rate=50.0, duration=60.0),
        server=ServerConfig(workers=3, service_time=Distribution(
            mean=0.05, kind="two_point", slow_share=0.1, slow_ratio=10.0)), seed=5),
    "D/D/1, ties at every instant": Scenario(
        load=Load(rate=10.0, duration=30.0, process="constant"),
        server=ServerConfig(service_time=Distribution(mean=0.1, kind="constant"))),
    "D/D/2 with steps": Scenario(
        load=Load(rate=20.0, duration=30.0, process="constant", steps=((10.0, 40.0),
                                                                       (20.0, 5.0))),
        server=ServerConfig(workers=2, service_time=Distribution(mean=0.1, kind="constant"))),
    "round trip and overhead": sc.plain_queue(0.8, 2, seed=6).replace(round_trip=0.01,
                                                                      work_overhead=0.003),
    "/api/work": PLAIN.replace(path="/api/work", seed=7),
    "zero work": PLAIN.replace({"server.service_time": Distribution(mean=0.0)}),
    "a count of requests": Scenario(load=Load(rate=5.0, requests=300),
                                    server=ServerConfig(workers=2), seed=8),
    "more than a block of draws": sc.plain_queue(0.8, 2, duration=500.0, seed=9),
    "no requests": Scenario(load=Load(rate=0.0, duration=10.0)),
}


@pytest.mark.parametrize("name", list(QUALIFYING))
def test_the_fast_path_gives_the_event_engines_run_bit_for_bit(name):
    scenario = QUALIFYING[name]
    assert qualifies(scenario)
    events = Run(scenario).execute()  # the event engine, whatever the scenario
    fast = fifo_queue(scenario)
    # what the brief of the fast path asks: the same latencies (here exactly) and summary
    np.testing.assert_allclose(fast.requests["latency"], events.requests["latency"],
                               rtol=0, atol=1e-9)
    np.testing.assert_equal(fast.summary(), events.summary())  # NaN equals NaN here
    # and more: every table, row order and dtype included, and the server log
    pd.testing.assert_frame_equal(fast.requests, events.requests, check_exact=True)
    pd.testing.assert_frame_equal(fast.attempts, events.attempts, check_exact=True)
    pd.testing.assert_frame_equal(fast.events, events.events, check_exact=True)
    pd.testing.assert_frame_equal(fast.meta["server_log"], events.meta["server_log"],
                                  check_exact=True)
    assert fast.duration == events.duration
    assert {k: v for k, v in fast.meta.items() if k != "server_log"} == {
        k: v for k, v in events.meta.items() if k != "server_log"}


def test_simulate_takes_the_fast_path_by_itself():
    fast = simulate(PLAIN)
    pd.testing.assert_frame_equal(fast.attempts, fifo_queue(PLAIN).attempts, check_exact=True)


NOT_QUALIFYING = {
    "closed loop": Scenario(load=Load(clients=5, duration=10.0)),
    "two instances": PLAIN.replace(instances=2),
    "a fault": PLAIN.replace(faults=(Fault(start=1.0, end=2.0, capacity=0.5),)),
    "a fault that changes nothing": PLAIN.replace(faults=(Fault(start=1.0, end=2.0),)),
    "admission": PLAIN.replace({"server.admission": FixedLimit(max_concurrent=5)}),
    "server timeout": PLAIN.replace({"server.timeout": 1.0}),
    "drop_expired": PLAIN.replace({"server.drop_expired": True}),
    "another queue": PLAIN.replace({"server.queue": Lifo()}),
    "a dependency": PLAIN.replace({"server.dependency": Dependency()}),
    "/api/compose": PLAIN.replace({"server.dependency": Dependency()}, path="/api/compose"),
    "/api/orders": PLAIN.replace(path="/api/orders"),
    "client timeout": PLAIN.replace(client=ClientPolicy(timeout=1.0)),
    "retry": PLAIN.replace(client=ClientPolicy(retry=RetryPolicy())),
    "budget": PLAIN.replace(client=ClientPolicy(budget=BudgetConfig())),
    "breaker": PLAIN.replace(client=ClientPolicy(breaker=BreakerConfig())),
    "hedge": PLAIN.replace(client=ClientPolicy(hedge=HedgePolicy(delay=0.1))),
    "full stack": sc.full_stack(1000),
}


@pytest.mark.parametrize("name", list(NOT_QUALIFYING))
def test_anything_that_can_refuse_cut_retry_or_reorder_runs_on_events(name):
    scenario = NOT_QUALIFYING[name]
    assert not qualifies(scenario)
    with pytest.raises(ValueError, match="FIFO queue without policies"):
        fifo_queue(scenario)


def test_send_instants_follow_simpys_clock_when_sums_are_inexact():
    """The clock adds each wait to the previous instant; where that is not exactly the
    schedule's time, the loop reproduces it (here a tiny first time makes it inexact)."""
    times = np.array([1e-300, 0.7, 0.7000000000000001, 3.3])
    now, expected = 0, []
    for t in times.tolist():
        now = now + max(0.0, t - now)
        expected.append(now)
    assert send_instants(times).tolist() == expected


def test_the_theory_tests_exercise_the_fast_path():
    """tests/sim/test_theory.py checks M/M/c against Erlang C through ``simulate``: those
    scenarios take the fast path, so the theory checks are checks of it too."""
    for workers, utilisation in ((1, 0.8), (8, 0.9)):
        assert qualifies(Scenario(load=Load(rate=utilisation * workers, duration=100.0),
                                  server=ServerConfig(workers=workers,
                                                      service_time=Distribution(mean=1.0))))


@pytest.mark.parametrize("workers", [1, 3])
def test_the_fast_path_meets_mm1_and_erlang_c(workers):
    """Mean response time (M/M/1: 1 / (mu - lambda)) and Erlang C's chance of waiting, inside
    the 99.9% confidence interval of 8 replications (as tests/sim/test_theory.py)."""
    rate = 0.8 * workers
    theory = MMc(arrival_rate=rate, service_rate=1.0, workers=workers)
    W, P_wait = [], []
    for seed in range(8):
        duration = 40_000 / rate
        run = fifo_queue(Scenario(load=Load(rate=rate, duration=duration),
                                  server=ServerConfig(workers=workers,
                                                      service_time=Distribution(mean=1.0)),
                                  seed=seed))
        a = run.attempts[run.attempts["t_start"] >= 0.05 * duration]
        W.append(float(a["latency"].mean()))
        P_wait.append(float((a["queue_wait"] > 0).mean()))
    if workers == 1:
        assert pytest.approx(1 / (1.0 - rate)) == theory.W
    for values, reference in ((W, theory.W), (P_wait, theory.P_wait)):
        ci = replications(values, confidence=0.999)
        assert ci.contains(reference), f"theory {reference:.4g}, simulated {ci!r}"
