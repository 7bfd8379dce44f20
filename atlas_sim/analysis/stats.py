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

The distribution functions used across ``analysis`` and ``experiments`` (``t_quantile``,
``binom_pmf``, ``binom_ppf``, ``gamma_sf``, and the Wilson interval of
``proportion_interval``) are computed here from ``scipy.special``, the very functions that
``scipy.stats`` calls for them, so the numbers are ``scipy.stats``'s to the last bit
(``tests/analysis/test_stats_functions.py``), without importing ``scipy.stats``: that import
alone costs a notebook's kernel about 35 MiB of resident memory (issue 23,
``benchmarks/kernel_memory.py``), for three one-line formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..validation import check_choice, check_int, check_real

__all__ = ["Interval", "batch_means", "binom_pmf", "binom_ppf", "gamma_sf",
           "proportion_interval", "replications", "t_quantile"]


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
    t = t_quantile(0.5 + confidence / 2, df=x.size - 1)
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
    Law of Succession, and Statistical Inference", 1927), stays inside [0, 1] and behaves for
    small counts, where the normal approximation does not. Computed as
    ``scipy.stats.binomtest(count, n).proportion_ci(method="wilson")`` computes it (Newcombe's
    form, R. G. Newcombe, Statistics in Medicine 17, 1998), with the same operations: the same
    numbers.
    """
    n = check_int("n", n, low=1)
    count = check_int("count", count, low=0, high=n)
    check_real("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
    from scipy.special import ndtri  # on first use: see analysis/__init__.py

    p = count / n
    z = ndtri(0.5 + 0.5 * confidence)
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    low = 0.0 if count == 0 else center - delta
    high = 1.0 if count == n else center + delta
    return float(low), float(high)


# -- distribution functions, as scipy.stats computes them (see the module docstring) --------

def t_quantile(q: float, df: float) -> float:
    """Student's t quantile, ``scipy.stats.t.ppf(q, df)`` for 0 < q < 1 and df > 0: both are
    ``scipy.special.stdtrit(df, q)``."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def binom_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    """Binomial(n, p) probabilities of the integers ``k`` (0 <= k <= n, 0 <= p <= 1), as
    ``scipy.stats.binom.pmf(k, n, p)``: SciPy's Boost ufunc, clipped to [0, 1] as there."""
    try:
        from scipy.special._ufuncs import _binom_pmf
    except ImportError:  # a SciPy that moved its private ufunc: the public, heavier way
        from scipy.stats import binom

        return np.asarray(binom.pmf(k, n, p), dtype=float)
    return np.clip(_binom_pmf(np.asarray(k), n, p), 0, 1)


def binom_ppf(q: float, n: int, p: float) -> int:
    """The Binomial(n, p) quantile for 0 < q < 1, as ``int(scipy.stats.binom.ppf(q, n, p))``:
    the smallest k with P(X <= k) >= q (SciPy's Boost ufunc)."""
    try:
        from scipy.special._ufuncs import _binom_ppf
    except ImportError:  # as in binom_pmf
        from scipy.stats import binom

        return int(binom.ppf(q, n, p))
    return int(_binom_ppf(q, n, p))


def gamma_sf(x: float, shape: np.ndarray, scale: float) -> np.ndarray:
    """The gamma distribution's survival function P(X > x) for ``x >= 0``, shape(s)
    ``shape`` > 0 and ``scale`` > 0, as ``scipy.stats.gamma.sf(x, shape, scale=scale)``: the
    regularised upper incomplete gamma function ``gammaincc(shape, x / scale)``."""
    from scipy.special import gammaincc

    return np.asarray(gammaincc(shape, (x - 0.0) / scale))
