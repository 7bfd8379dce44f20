"""Hardware faults at fleet scale, simulated: components that fail and are repaired, and data on
replicas that is lost only when every replica is down at once.

Two small Monte Carlo models (numpy only, no queue, so no SimPy), each checked against its
closed form in ``atlas_sim.analysis.reliability``:

* ``fleet``: ``n`` components, each alternating up (a lifetime drawn from an exponential with
  mean ``mttf``, or a Weibull with the same mean and shape ``shape``: shape > 1 is wear-out) and
  down (a repair of ``mttr``, constant or exponential), all new and up at time 0. Returns the
  failure times and each component's down intervals, from which failures per day and how many
  are down at once follow.
* ``replica_loss``: ``trials`` independent replica sets of ``replicas`` copies, exponential
  failures and repairs, plus common-mode shocks that take every copy down at once; the share of
  sets that lost every copy at the same moment within ``horizon``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..validation import check_choice, check_int, check_real

__all__ = ["FleetRun", "fleet", "replica_loss"]

Lifetime = Literal["exponential", "weibull"]
Repair = Literal["constant", "exponential"]


@dataclass(frozen=True)
class FleetRun:
    """What a simulated fleet did over ``horizon`` (same time unit as its inputs).

    ``failures``: sorted failure times, shape ``(f,)``. ``down``: one row per repair,
    ``(component, start, end)``, shape ``(f, 3)`` (``end`` may pass the horizon).
    """

    n: int
    horizon: float
    failures: np.ndarray
    down: np.ndarray

    def failures_per_unit_time(self, *, after: float = 0.0) -> float:
        """Failures per unit time between ``after`` and the horizon."""
        span = self.horizon - after
        return float((self.failures >= after).sum()) / span

    def down_at(self, times: np.ndarray) -> np.ndarray:
        """How many components are down at each of ``times``, shape like ``times``."""
        t = np.asarray(times, dtype=float)
        starts, ends = np.sort(self.down[:, 1]), np.sort(self.down[:, 2])
        return (np.searchsorted(starts, t, side="right")
                - np.searchsorted(ends, t, side="right")).astype(int)


def fleet(n: int, mttf: float, mttr: float, horizon: float, *, rng: np.random.Generator,
          lifetime: Lifetime = "exponential", shape: float = 1.0,
          repair: Repair = "constant") -> FleetRun:
    """Simulate ``n`` components over ``horizon`` (see the module docstring).

    Args:
        n: components, 1..10^6.
        mttf: mean lifetime, > 0. mttr: mean repair time, >= 0.
        horizon: how long, > 0.
        rng: the random stream.
        lifetime: ``"exponential"`` or ``"weibull"`` (Weibull scale ``mttf / Gamma(1 + 1/shape)``
            so that its mean is ``mttf``). shape: Weibull shape, > 0 (1 is exponential).
        repair: ``"constant"`` (exactly ``mttr``) or ``"exponential"`` (mean ``mttr``).
    """
    n = check_int("n", n, low=1, high=1_000_000)
    mttf = check_real("mttf", mttf, low=0, low_open=True)
    mttr = check_real("mttr", mttr, low=0)
    horizon = check_real("horizon", horizon, low=0, low_open=True)
    check_choice("lifetime", lifetime, ("exponential", "weibull"))
    shape = check_real("shape", shape, low=0, low_open=True)
    check_choice("repair", repair, ("constant", "exponential"))
    scale = mttf / math.gamma(1.0 + 1.0 / shape)

    def lifetimes(k: int) -> np.ndarray:
        if lifetime == "exponential":
            return rng.exponential(mttf, k)
        return scale * rng.weibull(shape, k)

    def repairs(k: int) -> np.ndarray:
        return np.full(k, mttr) if repair == "constant" else rng.exponential(mttr, k)

    ids = np.arange(n)
    clock = np.zeros(n)
    failures, rows = [], []
    while ids.size:  # one round: every component still within the horizon lives once more
        fail_at = clock + lifetimes(ids.size)
        alive = fail_at < horizon
        ids, fail_at = ids[alive], fail_at[alive]
        back_at = fail_at + repairs(ids.size)
        failures.append(fail_at)
        rows.append(np.column_stack([ids, fail_at, back_at]))
        keep = back_at < horizon
        ids, clock = ids[keep], back_at[keep]
    down = np.concatenate(rows) if rows else np.empty((0, 3))
    return FleetRun(n=n, horizon=horizon, failures=np.sort(np.concatenate(failures)),
                    down=down)


def replica_loss(replicas: int, mttf: float, mttr: float, horizon: float, *,
                 rng: np.random.Generator, shock_rate: float = 0.0,
                 trials: int = 10_000) -> float:
    """Share of ``trials`` replica sets that had every copy down at once within ``horizon``.

    Each copy fails at rate ``1 / mttf`` and is repaired at rate ``1 / mttr`` (exponential,
    independently); common-mode shocks at rate ``shock_rate`` take every copy down at once. The
    sets start with every copy up; they are simulated event by event (Gillespie's method).
    """
    r = check_int("replicas", replicas, low=1, high=20)
    lam = 1.0 / check_real("mttf", mttf, low=0, low_open=True)
    mu = 1.0 / check_real("mttr", mttr, low=0, low_open=True)
    horizon = check_real("horizon", horizon, low=0)
    shock = check_real("shock_rate", shock_rate, low=0)
    trials = check_int("trials", trials, low=1, high=10_000_000)
    lost = 0
    for _ in range(trials):
        t, down = 0.0, 0
        while True:
            fail, fix = (r - down) * lam, down * mu
            total = fail + fix + shock
            t += rng.exponential(1.0 / total)
            if t > horizon:
                break
            u = rng.random() * total
            if u < shock:
                lost += 1
                break
            if u < shock + fail:
                down += 1
                if down == r:
                    lost += 1
                    break
            else:
                down -= 1
    return lost / trials
