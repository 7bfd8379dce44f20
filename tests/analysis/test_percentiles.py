"""Percentiles: merged against averaged on data worked by hand, the HDR histogram within its
stated precision, and histogram_quantile's bucket rule on hand-computed cases and against
prometheus_client's own bucket counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from atlas_sim.analysis.percentiles import (
    PROMETHEUS_DEFAULT_BUCKETS,
    HdrRecorder,
    averaged_vs_merged,
    bucket_counts,
    bucket_quantile,
    exact_percentiles,
    monotonic_counts,
)

# -- merged against averaged ------------------------------------------------------------------

QUIET = np.arange(1, 101) / 1000.0  # 100 requests: 1, 2, ..., 100 ms
BUSY = np.full(10, 2.0)  # 10 requests of 2 s


def test_exact_percentiles_are_observations_at_the_nearest_rank():
    # rank round(q * n): p50 of 100 is the 50th value, p99 the 99th
    assert exact_percentiles(QUIET, [50, 99]).tolist() == [0.050, 0.099]
    # 99.9 / 100 is a hair above 0.999 in binary; the rank must still be 19,980 of 20,000
    x = np.arange(1, 20_001, dtype=float)
    assert exact_percentiles(x, [99.9])[0] == 19_980


def test_averaging_two_windows_percentiles_is_not_the_merged_percentile():
    table = averaged_vs_merged({"quiet": QUIET, "busy": BUSY}, [50, 99])
    # p99: windows 0.099 and 2.0 average to 1.0495; all 110 requests: rank round(108.9) = 109,
    # one of the ten 2 s requests
    assert table.loc["p99", "mean of the groups"] == pytest.approx((0.099 + 2.0) / 2)
    assert table.loc["p99", "merged (true)"] == 2.0
    assert table.loc["p99", "error of the mean (%)"] == pytest.approx(100 * (1.0495 - 2) / 2)
    # p50: windows 0.050 and 2.0 average to 1.025; all 110: rank 55, 55 ms
    assert table.loc["p50", "mean of the groups"] == pytest.approx(1.025)
    assert table.loc["p50", "merged (true)"] == pytest.approx(0.055)
    assert table.loc["p50", "highest group"] == 2.0


def test_averaging_errs_both_ways():
    # two servers of 1000 requests; the second has 100 slow ones (1 s)
    fast = np.full(1000, 0.01)
    slow = np.concatenate([np.full(900, 0.01), np.full(100, 1.0)])
    table = averaged_vs_merged([fast, slow], [95, 99])
    # merged: 1900 fast, 100 slow. p95 (rank 1900) is fast; averaged, half of 1 s
    assert table.loc["p95", "merged (true)"] == 0.01
    assert table.loc["p95", "mean of the groups"] == pytest.approx(0.505)
    # p99 (rank 1980) is slow; averaged, half of it
    assert table.loc["p99", "merged (true)"] == 1.0
    assert table.loc["p99", "mean of the groups"] == pytest.approx(0.505)


def test_averaged_vs_merged_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one group"):
        averaged_vs_merged([])
    with pytest.raises(ValueError, match=r"groups\[1\] must hold at least one latency"):
        averaged_vs_merged([QUIET, []])
    with pytest.raises(ValueError, match="percentile must be a number >= 0 and <= 100"):
        averaged_vs_merged([QUIET], [101])


# -- HDR histogram ---------------------------------------------------------------------------

PS = [1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100]


def _at_hdr_rank(sorted_x, p):
    """The sorted sample's value at the rank HdrHistogram reads: max(1, int(q n + 0.5))."""
    rank = max(1, int(p * sorted_x.size / 100 + 0.5))
    return sorted_x[rank - 1]


@pytest.mark.parametrize("figures", [1, 2, 3, 4])
def test_hdr_percentiles_are_within_the_stated_precision(figures):
    rng = np.random.default_rng(7)
    x = rng.lognormal(np.log(0.02), 1.2, 30_001)  # 0.2 ms to a few seconds
    recorder = HdrRecorder.of(x, significant_figures=figures)
    assert recorder.count == x.size
    us = np.sort(np.rint(x * 1e6))  # what was recorded: whole microseconds
    got = np.rint(recorder.percentiles(PS) * 1e6)  # back to whole microseconds
    for p, value in zip(PS, got, strict=True):
        exact = _at_hdr_rank(us, p)
        # the value reported is the top of the exact value's bucket, which is at most
        # 10^-figures of the value wide (HdrHistogram's contract)
        assert exact <= value <= exact * (1 + 10.0 ** -figures) + 1, p


@pytest.mark.parametrize("figures", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("unit", [1e-6, 1e-3])
def test_hdr_recording_in_one_pass_leaves_what_recording_each_value_leaves(figures, unit):
    from hdrh.histogram import HdrHistogram

    from atlas_sim.analysis.percentiles import _counts_index

    rng = np.random.default_rng(figures)
    x = np.concatenate([rng.lognormal(np.log(0.02), 1.5, 5_000), [0.0, 1e-7, 3599.0],
                        rng.uniform(0, 0.002, 50)])
    recorder = HdrRecorder.of(x, significant_figures=figures, unit=unit)
    one_by_one = HdrHistogram(1, round(3600.0 / unit), figures)
    values = np.rint(x / unit).astype(np.int64)
    for value in values.tolist():
        one_by_one.record_value(value)
    got = recorder.histogram
    assert list(got.counts) == list(one_by_one.counts)
    assert (got.total_count, got.min_value, got.max_value) == (
        one_by_one.total_count, one_by_one.min_value, one_by_one.max_value)
    assert _counts_index(got, values).tolist() == [one_by_one._counts_index_for(v)
                                                   for v in values.tolist()]
    # one value, and two in one bucket: the smallest and the largest still come out right
    for sample in ([0.5], [0.5, 0.5000001]):
        assert HdrRecorder.of(sample).histogram.max_value == round(max(sample) * 1e6)
        assert HdrRecorder.of(sample).histogram.min_value == round(min(sample) * 1e6)


def test_hdr_at_three_figures_matches_numpys_exact_percentiles_within_a_thousandth():
    x = np.random.default_rng(3).lognormal(np.log(0.05), 1.0, 20_000)
    ps = [50, 90, 95, 99, 99.9]
    hdr = HdrRecorder.of(x).percentiles(ps)
    exact = exact_percentiles(x, ps)
    assert np.all(np.abs(hdr - exact) <= 1e-3 * exact + 1e-6)


def test_hdr_histograms_merge_exactly():
    rng = np.random.default_rng(11)
    parts = [rng.lognormal(np.log(s), 0.8, n) for s, n in ((0.01, 5000), (0.2, 300), (0.05, 2000))]
    merged = HdrRecorder.merged(HdrRecorder.of(p) for p in parts)
    whole = HdrRecorder.of(np.concatenate(parts))
    assert merged.count == whole.count == 7300
    assert merged.percentiles(PS).tolist() == whole.percentiles(PS).tolist()


def test_hdr_recorder_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="within 0 to highest=3600 s"):
        HdrRecorder().record([1.0, 4000.0])
    with pytest.raises(ValueError, match="finite"):
        HdrRecorder().record([-0.1])
    with pytest.raises(ValueError, match="nothing recorded"):
        HdrRecorder().percentiles()
    with pytest.raises(ValueError, match="significant_figures must be an integer >= 1 and <= 5"):
        HdrRecorder(significant_figures=6)
    with pytest.raises(ValueError, match="same significant_figures"):
        HdrRecorder(significant_figures=2).add(HdrRecorder())


# -- Prometheus buckets ----------------------------------------------------------------------

BOUNDS = (0.1, 0.25, math.inf)
COUNTS = (60, 90, 100)  # 60 requests at or below 0.1 s, 30 more up to 0.25 s, 10 above


@pytest.mark.parametrize(("q", "expected"), [
    (0.5, 0.1 * 50 / 60),          # rank 50 in the first bucket: from 0 to 0.1 s
    (0.8, 0.1 + 0.15 * 20 / 30),   # rank 80: 20 of the second bucket's 30
    (0.9, 0.25),                   # rank 90: the second bucket's top
    (0.95, 0.25),                  # rank 95 is in +Inf: the highest finite bound
    (1.0, 0.25),
    (0.0, 0.0),
])
def test_bucket_quantile_hand_computed(q, expected):
    assert bucket_quantile(q, COUNTS, BOUNDS) == pytest.approx(expected)


def test_bucket_quantile_matches_clickhouses_independent_implementation():
    # the example of ClickHouse's quantilePrometheusHistogram documentation, which says it
    # interpolates "similarly to the PromQL histogram_quantile() function": 0.35
    assert bucket_quantile(0.5, [6, 11, 14, 19], [0, 0.5, 1, math.inf]) == pytest.approx(0.35)


def test_bucket_quantile_special_cases():
    # a lowest bucket with a bound <= 0 returns that bound, not an interpolation
    assert bucket_quantile(0.3, [5, 10, 10], [0.0, 1.0, math.inf]) == 0.0
    assert math.isnan(bucket_quantile(0.5, [0, 0, 0], BOUNDS))  # no observations
    assert math.isnan(bucket_quantile(0.0, [0, 5, 5], BOUNDS))  # 0/0, as in Prometheus
    with pytest.raises(ValueError, match="ending in \\+Inf"):
        bucket_quantile(0.5, [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="counts must be finite cumulative counts >= 0"):
        bucket_quantile(0.5, [5, -3, 9], BOUNDS)
    with pytest.raises(ValueError, match="counts must be finite"):
        bucket_quantile(0.5, [5, math.nan, 9], BOUNDS)
    with pytest.raises(ValueError, match="one entry per bound"):
        bucket_quantile(0.5, [5, 9], BOUNDS)
    with pytest.raises(ValueError, match="q must be a number >= 0 and <= 1"):
        bucket_quantile(1.5, COUNTS, BOUNDS)


def test_dipping_bucket_counts_are_repaired_as_prometheus_repairs_them():
    # A scrape race: the 0.25 s bucket read before the 0.1 s one caught up. Prometheus takes
    # the running maximum (the envelope) and answers; so must its twin.
    assert monotonic_counts([60, 55, 100]).tolist() == [60, 60, 100]
    assert bucket_quantile(0.5, [60, 55, 100], BOUNDS) == pytest.approx(0.1 * 50 / 60)
    assert bucket_quantile(0.8, [60, 55, 100], BOUNDS) == 0.25  # 60 .. 100 all above 0.25 s
    # two dips in a row both rise to the last accepted count, not to each other
    assert monotonic_counts([100, 50, 60, 200]).tolist() == [100, 100, 100, 200]
    # one unit in the last place (a sum of rates in floating point): ignored either way
    ulp = 90 * (1 - 1e-15)
    assert monotonic_counts([60, 90, ulp, 100]).tolist() == [60, 90, 90, 100]
    # total 90, rank 72: 12 of the second bucket's 30
    assert bucket_quantile(0.8, [60, 90, ulp], BOUNDS) == pytest.approx(0.1 + 0.15 * 12 / 30)
    up = 90 * (1 + 1e-14)  # a tiny rise is flattened too; the next bucket is compared with 90
    assert monotonic_counts([60, 90, up, 100]).tolist() == [60, 90, 90, 100]
    # a real rise is kept, and counts that never fall come back as they are
    assert monotonic_counts([60, 90, 90 * (1 + 1e-9)]).tolist() == [60, 90, 90 * (1 + 1e-9)]
    assert monotonic_counts(COUNTS).tolist() == list(COUNTS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=3, max_size=8), st.floats(0, 1))
def test_any_counts_get_an_answer_that_the_envelope_gives(increments, q):
    bounds = [*np.cumsum(np.full(len(increments) - 1, 0.1)).tolist(), math.inf]
    counts = np.cumsum(increments).astype(float)
    dipped = counts.copy()
    dipped[1:-1] -= np.arange(len(increments) - 2) % 3  # dips of up to two counts
    dipped = np.maximum(dipped, 0)
    got = bucket_quantile(q, dipped, bounds)
    envelope = np.maximum.accumulate(dipped)
    want = bucket_quantile(q, envelope, bounds)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_bucket_counts_are_what_prometheus_client_records():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.lognormal(np.log(0.05), 1.5, 3000),
                        [0.0, 0.005, 0.1, 10.0, 10.5, 0.75]])  # on bounds and beyond
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "test", registry=registry)
    for value in x.tolist():
        histogram.observe(value)
    exposed = {s.labels["le"]: s.value for m in registry.collect() for s in m.samples
               if s.name == "latency_seconds_bucket"}
    assert [float(le) for le in exposed] == list(PROMETHEUS_DEFAULT_BUCKETS)
    assert bucket_counts(x).tolist() == list(exposed.values())


def test_bucket_interpolation_is_exact_for_uniform_buckets_and_not_otherwise():
    # latencies spread evenly inside each bucket: linear interpolation is right
    even = np.concatenate([np.linspace(0.0, 0.1, 1000, endpoint=False) + 0.00005,
                           np.linspace(0.1, 0.25, 1000, endpoint=False) + 0.000075])
    counts = bucket_counts(even, BOUNDS)
    assert bucket_quantile(0.75, counts, BOUNDS) == pytest.approx(
        exact_percentiles(even, [75])[0], abs=2e-4)
    # all of a bucket's latencies at its bottom: interpolation puts them across it
    lumped = np.concatenate([np.full(500, 0.01), np.full(500, 0.11)])
    counts = bucket_counts(lumped, BOUNDS)
    assert bucket_quantile(0.99, counts, BOUNDS) == pytest.approx(0.1 + 0.15 * 490 / 500)
    assert exact_percentiles(lumped, [99])[0] == 0.11
