"""Confidence intervals for simulation output.

A single simulated number is a sample, not the truth. Consecutive requests in a queue are
correlated (a long wait is followed by another), so the naive standard error of a mean is far too
small. Two honest ways: independent replications (different seeds) or batch means (cut one long
run into a few long batches, whose means are nearly independent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..validation import check_int, check_real

__all__ = ["Interval", "batch_means", "proportion_interval", "replications"]


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval: ``low <= mean <= high``."""

    mean: float
    half_width: float
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __repr__(self) -> str:
        return f"{self.mean:.4g} ± {self.half_width:.2g} ({self.confidence:.1%})"


def replications(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean of independent replications (one value per seed)."""
    x = np.asarray(values, dtype=float)
    check_int("number of values", x.size, low=2)
    check_real("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
    t = stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)
    return Interval(float(x.mean()), float(t * x.std(ddof=1) / np.sqrt(x.size)), confidence)


def batch_means(values: Sequence[float] | np.ndarray, batches: int = 20,
                confidence: float = 0.95) -> Interval:
    """Interval for the mean of one long correlated series, by batch means."""
    x = np.asarray(values, dtype=float)
    check_int("batches", batches, low=2, high=max(2, x.size))
    means = [b.mean() for b in np.array_split(x, batches)]
    return replications(means, confidence)


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
    ci = stats.binomtest(count, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
