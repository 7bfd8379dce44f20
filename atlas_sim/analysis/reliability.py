"""Hardware faults and redundancy in closed form: what a fleet's failures and a replica set's
losses should be, for the simulation in ``atlas_sim.sim.fleet`` to be checked against.

DDIA (chapter 1, "Hardware Faults") puts it in one line: hard disks have a mean time to failure
(MTTF) of about 10 to 50 years, so a cluster of 10,000 disks should expect about one dead disk a
day. Fleet statistics say the same in the other unit, the annualised failure rate (AFR): large
operators publish about 1-2% a year for disks ("Backblaze Drive Stats", yearly reports), an MTTF
of 50-100 years. Redundancy copes with such faults because they are (nearly) independent: losing
every replica needs every replica to fail before the first is repaired. A fault that hits every
replica at once (a shared rack or power feed, one software bug in every instance) is not helped
by more replicas at all.

Formulas (time in any one unit; rates per that unit):

* each component alternates up (mean ``mttf``) and down (mean ``mttr``): in the long run it is
  down a fraction ``mttr / (mttf + mttr)`` of the time and fails ``1 / (mttf + mttr)`` times per
  unit time, whatever the two distributions (the alternating renewal theorem; S. M. Ross,
  "Introduction to Probability Models", chapter 7);
* ``n`` such components, independent: failures per unit time ``n / (mttf + mttr)``; the number
  down at once is Binomial(``n``, ``mttr / (mttf + mttr)``);
* AFR from an exponential MTTF in hours: ``1 - exp(-8760 / mttf)``;
* ``r`` replicas, each failing at rate ``1 / mttf`` and each repaired at rate ``1 / mttr`` (one
  repair crew per replica), data lost when all ``r`` are down at once: a continuous-time Markov
  chain on the number down, absorbing at ``r``; the probability of loss within ``horizon`` is
  the absorbing state's mass after ``horizon``, computed exactly with a matrix exponential
  (``scipy.linalg.expm``). With common-mode shocks that take every replica down at once at rate
  ``shock_rate``, the chain jumps to ``r`` from any state at that rate too, and as the shocks
  dominate, loss tends to ``1 - exp(-shock_rate * horizon)`` for any ``r``.
"""

from __future__ import annotations

import math

import numpy as np

from ..validation import check_int, check_real
from .stats import binom_pmf

__all__ = ["annualised_failure_rate", "down_at_once", "failures_per_unit_time", "loss_probability",
           "mttf_from_afr"]

HOURS_PER_YEAR = 8760.0


def failures_per_unit_time(n: int, mttf: float, mttr: float = 0.0) -> float:
    """Long-run failures per unit time of ``n`` independent components that are repaired or
    replaced after ``mttr``: ``n / (mttf + mttr)``."""
    n = check_int("n", n, low=1)
    mttf = check_real("mttf", mttf, low=0, low_open=True)
    mttr = check_real("mttr", mttr, low=0)
    return n / (mttf + mttr)


def down_at_once(n: int, mttf: float, mttr: float) -> np.ndarray:
    """Long-run distribution of how many of ``n`` independent components are down at once:
    ``p[k]`` for k = 0..n, Binomial(n, mttr / (mttf + mttr)). Shape ``(n + 1,)``."""
    n = check_int("n", n, low=1)
    mttf = check_real("mttf", mttf, low=0, low_open=True)
    mttr = check_real("mttr", mttr, low=0)
    return binom_pmf(np.arange(n + 1), n, mttr / (mttf + mttr))


def annualised_failure_rate(mttf_hours: float) -> float:
    """AFR, the chance that a component fails within a year of running, from an exponential
    MTTF in hours: ``1 - exp(-8760 / mttf_hours)``."""
    mttf_hours = check_real("mttf_hours", mttf_hours, low=0, low_open=True)
    return -math.expm1(-HOURS_PER_YEAR / mttf_hours)


def mttf_from_afr(afr: float) -> float:
    """The exponential MTTF, in hours, that gives annualised failure rate ``afr`` (0 < afr < 1)."""
    afr = check_real("afr", afr, low=0, high=1, low_open=True, high_open=True)
    return -HOURS_PER_YEAR / math.log1p(-afr)


def loss_probability(replicas: int, mttf: float, mttr: float, horizon: float, *,
                     shock_rate: float = 0.0) -> float:
    """Probability that all ``replicas`` are down at the same moment at least once within
    ``horizon`` (data lost), starting with all up.

    Args:
        replicas: copies, 1..20.
        mttf: mean time to failure of one replica (exponential), > 0.
        mttr: mean time to repair one replica (exponential), > 0; each down replica is
            repaired independently.
        horizon: the time span, >= 0.
        shock_rate: rate of common-mode faults that take every replica down at once (a shared
            rack, one bad software release), >= 0, in the same unit.
    """
    r = check_int("replicas", replicas, low=1, high=20)
    lam = 1.0 / check_real("mttf", mttf, low=0, low_open=True)
    mu = 1.0 / check_real("mttr", mttr, low=0, low_open=True)
    horizon = check_real("horizon", horizon, low=0)
    shock = check_real("shock_rate", shock_rate, low=0)
    q = np.zeros((r + 1, r + 1))  # generator over "k replicas down"; k = r absorbs (lost)
    for k in range(r):
        q[k, k + 1] += (r - k) * lam
        if k > 0:
            q[k, k - 1] += k * mu
        q[k, r] += shock
        q[k, k] = -q[k].sum()
    from scipy.linalg import expm  # on first use: see analysis/__init__.py

    state = expm(q * horizon)[0]
    return float(min(1.0, max(0.0, state[r])))
