"""The distribution functions of ``analysis.stats`` give ``scipy.stats``'s numbers to the last
bit, ``analysis.queueing.crossing`` finds ``scipy.optimize.brentq``'s roots within 2e-12, and
using them (and the rest of ``analysis``) never imports ``scipy.stats`` or ``scipy.optimize``,
whose imports cost a notebook's kernel about 60 MiB (issue 23)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from atlas_sim.analysis.pool import FiniteWaitingPool
from atlas_sim.analysis.queueing import MMc, crossing
from atlas_sim.analysis.stats import (
    binom_pmf,
    binom_ppf,
    gamma_sf,
    proportion_interval,
    replications,
    t_quantile,
)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 19, 99, 1000])
@pytest.mark.parametrize("q", [0.5, 0.8, 0.95, 0.975, 0.995, 0.9995, 0.05])
def test_t_quantile_is_scipy_stats(df: int, q: float) -> None:
    assert t_quantile(q, df) == stats.t.ppf(q, df=df)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 1000, 10_000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_is_scipy_binomtest(n: int, confidence: float) -> None:
    for count in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        ci = stats.binomtest(count, n).proportion_ci(confidence_level=confidence,
                                                     method="wilson")
        assert proportion_interval(count, n, confidence) == (float(ci.low), float(ci.high))


@pytest.mark.parametrize("n", [1, 3, 10, 100, 10_000])
@pytest.mark.parametrize("p", [0.0, 1e-6, 1 / 11, 0.5, 0.999, 1.0])
def test_binom_pmf_is_scipy_stats(n: int, p: float) -> None:
    k = np.arange(n + 1)
    assert np.array_equal(binom_pmf(k, n, p), stats.binom.pmf(k, n, p))


@pytest.mark.parametrize("n", [1, 10, 300, 5000])
@pytest.mark.parametrize("p", [0.01, 0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("q", [0.0005, 0.005, 0.025, 0.5, 0.975, 0.995, 0.9995])
def test_binom_ppf_is_scipy_stats(n: int, p: float, q: float) -> None:
    assert binom_ppf(q, n, p) == int(stats.binom.ppf(q, n, p))


@pytest.mark.parametrize("x", [0.0, 1e-9, 0.003, 0.1, 1.0, 7.5, 50.0])
def test_gamma_sf_is_scipy_stats(x: float) -> None:
    shapes = np.arange(1, 60)
    for scale in (1e-3, 0.05, 1.0, 3.0):
        assert np.array_equal(gamma_sf(x, shapes, scale), stats.gamma.sf(x, shapes, scale=scale))


def test_replications_interval_unchanged() -> None:
    x = np.random.default_rng(3).exponential(size=17)
    t = stats.t.ppf(0.975, df=16)
    assert replications(x).half_width == float(t * x.std(ddof=1) / np.sqrt(17))


def test_analysis_never_imports_scipy_stats_or_optimize() -> None:
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from atlas_sim.analysis import (MMc, batch_means, down_at_once, loss_probability,
                                        proportion_interval, replications)
        from atlas_sim.analysis.pool import FiniteWaitingPool
        from atlas_sim.social import FollowerDistribution
        from atlas_sim.experiments import datasystem, queueing, tail, welcome
        assert "scipy" not in sys.modules, "scipy imported by an import"
        replications([1.0, 2.0, 4.0]); batch_means(np.arange(100.0), batches=5, scale="log")
        proportion_interval(3, 40); down_at_once(10, 100.0, 1.0)
        loss_probability(3, 100.0, 1.0, 1000.0)
        MMc(arrival_rate=9.0, service_rate=10.0, workers=1).quantile(0.99)
        FiniteWaitingPool(arrival_rate=40.0, service_rate=12.0, size=4,
                          max_waiting=5).wait_cdf(0.05)
        FollowerDistribution()
        print(sorted(m for m in sys.modules if m in ("scipy.stats", "scipy.optimize")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _crossing_cases() -> list[tuple[str, Callable[[float], float], float, float, float]]:
    """(name, f, low, high, level): monotone functions, increasing and decreasing."""
    rng = np.random.default_rng(7)
    cases: list[tuple[str, Callable[[float], float], float, float, float]] = []
    for workers in (1, 2, 8):
        for rho in (0.3, 0.8, 0.95, 0.99):
            model = MMc(arrival_rate=rho * workers * 10.0, service_rate=10.0, workers=workers)
            for p in (0.5, 0.9, 0.99, 0.999):
                cases.append((f"MMc c={workers} rho={rho} p={p}", model.tail, 0.0, 64.0, 1 - p))
    pool = FiniteWaitingPool(arrival_rate=40.0, service_rate=12.0, size=4, max_waiting=5)
    for p in (0.1, 0.5, 0.9, 0.99):
        cases.append((f"pool p={p}", pool.wait_cdf, 0.0, 4.0, p))
    for i in range(40):
        a, b = rng.uniform(0.1, 3.0, size=2)
        c = rng.normal()
        cases.append((f"cubic {i}", lambda x, a=a, b=b, c=c: x**3 + a * x + b * math.tanh(x) + c,
                      -20.0, 20.0, 0.0))
    cases.append(("exp", math.exp, -3.0, 7.0, 5.0))
    cases.append(("step-like", lambda x: math.atan(1e4 * (x - 0.123)), -1.0, 1.0, 0.0))
    return cases


def test_crossing_finds_scipy_optimizes_roots() -> None:
    from scipy.optimize import brentq

    compared = 0
    for name, f, low, high, level in _crossing_cases():
        if (f(low) > level) == (f(high) > level):  # no crossing in the bracket
            with pytest.raises(ValueError, match="does not cross"):
                crossing(f, level, low, high)
            continue
        compared += 1
        expected = brentq(lambda t, f=f, level=level: f(t) - level, low, high, xtol=1e-13)
        assert crossing(f, level, low, high) == pytest.approx(expected, abs=2e-12, rel=1e-14), \
            name
    assert compared > 60


def test_crossing_quantiles_are_theorys() -> None:
    # M/M/1: the response time is exponential with rate mu - lambda, p-quantile -ln(1-p)/(mu-lambda)
    model = MMc(arrival_rate=8.0, service_rate=10.0, workers=1)
    for p in (0.5, 0.9, 0.99, 0.999999):
        assert model.quantile(p) == pytest.approx(-math.log(1 - p) / 2.0, abs=1e-11)


def test_crossing_refuses_what_has_no_crossing() -> None:
    with pytest.raises(ValueError, match="does not cross level=0"):
        crossing(lambda x: x * x + 1, 0.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        crossing(lambda x: math.nan if x > 0.5 else -1.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="xtol must be > 0"):
        crossing(math.exp, 1.0, -1.0, 1.0, xtol=0.0)
    with pytest.raises(ValueError, match="low must be <= high"):
        crossing(math.exp, 1.0, 1.0, -1.0)
    assert crossing(math.exp, 1.0, 0.0, 1.0) == 0.0
