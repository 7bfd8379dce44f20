"""A hedged client in both worlds against the closed form of ``analysis/tail.py`` (issue 21,
item 6's done-when): the live generator (``run_load`` with ``ClientPolicy(hedge=...)``) against
a ``Cluster`` built from ``ENOUGH``, and the event engine (``simulate`` of a ``Scenario`` built
from the very same ``ServerConfig`` object), against ``TailModel.two_point`` of the service time
both draw from.

The service time is the closed form's shape: 5 ms, or 100 ms for one request in ten
(``Distribution(kind="two_point")``), on enough workers that no copy queues. Hedging after
``DELAY`` = 30 ms, a request is slower than ``THRESHOLD`` = 70 ms only if both its copies are
slow: the closed form says 1% (one in ten squared), against 10% unhedged. 70 ms sits between the
hedge's answer (30 + 5 ms, plus the live round trip of a few ms) and the slow one's 100 ms, so the
share above it does not depend on the host's overhead: the comparison is of shares within
binomial sampling error, with a small one-sided allowance for a fast request that a busy host
delays past 70 ms. The quantiles are checked against bounds the closed form fixes (the service
cannot answer before its drawn time), never against a host's timing.

It can fail: with one worker the hedge queues behind the slow copy it was meant to overtake (on
the same instance; and a cancelled copy's work goes on, as the service does not stop work whose
client left), and the tail is nowhere near the closed form's: the closed form assumes copies
that never wait for one another."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from atlas_sim.analysis.tail import TailModel
from atlas_sim.policies import ClientPolicy, HedgePolicy, Status
from atlas_sim.results import RunResult
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import Cluster, run_load
from atlas_sim.sim import Scenario, simulate
from atlas_sim.sim.fanout import CANCELLED
from atlas_sim.workload import Distribution, Load

SERVICE_TIME = Distribution(mean=0.0145, kind="two_point", slow_share=0.1, slow_ratio=20)
MODEL = TailModel.two_point(SERVICE_TIME)
FAST, SLOW = SERVICE_TIME.two_point_values()
DELAY = 0.03
THRESHOLD = 0.07
HEDGED = ClientPolicy(hedge=HedgePolicy(delay=DELAY))
ENOUGH = ServerConfig(workers=64, service_time=SERVICE_TIME)  # no copy queues at RATE
REQUESTS = 1000
RATE = 250.0  # about 4 requests in flight: no queue on 64 workers
# a fast request a busy host delays past THRESHOLD: at most this share, on top of sampling error
HOST_ALLOWANCE = 0.005


def agrees(measured: float, expected: float, n: int, allowance: float = HOST_ALLOWANCE) -> bool:
    """A share measured over ``n`` requests agrees with the closed form within 4 binomial
    standard errors, and a host allowance upwards only (a host adds latency, never removes)."""
    se = np.sqrt(expected * (1 - expected) / n)
    return expected - 4 * se <= measured <= expected + 4 * se + allowance


def slower_than(run, t: float) -> float:
    return float((run.requests["latency"].to_numpy() > t).mean())


def test_the_closed_form_is_what_the_test_assumes():
    assert pytest.approx((0.005, 0.1)) == (FAST, SLOW)
    assert MODEL.survival(THRESHOLD) == pytest.approx(0.1)
    assert MODEL.hedged_survival(THRESHOLD, DELAY) == pytest.approx(0.01)
    assert MODEL.extra_calls(DELAY) == pytest.approx(0.1)
    assert MODEL.quantile(0.98, delay=DELAY) == pytest.approx(DELAY + FAST)
    assert MODEL.quantile(0.98) == pytest.approx(SLOW)
    assert CANCELLED == Status.CANCELLED  # one convention for a cancelled copy, both worlds


def test_the_simulated_twin_follows_the_closed_form():
    n = 20_000
    run = simulate(Scenario(server=ENOUGH, path="/api/work", load=Load(rate=RATE, requests=n),
                            client=HEDGED, seed=7))
    assert agrees(slower_than(run, THRESHOLD), 0.01, n, allowance=0)
    hedges = int((run.attempts["attempt"] == 2).sum())
    assert agrees(hedges / n, MODEL.extra_calls(DELAY), n, allowance=0)
    assert MODEL.quantile(0.98, delay=DELAY) == pytest.approx(
        float(np.percentile(run.requests["latency"], 98)))


@pytest.mark.live
def test_a_hedged_live_run_follows_the_closed_form_and_one_worker_breaks_it(capsys):
    one = ServerConfig(workers=1, service_time=SERVICE_TIME)
    # the service runs in this process: a full collection of what earlier tests left (tens of
    # ms with pandas loaded) would stall it and make fast requests slow (seen in a full run:
    # 16% past 70 ms against 10%); the objects made so far are set aside, as live_omission does
    gc.collect()
    gc.freeze()
    try:
        plain, hedged, queued = _three_runs(one)
    finally:
        gc.unfreeze()
    for run in (plain, hedged, queued):
        assert (run.requests["status"] == 200).all(), run.requests["status"].value_counts()
    n = REQUESTS
    plain_share, hedged_share = slower_than(plain, THRESHOLD), slower_than(hedged, THRESHOLD)
    assert agrees(plain_share, MODEL.survival(THRESHOLD), n)  # 10%
    assert agrees(hedged_share, MODEL.hedged_survival(THRESHOLD, DELAY), n)  # 1%
    # the extra load: a hedge for every request still out at the delay, S(d) = 10%
    second = hedged.attempts[hedged.attempts["attempt"] == 2]
    assert agrees(len(second) / n, MODEL.extra_calls(DELAY), n)
    # every hedged request has exactly one loser, cancelled; nothing else is
    a = hedged.attempts
    losers = a[a["status"] == Status.CANCELLED]
    assert sorted(losers["request_id"]) == sorted(second["request_id"])
    # quantiles against the closed form: the p98 is a slow request's (100 ms) unhedged, the
    # hedge's answer (30 + 5 ms) hedged; live adds a round trip, less than the gap to 70 ms
    p98_plain, p98_hedged = (float(np.percentile(r.requests["latency"], 98))
                             for r in (plain, hedged))
    assert p98_plain >= MODEL.quantile(0.98)
    assert MODEL.quantile(0.98, delay=DELAY) <= p98_hedged < THRESHOLD
    # one worker: the hedge waits behind the slow copy it should overtake; no closed form holds
    queued_share = slower_than(queued, THRESHOLD)
    assert not agrees(queued_share, MODEL.hedged_survival(THRESHOLD, DELAY),
                      len(queued.requests))
    assert queued_share > 0.05
    with capsys.disabled():
        round_trip = float(np.median(plain.requests["latency"])) - FAST
        print(f"\nhedged twins: share > {THRESHOLD * 1e3:.0f} ms plain {plain_share:.4f} "
              f"(theory 0.1), hedged {hedged_share:.4f} (theory 0.01), hedges "
              f"{len(second) / n:.4f} (theory 0.1), one worker {queued_share:.4f}; "
              f"p50 plain {np.median(plain.requests['latency']) * 1e3:.1f} ms, hedged "
              f"{np.median(hedged.requests['latency']) * 1e3:.1f} ms (theory 5.0), p98 plain "
              f"{p98_plain * 1e3:.1f} ms (theory 100), hedged {p98_hedged * 1e3:.1f} ms "
              f"(theory 35), p99 plain "
              f"{np.percentile(plain.requests['latency'], 99) * 1e3:.1f}, hedged "
              f"{np.percentile(hedged.requests['latency'], 99) * 1e3:.1f} ms; round trip "
              f"{round_trip * 1e3:.1f} ms")


def _three_runs(one: ServerConfig) -> tuple[RunResult, RunResult, RunResult]:
    with Cluster([ENOUGH, one], seed=3, name="hedged-twins") as cluster:
        wide, narrow = cluster.urls
        load = Load(rate=RATE, requests=REQUESTS)
        # the generator in a child process of its own, as notebook 03's live tail runs it: in
        # the service's process, the two share one interpreter lock and a hedge's timer fires
        # late whenever the service is busy (measured: 1-3% of requests past 70 ms, and in
        # some runs far more, against 1.0-1.3% from a child)
        plain = run_load(wide, load=load, seed=1, progress=False, processes=1)
        hedged = run_load(wide, load=load, client=HEDGED, seed=2, progress=False, processes=1)
        queued = run_load(narrow, load=Load(rate=20.0, requests=100), client=HEDGED, seed=4,
                          progress=False, processes=1)
    return plain, hedged, queued
