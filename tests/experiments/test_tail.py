"""Notebook 03, section 5: the tail-at-scale tables, plot and panel, and the live fan-out."""

from __future__ import annotations

import dataclasses
import threading
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest

from atlas_sim.analysis.health import measurement_health
from atlas_sim.experiments import live, tail
from atlas_sim.results import RunResult


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_the_published_fanout_figures_are_one_minus_one_minus_p_to_the_n():
    table = tail.published_table()
    assert table["1 - (1 - p)^N (%)"].tolist() == [63.4, 18.1]
    assert table["published"].tolist() == ["63%", "almost one in five"]


def test_the_share_of_slow_requests_grows_as_theory_says():
    table = tail.slow_share_table((1, 10, 100), requests=4000, seed=1)
    for n, row in table.iterrows():
        p = row["theory (%)"] / 100
        se = np.sqrt(p * (1 - p) / 4000)
        assert row["simulated (%)"] / 100 == pytest.approx(p, abs=4 * se + 0.001), n
    assert table.loc[100, "theory (%)"] == pytest.approx(63.4, abs=0.05)


def test_hedging_cuts_the_tail_for_a_few_percent_more_calls():
    runs = tail.hedging_comparison(5, percentile=95.0, requests=10_000, seed=2)
    table = tail.hedge_table(runs)
    plain, hedged = table.iloc[0], table.iloc[1]
    assert plain[("p99 (ms)", "theory")] == plain[("p99 (ms)", "simulated")] == 300.0
    assert hedged[("p99 (ms)", "simulated")] == pytest.approx(hedged[("p99 (ms)", "theory")],
                                                              rel=0.1)
    assert hedged[("p99.9 (ms)", "theory")] < 50 < 300 == plain[("p99.9 (ms)", "simulated")]
    assert hedged[("extra calls (%)", "theory")] == pytest.approx(5.0, abs=0.05)
    assert hedged[("extra calls (%)", "simulated")] == pytest.approx(5.0, abs=4 * 100 * np.sqrt(
        0.05 * 0.95 / 50_000))
    assert plain[("extra calls (%)", "simulated")] == 0.0
    fig = tail.plot_tail(tail.slow_share_table((1, 10), requests=500), runs)
    assert len(fig.axes) == 2
    # the right-hand panel is the tail panel's figure (HedgedTailFigure), drawn once; a
    # live run of the same width adds its dots (here the simulated run stands in for one)
    with_live = tail.plot_tail(tail.slow_share_table((1,), requests=500), runs,
                               {"N = 5": runs["no hedging"]})
    right = with_live.axes[1]
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "no hedging, theory", "no hedging, simulated", "hedged, theory", "hedged, simulated",
        "no hedging, live"]
    assert right.get_title() == "Fan-out to 5 calls, 1.0% of calls slow"
    assert right.get_yscale() == "log" and right.get_xlim() == (0, 360)
    dots = right.lines[4]
    assert dots.get_ydata().min() >= 1e-4  # the 10,000 requests' last share is below the view


def test_the_panel_answers_its_three_sliders():
    panel = tail.tail_panel(seed=3, requests=1000)
    default = panel.update().table
    assert default.index.name == "fan-out to 5 calls"
    assert default.iloc[1][("extra calls (%)", "theory")] == pytest.approx(5.0, abs=0.05)
    later = panel.update(percentile=99.5).table
    extra = ("extra calls (%)", "simulated")
    assert later.iloc[1][extra] < default.iloc[1][extra]
    wide = panel.update(width=50, percentile=95.0).table
    assert wide.index.name == "fan-out to 50 calls"
    assert wide.iloc[0][("≥ 300 ms (%)", "theory")] == pytest.approx(39.5, abs=0.05)
    rare = panel.update(width=5, slow_rate=0.001).table
    assert rare.iloc[0][("≥ 300 ms (%)", "theory")] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="percentile"):
        panel.update(percentile=100.0)


def test_the_panel_and_the_table_above_it_agree_for_the_same_setting():
    """The notebook's hedging table (``hedge_table(hedging_comparison(seed=...))``) and the
    tail panel at the same setting run the same simulation: same requests, same seed, same
    delay, same percentile rule."""
    panel = tail.tail_panel(seed=7)
    for width, slow_rate, percentile in ((5, 0.01, 95.0), (20, 0.02, 90.0)):
        shown = panel.update(width=width, slow_rate=slow_rate, percentile=percentile).table
        table = tail.hedge_table(tail.hedging_comparison(width, slow_rate=slow_rate,
                                                         percentile=percentile, seed=7))
        assert list(shown.index) == list(table.index)
        for column in table.columns:
            assert list(shown[column]) == list(table[column]), (width, column)
    assert tail.hedging_requests(5) == 8_000  # the notebook's table
    assert tail.hedging_requests(100) == 2_000 and tail.hedging_requests(1) == 8_000
    with pytest.raises(ValueError, match="width must be an integer"):
        tail.hedging_requests(0)


def as_live(run: RunResult, *, send_lag: float) -> RunResult:
    """A simulated fan-out run dressed as a live one whose generator sent ``send_lag`` s
    late, every request."""
    lag = np.full(len(run.requests), send_lag)
    return dataclasses.replace(run, source="live", meta={
        **run.meta, "loop": "open", "send_lag": lag, "send_lag_p99": send_lag})


def test_the_hedging_outputs_carry_the_warning_when_the_host_spoiled_the_live_runs():
    sim = tail.hedging_comparison(5, requests=500, seed=1)
    for lag, spoiled in ((0.0002, False), (0.05, True)):
        runs = {"N = 5": as_live(sim["no hedging"], send_lag=lag),
                "N = 5, hedged": as_live(sim["hedged"], send_lag=lag)}
        health = tail.live_health(runs)
        table = tail.hedge_table(sim, live_runs=runs)
        shares = tail.slow_share_table((1, 5), requests=500, live_runs=runs)
        fig = tail.plot_tail(shares, sim, runs)
        notes = [*table[("measurement", "live")], shares.loc[5, "live measurement"]]
        labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        if spoiled:
            assert list(health["measurement"]) == ["spoiled by the host's load"] * 2
            assert all(n.startswith("spoiled by the host's load: send lag mean 50.0 ms > 1.6 ms")
                       for n in notes), notes
            assert fig.get_suptitle().startswith(
                "WARNING: live runs spoiled by the host's load (N = 5, N = 5, hedged)")
            assert "hedged, live, spoiled by the host" in labels
        else:
            assert list(health["measurement"]) == ["healthy"] * 2
            assert notes == ["healthy"] * 3
            assert fig.get_suptitle() == ""
            assert "hedged, live" in labels
        assert shares.loc[1, "live measurement"] == "no live run"


def test_live_requests_beyond_the_tail_axis_are_counted_not_dropped():
    sim = tail.hedging_comparison(5, requests=500, seed=1)
    slow = as_live(sim["hedged"], send_lag=0.0002)
    slow.requests.loc[:9, "latency"] = 0.5  # ten requests past the 360 ms view
    fig = tail.plot_tail(tail.slow_share_table((5,), requests=500), sim,
                         {"N = 5, hedged": slow})
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert any("beyond the axis" in t and "hedged: 10 of 500 (up to 500 ms)" in t
               for t in texts), texts


@pytest.mark.live
def test_the_live_fanout_counts_its_calls_and_hedges():
    server = live.start_service("test-tail", seed=4)
    try:
        runs = tail.live_tail(server, widths=(3,), hedge_width=3, requests=60, rate=200.0,
                              seed=4)
    finally:
        server.stop()
    assert list(runs) == ["N = 3", "N = 3, hedged"]
    plain, hedged = runs["N = 3"], runs["N = 3, hedged"]
    assert plain.meta["fanout"]["calls"] == plain.meta["fanout"]["copies"] == 180
    counts = hedged.meta["fanout"]
    assert counts["requests"] == 60 and counts["calls"] == 180
    assert counts["copies"] == 180 + counts["hedges"] and counts["cancelled"] <= counts["hedges"]
    assert hedged.meta["hedge_delay"] == pytest.approx(
        tail.tail_model(fast=live.dependency_latency(server)).quantile(0.95))
    assert plain.requests["ok"].all() and hedged.requests["ok"].all()
    shares = tail.slow_share_table((1, 3), requests=500, live_runs=runs)
    assert np.isnan(shares.loc[1, "live (%)"]) and not np.isnan(shares.loc[3, "live (%)"])
    table = tail.hedge_table(tail.hedging_comparison(3, requests=500), live_runs=runs)
    assert table.iloc[1][("extra calls (%)", "live")] == pytest.approx(
        100 * counts["hedges"] / counts["calls"], abs=0.05)
    for row, run in zip(table.index, (plain, hedged), strict=True):  # each verdict is shown
        assert table.loc[row, ("measurement", "live")].startswith(tail.run_health(run).verdict)


def _hog(seconds: float) -> threading.Thread:
    """A thread that keeps this process's interpreter busy for ``seconds``: a busy host, as
    far as the in-kernel service and its load generator can tell."""

    def spin() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sum(range(1000))

    thread = threading.Thread(target=spin, name="test-cpu-hog", daemon=True)
    thread.start()
    return thread


def _live_tail_under_hog(name: str, *, seconds: float, requests: int) -> dict:
    """``live_tail`` at width 3 (one plain run, one hedged) on a service of its own while a
    CPU hog runs for ``seconds``; the service is stopped and the hog joined before it returns."""
    server = live.start_service(name, seed=4)
    hog = _hog(seconds)
    try:
        return tail.live_tail(server, widths=(3,), hedge_width=3, requests=requests,
                              rate=200.0, seed=4)
    finally:
        hog.join()
        server.stop()


@pytest.mark.live
def test_a_live_hedging_run_on_a_busy_host_is_judged_and_the_verdict_shown():
    """Whatever the machine makes of the hog (no timing is asserted), every live run's
    verdict and reasons reach the table, and a spoiled one the figure's title."""
    runs = _live_tail_under_hog("test-tail-busy", seconds=3.0, requests=60)
    healths = {name: tail.run_health(run) for name, run in runs.items()}
    table = tail.hedge_table(tail.hedging_comparison(3, requests=500), live_runs=runs)
    for row, name in zip(table.index, runs, strict=True):
        cell = table.loc[row, ("measurement", "live")]
        assert cell.startswith(healths[name].verdict)
        assert all(reason in cell for reason in healths[name].reasons)
    fig = tail.plot_tail(tail.slow_share_table((3,), requests=500, live_runs=runs),
                         tail.hedging_comparison(3, requests=500), runs)
    spoiled = [name for name, h in healths.items() if h.spoiled]
    assert (fig.get_suptitle().startswith("WARNING") if spoiled
            else fig.get_suptitle() == ""), (spoiled, fig.get_suptitle())
    assert list(tail.live_health(runs)["measurement"]) == [h.verdict for h in healths.values()]


def test_run_health_judges_the_fanouts_reported_overrun():
    """A constructed run: the generator kept its schedule, but the service reported its calls
    overran their drawn latency by 3 ms on average (a loop waking late): run_health judges it
    as the work overshoot against the hedge delay."""
    sim = tail.hedging_comparison(5, requests=500, seed=1)
    quiet = as_live(sim["hedged"], send_lag=0.0002)
    late = dataclasses.replace(quiet, meta={
        **quiet.meta, "server_overrun": np.full(len(quiet.attempts), 0.003)})
    scale = tail.hedge_delay_at(quiet.meta["model"], quiet.meta["percentile"])
    health = tail.run_health(late)
    assert health.figures["work overshoot"] == pytest.approx(0.003)
    assert health.spoiled == (0.1 * scale < 0.003) and 0.1 * scale < 0.003
    assert any(r.startswith("work overshoot 3.0 ms") for r in health.reasons)
    assert "work overshoot" not in tail.run_health(quiet).figures


@pytest.mark.live
def test_the_live_fanout_reports_its_overrun_and_the_verdict_can_flag_it():
    """No timing asserted: the overrun the service reports (the loop's lateness) is present
    for every answered request, non-negative, and judged; with a CPU hog for a bounded time,
    a limit tighter than what was measured flags it (the verdict reads it)."""
    runs = _live_tail_under_hog("test-tail-overrun", seconds=2.0, requests=40)
    for run in runs.values():
        overrun = run.meta["server_overrun"]
        ok = run.attempts["status"].to_numpy() == 200
        assert overrun.shape == (len(run.attempts),)
        assert ok.any() and not np.isnan(overrun[ok]).any() and (overrun[ok] >= 0).all()
        health = tail.run_health(run)
        measured = health.figures["work overshoot"]
        assert measured == pytest.approx(float(np.nanmean(overrun)))
        tight = measurement_health(run, scale=health.scale,
                                   limits={"work overshoot": 0.5 * measured / health.scale})
        assert tight.spoiled and any(r.startswith("work overshoot") for r in tight.reasons)
