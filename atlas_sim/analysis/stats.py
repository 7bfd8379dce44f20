"""Confidence intervals for simulation output.

A single simulated number is a sample, not the truth. Consecutive requests in a queue are
correlated (a long wait is followed by another), so the naive standard error of a mean is far too
small. Two honest ways: independent replications (different seeds) or batch means (cut one long
run into a few long batches, whose means are nearly independent).

Batch means trade two errors (B. W. Schmeiser, "Batch size effects in the analysis of
simulation output", Operations Research 30(3), 1982): many short batches give a t with many
degrees of freedom but correlated means, whose spread understates the error; a few long
batches give nearly independent means and a wider t. Near saturation a queue's mean response
time is also skewed to the right (a calm stretch is common, a long backlog rare and large), and
a run that saw no long backlog has both a low mean and a low spread: a symmetric interval then
misses low. ``batch_means(..., scale="log")`` puts the t interval on the logarithm of the mean
(the delta method: the standard error of log M is about that of M divided by M), which makes
it reach further up than down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..validation import check_choice, check_int, check_real

__all__ = ["Interval", "batch_means", "proportion_interval", "replications"]


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval: ``low <= mean <= high``. Symmetric
    (``mean ± half_width``) unless ``bounds`` gives its ends; then ``half_width`` is the
    longer side."""

    mean: float
    half_width: float
    confidence: float
    bounds: tuple[float, float] | None = None

    @property
    def low(self) -> float:
        return self.bounds[0] if self.bounds is not None else self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.bounds[1] if self.bounds is not None else self.mean + self.half_width

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __repr__(self) -> str:
        if self.bounds is not None:
            return (f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}] "
                    f"({self.confidence:.1%})")
        return f"{self.mean:.4g} ± {self.half_width:.2g} ({self.confidence:.1%})"


def replications(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean of independent replications (one value per seed)."""
    x = np.asarray(values, dtype=float)
    check_int("number of values", x.size, low=2)
    check_real("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
    from scipy import stats  # on first use: see analysis/__init__.py

    t = stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)
    return Interval(float(x.mean()), float(t * x.std(ddof=1) / np.sqrt(x.size)), confidence)


def batch_means(values: Sequence[float] | np.ndarray, batches: int = 20,
                confidence: float = 0.95,
                scale: Literal["linear", "log"] = "linear") -> Interval:
    """Interval for the mean of one long correlated series, by batch means: the series cut
    into ``batches`` consecutive parts (2 to its length), a Student-t interval with
    ``batches`` − 1 degrees of freedom over their means. ``scale="log"`` (positive values
    only) puts the interval on log M, M being the mean: M exp(± t s / (M √batches)), s the
    batch means' standard deviation (the delta method; see the module docstring), asymmetric
    about M."""
    x = np.asarray(values, dtype=float)
    check_int("batches", batches, low=2, high=max(2, x.size))
    check_choice("scale", scale, ("linear", "log"))
    means = [b.mean() for b in np.array_split(x, batches)]
    linear = replications(means, confidence)
    if scale == "linear":
        return linear
    if linear.mean <= 0 or np.any(x < 0):
        raise ValueError('scale="log" needs values >= 0 with a positive mean')
    spread = linear.half_width / linear.mean
    low, high = linear.mean * math.exp(-spread), linear.mean * math.exp(spread)
    return Interval(linear.mean, high - linear.mean, confidence, bounds=(low, high))


def proportion_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for a proportion seen ``count`` times in ``n``
    independent trials (for example failed requests in a live run): the binomial sampling
    error of a rate measured once. Wilson's interval (E. B. Wilson, "Probable Inference, the
    Law of Succession, and Statistical Inference", 1927), computed by ``scipy.stats.binomtest``,
    stays inside [0, 1] and behaves for small counts, where the normal approximation does not.
    """
    n = check_int("n", n, low=1)
    count = check_int("count", count, low=0, high=n)
    check_real("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
    from scipy import stats  # on first use: see analysis/__init__.py

    ci = stats.binomtest(count, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
