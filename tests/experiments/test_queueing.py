"""Notebook 03's queueing section: the hockey stick against Erlang C, head-of-line blocking
against its hand-computed trace, the panel, and (live) the service's own counts against the
generator's."""

from __future__ import annotations

import heapq
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from atlas_sim.analysis.queueing import MMc
from atlas_sim.config import Settings
from atlas_sim.experiments import queueing
from atlas_sim.policies import FixedLimit
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import LiveServer, create_app
from atlas_sim.workload import Distribution


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_the_hockey_stick_agrees_with_erlang_c_within_its_interval():
    table = queueing.hockey_stick(workers=(1, 2, 8), utilisations=(0.5, 0.8),
                                  customers=20_000, seed=4)
    assert list(table["workers"]) == [1, 1, 2, 2, 8, 8]
    for row in table.to_dict("records"):
        theory = MMc(arrival_rate=row["utilisation"] * row["workers"], service_rate=1.0,
                     workers=row["workers"])
        assert row["W/S Erlang C"] == pytest.approx(theory.W)
        assert row["p99/S Erlang C"] == pytest.approx(theory.quantile(0.99))
        assert row["W/S low"] <= theory.W <= row["W/S high"], row
        assert row["requests"] > 18_000
    # the hockey stick itself: at 80% one worker is five service times, eight workers 1.29
    assert table["W/S Erlang C"].iloc[1] == pytest.approx(5.0)
    assert table["W/S Erlang C"].iloc[5] == pytest.approx(1.286, abs=1e-3)
    figure = queueing.plot_hockey_stick(table)
    assert len(figure.axes) == 2


# -- the interval's coverage, over many seeds ------------------------------------------------


def mmc_response_times(workers: int, utilisation: float, customers: int, seed: int,
                       warmup: float = 0.05) -> np.ndarray:
    """Response times of a FIFO M/M/c queue with mean service 1, started empty, in arrival
    order, those that arrived in the first ``warmup`` share of the run dropped: the series
    ``hockey_stick`` measures, drawn fast. One worker: Lindley's recursion as a running
    minimum of partial sums; c workers: Kiefer and Wolfowitz's, each arrival taking the
    worker that frees first."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / (utilisation * workers), customers))
    service = rng.exponential(1.0, customers)
    if workers == 1:
        steps = np.cumsum(np.r_[0.0, service[:-1] - np.diff(arrivals)])
        wait = steps - np.minimum.accumulate(np.minimum(steps, 0.0))
        response = wait + service
    else:
        free, done = [0.0] * workers, []
        for arrival, work in zip(arrivals.tolist(), service.tolist(), strict=True):
            end = (arrival if arrival > free[0] else free[0]) + work
            heapq.heapreplace(free, end)
            done.append(end)
        response = np.asarray(done) - arrivals
    return response[arrivals >= warmup * arrivals[-1]]


def coverage(workers: int, utilisation: float, seeds: int) -> float:
    """Share of ``mean_interval``'s 95% intervals, over ``seeds`` runs of 10 000 customers,
    that hold Erlang C's mean response time."""
    truth = MMc(arrival_rate=utilisation * workers, service_rate=1.0, workers=workers).W
    held = [queueing.mean_interval(mmc_response_times(workers, utilisation, 10_000, seed))
            .contains(truth) for seed in range(seeds)]
    return float(np.mean(held))


def test_the_fast_queue_is_the_queue_the_simulator_runs():
    # the same M/M/c: means within sampling error of Erlang C
    for workers, utilisation in ((1, 0.8), (2, 0.8), (8, 0.9)):
        means = [mmc_response_times(workers, utilisation, 10_000, s).mean() for s in range(40)]
        truth = MMc(arrival_rate=utilisation * workers, service_rate=1.0,
                    workers=workers).W
        assert np.mean(means) == pytest.approx(truth, rel=0.03)


@pytest.mark.parametrize(("workers", "utilisation", "seeds", "at_least"), [
    # 0.8 (about 140 relaxation times): about 93% measured over 1000 seeds
    (1, 0.8, 1000, 0.91), (2, 0.8, 300, 0.90), (8, 0.8, 300, 0.90),
    # 0.9 (29 relaxation times, flagged): about 91%; 20 short batches held 83.5%
    (1, 0.9, 1000, 0.88),
])
def test_the_interval_holds_erlang_c_about_as_often_as_it_says(workers, utilisation, seeds,
                                                               at_least):
    # each bound is about three binomial standard deviations below what was measured
    assert coverage(workers, utilisation, seeds) >= at_least


def test_a_run_too_short_for_an_honest_interval_says_so():
    table = queueing.hockey_stick(workers=(1,), utilisations=(0.8, 0.9), customers=10_000,
                                  seed=3)
    assert list(table["note"]) == ["", queueing.SHORT_RUN_NOTE]
    # 10 000 customers at 0.9: 29 relaxation times of 380 service times
    assert table["relaxation times"].iloc[1] == pytest.approx(
        0.95 * 10_000 / 0.9 / 379.7, rel=0.05)
    longer = queueing.hockey_stick(workers=(8,), utilisations=(0.9,), customers=40_000, seed=3)
    assert list(longer["note"]) == [""]
    figure = queueing.plot_hockey_stick(table)
    labels = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    assert f"hollow: {queueing.SHORT_RUN_NOTE}" in labels


def test_relaxation_times_by_hand():
    # M/M/1: 1 / (1 - sqrt(rho))^2 service times; M/M/c: the queue beyond c, rate c mu
    assert MMc(arrival_rate=0.9, service_rate=1.0).relaxation_time == pytest.approx(
        1 / (1 - math.sqrt(0.9)) ** 2)
    assert MMc(arrival_rate=1.6, service_rate=1.0, workers=2).relaxation_time == pytest.approx(
        1 / (math.sqrt(2) - math.sqrt(1.6)) ** 2)
    assert MMc(arrival_rate=0.8, service_rate=1.0, workers=8).relaxation_time == 1.0


def test_the_hockey_stick_refuses_bad_input():
    with pytest.raises(ValueError, match="utilisation must be a number > 0 and < 1"):
        queueing.hockey_stick(utilisations=(1.0,))
    with pytest.raises(ValueError, match="customers must be an integer >= 1000"):
        queueing.hockey_stick(customers=10)
    with pytest.raises(ValueError, match="workers must be an integer >= 1 and <= 64"):
        queueing.hockey_stick(workers=(0,))


@pytest.mark.parametrize("function", [queueing.hockey_stick, queueing.head_of_line])
def test_the_old_name_servers_is_refused_with_the_new_one(function):
    with pytest.raises(ValueError, match=rf"{function.__name__}\(servers=\.\.\.\) is no longer "
                                         r"a parameter: write workers=\.\.\."):
        function(servers=(1,))
    with pytest.raises(TypeError, match="unexpected keyword argument 'server'"):
        function(server=(1,))


def test_one_slow_request_delays_everyone_behind_it_with_one_worker():
    runs = queueing.head_of_line(workers=(1,), utilisation=0.8, service_time=0.02, slow=1.0,
                                 at=2.0, duration=8.0)
    req = runs["c = 1"].requests
    latency = req["latency"].to_numpy()
    # sends every 25 ms; the one sent at 2.0 s (the 81st) takes 1.02 s and ends at 3.02 s.
    # Request j behind it starts when the one before it ends, at 3.02 + 0.02 (j - 1), and
    # ends 20 ms later: its latency is 3.02 + 0.02 j - (2.0 + 0.025 j) = 1.02 - 0.005 j,
    # until j = 200, where the queue has caught up.
    slow = 80
    assert req["t_start"].iloc[slow] == pytest.approx(2.0)
    assert latency[slow] == pytest.approx(1.02)
    j = np.arange(1, 200)
    assert latency[slow + j] == pytest.approx(1.02 - 0.005 * j)
    assert latency[:slow] == pytest.approx(0.02) and latency[slow + 200:] == pytest.approx(0.02)
    table = queueing.head_of_line_table(runs)
    row = table.loc["c = 1"]
    assert row["requests delayed"] == 199 and row["worst delayed (s)"] == pytest.approx(1.015)
    # the busy period a 1.02 s job starts at rho = 0.8 lasts 1.02 / 0.2 = 5.1 s (fluid)
    assert row["fluid estimate (s)"] == pytest.approx(5.1)
    assert row["disturbed for (s)"] == pytest.approx(5.1, rel=0.03)


def test_more_workers_absorb_the_slow_request():
    runs = queueing.head_of_line(workers=(1, 2, 8))
    table = queueing.head_of_line_table(runs)
    assert list(table.index) == ["c = 1", "c = 2", "c = 8"] and table.index.name == "workers"
    assert list(table["slow request (s)"]) == pytest.approx([1.02, 1.02, 1.02])
    worst = table["worst delayed (s)"]
    assert worst["c = 1"] > worst["c = 2"] > worst["c = 8"] == 0.0
    assert table.loc["c = 8", "requests delayed"] == 0
    # c = 2 at 0.8: the other worker takes 50 of 80 requests/s; the backlog clears after
    # 1.02 / (2 * 0.2) = 2.55 s
    assert table.loc["c = 2", "fluid estimate (s)"] == pytest.approx(2.55)
    assert table.loc["c = 2", "disturbed for (s)"] == pytest.approx(2.55, rel=0.03)
    assert len(queueing.plot_head_of_line(runs).axes) == 1
    with pytest.raises(ValueError, match="at must be a number > 0 and <= 4"):
        queueing.head_of_line(at=5.0)


def test_the_panel_answers_its_sliders_with_theory_beside_the_simulation():
    panel = queueing.queueing_panel(seed=1)
    view = panel.update()
    assert view.params == {"workers": 1, "utilisation": 0.8, "service": "exponential"}
    table = view.table
    assert table.loc["M/M/1, Erlang C (exponential)", "W/S"] == "5.00"
    assert table.loc["M/G/1, Pollaczek-Khinchine (exact)", "W/S"] == "5.00"
    assert len(view.figure.axes) == 2
    # lognormal sigma 1 on one worker: 1 + 4 (1 + (e - 1)) / 2 = 1 + 2 e service times
    lognormal = panel.update(service="lognormal").table
    expected = f"{1 + 2 * math.e:.2f}"
    assert lognormal.loc["M/G/1, Pollaczek-Khinchine (exact)", "W/S"] == expected
    eight = panel.update(workers=8, service="constant").table
    assert "M/G/8, Allen-Cunneen (approx.)" in eight.index
    simulated = float(eight.iloc[0]["W/S"].split(" [")[0])
    assert 1.0 < simulated < 1.29  # constant service waits less than M/M/8's 1.29
    assert eight.iloc[0]["note"] == ""
    # 6000 requests at 95% on one worker: 4 relaxation times, which the panel says
    near = panel.update(workers=1, utilisation=0.95, service="exponential")
    assert near.table.iloc[0]["note"] == queueing.SHORT_RUN_NOTE
    assert int(near.table.iloc[0]["relaxation times"]) < 10
    assert queueing.SHORT_RUN_NOTE in [t.get_text() for t in
                                       near.figure.axes[0].get_legend().get_texts()][-1]
    assert panel.update(workers=1, service="exponential").cached
    with pytest.raises(ValueError, match="service must be one of"):
        panel.update(service="pareto")
    with pytest.raises(ValueError, match="workers must be one of"):
        panel.update(workers=3)


# -- live ------------------------------------------------------------------------------------


@pytest.mark.live
def test_the_services_metrics_and_the_generator_agree_on_request_counts():
    """A short, bounded live sweep (two points of 1 s, about 80 requests) against a service
    that sheds above 2 requests in progress, so both 200 and 429 answers are counted."""
    config = ServerConfig(workers=1, service_time=Distribution(mean=0.02),
                          admission=FixedLimit(max_concurrent=2),
                          timeout=Settings().http_timeout)
    app = create_app(Settings(), server=config, seed=5)
    with LiveServer(app, name="test-queueing-counts") as server:
        sweep = queueing.live_sweep(server, utilisations=(0.5, 1.4), seconds=1.0,
                                    progress=False)
    # the sweep holds the very config the app was built from: its twin runs that object
    assert sweep.server is config and sweep.workers == 1 and sweep.seed == 5
    counts = queueing.count_table(sweep)
    assert (counts["difference"] == 0).all(), counts.to_string()
    assert counts["generator"].sum() == sum(len(p.run.attempts) for p in sweep.points)
    statuses = set(counts.index.get_level_values("status"))
    assert 200 in statuses and 429 in statuses, counts.to_string()
    for point in sweep.points:
        assert len(point.run.requests) == point.run.meta["scheduled"]

    little = queueing.littles_law_table(sweep)
    assert (little["gauge readings"] >= 10).all() and (little["L (gauge)"] > 0).all()
    assert (little["λ (1/s)"] == [len(p.run.requests) / 1.0 for p in sweep.points]).all()

    table = queueing.live_table(sweep)
    assert list(table["requests"]) == [len(p.run.requests) for p in sweep.points]
    assert np.isfinite(table["W/S twin"]).all() and (table["round trip (ms)"] > 0).all()
    saturated = table["utilisation (measured)"] >= 1  # kept, and labelled as such
    assert (table.loc[saturated, "steady state"] == queueing.SATURATED).all()
    assert (table.loc[~saturated, "steady state"] == "yes").all()
    assert table["measurement"].str.match("healthy$|spoiled by the host's load: ").all()
    assert len(queueing.plot_hockey_stick(queueing.hockey_stick(workers=(1,),
                                                                utilisations=(0.5,)),
                                          table).axes) == 2


def test_a_live_sweep_refuses_an_unbounded_run():
    class Fake:
        class app:
            class state:
                class atlas:
                    seed = 0
                    server = ServerConfig(workers=2, service_time=Distribution(mean=0.02))

    with pytest.raises(ValueError, match="at most 60 s of load"):
        queueing.live_sweep(Fake(), utilisations=(0.5,) * 5, seconds=15.0)
    with pytest.raises(ValueError, match=r"utilisation must be a number > 0 and <= 1\.5"):
        queueing.live_sweep(Fake(), utilisations=(2.0,))
