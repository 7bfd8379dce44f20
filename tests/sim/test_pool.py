"""The simulated connection pool (``sim.pool``) and the ``/api/orders`` route that uses it:
the driver's decisions on SimPy's clock, the route's steps, and the simulated pool against the
closed forms of ``analysis.pool`` within sampling error."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from atlas_sim import ClientPolicy, Dependency, Fault, FixedLimit, Load, ServerConfig, StoreConfig
from atlas_sim.analysis.pool import pool_theory
from atlas_sim.analysis.stats import batch_means
from atlas_sim.experiments.datasystem import (
    pool_exhaustion_scenario,
    pool_exhaustion_sim,
    pool_summary,
)
from atlas_sim.policies import Granted, PoolConfig, Refused, TimedOut
from atlas_sim.sim import Scenario, simulate
from atlas_sim.sim.pool import SimPool
from atlas_sim.workload import Distribution

CONSTANT_ZERO = Distribution(mean=0.0, kind="constant")


def _drive(pool_config, script):
    """Run ``script(env, pool, log)`` processes on a fresh env; returns the log."""
    env = simpy.Environment()
    pool = SimPool(env, pool_config)
    log: list = []
    script(env, pool, log)
    env.run()
    return pool, log


def _client(env, pool, log, name, at, hold, timeout=None):
    def proc():
        yield env.timeout(at)
        decision = yield pool.acquire(timeout)
        log.append((name, env.now, decision))
        if isinstance(decision, Granted):
            yield env.timeout(hold)
            pool.release()
    env.process(proc())


# -- the driver ------------------------------------------------------------------------------

def test_a_waiter_is_granted_by_the_release_and_told_its_wait():
    def script(env, pool, log):
        _client(env, pool, log, "a", 0.0, 1.0)
        _client(env, pool, log, "b", 0.25, 1.0)

    pool, log = _drive(PoolConfig(size=1, timeout=10), script)
    assert [(n, t, type(d).__name__) for n, t, d in log] == [
        ("a", 0.0, "Granted"), ("b", 1.0, "Granted")]
    assert log[1][2].waited == pytest.approx(0.75)
    assert pool.policy.acquisitions == 2 and pool.policy.timeouts == 0
    assert pool.policy.in_use == 0 and not pool.waiting


def test_a_waiter_times_out_at_its_deadline_and_the_stale_timer_is_ignored():
    def script(env, pool, log):
        _client(env, pool, log, "a", 0.0, 1.0)
        _client(env, pool, log, "b", 0.0, 1.0, timeout=0.5)   # gives up at 0.5
        _client(env, pool, log, "c", 0.1, 1.0, timeout=2.0)   # granted at 1.0, timer at 2.1

    pool, log = _drive(PoolConfig(size=1, timeout=10), script)
    by_name = {n: (t, d) for n, t, d in log}
    assert by_name["b"][0] == 0.5 and isinstance(by_name["b"][1], TimedOut)
    assert by_name["b"][1].waited == pytest.approx(0.5)
    assert by_name["c"][0] == 1.0 and isinstance(by_name["c"][1], Granted)
    assert pool.policy.timeouts == 1 and pool.policy.acquisitions == 2


def test_refused_at_once_when_max_waiting_clients_wait():
    def script(env, pool, log):
        for name in "abc":
            _client(env, pool, log, name, 0.0, 1.0)

    pool, log = _drive(PoolConfig(size=1, max_waiting=1), script)
    refused = [(n, t) for n, t, d in log if isinstance(d, Refused)]
    assert refused == [("c", 0.0)]
    assert pool.policy.refusals == 1


def test_cancel_leaves_the_queue_and_a_granted_cancel_gives_the_connection_back():
    env = simpy.Environment()
    pool = SimPool(env, PoolConfig(size=1))
    first = pool.acquire()
    second = pool.acquire()
    pool.cancel(second)  # waiting: leaves the queue
    assert pool.policy.cancelled == 1 and pool.policy.waiting == 0
    third = pool.acquire()
    pool.cancel(first)  # granted: its connection goes to the next waiter
    assert third.triggered and isinstance(third.value, Granted)
    env.run()
    assert not second.triggered  # never told anything: it was cancelled


# -- the route -------------------------------------------------------------------------------

ONE_CONNECTION = PoolConfig(size=1)


def _orders(*, times, requests, pool=ONE_CONNECTION, query=1.0, workers=100,
            service=CONSTANT_ZERO, faults=(), **server):
    """``requests`` requests ``times`` seconds apart on /api/orders, each query ``query`` s."""
    load = Load(rate=1 / times, duration=times * requests, process="constant",
                requests=requests)
    store = StoreConfig(query_time=Distribution(mean=query, kind="constant"))
    config = ServerConfig(workers=workers, service_time=service, store=store, pool=pool,
                          **server)
    return simulate(Scenario(load=load, server=config, path="/api/orders",
                             client=ClientPolicy(timeout=None), faults=faults))


def test_orders_wait_for_a_connection_held_by_a_slow_query():
    result = _orders(times=0.25, requests=3)  # at 0, 0.25, 0.5; each holds 1 s; pool of 1
    assert result.requests["status"].tolist() == [200, 200, 200]
    assert result.requests["latency"].tolist() == pytest.approx([1.0, 1.75, 2.5])
    table = result.meta["pool"]
    assert table["outcome"].tolist() == ["granted"] * 3
    assert table["wait"].tolist() == pytest.approx([0.0, 0.75, 1.5])


def test_a_pool_timeout_is_a_503_after_the_timeout_and_a_refusal_at_once():
    timed = _orders(times=0.25, requests=2, pool=PoolConfig(size=1, timeout=0.5))
    assert timed.requests["status"].tolist() == [200, 503]
    assert timed.requests["latency"].iloc[1] == pytest.approx(0.5)
    assert timed.meta["pool"]["outcome"].tolist() == ["granted", "timeout"]  # as they end
    refused = _orders(times=0.25, requests=3, pool=PoolConfig(size=1, max_waiting=1))
    assert refused.requests["status"].tolist() == [200, 200, 503]
    assert refused.requests["latency"].iloc[2] == pytest.approx(0.0)
    assert "refused" in refused.meta["pool"]["outcome"].tolist()


def test_the_server_timeout_covers_the_pool_wait_and_frees_the_connection():
    # pool of 1, each query 1 s, server timeout 0.8: the first holds past its deadline and
    # gives the connection back at 0.8; the second (at 0.25) waits, is granted at 0.8 and
    # times out at 1.05 while holding; the third (at 0.5) is granted at 1.05, 504 at 1.3.
    result = _orders(times=0.25, requests=3, timeout=0.8)
    assert result.requests["status"].tolist() == [504, 504, 504]
    assert result.requests["latency"].tolist() == pytest.approx([0.8, 0.8, 0.8])
    table = result.meta["pool"]
    assert table["wait"].tolist() == pytest.approx([0.0, 0.55, 0.55])
    # a waiter whose deadline comes first is cancelled (not timed out): the first request's
    # work is slowed by 0.5 s, so the second (at 0.25) takes the connection until 1.05 and the
    # first, waiting from 0.5, is reaped at its deadline 0.8
    waiting = _orders(times=0.25, requests=2, query=5.0, timeout=0.8,
                      faults=(Fault(start=0.0, end=0.1, added_latency=0.5),))
    assert waiting.requests["status"].tolist() == [504, 504]
    assert waiting.meta["pool"]["outcome"].tolist() == ["granted", "cancelled"]
    assert waiting.meta["pool"]["wait"].tolist() == pytest.approx([0.0, 0.3])


def test_the_work_slot_is_given_back_before_the_transaction():
    # one worker, 0.1 s of work, then 1 s on the pool of 2: the second request (at 0.05)
    # starts its work at 0.1, not after the first's transaction
    result = _orders(times=0.05, requests=2, workers=1, pool=PoolConfig(size=2),
                     service=Distribution(mean=0.1, kind="constant"))
    assert result.attempts["queue_wait"].tolist() == pytest.approx([0.0, 0.05])
    assert result.requests["latency"].tolist() == pytest.approx([1.1, 1.15])


def test_the_admission_limit_counts_the_whole_request_pool_step_included():
    result = _orders(times=0.25, requests=2, pool=PoolConfig(size=2),
                     admission=FixedLimit(max_concurrent=1))
    assert result.requests["status"].tolist() == [200, 429]


def test_no_store_or_no_query_time_holds_for_no_time():
    config = ServerConfig(workers=10, service_time=CONSTANT_ZERO, pool=PoolConfig(size=1))
    result = simulate(Scenario(load=Load(rate=5, duration=2), server=config,
                               path="/api/orders"))
    assert (result.requests["latency"] == 0).all()
    assert (result.meta["pool"]["wait"] == 0).all()


def test_orders_need_no_dependency_and_ignore_one():
    base = dict(load=Load(rate=20, duration=10), path="/api/orders", seed=3)
    config = ServerConfig(store=StoreConfig(query_time=Distribution(mean=0.02)),
                          pool=PoolConfig(size=2))
    plain = simulate(Scenario(server=config, **base))
    failing = Dependency(error_rate=1.0)
    with_dep = simulate(Scenario(server=ServerConfig(
        store=config.store, pool=config.pool, dependency=failing), **base))
    assert plain.requests.equals(with_dep.requests)


def test_query_times_come_from_the_store_stream_alone():
    def run(mean):
        config = ServerConfig(store=StoreConfig(query_time=Distribution(mean=mean)),
                              pool=PoolConfig(size=2))
        return simulate(Scenario(load=Load(rate=20, duration=10), server=config,
                                 path="/api/orders", seed=5))

    slow, fast = run(0.2), run(0.01)
    assert slow.requests["t_start"].equals(fast.requests["t_start"])  # same arrivals
    assert slow.meta["server_log"]["request_id"].nunique() == len(slow.requests)
    assert slow.requests["latency"].mean() > fast.requests["latency"].mean()


def test_a_stall_holds_the_orders_answer():
    config = ServerConfig(workers=2, service_time=CONSTANT_ZERO, pool=PoolConfig(size=1),
                          store=StoreConfig(query_time=Distribution(mean=0.5, kind="constant")))
    result = simulate(Scenario(load=Load(rate=1, duration=1, process="constant"),
                               server=config, path="/api/orders",
                               faults=(Fault(start=0.2, end=2.0, stall=True),)))
    assert result.requests["latency"].tolist() == pytest.approx([2.0])


def test_other_paths_have_no_pool_table():
    result = simulate(Scenario(load=Load(rate=5, duration=2), path="/api/work"))
    assert "pool" not in result.meta


# -- against the closed forms (analysis.pool) -----------------------------------------------

HOLD = Distribution(mean=0.05)  # exponential, mu = 20 per second per connection


def _pool_run(pool, rate, requests, seed):
    scenario = pool_exhaustion_scenario(rate=rate, requests=requests, pool=pool,
                                        query_time=HOLD, seed=seed)
    result = simulate(scenario)
    table = result.meta["pool"].sort_values("time", kind="stable")
    return table.iloc[len(table) // 20:]  # a warm-up of 5% left out


def _within(series, expected, confidence=0.99):
    interval = batch_means(np.asarray(series, dtype=float), batches=20, confidence=confidence)
    assert interval.contains(expected), (interval, expected)


def test_an_unbounded_pool_whose_timeout_never_fires_is_erlang_c():
    pool = PoolConfig(size=2, timeout=3600)
    table = _pool_run(pool, rate=30, requests=40_000, seed=11)  # rho = 0.75
    theory = pool_theory(rate=30, pool=pool, hold=HOLD, timeout_fires=False)
    assert (table["outcome"] == "granted").all()
    _within(table["wait"] > 0, theory.P_wait)
    _within(table["wait"], theory.mean_wait_granted)
    _within(table["wait"] > theory.wait_quantile(0.9), 0.1)


def test_a_bounded_queue_is_the_finite_buffer_model():
    pool = PoolConfig(size=2, max_waiting=3, timeout=3600)
    table = _pool_run(pool, rate=40, requests=40_000, seed=12)  # offered 2 erlangs on 2
    theory = pool_theory(rate=40, pool=pool, hold=HOLD, timeout_fires=False)
    _within(table["outcome"] == "refused", theory.P_refused)
    admitted = table[table["outcome"] == "granted"]
    _within(admitted["wait"], theory.mean_wait_granted)
    _within(admitted["wait"] > 0, theory.P_wait)


@pytest.mark.parametrize(("rate", "timeout"), [(30, 0.05), (60, 0.1)])
def test_a_deterministic_timeout_is_m_m_c_plus_d(rate, timeout):
    pool = PoolConfig(size=2, timeout=timeout)
    table = _pool_run(pool, rate=rate, requests=40_000, seed=13)
    theory = pool_theory(rate=rate, pool=pool, hold=HOLD)
    _within(table["outcome"] == "timeout", theory.P_timeout)
    _within(table["wait"], theory.mean_wait)  # the timed out waited `timeout`
    granted = table[table["outcome"] == "granted"]
    _within(granted["wait"], theory.mean_wait_granted)
    assert table.loc[table["outcome"] == "timeout", "wait"].to_numpy() == pytest.approx(timeout)


# -- the summary both worlds use --------------------------------------------------------------

def test_pool_summary_reads_the_pool_table_and_the_latency_estimate_agrees():
    pool = PoolConfig(size=2, timeout=0.1)
    summary = pool_exhaustion_sim(rate=40, requests=3000, pool=pool, query_time=HOLD, seed=1)
    assert summary["source"] == "sim" and summary["requests"] == 3000
    assert summary["timed_out"] > 0.05 and summary["refused"] == 0
    assert summary["timed_out"] == summary["timed_out_by_latency"]  # the live estimator
    assert summary["unavailable"] == pytest.approx(summary["timed_out"] + summary["refused"])
    assert 0 <= summary["wait_p50"] <= summary["wait_p90"] <= summary["wait_p99"] <= 0.1
    assert summary["ok"] + summary["unavailable"] == pytest.approx(1)
    low, high = summary["unavailable_ci"]
    assert low < summary["unavailable"] < high


def test_pool_summary_of_a_run_without_a_pool_table_uses_what_it_is_given():
    pool = PoolConfig(size=1, max_waiting=1, timeout=0.5)
    result = _orders(times=0.25, requests=3, pool=pool)
    del result.meta["pool"]  # as a live run: no acquire waits in the table
    blind = pool_summary(result)
    assert np.isnan(blind["timed_out"]) and np.isnan(blind["wait_p50"])
    # at 0 granted; at 0.25 waits and times out at 0.75; at 0.5 refused (one already waits)
    assert result.requests["status"].tolist() == [200, 503, 503]
    told = pool_summary(result, pool=pool, waits=[0.0])
    assert told["refused"] == pytest.approx(1 / 3) and told["timed_out"] == pytest.approx(1 / 3)
    assert told["wait_mean"] == 0 and told["granted"] == 1


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="rate"):
        pool_exhaustion_sim(rate=0, requests=10, pool=PoolConfig(), query_time=HOLD, seed=0)
    with pytest.raises(ValueError, match="requests"):
        pool_exhaustion_sim(rate=1, requests=0, pool=PoolConfig(), query_time=HOLD, seed=0)
    with pytest.raises(ValueError, match="pool"):
        pool_summary(simulate(Scenario(load=Load(rate=1, duration=1))), pool=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="config"):
        SimPool(simpy.Environment(), 2)  # type: ignore[arg-type]
