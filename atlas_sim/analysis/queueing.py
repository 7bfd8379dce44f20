"""Queueing theory for the M/M/c queue, to check the simulator against and to teach with.

Poisson arrivals at ``arrival_rate``, exponential service at ``service_rate`` per worker,
``workers`` workers (the c of M/M/c: how many requests are worked on at once, as in
``ServerConfig.workers``) sharing one FIFO queue. Erlang's formulas give the chance of waiting
and the mean wait; the response-time distribution is a mix of an exponential service time and
a wait that is zero with probability 1 - C and exponential with rate ``c mu - lambda``
otherwise.

For other service-time shapes (M/G/c), ``MGc`` gives the mean wait by the Allen-Cunneen
approximation, exact for one worker (the Pollaczek-Khinchine formula) and for exponential
service (Erlang C). ``time_average_in_system`` measures L from a run's request table, for
Little's law.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..server_config import WORKERS_RENAMED
from ..validation import check_int, check_real, renamed_fields
from ..workload import Distribution

__all__ = ["MGc", "MMc", "erlang_b", "erlang_c", "squared_cv", "time_average_in_system"]


#: What each class says to a caller who still writes ``servers=``.


def erlang_b(workers: int, offered: float) -> float:
    """Blocking probability of M/M/c/c, c = ``workers``, with ``offered`` = lambda / mu erlangs
    (the recursion B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)), stable for any c)."""
    b = 1.0
    for k in range(1, workers + 1):
        b = offered * b / (k + offered * b)
    return b


def erlang_c(workers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c, c = ``workers`` (1 when offered >= c)."""
    rho = offered / workers
    if rho >= 1:
        return 1.0
    b = erlang_b(workers, offered)
    return b / (1 - rho * (1 - b))


@renamed_fields(WORKERS_RENAMED)
@dataclass(frozen=True, kw_only=True)
class MMc:
    """Steady-state M/M/c figures: ``MMc(arrival_rate=0.8, service_rate=1, workers=1).W``.

    ``workers`` is the c of M/M/c (``ServerConfig.workers``); ``servers=`` is refused with a
    ValueError that says so. Raises ValueError for ``workers`` < 1, ``service_rate`` <= 0 or
    an unstable queue (``arrival_rate`` outside [0, workers * service_rate)).
    """

    arrival_rate: float
    service_rate: float
    workers: int = 1

    def __post_init__(self) -> None:
        check_real("service_rate", self.service_rate, low=0, low_open=True)
        check_int("workers", self.workers, low=1)
        check_real("arrival_rate", self.arrival_rate, low=0,
                   high=self.workers * self.service_rate, high_open=True)

    @property
    def utilisation(self) -> float:
        return self.arrival_rate / (self.workers * self.service_rate)

    @property
    def P_wait(self) -> float:
        """Erlang C: the chance an arrival finds every worker busy."""
        return erlang_c(self.workers, self.arrival_rate / self.service_rate)

    @property
    def Wq(self) -> float:
        """Mean wait in the queue."""
        return self.P_wait / (self.workers * self.service_rate - self.arrival_rate)

    @property
    def W(self) -> float:
        """Mean response time: wait plus service."""
        return self.Wq + 1 / self.service_rate

    @property
    def L(self) -> float:
        """Mean number in the system (Little's law: L = lambda W)."""
        return self.arrival_rate * self.W

    @property
    def relaxation_time(self) -> float:
        """How long the queue takes to forget where it started (time, in the unit of
        1 / ``service_rate``): 1 / (√(cμ) − √λ)², at least 1 / μ.

        For one worker this is M/M/1's relaxation time, the rate (√μ − √λ)² at which its
        distribution approaches steady state (P. M. Morse, "Stochastic properties of waiting
        lines", Operations Research 3, 1955). With c workers the queue beyond c busy workers
        is an M/M/1 with service rate cμ, whence the same form; when that is faster than one
        service, a service time (the M/M/∞ limit) is the slower part. A simulation must run
        many relaxation times for its mean to be near the steady state's and for batch means
        to be nearly independent (W. Whitt, "Planning queueing simulations", Management
        Science 35(11), 1989, who sizes runs in these units). At ρ = 0.9 it is 380 service
        times for one worker.
        """
        gap = (math.sqrt(self.workers * self.service_rate) - math.sqrt(self.arrival_rate)) ** 2
        return 1.0 / min(self.service_rate, gap)

    def tail(self, t: float) -> float:
        """P(response time > t)."""
        mu, c = self.service_rate, self.P_wait
        theta = self.workers * mu - self.arrival_rate
        if math.isclose(theta, mu):  # wait and service have the same rate: Erlang-2 part
            mixed = (1 + mu * t) * math.exp(-mu * t)
        else:
            mixed = (theta * math.exp(-mu * t) - mu * math.exp(-theta * t)) / (theta - mu)
        return (1 - c) * math.exp(-mu * t) + c * mixed

    def quantile(self, p: float) -> float:
        """The ``p``-quantile of the response time (0 < p < 1)."""
        check_real("p", p, low=0, high=1, low_open=True, high_open=True)
        high = 1.0
        while self.tail(high) > 1 - p:
            high *= 2
        return crossing(self.tail, 1 - p, 0.0, high)


def crossing(f: Callable[[float], float], level: float, low: float, high: float, *,
             xtol: float = 1e-12) -> float:
    """The ``t`` in [low, high] where the monotone function ``f`` (increasing or decreasing)
    reaches ``level``, by bisection: each step halves the bracket, so about
    log2((high - low) / xtol) steps (40-50 for the quantiles here), within ``xtol`` plus four
    machine epsilons of ``t``. Used to invert the closed-form CDFs of ``MMc`` and
    ``analysis.pool``; ``scipy.optimize.brentq`` does it in fewer steps, but importing
    ``scipy.optimize`` costs a notebook kernel about 23 MiB (issue 23), and these functions
    are cheap to call.

    Raises ValueError when ``f(low)`` and ``f(high)`` are on the same side of ``level``, when
    ``low > high`` or ``xtol <= 0``, and when ``f`` gives NaN.
    """
    if not xtol > 0:
        raise ValueError(f"xtol must be > 0, got {xtol!r}")
    if not low <= high:
        raise ValueError(f"low must be <= high, got low={low!r}, high={high!r}")

    def side(t: float) -> float:
        value = float(f(t)) - level
        if math.isnan(value):
            raise ValueError(f"f({t!r}) is NaN: no crossing can be found")
        return value

    at_low, at_high = side(low), side(high)
    if at_low == 0:
        return float(low)
    if at_high == 0:
        return float(high)
    if (at_low > 0) == (at_high > 0):
        raise ValueError(f"f does not cross level={level!r} between low={low!r} and "
                         f"high={high!r}: f - level is {at_low:g} and {at_high:g} there")
    rising = at_low < 0
    low, high = float(low), float(high)
    while high - low > xtol + 4 * 2.220446049250313e-16 * abs(high):
        middle = (low + high) / 2
        if middle in (low, high):  # no float left between them
            break
        value = side(middle)
        if value == 0:
            return middle
        if (value < 0) == rising:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def squared_cv(distribution: Distribution) -> float:
    """The squared coefficient of variation (variance / mean squared) of a service-time
    ``Distribution``: 1 for exponential, 0 for constant, ``exp(shape**2) - 1`` for lognormal
    (``shape`` is the sigma of the underlying normal), and for ``two_point`` (fast, or ``r``
    times as slow with probability ``p``) ``p (1 - p) (r - 1)**2 / (1 + p (r - 1))**2`` (a
    two-valued variable's variance over its squared mean). Raises ValueError for anything that
    is not a ``Distribution``."""
    if not isinstance(distribution, Distribution):
        raise ValueError(f"distribution must be a Distribution, got {distribution!r}")
    if distribution.kind == "constant" or distribution.mean == 0:
        return 0.0
    if distribution.kind == "exponential":
        return 1.0
    if distribution.kind == "two_point":
        p, r = distribution.slow_share, distribution.slow_ratio
        assert p is not None and r is not None  # Distribution requires both for two_point
        return p * (1 - p) * (r - 1) ** 2 / (1 + p * (r - 1)) ** 2
    return math.expm1(distribution.shape ** 2)


@renamed_fields(WORKERS_RENAMED)
@dataclass(frozen=True, kw_only=True)
class MGc:
    """Mean figures for M/G/c: Poisson arrivals, ``workers`` workers, one FIFO queue, service
    times of mean ``1 / service_rate`` and squared coefficient of variation ``scv``
    (``squared_cv``: 1 exponential, 0 constant).

    The mean wait is the Allen-Cunneen approximation (A. O. Allen, "Probability, Statistics,
    and Queueing Theory with Computer Science Applications", 2nd ed., 1990)::

        Wq ~= Wq(M/M/c) * (1 + scv) / 2

    With one worker it is exact: the Pollaczek-Khinchine formula, ``Wq = rho S (1 + scv) /
    (2 (1 - rho))``. With ``scv`` = 1 it is exact too (Erlang C). With several workers and
    another shape it is an approximation: against the simulator at utilisation 0.8, constant
    service, it was 5% low with two workers and 10% low with eight (lognormal service of
    sigma 1: within the simulation's error).
    Only means: M/G/c has no closed form for its percentiles.

    Raises ValueError for ``scv`` < 0 and, as ``MMc``, for an unstable queue.
    """

    arrival_rate: float
    service_rate: float
    workers: int = 1
    scv: float = 1.0

    def __post_init__(self) -> None:
        check_real("scv", self.scv, low=0)
        MMc(arrival_rate=self.arrival_rate, service_rate=self.service_rate,
            workers=self.workers)  # validates the rest

    @property
    def utilisation(self) -> float:
        return self.arrival_rate / (self.workers * self.service_rate)

    @property
    def Wq(self) -> float:
        """Mean wait in the queue (approximate for several workers, see the class)."""
        exponential = MMc(arrival_rate=self.arrival_rate, service_rate=self.service_rate,
                          workers=self.workers).Wq
        return exponential * (1 + self.scv) / 2

    @property
    def W(self) -> float:
        """Mean response time: wait plus service."""
        return self.Wq + 1 / self.service_rate

    @property
    def L(self) -> float:
        """Mean number in the system (Little's law)."""
        return self.arrival_rate * self.W


def time_average_in_system(t_start: np.ndarray, t_end: np.ndarray, *, start: float,
                           end: float) -> float:
    """The time-average number of requests in the system over [``start``, ``end``] (seconds):
    L, measured. ``t_start`` and ``t_end`` are each request's arrival and departure (equal
    length, seconds, ``t_end >= t_start``).

    Built as the integral of the step function N(t) (up one at each arrival, down one at each
    departure) over the window, divided by its length. Over a window that starts empty and
    ends after the last departure, L equals (requests / window) times their mean time in the
    system exactly: Little's law as an identity (J. D. C. Little, "A Proof for the Queuing
    Formula: L = lambda W", Operations Research 9(3), 1961).
    """
    check_real("end", end, low=start, low_open=True)
    arrive = np.clip(np.asarray(t_start, dtype=float), start, end)
    leave = np.clip(np.asarray(t_end, dtype=float), start, end)
    if arrive.shape != leave.shape:
        raise ValueError(f"t_start and t_end must have the same length, got {arrive.size} "
                         f"and {leave.size}")
    if not (np.all(np.isfinite(arrive)) and np.all(np.isfinite(leave))):
        raise ValueError("t_start and t_end must be finite (a request still open has no t_end)")
    if np.any(leave < arrive):
        raise ValueError("t_end must be >= t_start for every request")
    times = np.concatenate([arrive, leave])
    steps = np.concatenate([np.ones(arrive.size), -np.ones(leave.size)])
    order = np.argsort(times, kind="stable")
    times, level = times[order], np.cumsum(steps[order])
    widths = np.diff(np.append(times, end))
    return float((level * widths).sum() / (end - start))
