"""Notebook 03b's pool panel: the simulated pool beside its closed form (M/M/c+D)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from atlas_sim.experiments.datasystem_panel import pool_panel, pool_panel_run


def test_the_panel_sets_the_simulated_pool_beside_theory_at_the_notebooks_prediction():
    # "a pool of 2, queries of 80 ms, 30 orders a second": overloaded (25 a second at most)
    view = pool_panel().update(size=2, timeout=0.5, rate=30.0, query_ms=80.0)
    table = view.table
    assert list(table.index) == ["simulated", "theory (M/M/c+D)"]
    sim, theory = table.loc["simulated"], table.loc["theory (M/M/c+D)"]
    assert sim["waited (%)"] > 90 and theory["waited (%)"] > 90
    assert sim["timed out (%)"] == pytest.approx(theory["timed out (%)"], abs=6)
    assert sim["p99 wait (ms)"] <= 500 and theory["p99 wait (ms)"] <= 500
    plt.close("all")


def test_a_larger_pool_or_a_lighter_load_ends_the_waits():
    panel = pool_panel()
    for move in ({"size": 8}, {"rate": 5.0}):
        table = panel.update(**{**panel.defaults, **move}).table
        assert table.loc["simulated", "timed out (%)"] == 0
        assert table.loc["theory (M/M/c+D)", "waited (%)"] < 10
    plt.close("all")


def test_the_run_is_pure_and_seeded():
    a = pool_panel_run(size=2, timeout=0.5, rate=30.0, query_ms=80.0, requests=500, seed=3)
    b = pool_panel_run(size=2, timeout=0.5, rate=30.0, query_ms=80.0, requests=500, seed=3)
    assert a["summary"]["wait_mean"] == b["summary"]["wait_mean"]
    assert (a["waits"] >= 0).all() and a["waits"].max() <= 0.5


@pytest.mark.parametrize(("argument", "value"), [("size", 0), ("timeout", -1.0),
                                                 ("rate", 0.0), ("query_ms", 0.0)])
def test_bad_settings_are_refused_naming_the_parameter(argument, value):
    settings = {"size": 2, "timeout": 0.5, "rate": 30.0, "query_ms": 80.0, argument: value}
    with pytest.raises(ValueError):
        pool_panel_run(**settings, requests=200)
    with pytest.raises(ValueError, match="requests"):
        pool_panel(requests=10)


def test_start_parts_runs_what_is_installed_and_leaves_nothing_behind():
    from atlas_sim.experiments.datasystem_panel import start_parts
    from atlas_sim.service.programs import running_programs

    parts = start_parts(postgres=False, redis=False)
    assert parts.store_url is None and parts.cache_url is None and parts.store("x") is None
    table = parts.table()
    assert table.loc["database", "runs on"].startswith("SQLite")
    assert "apt install postgresql" in table.loc["database", "address / note"]
    assert "apt install redis-server" in table.loc["cache", "address / note"]
    assert "Kafka" in table.loc["event log", "address / note"]
    parts.stop()
    assert not [n for n in running_programs() if n.startswith("atlas-03b")]


@pytest.mark.live
def test_start_parts_starts_redis_when_installed_and_stops_it():
    from atlas_sim.experiments.datasystem_panel import leftovers, start_parts
    from atlas_sim.service.programs import running_programs
    from tests.programs import require_program

    require_program("redis-server", "redis-server")
    for _ in range(2):  # twice: nothing accumulates
        parts = start_parts(postgres=False)
        assert parts.cache_url and parts.cache_url.startswith("redis://127.0.0.1:")
        assert parts.table().loc["cache", "runs on"].startswith("Redis")
        assert any("atlas-03b-redis" in thing for thing in leftovers())
        parts.stop()
        parts.stop()
        assert "atlas-03b-redis" not in running_programs() and not parts.redis.running
    assert not [thing for thing in leftovers() if "atlas-03b" in thing]


def test_the_consumer_lag_plot_draws_a_line_per_phase_and_the_kill():
    import pandas as pd

    from atlas_sim.experiments.datasystem_panel import consumer_lag_summary, plot_consumer_lag

    samples = pd.DataFrame({"time": [0.0, 0.1, 0.2, 0.3], "lag": [0, 20, 5, 8],
                            "phase": ["first round", "first round", "second round",
                                      "after the restart"]})
    samples.attrs["killed_at"] = 0.25
    figure = plot_consumer_lag(samples)
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert labels == ["first round", "second round", "after the restart", "consumers killed"]
    plt.close(figure)
    with pytest.raises(ValueError, match="phase"):
        plot_consumer_lag(samples.drop(columns="phase"))
    samples.attrs.update(orders=200, committed_at_kill=141, lag_at_restart=59)
    summary = consumer_lag_summary(samples)["value"]
    assert summary["committed offset at the kill"] == "141"
    assert summary["consumers killed at (s)"] == "0.25"
    assert summary["largest lag, first round (events)"] == "20"


def test_without_redis_the_cold_cache_cell_says_what_would_run_it():
    from atlas_sim.experiments.datasystem_panel import DataParts, cold_cache_or_why_not

    table = cold_cache_or_why_not(DataParts(postgres=None, redis=None, missing={}))
    assert "apt install redis-server" in table.loc["cold cache", "needs"]


def test_the_crash_demo_runs_from_a_thread_that_already_runs_an_event_loop(monkeypatch):
    # a Jupyter cell's thread runs an event loop; datasystem.crash_demo uses asyncio.run
    import asyncio

    import pandas as pd

    from atlas_sim.experiments import datasystem, datasystem_panel

    async def first_round() -> int:
        return 15

    def fake_demo(**options):
        return pd.DataFrame({"keys": [asyncio.run(first_round()), options["seed"]]})

    monkeypatch.setattr(datasystem, "crash_demo", fake_demo)

    async def cell() -> pd.DataFrame:
        return datasystem_panel.crash_demo(seed=7)

    table = asyncio.run(cell())
    assert list(table["keys"]) == [15, 7]

    def failing(**options):
        raise ValueError("seed must be >= 0")

    monkeypatch.setattr(datasystem, "crash_demo", failing)
    with pytest.raises(ValueError, match="seed"):
        asyncio.run(cell())


def test_the_panel_redraws_its_figure_in_place_as_a_new_one_would_show_it():
    from atlas_sim.experiments.datasystem_panel import plot_pool_waits
    from tests.analysis.test_figures import snapshot

    panel = pool_panel(requests=300)
    first = panel.update().figure
    for move in ({"size": 8}, {"timeout": 1.2}, {"rate": 5.0}, {"size": 1, "rate": 60.0}):
        view = panel.update(**move)
        assert view.figure is first  # the same figure, new data on it
        assert snapshot(view.figure) == snapshot(plot_pool_waits(view.results))
    plt.close("all")
