"""Summary tables, SLO checks at and around their boundaries, statistics and every plot, from
simulated and live-shaped runs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

from atlas_sim.analysis import (
    SLO,
    STATE_COLORS,
    compare_runs,
    plot_breaker_timelines,
    plot_call_timeline,
    plot_comparison,
    plot_in_flight,
    plot_latency_cdf,
    plot_latency_histogram,
    plot_sim_vs_live,
    plot_timeseries,
    slo_check,
    slo_table,
    summary_table,
)
from atlas_sim.analysis.plots import bar_label
from atlas_sim.results import RunResult
from atlas_sim.sim import simulate
from atlas_sim.sim.scenarios import dependency_outage, thundering_herd


def made_up(latencies, oks, *, duration=10.0, source="sim", starts=None) -> RunResult:
    n = len(latencies)
    t_start = np.linspace(0, duration, n, endpoint=False) if starts is None else np.asarray(starts)
    latency = np.asarray(latencies, dtype=float)
    ok = np.asarray(oks, dtype=bool)
    status = np.where(ok, 200, 503)
    return RunResult.from_columns(
        requests={"request_id": range(n), "t_start": t_start, "t_end": t_start + latency,
                  "latency": latency, "status": status, "attempts": np.ones(n), "ok": ok},
        attempts={"request_id": range(n), "attempt": np.ones(n), "t_start": t_start,
                  "t_end": t_start + latency, "latency": latency, "status": status,
                  "queue_wait": np.full(n, np.nan), "instance": np.zeros(n)},
        duration=duration, source=source)


def test_summary_table_puts_runs_side_by_side():
    a = made_up([0.1] * 99 + [1.0], [True] * 100)
    b = made_up([0.2] * 100, [True] * 90 + [False] * 10, source="live")
    table = summary_table([a, b])
    assert list(table.index) == ["sim", "live"]
    assert table.loc["live", "error_rate"] == pytest.approx(0.1)
    assert table.loc["sim", "p50"] == pytest.approx(0.1) and table.loc["sim", "requests"] == 100
    assert list(summary_table({"x": a, "y": a}).index) == ["x", "y"]
    assert list(summary_table([a, a]).index) == ["sim", "sim 2"]
    with pytest.raises(ValueError, match=r"runs\['x'\] must be a RunResult"):
        summary_table({"x": 3})


def test_slo_check_classifies_known_inputs():
    fast_clean = made_up([0.05] * 1000, [True] * 1000)
    assert slo_check(fast_clean, "critical").met
    slow = made_up([0.15] * 1000, [True] * 1000)
    report = slo_check(slow, "critical")
    assert not report.met and not report.latency_ok and report.errors_ok
    assert slo_check(slow, "default").met
    # 0.4% errors, all in the first of ten 10 s windows (4% of that window): the default tier's
    # error rate (1%) holds for the run, yet that window is down, so its availability (99.9%)
    # is missed. The non-critical tier (5% per window) sees no down window at all.
    oks = [False] * 4 + [True] * 996
    burst = made_up([0.05] * 1000, oks, duration=100.0)
    default = slo_check(burst, "default")
    assert default.errors_ok and default.availability == pytest.approx(0.9)
    assert not default.availability_ok and not default.met
    assert slo_check(burst, "non_critical").met
    # the same errors spread evenly: error rate unchanged, but every window is up
    spread = made_up([0.05] * 1000, ([False] + [True] * 49) * 20, duration=100.0)
    assert slo_check(spread, "non_critical").availability == 1.0
    assert "missed" in repr(default) and "MISSED" in repr(default)
    assert list(slo_table({"ok": fast_clean, "slow": slow}).loc["slow"]) == [False, True, True]


def test_slo_rejects_unknown_tiers_and_bad_objectives():
    with pytest.raises(ValueError, match="tier must be one of 'critical', 'default'"):
        slo_check(made_up([0.1], [True]), "gold")
    with pytest.raises(ValueError, match="error_rate must be a number >= 0 and <= 1"):
        SLO(name="x", latency_p95=0.1, error_rate=2, availability=0.9)
    custom = SLO(name="batch", latency_p95=5.0, error_rate=0.5, availability=0.5)
    assert slo_check(made_up([1.0] * 10, [True] * 10), custom).met


def test_slo_objectives_are_met_at_their_boundaries():
    # 10 failures in 1000 requests is an error rate of exactly 1%: the default tier's
    # objective is met (1 - 990/1000 is 0.010000000000000009 in floating point)
    exactly = made_up([0.2] * 1000, [True] * 990 + [False] * 10, duration=100.0)
    report = slo_check(exactly, "default", window=1000.0)  # one window
    assert report.errors_ok and report.availability_ok
    assert report.latency_p95 == 0.2 and report.latency_ok  # p95 equal to the target
    one_more = made_up([0.2] * 1000, [True] * 989 + [False] * 11, duration=100.0)
    assert not slo_check(one_more, "default", window=1000.0).errors_ok
    # the same in every window: 70 failures in each 10 s window of 1000 requests meet a 7%
    # objective (0.07 * 1000 is 70.00000000000001 in floating point): availability is 1
    starts = np.arange(10_000) * 0.01 + 0.001  # each request finishes 1 ms after it starts
    per_window = made_up([0.001] * 10_000, ([True] * 930 + [False] * 70) * 10,
                         duration=100.0, starts=starts)
    seven = SLO(name="seven", latency_p95=1.0, error_rate=0.07, availability=1.0)
    report = slo_check(per_window, seven)
    assert report.availability == 1.0 and report.availability_ok and report.errors_ok


@pytest.mark.parametrize(("up", "windows", "objective", "met"), [
    (999, 1000, 0.999, True), (998, 1000, 0.999, False),
    (9999, 10_000, 0.9999, True), (9998, 10_000, 0.9999, False),
    (29, 100, 0.29, True), (28, 100, 0.29, False), (57, 100, 0.57, True),
])
def test_availability_equal_to_the_objective_is_met(up, windows, objective, met):
    # one request per 1 s window, the first `up` of them successful
    run = made_up([0.01] * windows, [True] * up + [False] * (windows - up),
                  duration=float(windows))
    slo = SLO(name="x", latency_p95=1.0, error_rate=0.0, availability=objective)
    report = slo_check(run, slo, window=1.0)
    assert report.availability == up / windows and report.availability_ok is met


def test_slo_check_of_an_empty_run_meets_nothing_it_cannot_measure():
    report = slo_check(made_up([], []), "default")
    assert not report.errors_ok and not report.availability_ok and not report.met


@pytest.fixture(scope="module")
def outage_run():
    return simulate(dependency_outage(breaker=True))


def test_every_plot_builds_from_a_simulated_run(outage_run):
    figures = [
        plot_timeseries(outage_run, 1.0),
        plot_latency_cdf(outage_run).figure,
        plot_latency_histogram(outage_run).figure,
        plot_in_flight({"a": outage_run}).figure,
        plot_call_timeline({"a": outage_run}, bin_width=0.5),
        plot_comparison(summary_table({"a": outage_run, "b": outage_run}), ["p99", "goodput"]),
        plot_breaker_timelines({"sim": outage_run, "again": outage_run}),
    ]
    ts = figures[0].axes
    assert len(ts) == 3 and ts[0].get_ylabel() == "per second"
    shaded = {to_hex(c.get_facecolor()[0]) for c in ts[0].collections if len(c.get_paths())}
    assert {STATE_COLORS["closed"], STATE_COLORS["open"]} <= shaded  # breaker states shaded
    for fig in figures:
        plt.close(fig)


def test_plots_build_from_a_live_shaped_run_too(outage_run):
    live = made_up(np.random.default_rng(0).exponential(0.02, 500), [True] * 500, source="live")
    ax = plot_sim_vs_live(outage_run, live)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["simulated", "live"]
    fig = plot_timeseries(live, 1.0)  # no breaker, no faults: still draws
    assert fig.axes[0].lines
    plt.close("all")


def test_a_window_of_a_run_keeps_its_requests_attempts_and_events(outage_run):
    during = outage_run.window(10.0, 25.0)
    assert during.duration == 15.0
    assert during.requests["t_start"].between(10.0, 25.0, inclusive="left").all()
    assert set(during.attempts["request_id"]) == set(during.requests["request_id"])
    assert during.events["time"].between(10.0, 25.0, inclusive="left").all()
    assert during.summary()["throughput"] == pytest.approx(len(during.requests) / 15.0)
    with pytest.raises(ValueError, match="end must be a number > start"):
        outage_run.window(5.0, 5.0)


def test_the_proportion_interval_is_wilsons():
    from atlas_sim.analysis import proportion_interval

    low, high = proportion_interval(12, 510)
    # Wilson's 95% interval for 12 of 510, by hand: centre (p + z²/2n)/(1 + z²/n) ± ...
    z, n, p = 1.959963984540054, 510, 12 / 510
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    assert (low, high) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert proportion_interval(0, 10)[0] == 0.0 and proportion_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="count must be an integer >= 0 and <= 10"):
        proportion_interval(11, 10)


def test_summary_table_with_units_labels_every_column_and_gives_rates_as_percentages():
    run = made_up([0.2] * 100, [True] * 90 + [False] * 10)
    table = summary_table(run, units=True, columns=["requests", "p99", "error_rate",
                                                    "amplification"])
    assert list(table.columns) == ["requests", "p99 (s)", "errors (%)", "attempts per request"]
    assert table.iloc[0]["errors (%)"] == pytest.approx(10.0)
    assert table["requests"].dtype.kind == "i"  # a count, never 100.0
    with pytest.raises(ValueError, match="columns must be among"):
        summary_table(run, columns=["p42"])


def test_compare_runs_gives_the_difference_in_percent():
    sim = made_up([0.1] * 100, [True] * 100)
    live = made_up([0.11] * 100, [True] * 100, source="live")
    table = compare_runs(sim, live, metrics=("p50",))
    assert table.loc["p50", "difference (%)"] == pytest.approx(10.0)


def test_bar_labels_are_written_as_a_reader_writes_them():
    assert [bar_label(v) for v in (2426.0, 1854.4, 63.8, 5.0, 0.0123)] == [
        "2,426", "1,854", "63.8", "5", "0.0123"]
    fig = plot_comparison(summary_table({"a": made_up([0.1] * 10, [True] * 10)}), ["requests"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["10"]
    plt.close(fig)


def _overlaps(fig, legend, ax) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    return box.x0 < area.x1 and area.x0 < box.x1 and box.y0 < area.y1 and area.y0 < box.y1


def test_legends_stay_outside_the_data(outage_run):
    """No legend covers the lines, the breaker bands or the fault bar and its label."""
    fig = plot_timeseries(outage_run, 1.0)
    legend = fig.axes[0].get_legend()
    assert legend is not None and not any(_overlaps(fig, legend, ax) for ax in fig.axes)
    labels = {t.get_text() for t in legend.get_texts()}
    assert {"offered", "attempts", "goodput", "closed", "open"} <= labels
    fig = plot_breaker_timelines({"sim": outage_run})
    assert not _overlaps(fig, fig.axes[0].get_legend(), fig.axes[0])
    plt.close("all")


def test_the_call_timeline_is_a_rate_with_the_faults_shaded():
    run = simulate(thundering_herd(jitter="none", seed=1))
    fig = plot_call_timeline({"none": run}, bin_width=0.5, until=10.0, what="attempts")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "attempts/s"
    (bars,) = [p for p in ax.patches if p.get_label() == "attempts"]
    counts, _ = np.histogram(run.attempts["t_start"], bins=np.arange(0.0, 10.5, 0.5))
    assert bars.get_data()[0] == pytest.approx(counts / 0.5)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["attempts", "outage"]
    plt.close(fig)
