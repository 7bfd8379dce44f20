"""Hardware faults at fleet scale, simulated: components that fail and are repaired, and data on
replicas that is lost only when every replica is down at once.

Two small Monte Carlo models (numpy only, no queue, so no SimPy), each checked against its
closed form in ``atlas_sim.analysis.reliability``:

* ``fleet``: ``n`` components, each alternating up (a lifetime drawn from an exponential with
  mean ``mttf``, or a Weibull with the same mean and shape ``shape``: shape > 1 is wear-out) and
  down (a repair of ``mttr``, constant or exponential). Returns the failure times and each
  component's down intervals, from which failures per day and how many are down at once follow.
  At time 0 the components are either all new and up (``start="new"``: a fleet bought in one
  batch, whose failure rate approaches the long-run one only after several lifetimes, in waves
  when lifetimes wear out) or of every age (``start="stationary"``: a fleet that has run for a
  long time, each component in the state the alternating renewal process settles into: down
  with probability ``mttr / (mttf + mttr)`` with the rest of its repair uniform (or, for
  exponential repairs, exponential) and otherwise up with a residual life drawn from the
  equilibrium (excess-life) distribution, density ``S(t) / mttf``; S. M. Ross, "Introduction to
  Probability Models", chapter 7, alternating renewal processes and the equilibrium
  distribution). Started stationary, the fleet fails at the long-run rate ``n / (mttf + mttr)``
  from the first day, whatever the lifetime's shape.
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
Start = Literal["new", "stationary"]


@dataclass(frozen=True)
class FleetRun:
    """What a simulated fleet did over ``horizon`` (same time unit as its inputs).

    ``failures``: sorted failure times within ``[0, horizon)``, shape ``(f,)``. ``down``: one
    row per repair, ``(component, start, end)``, shape ``(d, 3)``: the ``f`` repairs that follow
    those failures, and for a fleet started stationary one more per component that was
    already down at time 0 (its ``start`` before 0). ``end`` may pass the horizon.
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
          repair: Repair = "constant", start: Start = "new") -> FleetRun:
    """Simulate ``n`` components over ``horizon`` (see the module docstring).

    Args:
        n: components, 1..10^6.
        mttf: mean lifetime, > 0. mttr: mean repair time, >= 0.
        horizon: how long, > 0.
        rng: the random stream.
        lifetime: ``"exponential"`` or ``"weibull"`` (Weibull scale ``mttf / Gamma(1 + 1/shape)``
            so that its mean is ``mttf``). shape: Weibull shape, > 0 (1 is exponential).
        repair: ``"constant"`` (exactly ``mttr``) or ``"exponential"`` (mean ``mttr``).
        start: ``"new"`` (every component new and up at 0) or ``"stationary"`` (of every age,
            as after a long run; see the module docstring).
    """
    n = check_int("n", n, low=1, high=1_000_000)
    mttf = check_real("mttf", mttf, low=0, low_open=True)
    mttr = check_real("mttr", mttr, low=0)
    horizon = check_real("horizon", horizon, low=0, low_open=True)
    check_choice("lifetime", lifetime, ("exponential", "weibull"))
    shape = check_real("shape", shape, low=0, low_open=True)
    check_choice("repair", repair, ("constant", "exponential"))
    check_choice("start", start, ("new", "stationary"))
    scale = mttf / math.gamma(1.0 + 1.0 / shape)

    def lifetimes(k: int) -> np.ndarray:
        if lifetime == "exponential":
            return rng.exponential(mttf, k)
        return scale * rng.weibull(shape, k)

    def repairs(k: int) -> np.ndarray:
        return np.full(k, mttr) if repair == "constant" else rng.exponential(mttr, k)

    ids = np.arange(n)
    clock = np.zeros(n)
    failures: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    if start == "stationary":
        # down at 0 with the long-run probability, partway through a repair (a constant repair
        # uniformly far in; an exponential one has an exponential rest, memoryless); up
        # otherwise, with the equilibrium residual life U * L*, L* the length-biased lifetime
        # (density t f(t) / mttf: for a Weibull, scale * Gamma(1 + 1/shape)^(1/shape))
        down_now = rng.random(n) < mttr / (mttf + mttr)
        k = int(down_now.sum())
        if repair == "constant":
            left = mttr * rng.random(k)
            begun = left - mttr
        else:
            left = rng.exponential(mttr, k)
            begun = -rng.exponential(mttr, k)  # the elapsed part, independent (Poisson)
        rows.append(np.column_stack([ids[down_now], begun, left]))
        up = ~down_now
        if lifetime == "exponential":
            residual = rng.exponential(mttf, int(up.sum()))
        else:
            biased = scale * rng.gamma(1.0 + 1.0 / shape, 1.0, int(up.sum())) ** (1.0 / shape)
            residual = rng.random(int(up.sum())) * biased
        fail_at = residual
        inside = fail_at < horizon
        first_ids, fail_at = ids[up][inside], fail_at[inside]
        back_at = fail_at + repairs(first_ids.size)
        failures.append(fail_at)
        rows.append(np.column_stack([first_ids, fail_at, back_at]))
        restart = np.concatenate([ids[down_now], first_ids])
        restart_at = np.concatenate([left, back_at])
        keep = restart_at < horizon
        ids, clock = restart[keep], restart_at[keep]
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
    failed = np.sort(np.concatenate(failures)) if failures else np.empty(0)
    return FleetRun(n=n, horizon=horizon, failures=failed, down=down)


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
