"""Percentiles of response time: computing them, aggregating them, and recording them.

DDIA (chapter 1, "Describing Performance") describes response time as a distribution, read
through its percentiles (median, p95, p99, p99.9), and warns that averaging percentiles, to
combine time windows or machines, is mathematically meaningless: the right way is to add the
histograms. This module gives the pieces to show both, with three ways to get a percentile:

* **exact**: from every latency kept, ``numpy.percentile(..., method="closest_observation")``
  (``QUANTILE_METHOD``): the observed value of rank ``q * n`` rounded to the nearest integer
  (definition 3 of R. J. Hyndman and Y. Fan, "Sample Quantiles in Statistical Packages", The
  American Statistician, 1996; ties at exactly half go to the even rank). It is the rank an HDR
  histogram reads, ``max(1, round(q * n))``, so the two differ only by the histogram's
  precision (and at such ties). Rounding also makes it immune to ``99.9 / 100`` not being
  exactly 0.999 in binary: the ceiling rank of ``inverted_cdf`` (definition 1) jumps to the
  next observation for ``n * q`` a hair above a whole number, which far in a tail is a
  different latency by several percent;
* **HDR histogram** (``HdrRecorder``): the HdrHistogram library's Python port (``hdrh``, G. Tene's
  design), which keeps counts in buckets whose width is at most a set number of significant
  digits of the value (3 digits: within 0.1%), from a microsecond to an hour, in a fixed
  amount of memory; histograms add exactly, so merged histograms give the merged percentiles;
* **Prometheus buckets** (``bucket_counts`` and ``bucket_quantile``): cumulative counts of
  observations at or below fixed upper bounds (``le``), by default ``prometheus_client``'s
  (5 ms to 10 s and +Inf), and the quantile PromQL's ``histogram_quantile`` estimates from them:
  linear interpolation inside the bucket where the rank falls.

``bucket_quantile`` follows the rule of the Prometheus documentation ("Query functions",
``histogram_quantile()``) and of its source (``promql/quantile.go``, ``bucketQuantile``):
rank = q * total; the bucket is the first whose cumulative count reaches the rank; inside it
the value is interpolated linearly between the bucket's lower bound (the previous bucket's
upper bound, or 0 for the first bucket when its upper bound is positive) and its upper bound;
a rank that falls in the +Inf bucket returns the highest finite upper bound.

Cumulative counts should never fall from one bucket to the next, but they can: buckets read at
slightly different moments (a scrape race), counts summed or averaged in floating point (a
``rate`` or a ``sum by (le)`` that is off by one unit in the last place), data already
inconsistent at the target. Prometheus answers anyway, and so does ``bucket_quantile``, by the
same repair (``promql/quantile.go``, ``ensureMonotonicAndIgnoreSmallDeltas`` in current
versions; older ones ran ``ensureMonotonic``, the running maximum alone): going up the buckets, a
count that differs from the last accepted one by a relative amount below
``SMALL_DELTA_TOLERANCE`` = 1e-12 (``util/almost.Equal``: |a − b| / (|a| + |b|) < 1e-12),
in either direction, is set to the last accepted one (floating-point noise); a count below the
last accepted one is raised to it (the envelope, the running maximum: Prometheus then adds an
info annotation, "input to histogram_quantile needed to be fixed for monotonicity"). Neither
kind of change moves the last accepted count.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram
from prometheus_client import Histogram as _PrometheusHistogram

from ..validation import check_int, check_real

__all__ = [
    "PERCENTILES",
    "PROMETHEUS_DEFAULT_BUCKETS",
    "QUANTILE_METHOD",
    "SMALL_DELTA_TOLERANCE",
    "HdrRecorder",
    "averaged_vs_merged",
    "bucket_counts",
    "bucket_quantile",
    "exact_percentiles",
    "monotonic_counts",
    "percentile_label",
]

#: numpy's method for the "exact" percentile (see the module docstring).
QUANTILE_METHOD: Final = "closest_observation"
#: Prometheus's ``smallDeltaTolerance`` (``promql/quantile.go``): relative differences between
#: successive cumulative bucket counts below it are taken for floating-point noise.
SMALL_DELTA_TOLERANCE: Final = 1e-12
#: The percentiles DDIA names, in percent.
PERCENTILES: tuple[float, ...] = (50.0, 95.0, 99.0, 99.9)
#: ``prometheus_client.Histogram.DEFAULT_BUCKETS``: upper bounds in seconds, ending in +Inf.
PROMETHEUS_DEFAULT_BUCKETS: tuple[float, ...] = tuple(
    float(b) for b in _PrometheusHistogram.DEFAULT_BUCKETS)


def percentile_label(p: float) -> str:
    """``50 -> "p50"``, ``99.9 -> "p99.9"``."""
    return f"p{p:g}"


def _latencies(name: str, values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError(f"{name} must hold at least one latency, got none")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"{name} must be finite latencies >= 0 (seconds)")
    return x


def _percentiles(percentiles: Iterable[float]) -> list[float]:
    ps = [check_real("percentile", p, low=0, high=100) for p in percentiles]
    if not ps:
        raise ValueError("percentiles must name at least one percentile (0 to 100)")
    return ps


def exact_percentiles(latencies: Any, percentiles: Iterable[float] = PERCENTILES) -> np.ndarray:
    """The percentiles (in percent, 0 to 100) of ``latencies`` (seconds), each an observed
    value, the one of rank ``round(q * n)`` (``QUANTILE_METHOD``). Shape
    ``(len(percentiles),)``."""
    x = _latencies("latencies", latencies)
    return np.percentile(x, _percentiles(percentiles), method=QUANTILE_METHOD)


def averaged_vs_merged(groups: Mapping[str, Any] | Sequence[Any],
                       percentiles: Iterable[float] = PERCENTILES) -> pd.DataFrame:
    """Each percentile three ways, for latencies split into groups (time windows, servers):
    the mean of the groups' percentiles (what a dashboard that averages them shows), the
    highest group's, and the percentile of all the latencies together (the true one, exact).

    Returns one row per percentile (index ``"p50"``...), columns ``"mean of the groups"``,
    ``"highest group"``, ``"merged (true)"`` (seconds) and ``"error of the mean (%)"``
    (100 * (mean - true) / true). Each group needs at least one latency.
    """
    items = list(groups.values()) if isinstance(groups, Mapping) else list(groups)
    if not items:
        raise ValueError("groups must hold at least one group of latencies")
    ps = _percentiles(percentiles)
    arrays = [_latencies(f"groups[{i}]", g) for i, g in enumerate(items)]
    per_group = np.array([exact_percentiles(a, ps) for a in arrays])  # (groups, percentiles)
    merged = exact_percentiles(np.concatenate(arrays), ps)
    mean = per_group.mean(axis=0)
    return pd.DataFrame({
        "mean of the groups": mean,
        "highest group": per_group.max(axis=0),
        "merged (true)": merged,
        "error of the mean (%)": 100.0 * (mean - merged) / merged,
    }, index=pd.Index([percentile_label(p) for p in ps], name="percentile"))


class HdrRecorder:
    """Latencies in seconds recorded into an HDR histogram (``hdrh.histogram.HdrHistogram``).

    Values are kept as integer multiples of ``unit`` seconds (default a microsecond, rounded to
    the nearest), from ``unit`` to ``highest`` seconds (default an hour), with
    ``significant_figures`` (1 to 5) significant decimal digits: a recorded value's bucket is
    at most ``10 ** -significant_figures`` of the value wide (HdrHistogram's guarantee; the
    actual width at 3 digits is below 1/1024 of the value). A percentile comes back as the
    highest value equivalent to its bucket (the library's rule), at the rank
    ``max(1, round(q * count))``. Values outside the range raise ValueError.
    """

    def __init__(self, *, significant_figures: int = 3, highest: float = 3600.0,
                 unit: float = 1e-6) -> None:
        self.significant_figures = check_int("significant_figures", significant_figures,
                                             low=1, high=5)
        self.unit = check_real("unit", unit, low=0, low_open=True)
        self.highest = check_real("highest", highest, low=2 * self.unit)
        self.histogram = HdrHistogram(1, round(self.highest / self.unit),
                                      self.significant_figures)

    def record(self, latencies: Any) -> HdrRecorder:
        """Record each latency (seconds); returns the recorder, for chaining."""
        x = np.asarray(latencies, dtype=float).ravel()
        if x.size == 0:
            return self
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > self.highest:
            raise ValueError(f"latencies must be finite and within 0 to highest="
                             f"{self.highest:g} s")
        values = np.rint(x / self.unit).astype(np.int64)
        h = self.histogram
        index = _counts_index(h, values)
        # every count added in one numpy pass over the library's own counts array (a ctypes
        # array, seen through numpy), then the total, the smallest and the largest value set
        # as record_value sets them: the histogram is the one recording each value in turn
        # leaves (tests/analysis/test_percentiles.py compares them)
        counts = np.ctypeslib.as_array(h.counts)
        np.add.at(counts, index, 1)
        h.total_count += int(values.size)
        h.min_value = min(h.min_value, int(values.min()))
        h.max_value = max(h.max_value, int(values.max()))
        return self

    @classmethod
    def of(cls, latencies: Any, **options: Any) -> HdrRecorder:
        """A new recorder holding ``latencies``."""
        return cls(**options).record(latencies)

    def add(self, other: HdrRecorder) -> HdrRecorder:
        """Add ``other``'s counts into this one (HdrHistogram's ``add``: exact, bucket by
        bucket); returns this recorder. Both must have the same settings."""
        if (other.significant_figures, other.unit, other.highest) != (
                self.significant_figures, self.unit, self.highest):
            raise ValueError("other must have the same significant_figures, unit and highest")
        self.histogram.add(other.histogram)
        return self

    @classmethod
    def merged(cls, recorders: Iterable[HdrRecorder]) -> HdrRecorder:
        """A new recorder holding the sum of ``recorders`` (at least one, same settings)."""
        recorders = list(recorders)
        if not recorders:
            raise ValueError("recorders must hold at least one HdrRecorder")
        first = recorders[0]
        out = cls(significant_figures=first.significant_figures, highest=first.highest,
                  unit=first.unit)
        for r in recorders:
            out.add(r)
        return out

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    def percentiles(self, percentiles: Iterable[float] = PERCENTILES) -> np.ndarray:
        """The percentiles (in percent) in seconds, in one pass over the counts. Shape
        ``(len(percentiles),)``. ValueError when nothing was recorded."""
        ps = _percentiles(percentiles)
        if self.count == 0:
            raise ValueError("nothing recorded yet: record latencies first")
        values = self.histogram.get_percentile_to_value_dict(ps)
        return np.array([values[p] * self.unit for p in ps])

    def percentile(self, p: float) -> float:
        """One percentile (in percent), seconds."""
        return float(self.percentiles([p])[0])

    def __repr__(self) -> str:
        return (f"<HdrRecorder: {self.count} values, {self.significant_figures} significant "
                f"figures>")


def _counts_index(histogram: HdrHistogram, values: np.ndarray) -> np.ndarray:
    """``histogram._counts_index_for(v)`` for each of ``values`` (non-negative integers below
    2**53), in one numpy pass: HdrHistogram's bucket arithmetic (the bucket is the bit length
    of ``v | sub_bucket_mask`` less the unit and sub-bucket magnitudes; the sub-bucket is
    ``v`` shifted right by the bucket and unit magnitudes). Equal to the library's per-value
    answer (tests/analysis/test_percentiles.py checks it at every precision)."""
    h = histogram
    bits = np.frexp((values | h.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = bits - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    sub_bucket = values >> (bucket + h.unit_magnitude)
    return ((bucket + 1) << h.sub_bucket_half_count_magnitude) + sub_bucket \
        - h.sub_bucket_half_count


def _bounds(bounds: Sequence[float]) -> np.ndarray:
    b = np.asarray(bounds, dtype=float)
    if b.ndim != 1 or b.size < 2 or not math.isinf(b[-1]) or b[-1] < 0:
        raise ValueError("bounds must be at least two upper bounds ending in +Inf")
    if np.any(np.isnan(b)) or np.any(np.diff(b) <= 0):
        raise ValueError("bounds must be strictly increasing")
    return b


def bucket_counts(latencies: Any, bounds: Sequence[float] = PROMETHEUS_DEFAULT_BUCKETS) \
        -> np.ndarray:
    """Cumulative bucket counts, as a Prometheus histogram exposes them: for each upper bound
    ``le`` (ending in +Inf), how many latencies are at or below it (a value equal to a bound
    counts in that bucket, as ``prometheus_client`` does). Shape ``(len(bounds),)``; the last
    entry is the total count. Counts of histograms over the same bounds add, window by window
    or server by server, as ``sum by (le)`` adds them in PromQL."""
    b = _bounds(bounds)
    x = _latencies("latencies", latencies)
    per_bucket = np.bincount(np.searchsorted(b, x, side="left"), minlength=b.size)
    return np.cumsum(per_bucket)


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    """Prometheus's ``util/almost.Equal`` for finite numbers: a and b differ by less than
    ``epsilon`` times |a| + |b| (by less than ``epsilon`` times the smallest normal float when
    one is 0 or both are that small)."""
    if a == b:
        return True
    total, diff = abs(a) + abs(b), abs(a - b)
    tiny = sys.float_info.min
    if a == 0 or b == 0 or total < tiny:
        return diff < epsilon * tiny
    return diff / min(total, sys.float_info.max) < epsilon


def monotonic_counts(counts: Any) -> np.ndarray:
    """Cumulative bucket ``counts`` repaired as PromQL's ``histogram_quantile`` repairs them
    before it reads a quantile (module docstring; ``promql/quantile.go``,
    ``ensureMonotonicAndIgnoreSmallDeltas``): differences below ``SMALL_DELTA_TOLERANCE``
    relative are flattened, and a count below the last accepted one is raised to it. Counts
    that never fall come back unchanged. Shape as ``counts`` (1-D, floats)."""
    c = np.array(counts, dtype=float).ravel()
    if c.size == 0:
        return c
    accepted = float(c[0])
    for i in range(1, c.size):
        current = float(c[i])
        if current == accepted:
            continue
        if _almost_equal(accepted, current, SMALL_DELTA_TOLERANCE) or current < accepted:
            c[i] = accepted  # noise either way, or a dip: the last accepted count stands
            continue
        accepted = current
    return c


def bucket_quantile(q: float, counts: Any,
                    bounds: Sequence[float] = PROMETHEUS_DEFAULT_BUCKETS) -> float:
    """The ``q``-quantile (0 <= q <= 1) PromQL's ``histogram_quantile`` reports for a classic
    histogram with cumulative ``counts`` over upper ``bounds`` (see the module docstring for
    the rule). Counts that dip from one bucket to the next (a scrape race, a unit in the last
    place) are repaired first, as Prometheus repairs them (``monotonic_counts``), not refused.
    NaN when there are no observations, as in Prometheus; NaN also for q = 0 when the first
    bucket is empty (0/0 in the interpolation, as there). ValueError for a negative or
    non-finite count, or one count per bound missing."""
    q = check_real("q", q, low=0, high=1)
    b = _bounds(bounds)
    c = np.asarray(counts, dtype=float)
    if c.shape != b.shape:
        raise ValueError(f"counts must have one entry per bound ({b.size}), got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("counts must be finite cumulative counts >= 0")
    c = monotonic_counts(c)
    total = float(c[-1])
    if total == 0:
        return math.nan
    rank = q * total
    # the first finite bucket whose cumulative count reaches the rank, else the +Inf bucket
    i = int(np.searchsorted(c[:-1], rank, side="left"))
    if i == b.size - 1:
        return float(b[-2])
    if i == 0 and b[0] <= 0:
        return float(b[0])
    start, below = (0.0, 0.0) if i == 0 else (float(b[i - 1]), float(c[i - 1]))
    inside = float(c[i]) - below
    if inside == 0:
        return math.nan
    return start + (float(b[i]) - start) * (rank - below) / inside
