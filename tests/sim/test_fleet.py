"""Hardware faults at fleet scale and redundancy: the simulated fleet and replica sets against
their closed forms (failures per day, the number down at once, loss with and without
common-mode faults), and DDIA's one-disk-a-day figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from atlas_sim.analysis.reliability import (
    annualised_failure_rate,
    down_at_once,
    failures_per_unit_time,
    loss_probability,
    mttf_from_afr,
)
from atlas_sim.sim.fleet import fleet, replica_loss
from atlas_sim.workload import rng_streams

YEAR = 365.0  # days


def test_ddia_ten_thousand_disks_lose_about_one_a_day():
    # MTTF 10 to 50 years: 2.7 to 0.55 failures a day among 10,000 disks ("Hardware Faults")
    low, high = (failures_per_unit_time(10_000, years * YEAR, 1.0) for years in (50, 10))
    assert 0.5 < low < 1 < high < 3
    run = fleet(10_000, 30 * YEAR, 1.0, 3 * YEAR, rng=rng_streams(1)["server"])
    expected = failures_per_unit_time(10_000, 30 * YEAR, 1.0) * 3 * YEAR
    assert abs(len(run.failures) - expected) < 4 * math.sqrt(expected)  # Poisson counts


@pytest.mark.parametrize(("lifetime", "shape", "repair"), [
    ("exponential", 1.0, "constant"), ("weibull", 3.0, "exponential")])
def test_how_many_are_down_at_once_is_binomial_whatever_the_distributions(lifetime, shape,
                                                                           repair):
    n, mttf, mttr = 2000, 50.0, 5.0
    run = fleet(n, mttf, mttr, 2000.0, rng=rng_streams(2)["server"], lifetime=lifetime,
                shape=shape, repair=repair)
    times = np.arange(300.0, 2000.0, 20.0)  # past the start, spaced beyond a repair
    counts = run.down_at(times)
    pmf = down_at_once(n, mttf, mttr)
    mean = float((np.arange(n + 1) * pmf).sum())
    var = float(((np.arange(n + 1) - mean) ** 2 * pmf).sum())
    assert mean == pytest.approx(n * mttr / (mttf + mttr))
    assert abs(counts.mean() - mean) < 4 * math.sqrt(var / len(times))
    assert 0.5 * var < counts.var(ddof=1) < 1.6 * var
    after = run.failures_per_unit_time(after=300.0)
    rate = failures_per_unit_time(n, mttf, mttr)
    assert abs(after - rate) < 4 * math.sqrt(rate * 1700.0) / 1700.0


# the fleet panel's sliders at their extremes (notebook 01): disks, MTTF (years), repair (days)
# and the Weibull shape
EXTREMES = [(disks, mttf, repair, shape) for disks in (1000, 100_000) for mttf in (1.0, 100.0)
            for repair in (0.5, 30.0) for shape in (0.5, 4.0)]


@pytest.mark.parametrize(("disks", "mttf_years", "repair", "shape"), EXTREMES)
def test_a_fleet_of_every_age_fails_at_the_long_run_rate_from_its_first_day(disks, mttf_years,
                                                                            repair, shape):
    # started stationary, the alternating renewal process's long-run rate n / (MTTF + MTTR)
    # and its Binomial down-at-once hold at once, whatever the shape (a new fleet of wear-out
    # disks, shape 4, would fail hardly at all in its first years)
    mttf = mttf_years * YEAR
    run = fleet(disks, mttf, repair, YEAR, rng=rng_streams(4)["server"], lifetime="weibull",
                shape=shape, start="stationary")
    expected = failures_per_unit_time(disks, mttf, repair) * YEAR
    # a renewal count's variance over t is about t sigma^2 / mu^3 per component (Ross, ch. 7),
    # expected * sigma^2 / mu^2 in all, sigma^2 = cv2 mttf^2 and mu = mttf + repair; Poisson's
    # when the window is shorter than a lifetime
    cv2 = math.gamma(1 + 2 / shape) / math.gamma(1 + 1 / shape) ** 2 - 1
    variance = expected * max(1.0, cv2 * (mttf / (mttf + repair)) ** 2)
    assert abs(len(run.failures) - expected) < 5 * math.sqrt(variance) + 1
    q = repair / (mttf + repair)
    spread = 5 * math.sqrt(disks * q * (1 - q)) + 1
    for t in (0.0, YEAR / 2):  # down at once, at the start and later: Binomial(n, q)
        assert abs(run.down_at(np.array([t]))[0] - disks * q) < spread


def test_a_new_fleet_of_wearing_out_disks_starts_far_below_the_long_run_rate():
    new = fleet(10_000, 30 * YEAR, 1.0, 2 * YEAR, rng=rng_streams(5)["server"],
                lifetime="weibull", shape=4.0)
    assert new.failures_per_unit_time() < 0.01 * failures_per_unit_time(10_000, 30 * YEAR, 1.0)


def test_a_fleet_refuses_an_unknown_start():
    with pytest.raises(ValueError, match="start"):
        fleet(10, 1.0, 1.0, 1.0, rng=rng_streams(0)["server"], start="old")  # type: ignore[arg-type]


def test_annualised_failure_rates_and_mttfs_convert_both_ways():
    assert annualised_failure_rate(1_000_000) == pytest.approx(0.00872, rel=1e-3)
    for afr in (0.01, 0.015, 0.02):
        assert annualised_failure_rate(mttf_from_afr(afr)) == pytest.approx(afr)
    with pytest.raises(ValueError, match="afr must be a number > 0 and < 1"):
        mttf_from_afr(1.0)


def test_one_replica_is_lost_as_soon_as_it_fails():
    assert loss_probability(1, 100.0, 5.0, 50.0) == pytest.approx(1 - math.exp(-0.5))


@pytest.mark.parametrize(("replicas", "shock_rate"), [(2, 0.0), (3, 0.0), (2, 0.002)])
def test_the_simulated_loss_matches_the_markov_chain(replicas, shock_rate):
    exact = loss_probability(replicas, 20.0, 5.0, 100.0, shock_rate=shock_rate)
    trials = 20_000
    seen = replica_loss(replicas, 20.0, 5.0, 100.0, shock_rate=shock_rate, trials=trials,
                        rng=rng_streams(3)["server"])
    assert 0.01 < exact < 0.99
    assert abs(seen - exact) < 4 * math.sqrt(exact * (1 - exact) / trials)


def test_more_replicas_help_against_independent_faults_and_not_against_a_shared_one():
    independent = [loss_probability(r, 1000.0, 1.0, YEAR) for r in (1, 2, 3)]
    assert independent[0] > 100 * independent[1] > 100 * 100 * independent[2]
    # the same replicas behind one shared fault (a rack, a bad release) about once a decade
    shared = [loss_probability(r, 1e12, 1.0, YEAR, shock_rate=1 / (10 * YEAR))
              for r in (1, 2, 3)]
    assert shared == pytest.approx([1 - math.exp(-0.1)] * 3, rel=1e-6)


def test_each_further_replica_divides_the_risk_by_the_factor_notebook_01_states():
    # notebook 01's redundancy table (MTTF 500 days, 5 days to repair, a year): the r+1-th
    # replica divides the independent risk by about MTTF / MTTR * r / (r + 1) (the chain's
    # first passage to "all down" at small rates, r lambda^r / mu^(r-1)), and the prose says
    # the table's own factors
    risk = [loss_probability(r, 500.0, 5.0, YEAR) for r in range(1, 6)]
    factors = [risk[r - 1] / risk[r] for r in range(1, 5)]
    for r, factor in zip(range(2, 5), factors[1:], strict=True):
        assert factor == pytest.approx(100 * r / (r + 1), rel=0.05)
    source = (Path(__file__).resolve().parents[2] / "notebooks" / "src"
              / "01_reliability_retries.py").read_text()
    prose = source.split("The theory columns are exact")[1].split("# %%")[0]
    assert "factor of a\n# hundred" not in prose and "about a factor of a hundred" not in prose
    for factor in (factors[0], factors[1], factors[3]):  # one to two, two to three, four to five
        assert f"{factor:.0f}" in prose, (factor, prose)
