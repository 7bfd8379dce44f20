"""The canonical experiments teach what their docstrings say."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlas_sim.sim import simulate
from atlas_sim.sim.scenarios import (
    RETRY_STORM_FIXES,
    compare_contention,
    contention,
    dependency_outage,
    fanout,
    overload_spike,
    plain_queue,
    retry_storm,
    slow_request_probability,
    thundering_herd,
)


def window(run, start, end):
    r = run.requests
    return r[(r["t_start"] >= start) & (r["t_start"] < end)]


def test_contention_orderings_at_100_clients():
    table = compare_contention(100, seeds=range(10))
    work = table["work"]
    assert work.idxmin() == "full" and work.idxmax() == "no_backoff"
    # Without jitter, clients who collided together keep colliding: the slowest to finish.
    assert table["completion_time"].idxmax() == "none"
    assert work["none"] > work["equal"] and work["none"] > work["decorrelated"]


#: The post's simulator at 100 clients, 5000 runs per strategy (tests/reference/README.md).
AWS = pd.read_csv(Path(__file__).parents[1] / "reference" / "contention_aws.csv",
                  index_col="strategy")


def test_contention_matches_the_posts_simulator_within_sampling_error():
    seeds = 400  # the first 400: enough for the completion time's spread (a maximum), ~5 s
    table = compare_contention(100, seeds=range(seeds))
    assert set(table.index) == set(AWS.index)
    off = []
    for strategy, ref in AWS.iterrows():
        for column in ("work", "completion_time"):
            # the same model: the same spread; the difference of two independent means
            # then has this standard error, and 4 of them bound it (p ~ 6e-5 per number)
            sd = ref[f"{column}_sd"]
            error = sd * math.sqrt(1 / seeds + 1 / ref["runs"])
            ours = table.loc[strategy, column]
            if abs(ours - ref[column]) > 4 * error:
                off.append((strategy, column, round(ours, 3), ref[column], round(error, 3)))
    assert off == []


def test_the_notebooks_copy_of_the_posts_numbers_is_the_reference():
    from atlas_sim.experiments.retries import POST_CONTENTION

    pd.testing.assert_frame_equal(POST_CONTENTION.loc[AWS.index],
                                  AWS[["work", "completion_time"]], check_names=False)


def test_the_first_backoff_is_numbered_as_in_the_posts_simulator():
    # its client raises the attempt count before backing off: the first wait's ceiling is
    # 2 * base (10 ms), and numbering from 0 (5 ms) does about 10% more work with full jitter
    atlas = compare_contention(100, seeds=range(40), strategies=["full", "decorrelated"])
    from_zero = compare_contention(100, seeds=range(40), strategies=["full", "decorrelated"],
                                   first_exponent=0)
    assert from_zero.loc["full", "work"] > 1.05 * atlas.loc["full", "work"]
    assert from_zero.loc["decorrelated"].equals(atlas.loc["decorrelated"])  # it has no count
    # two clients, every message 1 ms, no jitter: one conflict, then one wait
    for first_exponent, wait in ((1, 0.010), (0, 0.005)):
        run = contention(2, "none", seed=0, network_mean=0.001, network_sd=0.0,
                         first_exponent=first_exponent)
        loser = run.attempts[run.attempts["status"] == 409].iloc[0]
        retry = run.attempts[(run.attempts["request_id"] == loser["request_id"])
                             & (run.attempts["attempt"] == 2)].iloc[0]
        # the retry's write leaves after the conflict's answer, the wait and a read's round trip
        assert retry["t_start"] - loser["t_end"] == pytest.approx(wait + 0.002)


def test_contention_returns_the_usual_tables():
    run = contention(20, "full", seed=1)
    assert len(run.requests) == 20 and run.requests["ok"].all()
    assert run.meta["work"] == len(run.attempts) == run.requests["attempts"].sum()
    assert set(run.attempts["status"]) <= {200, 409}
    assert (run.attempts["status"] == 200).sum() == 20  # each client wins exactly once
    with pytest.raises(ValueError, match="jitter must be one of 'no_backoff'"):
        contention(10, "random")  # type: ignore[arg-type]


@pytest.mark.parametrize("fix", RETRY_STORM_FIXES)
def test_retry_storm_stays_down_unless_something_reduces_the_work(fix):
    run = simulate(retry_storm(fix))
    before, after = window(run, 0, 15), window(run, 40, 60)
    assert before["ok"].mean() > 0.95  # healthy before the capacity drop
    if fix in ("none", "backoff"):
        assert after["ok"].mean() < 0.05  # metastable: still failing long after recovery
    else:
        assert after["ok"].mean() > 0.99  # the fix lets the system recover


def test_retry_storm_is_retries_amplifying_load():
    stuck = simulate(retry_storm("none")).summary()
    budgeted = simulate(retry_storm("budget")).summary()
    assert stuck["amplification"] > 3.0 and budgeted["amplification"] < 1.2


def test_jitter_breaks_up_the_thundering_herd():
    in_step = simulate(thundering_herd(jitter="none"))
    jittered = simulate(thundering_herd(jitter="full"))
    after = slice(int(2.0 / 0.05), None)  # windows after the outage ends
    peak = {name: run.timeseries(0.05)["attempts"].iloc[after].max()
            for name, run in (("none", in_step), ("full", jittered))}
    assert peak["none"] > 2 * peak["full"]
    assert in_step.summary()["error_rate"] > 10 * jittered.summary()["error_rate"]
    shed = {name: (run.attempts["status"] == 429).sum()
            for name, run in (("none", in_step), ("full", jittered))}
    assert shed["none"] > 2 * shed["full"]


def test_a_breaker_keeps_the_healthy_half_fast_during_a_dependency_outage():
    without, with_ = (simulate(dependency_outage(breaker=b)) for b in (False, True))
    during = [window(run, 12, 25) for run in (without, with_)]
    assert np.median(during[0]["latency"]) > 1.0  # everyone queues behind doomed calls
    assert np.median(during[1]["latency"]) < 0.05  # fail fast, keep serving the rest
    assert during[1]["ok"].mean() == pytest.approx(0.5, abs=0.06)  # the healthy half
    assert window(with_, 30, 40)["ok"].all()  # the breaker closed after recovery


def test_shedding_keeps_admitted_requests_fast_through_an_overload_spike():
    without, with_ = (simulate(overload_spike(shedding=s)) for s in (False, True))
    assert np.percentile(window(without, 10, 20)["latency"], 50) > 2.0
    assert np.percentile(window(with_, 10, 20)["latency"], 99) < 1.0
    assert (with_.requests["status"] == 429).any() and not (without.requests["status"] == 429).any()
    # after the spike the shedding server is back to normal at once; the other drains for long
    assert np.median(window(with_, 20, 30)["latency"]) < 0.2
    assert np.median(window(without, 20, 30)["latency"]) > 2.0


def test_fanout_amplifies_the_tail_as_one_minus_one_minus_p_to_the_n():
    assert slow_request_probability(100, 0.01) == pytest.approx(0.634, abs=1e-3)
    run = fanout(width=100, slow_rate=0.01, requests=4000, seed=3)
    share_slow = (run.requests["latency"] >= 1.0).mean()
    se = np.sqrt(0.634 * 0.366 / 4000)
    assert share_slow == pytest.approx(slow_request_probability(100, 0.01), abs=4 * se)
    assert len(run.attempts) == 400_000
    one = fanout(width=1, slow_rate=0.01, requests=4000, seed=3)
    assert (one.requests["latency"] >= 1.0).mean() < 0.02


def test_plain_queue_has_the_utilisation_asked_for():
    s = plain_queue(0.8, workers=2, service_time_mean=0.05)
    assert s.utilisation == pytest.approx(0.8) and s.load.rate == pytest.approx(32.0)
