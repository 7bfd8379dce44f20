"""Several server instances built from ``ServerConfig``s: routing by the client's policy, faults
on some instances only, the ``instance`` column, the admission and queue seams, the paths."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    ClientPolicy,
    FixedLimit,
    RetryPolicy,
)
from atlas_sim.server_config import Dependency, ServerConfig
from atlas_sim.sim import Fault, Scenario, simulate
from atlas_sim.sim.scenarios import plain_queue
from atlas_sim.workload import Distribution, Load, rng_streams
from tests.helpers import Lifo, RecordingLimit
from tests.sim.test_traces import rows

SERVER = ServerConfig(workers=2, service_time=Distribution(mean=0.05))
NO_JITTER = Backoff(base=0.01, cap=0.01, jitter="none")


def test_one_config_runs_as_one_instance_or_three():
    load = Load(rate=30.0, duration=20.0)
    one = simulate(Scenario(load=load, server=SERVER))
    three = simulate(Scenario(load=Load(rate=90.0, duration=20.0), server=SERVER, instances=3))
    assert set(one.attempts["instance"]) == {0}
    assert set(three.attempts["instance"]) == {0, 1, 2}
    assert one.requests["ok"].all() and three.requests["ok"].all()


def test_next_instance_sends_each_instance_a_third_of_the_requests():
    run = simulate(Scenario(load=Load(rate=90.0, duration=30.0), server=SERVER, instances=3))
    first = run.attempts[run.attempts["attempt"] == 1]
    # request i goes to instance i mod 3: a third each (to one request)
    assert (first["instance"] == first["request_id"] % 3).all()
    counts = first["instance"].value_counts().to_numpy()
    assert counts.max() - counts.min() <= 1
    # each instance at 1/3 of the rate is the one-instance system at 30/s, so its waits are
    # those of an M/M/2 at 75%, or less (round robin arrivals are smoother than Poisson)
    mean_wait = first.groupby("instance")["queue_wait"].mean()
    alone = simulate(Scenario(load=Load(rate=30.0, duration=30.0), server=SERVER))
    assert (mean_wait < 1.2 * alone.attempts["queue_wait"].mean()).all()


def test_a_tuple_of_configs_gives_each_instance_its_own():
    slow = ServerConfig(workers=1, service_time=Distribution(mean=0.2, kind="constant"))
    fast = ServerConfig(workers=1, service_time=Distribution(mean=0.01, kind="constant"))
    run = simulate(Scenario(load=Load(rate=2.0, duration=10.0, process="constant"),
                            server=(slow, fast)))
    latency = run.attempts.groupby("instance")["latency"].max()
    assert latency[0] == pytest.approx(0.2) and latency[1] == pytest.approx(0.01)


def three_with_one_down(**client) -> Scenario:
    return Scenario(load=Load(rate=60.0, duration=10.0), server=SERVER, instances=3,
                    client=ClientPolicy(**client),
                    faults=(Fault(start=0.0, capacity=0.0, instances=(1,), name="dead"),),
                    seed=4)


def test_a_fault_on_one_instance_of_three_touches_only_its_attempts():
    run = simulate(three_with_one_down())
    a = run.attempts
    assert (a.loc[a["instance"] == 1, "status"] == 503).all()
    assert (a.loc[a["instance"] != 1, "status"] == 200).all()
    assert (a["instance"] == 1).sum() == pytest.approx(len(a) / 3, abs=1)
    # the events table says which instance the fault hit
    assert list(run.events["reason"]) == ["server down on instance 1"]


def test_with_a_retry_to_the_next_instance_every_request_succeeds():
    run = simulate(three_with_one_down(retry=RetryPolicy(max_attempts=2, backoff=NO_JITTER)))
    assert run.requests["ok"].all()
    a = run.attempts
    retries = a[a["attempt"] == 2]
    assert len(retries) == (a["status"] == 503).sum() > 0
    assert (retries["instance"] == 2).all()  # the one after the dead instance


def test_a_dependency_fault_on_one_instance_opens_only_its_breaker():
    dep = Dependency(latency=Distribution(mean=0.002), client=ClientPolicy(
        timeout=0.5, breaker=BreakerConfig(failure_threshold=3, recovery_timeout=100.0)))
    run = simulate(Scenario(
        load=Load(rate=30.0, duration=5.0),
        server=ServerConfig(workers=4, service_time=Distribution(mean=0.01), dependency=dep),
        instances=3,
        faults=(Fault(start=1.0, dependency_error_rate=1.0, instances=(2,)),), seed=2))
    breakers = run.events[run.events["kind"] == "breaker"]
    assert list(breakers["name"]) == ["dependency 2"]
    a = run.attempts
    assert (a.loc[a["instance"] != 2, "status"] == 200).all()
    assert (a.loc[(a["instance"] == 2) & (a["t_start"] > 1.0), "status"] == 503).all()


def test_same_seed_same_tables_with_instances_and_another_seed_other_tables():
    dep = Dependency(latency=Distribution(mean=0.005), error_rate=0.05, share=0.5,
                     client=ClientPolicy(timeout=0.1, retry=RetryPolicy(max_attempts=2)))
    s = Scenario(load=Load(rate=100.0, duration=10.0),
                 server=ServerConfig(workers=2, service_time=Distribution(mean=0.02),
                                     timeout=0.3, dependency=dep, admission=FixedLimit(
                                         max_concurrent=6)),
                 instances=3, client=ClientPolicy(timeout=0.5, retry=RetryPolicy()),
                 faults=(Fault(start=3.0, end=6.0, capacity=0.3, instances=(0,)),), seed=8)
    a, b = simulate(s), simulate(s)
    pd.testing.assert_frame_equal(a.attempts, b.attempts)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not a.attempts.equals(simulate(s.replace(seed=9)).attempts)


def test_each_instance_draws_its_own_service_times():
    # constant arrivals round robin onto two identical instances: their work differs because
    # instance 1 has streams of its own (rng_streams(seed, instance=1))
    run = simulate(Scenario(load=Load(rate=4.0, duration=5.0, process="constant"),
                            server=ServerConfig(workers=1, service_time=Distribution(mean=0.05)),
                            instances=2, seed=1))
    a = run.attempts
    zero = a.loc[a["instance"] == 0, "latency"].to_numpy()
    one = a.loc[a["instance"] == 1, "latency"].to_numpy()
    alone = simulate(Scenario(load=Load(rate=2.0, duration=5.0, process="constant"),
                              server=ServerConfig(workers=1,
                                                  service_time=Distribution(mean=0.05)),
                              seed=1)).attempts["latency"].to_numpy()
    assert np.array_equal(zero, alone)  # instance 0 draws what a single server draws
    # instance 1 draws from its own service stream (no request waits: they are 0.5 s apart)
    draw = Distribution(mean=0.05).sampler(rng_streams(1, instance=1)["service"])
    assert np.allclose(one, [draw() for _ in one], rtol=0, atol=1e-12)


# --- the routing seam: the router sees the client's attempts in flight per instance --------


@dataclass(frozen=True)
class AlwaysFirst:
    """A test router config: every attempt to instance 0, writing down what it was shown."""

    seen: list = field(default_factory=list, compare=False)

    def build(self, rng=None):
        self.seen.append(("rng", isinstance(rng, np.random.Generator)))
        return self

    def choose(self, *, request, attempt, outstanding):
        self.seen.append((request, attempt, tuple(outstanding)))
        return 0


def test_the_router_sees_the_attempts_in_flight_per_instance():
    router = AlwaysFirst()
    # a request every 10 ms, one worker, 105 ms each: the first answer comes at 0.105 s
    run = simulate(Scenario(
        load=Load(rate=100.0, duration=0.15, process="constant"),
        server=ServerConfig(workers=1, service_time=Distribution(mean=0.105, kind="constant")),
        instances=3, client=ClientPolicy(routing=router)))
    assert router.seen == [("rng", True)] + [(i, 1, (i - (i >= 11), 0, 0)) for i in range(15)]
    assert set(run.attempts["instance"]) == {0}


# --- the admission seam: the limiter is told each admitted attempt's latency and outcome -----


def test_the_admission_limiter_is_told_each_latency_and_whether_it_was_dropped():
    limit = RecordingLimit(max_concurrent=8)
    run = simulate(Scenario(
        load=Load(rate=80.0, duration=20.0),
        server=ServerConfig(workers=2, service_time=Distribution(mean=0.03), timeout=0.2,
                            admission=limit),
        instances=2, client=ClientPolicy(timeout=1.0),
        faults=(Fault(start=5.0, end=8.0, capacity=0.0, instances=(1,)),), seed=3))
    assert len(limit.built) == 2  # one limiter per instance
    a = run.attempts
    for k, limiter in enumerate(limit.built):
        mine = a[a["instance"] == k]
        admitted = mine[~mine["status"].isin([429, 503])]
        assert limiter.in_flight == 0 and limiter.acquired == len(admitted) == len(
            limiter.released)
        dropped = [d for _, d in limiter.released]
        assert sum(dropped) == (admitted["status"] != 200).sum()
        # served: the latency since admission is the attempt's (no round trip here)
        served = sorted(round(t, 9) for t, d in limiter.released if not d)
        assert served == sorted(admitted.loc[admitted["status"] == 200, "latency"].round(9))
    statuses = set(a["status"])
    assert {200, 429, 503, 504} <= statuses  # shed, down, timed out: all were exercised


# --- the queue seam: another discipline changes the order of service ----------------------


def four_at_once(queue=None, timeout=None) -> Scenario:
    """Requests at 0, 10, 20 and 30 ms; one worker, 0.1 s of constant work each."""
    server = ServerConfig(workers=1, service_time=Distribution(mean=0.1, kind="constant"),
                          timeout=timeout, **({"queue": queue} if queue else {}))
    return Scenario(load=Load(rate=100.0, duration=0.04, process="constant"), server=server)


def test_a_queue_discipline_decides_the_order_of_service():
    fifo = simulate(four_at_once())
    lifo = simulate(four_at_once(Lifo()))
    assert list(fifo.meta["server_log"]["request_id"]) == [0, 1, 2, 3]
    assert list(lifo.meta["server_log"]["request_id"]) == [0, 3, 2, 1]


def test_the_server_timeout_reaps_the_oldest_whatever_the_discipline():
    # LIFO with HTTP_TIMEOUT 0.25 s: 3 is served 0.1-0.2; 2 starts at 0.2 but is cut at its
    # deadline 0.27 (504); 1, still queued, is reaped at its deadline 0.26 (504).
    run = simulate(four_at_once(Lifo(), timeout=0.25))
    assert [(r[0], r[2], r[4]) for r in rows(run.requests)] == [
        (0, 0.1, 200), (1, 0.26, 504), (2, 0.27, 504), (3, 0.2, 200)]


def test_drop_expired_skips_with_any_discipline():
    server = ServerConfig(workers=1, service_time=Distribution(mean=0.1, kind="constant"),
                          queue=Lifo(), drop_expired=True)
    run = simulate(Scenario(load=Load(rate=100.0, duration=0.04, process="constant"),
                            server=server, client=ClientPolicy(timeout=0.25)))
    # at 0.2 s request 2 (deadline 0.27) cannot be done by 0.3: skipped; so is 1
    assert list(run.meta["server_log"]["request_id"]) == [0, 3]


# --- the paths: the model's handler, /api/work and /api/compose ---------------------------

SLOW_DEPENDENCY = Dependency(latency=Distribution(mean=0.5, kind="constant"))


def test_the_work_path_never_calls_the_dependency():
    server = ServerConfig(workers=1, service_time=Distribution(mean=0.1, kind="constant"),
                          dependency=SLOW_DEPENDENCY)
    load = Load(rate=1.0, duration=3.0, process="constant")
    model = simulate(Scenario(load=load, server=server))
    work = simulate(Scenario(load=load, server=server, path="/api/work"))
    assert list(model.requests["latency"].round(9)) == [0.6] * 3
    assert list(work.requests["latency"].round(9)) == [0.1] * 3


def test_the_compose_path_has_no_worker_and_no_queue_and_calls_for_every_request():
    server = ServerConfig(workers=1, service_time=Distribution(mean=0.1, kind="constant"),
                          dependency=Dependency(latency=Distribution(mean=0.5, kind="constant"),
                                                share=0.0),
                          admission=FixedLimit(max_concurrent=3))
    run = simulate(Scenario(load=Load(rate=100.0, duration=0.05, process="constant"),
                            server=server, path="/api/compose"))
    # five at once, one "worker": none queues, each waits for its own call; the limit holds
    assert [r[4] for r in rows(run.requests)] == [200, 200, 200, 429, 429]
    ok = run.attempts[run.attempts["status"] == 200]
    assert (ok["latency"].round(9) == 0.5).all() and (ok["queue_wait"] == 0).all()


def test_plain_queue_takes_workers_and_refuses_servers():
    assert plain_queue(0.5, workers=2).server.workers == 2
    with pytest.raises(ValueError, match=r"plain_queue\(servers=\.\.\.\) is no longer a "
                                         r"parameter: write workers="):
        plain_queue(0.5, servers=2)
