"""The simulated home timelines: the schedule, the approaches' costs and order, database work
as the live store counts it, the fan-out's delivery lag, the calibration's fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_sim.policies.pool import PoolConfig
from atlas_sim.server_config import EventLogConfig, ServerConfig, TimelineConfig
from atlas_sim.sim.timelines import (
    TimelineCostModel,
    calibrate_timelines,
    rows_scanned,
    simulate_timelines,
    timeline_schedule,
)
from atlas_sim.social import SocialGraph

COST = TimelineCostModel(overhead=0.002, query_base=0.004, per_row=2e-5, cache_read=0.0003,
                         post_insert=0.002, fanout_base=0.002, per_insert=2e-5)


@pytest.fixture(scope="module")
def graph():
    return SocialGraph.generate(accounts=500, mean_followers=10, seed=4)


@pytest.fixture(scope="module")
def schedule(graph):
    return timeline_schedule(graph, posts=60, post_rate=50, reads=300, rate=100, seed=7,
                             history=5)


def server(approach, **kwargs):
    return ServerConfig(timelines=TimelineConfig(approach=approach, threshold=30),
                        pool=PoolConfig(size=1), events=EventLogConfig(poll_interval=0.02),
                        **kwargs)


@pytest.fixture(scope="module")
def runs(graph, schedule):
    return {a: simulate_timelines(graph, schedule, server=server(a), cost=COST)
            for a in ("read", "write", "hybrid")}


def test_schedule_is_seeded_and_holds_the_celebrity(graph):
    a = timeline_schedule(graph, posts=20, post_rate=10, reads=50, rate=20, seed=3)
    b = timeline_schedule(graph, posts=20, post_rate=10, reads=50, rate=20, seed=3)
    assert np.array_equal(a.read_times, b.read_times)
    assert np.array_equal(a.read_users, b.read_users)
    assert np.array_equal(a.post_authors, b.post_authors)
    assert a.post_authors[a.celebrity_post] == graph.celebrity
    assert np.all(np.diff(a.post_times) > 0)
    assert np.array_equal(a.read_times, a.load.schedule(3)[0])  # the load generator's times


def test_same_seed_same_numbers(graph, schedule, runs):
    again = simulate_timelines(graph, schedule, server=server("read"), cost=COST)
    assert again.result.requests.equals(runs["read"].result.requests)


def test_every_read_answered(runs, schedule):
    for run in runs.values():
        assert len(run.result.requests) == schedule.reads
        assert (run.result.requests["status"] == 200).all()
        assert run.result.source == "sim"


def test_read_p99_orders_write_hybrid_read(runs):
    p99 = {a: run.result.summary()["p99"] for a, run in runs.items()}
    assert p99["write"] < p99["hybrid"] < p99["read"]


def test_approach_one_scans_the_followees_posts(graph, schedule, runs):
    run = runs["read"]
    posts = np.bincount(schedule.post_authors, minlength=graph.accounts) + schedule.history
    users = schedule.read_users[run.result.requests["request_id"].to_numpy()]
    expected = [rows_scanned(graph, posts, int(u)) for u in users]
    assert np.array_equal(run.rows_scanned, expected)
    assert runs["write"].rows_scanned.sum() == 0


def test_database_work_counted_as_the_live_store_counts_it(runs, schedule):
    reads, posts = schedule.reads, len(schedule.post_times)
    assert runs["read"].work["timeline_read"]["queries"] == reads
    assert runs["write"].work["timeline_read"]["queries"] == reads
    assert runs["hybrid"].work["timeline_read"]["queries"] == 2 * reads
    assert runs["read"].work["post"] == {"queries": posts, "rows_read": 0, "rows_written": posts}
    assert runs["write"].work["post"]["queries"] == 3 * posts  # the post and its outbox event
    assert runs["read"].work["fanout"]["queries"] == 0


def test_fanout_inserts_and_the_hybrids_celebrity(graph, schedule, runs):
    followers = graph.follower_counts[schedule.post_authors]
    assert runs["write"].work["fanout"]["rows_written"] == followers.sum()
    assert runs["hybrid"].work["fanout"]["rows_written"] == followers[followers <= 30].sum()
    assert runs["read"].celebrity_lag == 0
    assert runs["hybrid"].celebrity_lag == 0
    lag = runs["write"].celebrity_lag
    # at least its own fan-out statement, at most that plus a poll and everything before it
    own = COST.fanout_base + COST.per_insert * graph.follower_counts[graph.celebrity]
    assert own <= lag < own + 0.02 + len(schedule.post_times) * 0.01


def test_a_slower_insert_delays_delivery(graph, schedule):
    slow = TimelineCostModel(**{**COST.__dict__, "per_insert": 1e-3})
    lag = simulate_timelines(graph, schedule, server=server("write"), cost=slow).celebrity_lag
    assert lag > graph.follower_counts[graph.celebrity] * 1e-3


def test_a_cold_cache_rebuilds_each_users_first_read(graph, schedule):
    run = simulate_timelines(graph, schedule, server=server("write"), cost=COST, cache=True)
    users = len(set(schedule.read_users.tolist()))
    # one rebuild per user, or more when a second read comes before the first has filled the
    # cache (no single flight: Redis docs, cache-aside)
    assert users <= run.work["rebuild"]["queries"] < users + 5
    assert run.work["timeline_read"]["queries"] == 0


def synthetic_reads(truth: dict[str, float], rng: np.random.Generator, *, rows: int,
                    round_trip: float | None = None) -> list[pd.DataFrame]:
    """200 reads per approach costing ``truth``'s model (plus a little noise), each walking
    up to ``rows`` rows if it queries; with ``round_trip``, ``seconds`` adds it to the
    handler's time, kept in ``server``."""
    frames = []
    for approach, q, c in (("read", 1, 0), ("write", 0, 1), ("hybrid", 1, 1)):
        walked = rng.integers(0, rows, size=200) * (q > 0)
        server = (truth["overhead"] + q * truth["query_base"] + c * truth["cache_read"]
                  + truth["per_row"] * walked + rng.exponential(1e-5, size=200))
        columns = {"kind": "read", "approach": approach, "seconds": server, "rows": walked}
        if round_trip is not None:
            columns |= {"seconds": server + round_trip, "server": server}
        frames.append(pd.DataFrame(columns))
    return frames


def test_calibration_recovers_a_known_model():
    rng = np.random.default_rng(1)
    truth = dict(overhead=0.003, query_base=0.001, cache_read=0.0004, per_row=2e-5)
    frames = synthetic_reads(truth, rng, rows=300)
    followers = rng.integers(1, 1000, size=50)
    frames.append(pd.DataFrame({"kind": "fanout", "approach": "write",
                                "seconds": 0.002 + 3e-5 * followers, "rows": followers}))
    frames.append(pd.DataFrame({"kind": "post", "approach": "write", "seconds": [0.008] * 9,
                                "rows": 0}))
    model = calibrate_timelines(pd.concat(frames, ignore_index=True), keep=1.0)
    for name, value in truth.items():
        assert getattr(model, name) == pytest.approx(value, rel=0.05, abs=2e-5), name
    assert model.per_insert == pytest.approx(3e-5, rel=0.01)
    assert model.fanout_base == pytest.approx(0.002, rel=0.01)
    assert model.post_insert == pytest.approx(0.008 - model.overhead, rel=0.01)


@pytest.mark.parametrize("kwargs, name", [
    ({"posts": 0}, "posts"), ({"reads": 0}, "reads"), ({"rate": 0}, "rate"),
    ({"post_rate": -1}, "post_rate"), ({"seed": -1}, "seed"), ({"history": -1}, "history"),
])
def test_bad_schedule_named(graph, kwargs, name):
    args = {"posts": 5, "post_rate": 5, "reads": 5, "rate": 5, "seed": 1} | kwargs
    with pytest.raises(ValueError, match=name):
        timeline_schedule(graph, **args)


def test_bad_inputs_named(graph, schedule):
    with pytest.raises(ValueError, match="per_row"):
        TimelineCostModel(per_row=-1)
    with pytest.raises(ValueError, match="cost"):
        simulate_timelines(graph, schedule, server=server("read"), cost=None)
    with pytest.raises(ValueError, match="live_samples"):
        calibrate_timelines(pd.DataFrame({"x": [1]}))
    small = SocialGraph.generate(accounts=10, mean_followers=2, seed=1)
    with pytest.raises(ValueError, match="schedule"):
        simulate_timelines(small, schedule, server=server("read"), cost=COST)


def test_calibration_splits_the_round_trip_from_the_handlers_time():
    rng = np.random.default_rng(2)
    truth = dict(overhead=0.0005, query_base=0.001, cache_read=0.0004, per_row=2e-6)
    frames = synthetic_reads(truth, rng, rows=3000, round_trip=0.004)
    frames.append(pd.DataFrame({"kind": "post", "approach": "write", "seconds": [0.007] * 9,
                                "rows": 0, "server": [0.003] * 9}))
    model = calibrate_timelines(pd.concat(frames, ignore_index=True), keep=1.0)
    assert model.round_trip == pytest.approx(0.004, rel=0.01)
    for name, value in truth.items():
        assert getattr(model, name) == pytest.approx(value, rel=0.05, abs=2e-5), name
    assert model.post_insert == pytest.approx(0.003 - model.overhead, rel=0.01)


def test_the_round_trip_is_a_delay_not_the_loops_time(graph, schedule):
    # the same total per read, charged to the loop or spent as a pure delay: at a rate that
    # keeps the loop busy, only the loop's share queues
    server = ServerConfig(timelines=TimelineConfig(approach="write"))
    on_loop = simulate_timelines(graph, schedule, server=server,
                                 cost=TimelineCostModel(overhead=0.012, cache_read=0.0))
    delayed = simulate_timelines(graph, schedule, server=server,
                                 cost=TimelineCostModel(overhead=0.002, round_trip=0.010,
                                                        cache_read=0.0))
    a = on_loop.result.requests["latency"].to_numpy()
    b = delayed.result.requests["latency"].to_numpy()
    assert np.percentile(b, 50) == pytest.approx(0.012, rel=0.2)
    assert np.percentile(a, 99) > 1.5 * np.percentile(b, 99)
    with pytest.raises(ValueError, match="round_trip"):
        TimelineCostModel(round_trip=-1.0)


def test_a_warm_cache_answers_every_read_without_the_database(graph, schedule):
    run = simulate_timelines(graph, schedule, server=server("write"), cost=COST, cache=True,
                             warm_cache=True)
    assert run.work["rebuild"]["queries"] == 0
    assert run.work["timeline_read"]["queries"] == 0
    with pytest.raises(ValueError, match="warm_cache must be True or False"):
        simulate_timelines(graph, schedule, server=server("write"), cost=COST, cache=True,
                           warm_cache="yes")


def test_each_read_draws_its_round_trip_from_the_measured_quantiles(graph, schedule):
    # a uniform round trip between 2 and 12 ms, the loop nearly idle: the reads' latency
    # quantiles are the round trip's shifted by the handler's time
    spread = TimelineCostModel(overhead=0.0002, cache_read=0.0, round_trip=0.007,
                               round_trip_quantiles=(0.002, 0.012))
    write = ServerConfig(timelines=TimelineConfig(approach="write"))
    latency = simulate_timelines(graph, schedule, server=write, cost=spread).result.requests[
        "latency"].to_numpy()
    for q, want in ((10, 0.003), (50, 0.007), (90, 0.011)):
        assert np.percentile(latency, q) == pytest.approx(want + 0.0002, abs=0.0012), q
    again = simulate_timelines(graph, schedule, server=write, cost=spread).result.requests
    assert np.array_equal(again["latency"].to_numpy(), latency)  # seeded by the schedule
    for bad in ((0.01,), (0.003, 0.002), (-0.001, 0.002), "fast"):
        with pytest.raises(ValueError, match="round_trip_quantiles"):
            TimelineCostModel(round_trip_quantiles=bad)


def test_calibration_keeps_the_round_trips_distribution():
    rng = np.random.default_rng(3)
    trips = rng.uniform(0.002, 0.010, size=600)
    server = 0.001 + rng.exponential(1e-5, size=600)
    approaches = np.repeat(["read", "write", "hybrid"], 200)
    frame = pd.DataFrame({"kind": "read", "approach": approaches, "seconds": server + trips,
                          "rows": 0, "server": server})
    model = calibrate_timelines(frame, keep=1.0)
    quantiles = np.asarray(model.round_trip_quantiles)
    assert len(quantiles) == 201 and np.all(np.diff(quantiles) >= 0)
    assert quantiles[100] == pytest.approx(model.round_trip)
    assert quantiles[[20, 100, 180]] == pytest.approx([0.0028, 0.006, 0.0092], abs=4e-4)


def test_a_reads_stretch_lengthens_its_handler_time_in_proportion(graph, schedule):
    # every read's handler work w (overhead + its statement) stretched by s = 1: 2 w in all
    base = TimelineCostModel(overhead=0.0005, query_base=0.0015, per_row=0.0, cache_read=0.001)
    stretched = TimelineCostModel(**{**base.__dict__, "stretch_quantiles": (1.0, 1.0)})
    read = ServerConfig(timelines=TimelineConfig(approach="read"))
    plain = simulate_timelines(graph, schedule, server=read, cost=base).result.requests
    slow = simulate_timelines(graph, schedule, server=read, cost=stretched).result.requests
    assert np.median(plain["latency"]) == pytest.approx(0.002, rel=0.05)
    assert np.median(slow["latency"]) == pytest.approx(0.004, rel=0.05)
    with pytest.raises(ValueError, match="stretch_quantiles"):
        TimelineCostModel(stretch_quantiles=(2.0, 1.0))


def test_calibration_keeps_each_reads_stretch_over_the_fit():
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 300, size=300)
    fitted = 0.001 + 1e-5 * rows
    stretch = np.where(np.arange(300) % 2 == 0, 0.0, 1.0)  # half at the fit, half twice it
    server = fitted * (1 + stretch)
    frame = pd.DataFrame({"kind": "read", "approach": np.repeat(["read", "write", "hybrid"], 100),
                          "seconds": server + 0.004, "rows": rows, "server": server})
    model = calibrate_timelines(frame)
    quantiles = np.asarray(model.stretch_quantiles)
    assert quantiles[40] == pytest.approx(0.0, abs=0.05)
    assert quantiles[160] == pytest.approx(1.0, abs=0.05)
