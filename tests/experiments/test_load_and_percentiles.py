"""Notebook 03, sections 1 and 2: the tables show the theory's numbers, and each panel answers
its sliders."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from atlas_sim.analysis.percentiles import HdrRecorder, exact_percentiles
from atlas_sim.experiments import load, percentiles


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_si_prefixes():
    assert [load.si(x) for x in (0, 75, 999.6, 4600, 345_000, 22.5e6, 1.5e8, 3e9)] == [
        "0", "75", "1k", "4.6k", "345k", "22.5M", "150M", "3G"]
    assert load.si(math.inf) == "none"


def test_ddia_check_puts_the_model_beside_ddias_arithmetic():
    table = load.ddia_check()
    assert table.loc["fan-out on write: timeline inserts/s", "model"] == "345,000"
    assert table.loc["fan-out on write: timeline inserts/s", "DDIA's arithmetic"].endswith(
        "= 345,000")
    assert table.loc["fan-out on write, at peak: inserts/s", "model"] == "900,000"
    assert table.loc["fan-out on read: lookups/s", "model"] == "22,500,000"


def test_load_panel_follows_its_sliders():
    panel = load.load_panel()
    default = panel.update().table
    assert default.loc["fan-out on write", "timeline inserts (/s)"] == "345k"
    assert default.loc["fan-out on write", "one post, at most (inserts)"] == "34.1M"
    hybrid = default.index[2]
    assert hybrid.startswith("hybrid (above 1M")
    # more skew: the same average, a bigger worst post, more lookups for the hybrid
    skewed = panel.update(tail_index=1.15).table
    assert skewed.loc["fan-out on write", "timeline inserts (/s)"] == "345k"
    assert skewed.loc["fan-out on write", "one post, at most (inserts)"] == "138M"
    assert skewed.iloc[2]["lookups (/s)"] != default.iloc[2]["lookups (/s)"]
    # the threshold slider moves the hybrid's worst post
    assert panel.update(tail_index=1.3, log10_threshold=5.0).table.iloc[2][
        "one post, at most (inserts)"] == "100k"
    # fewer reads per post: fan-out on read's lookups fall in proportion
    few_reads = panel.update(read_write_ratio=1.0).table
    assert few_reads.loc["fan-out on read", "lookups (/s)"] == "345k"  # 4.6k x 1 x 75


def test_threshold_table_costs_rise_as_the_threshold_falls():
    table = load.threshold_table(load.timeline_model())
    ratios = table["total / fan-out on write's"].astype(float).tolist()
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] == 1.0


def test_spike_run_windows_hide_the_busy_window():
    run = percentiles.spike_run(seed=3)
    groups = percentiles.window_groups(run, 10.0)
    assert len(groups) == 12 and sum(g.size for g in groups.values()) == len(run.requests)
    table = percentiles.averaging_table(run, 10.0)
    # averaging the windows' p99 hides the spike; the added histograms recover the truth
    assert table.loc["p99", "error of the mean (%)"] < -30
    true = table["true (ms)"].to_numpy()
    hdr = table["windows' HDR histograms added (ms)"].to_numpy()
    assert np.all(np.abs(hdr - true) <= 1e-3 * true + 0.1)  # 0.1 ms: the table's rounding


def test_distribution_table_reads_percentiles_off_the_sample():
    x = np.arange(1, 1001) / 1000.0
    table = percentiles.distribution_table(x)
    assert table.loc["p99", "latency (ms)"] == 990.0
    assert table.loc["p99", "requests at or below (%)"] == 99.0
    assert table.loc["mean", "latency (ms)"] == pytest.approx(500.5)


def test_recording_panel_follows_its_sliders():
    panel = percentiles.recording_panel(seed=1, size=5000)
    default = panel.update().table
    assert (default["HDR error (%)"].abs() <= 0.1).all()  # 3 significant figures
    assert default["buckets error (%)"].abs().max() > 1  # interpolation is coarser
    coarse = panel.update(significant_figures=1).table
    assert coarse["HDR error (%)"].abs().max() > default["HDR error (%)"].abs().max()
    assert (coarse["exact (ms)"] == default["exact (ms)"]).all()
    card = panel.update(significant_figures=3, buckets="reference card (Atlas service)").table
    assert not (card["buckets (ms)"] == default["buckets (ms)"]).all()
    slower = panel.update(mean_ms=500.0).table
    assert slower.loc["p50", "exact (ms)"] > 5 * default.loc["p50", "exact (ms)"]


def test_recording_table_against_direct_computation():
    x = np.random.default_rng(2).lognormal(np.log(0.03), 1.0, 4000)
    table = percentiles.recording_table(x)
    assert table["exact (ms)"].tolist() == np.round(
        1000 * exact_percentiles(x, percentiles.RECORDING_PERCENTILES), 1).tolist()
    assert table.loc["p99", "HDR (ms)"] == round(1000 * HdrRecorder.of(x).percentile(99), 1)


def test_the_reference_cards_buckets_are_the_services():
    from atlas_sim.service.metrics import BUCKETS

    card = percentiles.BUCKET_SETS["reference card (Atlas service)"]
    assert card[:-1] == BUCKETS and math.isinf(card[-1])


# -- describing performance: an SLA in percentiles, throughput against response time ----------

def test_the_sla_table_checks_each_percentile_objective():
    from atlas_sim.experiments.percentiles import DDIA_SLA, sla_table

    fast = np.full(1000, 0.05)
    table = sla_table(fast)
    assert list(table.index) == ["p50", "p99"] and list(table["met"]) == ["yes", "yes"]
    assert list(table["objective (ms)"]) == [1000 * DDIA_SLA[50.0], 1000 * DDIA_SLA[99.0]]
    # 2% of requests at 1.5 s: the median holds, the p99 objective of 1 s does not
    tail = np.concatenate([np.full(980, 0.05), np.full(20, 1.5)])
    assert list(sla_table(tail)["met"]) == ["yes", "no"]
    assert sla_table(tail).loc["p99", "measured (ms)"] == pytest.approx(1500.0)
    with pytest.raises(ValueError, match="objective"):
        sla_table(fast, {99.0: 0.0})
    with pytest.raises(ValueError, match="percentile"):
        sla_table(fast, {101.0: 1.0})
    with pytest.raises(ValueError, match="latencies must not be empty"):
        sla_table([])


def test_throughput_stops_at_capacity_while_response_time_rises():
    """The spike run: four workers of 20 ms (on average) finish about 200 requests a second at
    most. In the overloaded window more are sent than finish, the next window finishes more than
    it is sent (the queue drains), and the p99 is many times the quiet one's."""
    from atlas_sim.experiments.percentiles import spike_run, throughput_table

    run = spike_run(seed=3)
    table = throughput_table(run, window=10.0)
    assert len(table) == 12
    quiet, spike, after = table.loc["0"], table.loc["50"], table.loc["60"]
    assert quiet["throughput: finished (/s)"] == pytest.approx(quiet["sent (/s)"], rel=0.05)
    assert spike["sent (/s)"] > spike["throughput: finished (/s)"]
    assert spike["throughput: finished (/s)"] == pytest.approx(200, rel=0.1)
    assert after["throughput: finished (/s)"] > after["sent (/s)"]
    assert spike["p99 (ms)"] > 4 * quiet["p99 (ms)"]
    # each request is counted once, in the window it finished in (the last few finish after
    # the two minutes, outside every window)
    finished = (table["throughput: finished (/s)"] * 10).sum()
    assert finished == pytest.approx((run.requests["t_end"] < 120.0).sum())
    assert (table["sent (/s)"] * 10).sum() == pytest.approx(len(run.requests))
    with pytest.raises(ValueError, match="window"):
        throughput_table(run, window=0.0)
