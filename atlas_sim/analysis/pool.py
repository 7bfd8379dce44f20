"""Queueing theory of a bounded connection pool: what ``policies.pool.ConnectionPool`` should
do to Poisson arrivals holding a connection for exponential times, in closed form.

A pool of ``size`` = c connections in front of a database step is a c-server FIFO queue whose
"service" is the time a transaction holds its connection (``StoreConfig.query_time``, mean
1/mu). With Poisson arrivals at rate lambda (the requests that finished their work: with no
work, the arrival stream itself) and exponential hold times, its three settings give three
classic models:

=========================  ==================================================================
``MMcPool``                no bound on waiters and a timeout that never fires: M/M/c. The
                           chance to wait is Erlang C and the wait, given it is positive, is
                           exponential with rate c mu - lambda (``analysis.queueing.MMc``).
``FiniteWaitingPool``      ``max_waiting`` = K (and a timeout that never fires): M/M/c/(c+K),
                           the finite-buffer Erlang model. An arrival finding c + K in the
                           system is refused (PASTA: with the stationary probability p_{c+K}:
                           L. Kleinrock, "Queueing Systems, vol. 1", 1975, section 3.7); one
                           finding n >= c waits for n - c + 1 departures at rate c mu, an
                           Erlang(n - c + 1, c mu) time.
``TimeoutPool``            no bound on waiters and a deterministic ``timeout`` = tau (the
                           clients' patience): M/M/c+D. An arrival's offered wait V (the wait
                           it would have with infinite patience) has an atom at 0 and the
                           density lambda pi_{c-1} exp((lambda - c mu) x) for x > 0
                           (F. Baccelli and G. Hebuterne, "On queues with impatient
                           customers", Performance '81, 1981, pp. 159-179; S. Zeltyn and A.
                           Mandelbaum, "Call centers with impatient customers: many-server
                           asymptotics of the M/M/n+G queue", Queueing Systems 51, 2005,
                           section 3, with the patience G a point mass at tau). An arrival
                           with V < tau is served after V; one with V >= tau waits tau and
                           times out. The share timed out agrees with N. K. Boots and H.
                           Tijms, "A multiserver queueing system with impatient customers",
                           Management Science 45(3), 1999:
                           P = (1 - rho) C exp(-c mu (1 - rho) tau) / (1 - rho C exp(-c mu
                           (1 - rho) tau)), C the Erlang C of M/M/c (``boots_tijms``), and
                           for c = 1 with D. Y. Barrer's M/M/1 with constant patience
                           ("Queuing with impatient customers and ordered service",
                           Operations Research 5, 1957).
=========================  ==================================================================

``pool_theory(rate=, pool=, hold=)`` picks the model a ``PoolConfig`` and an exponential hold
``Distribution`` make; every model answers the same questions, so the simulated pool
(``sim.pool``, read by ``experiments.datasystem.pool_summary``) is compared with each:
``P_wait`` (the share of arrivals that wait, refused ones excluded), ``P_timeout``,
``P_refused``, ``mean_wait_granted`` (the mean wait of those granted a connection, zeros
included), ``mean_wait`` (of every arrival not refused: the timed-out ones wait ``timeout``),
``wait_quantile(p)`` (of the granted) and ``wait_cdf(t)``.

Times are in seconds (or any unit, the same for every argument); rates per that unit.
Raises ``ValueError`` naming the parameter and its range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..policies.pool import PoolConfig
from ..validation import check_int, check_real
from ..workload import Distribution
from .queueing import crossing, erlang_c
from .stats import gamma_sf

__all__ = ["FiniteWaitingPool", "MMcPool", "PoolModel", "TimeoutPool", "boots_tijms",
           "pool_theory"]


class PoolModel(Protocol):
    """What every pool model answers (see the module docstring)."""

    @property
    def P_wait(self) -> float: ...
    @property
    def P_timeout(self) -> float: ...
    @property
    def P_refused(self) -> float: ...
    @property
    def mean_wait_granted(self) -> float: ...
    @property
    def mean_wait(self) -> float: ...
    def wait_cdf(self, t: float) -> float: ...
    def wait_quantile(self, p: float) -> float: ...


def _log_erlang_terms(size: int, offered: float) -> np.ndarray:
    """log(a^k / k!) for k = 0 .. size - 1, relative to k = size - 1 (its term is 0)."""
    k = np.arange(size)
    logs = k * math.log(offered) - np.array([math.lgamma(j + 1) for j in k]) if offered > 0 \
        else np.where(k == 0, 0.0, -np.inf)
    return logs - logs[-1]


def _quantile_from_cdf(cdf: object, p: float, high: float) -> float:
    check_real("p", p, low=0, high=1, low_open=True, high_open=True)
    f = cdf  # a callable t -> P(wait <= t)
    assert callable(f)
    if f(0.0) >= p:
        return 0.0
    while f(high) < p:
        high *= 2
    return crossing(f, p, 0.0, high)


def _check(arrival_rate: float, service_rate: float, size: int) -> None:
    check_real("arrival_rate", arrival_rate, low=0)
    check_real("service_rate", service_rate, low=0, low_open=True)
    check_int("size", size, low=1, high=10_000)


@dataclass(frozen=True, kw_only=True)
class MMcPool:
    """M/M/c: ``size`` connections, unbounded waiters, no timeout (``arrival_rate`` <
    ``size`` * ``service_rate``, else ``ValueError``)."""

    arrival_rate: float
    service_rate: float
    size: int

    def __post_init__(self) -> None:
        _check(self.arrival_rate, self.service_rate, self.size)
        check_real("arrival_rate", self.arrival_rate, low=0,
                   high=self.size * self.service_rate, high_open=True)

    @property
    def P_wait(self) -> float:
        """Erlang C: the share of arrivals that find every connection in use."""
        return erlang_c(self.size, self.arrival_rate / self.service_rate)

    P_timeout = 0.0
    P_refused = 0.0

    @property
    def mean_wait_granted(self) -> float:
        """C / (c mu - lambda)."""
        return self.P_wait / (self.size * self.service_rate - self.arrival_rate)

    @property
    def mean_wait(self) -> float:
        return self.mean_wait_granted

    def wait_cdf(self, t: float) -> float:
        """P(wait <= t) = 1 - C exp(-(c mu - lambda) t), t >= 0."""
        return 1.0 - self.P_wait * math.exp(-(self.size * self.service_rate
                                              - self.arrival_rate) * max(t, 0.0))

    def wait_quantile(self, p: float) -> float:
        """The ``p``-quantile of the wait (0 < p < 1): 0 while p <= 1 - C."""
        check_real("p", p, low=0, high=1, low_open=True, high_open=True)
        c = self.P_wait
        if p <= 1 - c:
            return 0.0
        return -math.log((1 - p) / c) / (self.size * self.service_rate - self.arrival_rate)


@dataclass(frozen=True, kw_only=True)
class FiniteWaitingPool:
    """M/M/c/(c+K): ``size`` connections, at most ``max_waiting`` = K >= 1 waiters (the next
    arrival is refused), no timeout. Any load (it is stable for every rate)."""

    arrival_rate: float
    service_rate: float
    size: int
    max_waiting: int

    def __post_init__(self) -> None:
        _check(self.arrival_rate, self.service_rate, self.size)
        check_int("max_waiting", self.max_waiting, low=1, high=1_000_000)

    def probabilities(self) -> np.ndarray:
        """p_n, n = 0 .. c + K: the stationary number holding or waiting (shape (c+K+1,))."""
        c, k = self.size, self.max_waiting
        a = self.arrival_rate / self.service_rate
        logs = _log_erlang_terms(c, a)  # n < c, relative to n = c - 1
        rho = a / c
        # n = c .. c + K: p_{c-1} * (a / c) * rho^(n - c)
        j = np.arange(k + 1)
        above = (math.log(rho) * (j + 1) if rho > 0 else np.where(j + 1 == 0, 0.0, -np.inf))
        log_p = np.concatenate([logs, above])
        log_p -= log_p.max()
        p = np.exp(log_p)
        return p / p.sum()

    @property
    def P_refused(self) -> float:
        """The finite-buffer blocking probability p_{c+K} (arrivals see time averages)."""
        return float(self.probabilities()[-1])

    P_timeout = 0.0

    @property
    def P_wait(self) -> float:
        """Of the arrivals not refused, the share that wait (they find c..c+K-1 present)."""
        p = self.probabilities()
        return float(p[self.size:-1].sum() / (1 - p[-1]))

    def _waiting_mix(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights, stages): an admitted arrival waits Erlang(stage, c mu) with weight."""
        p = self.probabilities()
        weights = p[self.size:-1] / (1 - p[-1])
        return weights, np.arange(1, self.max_waiting + 1)

    @property
    def mean_wait_granted(self) -> float:
        """Sum over n >= c of p_n (n - c + 1) / (c mu), over 1 - p_{c+K}."""
        weights, stages = self._waiting_mix()
        return float((weights * stages).sum() / (self.size * self.service_rate))

    @property
    def mean_wait(self) -> float:
        return self.mean_wait_granted

    def wait_cdf(self, t: float) -> float:
        """P(wait <= t) of the admitted arrivals, t >= 0."""
        weights, stages = self._waiting_mix()
        scale = 1.0 / (self.size * self.service_rate)
        tail = float((weights * gamma_sf(max(t, 0.0), stages, scale=scale)).sum())
        return 1.0 - tail

    def wait_quantile(self, p: float) -> float:
        return _quantile_from_cdf(self.wait_cdf, p, 1.0 / (self.size * self.service_rate))


@dataclass(frozen=True, kw_only=True)
class TimeoutPool:
    """M/M/c+D: ``size`` connections, unbounded waiters, each waiting at most ``timeout`` =
    tau > 0 (see the module docstring for the offered-wait density and its sources). Any load:
    the timeout keeps it stable."""

    arrival_rate: float
    service_rate: float
    size: int
    timeout: float

    def __post_init__(self) -> None:
        _check(self.arrival_rate, self.service_rate, self.size)
        check_real("timeout", self.timeout, low=0, low_open=True)

    @property
    def _delta(self) -> float:
        return self.arrival_rate - self.size * self.service_rate

    def _masses(self) -> tuple[float, float, float, float]:
        """(served at once, served after a wait, timed out, lambda / total): the masses are
        scaled by g = exp(-max(delta tau, 0)) before normalising so that nothing overflows;
        lambda pi_{c-1} exp(delta x) is (lambda / total) exp(delta x) g."""
        lam, tau, d = self.arrival_rate, self.timeout, self._delta
        c_mu = self.size * self.service_rate
        g_log = -max(d * tau, 0.0)  # log of the scale
        at_once = float(np.exp(_log_erlang_terms(self.size, lam / self.service_rate)
                               + g_log).sum()) if lam > 0 else 1.0
        if abs(d * tau) < 1e-9:
            waited = lam * tau
        elif d > 0:
            waited = lam * (1 - math.exp(-d * tau)) / d
        else:
            waited = lam * math.expm1(d * tau) / d
        timed_out = lam * math.exp(d * tau + g_log) / c_mu
        total = at_once + waited + timed_out
        return at_once / total, waited / total, timed_out / total, lam / total

    @property
    def P_timeout(self) -> float:
        """P(V >= tau) = lambda pi_{c-1} exp((lambda - c mu) tau) / (c mu)."""
        return self._masses()[2]

    P_refused = 0.0

    @property
    def P_wait(self) -> float:
        """P(V > 0): the share that find every connection in use (served later or not)."""
        return 1.0 - self._masses()[0]

    @property
    def P_served_after_wait(self) -> float:
        """P(0 < V < tau)."""
        return self._masses()[1]

    def _partial_mean(self) -> float:
        """E[V; V < tau] = lambda pi_{c-1} * integral_0^tau x exp(delta x) dx."""
        *_, lam_total = self._masses()
        tau, d = self.timeout, self._delta
        if abs(d * tau) < 1e-9:
            integral = tau * tau / 2
        elif d > 0:  # the scale exp(-delta tau) folded in: integral of x exp(delta (x - tau))
            e = math.exp(-d * tau)
            integral = tau * (1 - e) / d - (1 - e * (1 + d * tau)) / d ** 2
        else:
            integral = (math.exp(d * tau) * (d * tau - 1) + 1) / d ** 2
        return lam_total * integral

    @property
    def mean_wait_granted(self) -> float:
        """E[V | V < tau]: the mean wait of those granted a connection, zeros included."""
        return self._partial_mean() / (1 - self.P_timeout)

    @property
    def mean_wait(self) -> float:
        """E[min(V, tau)]: the mean wait of every arrival (a timed-out one waits tau)."""
        return self._partial_mean() + self.timeout * self.P_timeout

    def wait_cdf(self, t: float) -> float:
        """P(V <= t | V < tau), the wait of the granted, for 0 <= t < tau (1 beyond)."""
        if t >= self.timeout:
            return 1.0
        at_once, _, timed_out, lam_total = self._masses()
        t, d = max(t, 0.0), self._delta
        if abs(d * self.timeout) < 1e-9:
            part = lam_total * t
        elif d > 0:  # with the scale exp(-delta tau)
            part = lam_total * (math.exp(d * (t - self.timeout))
                                - math.exp(-d * self.timeout)) / d
        else:
            part = lam_total * math.expm1(d * t) / d
        return (at_once + part) / (1 - timed_out)

    def wait_quantile(self, p: float) -> float:
        return _quantile_from_cdf(self.wait_cdf, p, self.timeout)


def boots_tijms(*, arrival_rate: float, service_rate: float, size: int,
                timeout: float) -> float:
    """The share of M/M/c+D arrivals that time out, by Boots and Tijms's formula (1999):
    (1 - rho) C e / (1 - rho C e), rho = lambda / (c mu) < 1, C = Erlang C, e = exp(-c mu (1 -
    rho) tau). An independent form of ``TimeoutPool.P_timeout`` (stable loads only)."""
    _check(arrival_rate, service_rate, size)
    check_real("arrival_rate", arrival_rate, low=0, high=size * service_rate, high_open=True)
    check_real("timeout", timeout, low=0, low_open=True)
    rho = arrival_rate / (size * service_rate)
    c = erlang_c(size, arrival_rate / service_rate)
    e = math.exp(-size * service_rate * (1 - rho) * timeout)
    return (1 - rho) * c * e / (1 - rho * c * e)


def pool_theory(*, rate: float, pool: PoolConfig, hold: Distribution,
                timeout_fires: bool = True) -> MMcPool | FiniteWaitingPool | TimeoutPool:
    """The closed form for Poisson arrivals at ``rate`` per second to ``pool`` whose
    connections are held for exponential ``hold`` times: ``TimeoutPool`` (M/M/c+D,
    ``max_waiting=0``), or with ``timeout_fires=False`` (the caller asserts that the
    timeout is long enough never to fire) ``MMcPool`` (``max_waiting=0``) or
    ``FiniteWaitingPool`` (``max_waiting=K``).

    Raises ``ValueError`` for a ``hold`` that is not exponential with a positive mean, or a
    finite ``max_waiting`` with a timeout that fires (no closed form here).
    """
    if not isinstance(pool, PoolConfig):
        raise ValueError(f"pool must be a PoolConfig, got {pool!r}")
    if not isinstance(hold, Distribution) or hold.kind != "exponential" or hold.mean <= 0:
        raise ValueError(f"hold must be an exponential Distribution with mean > 0, got {hold!r}")
    mu = 1.0 / hold.mean
    if pool.max_waiting:
        if timeout_fires:
            raise ValueError("pool.max_waiting must be 0 when the timeout fires (M/M/c/K+D "
                             "has no closed form here); pass timeout_fires=False for "
                             "M/M/c/(c+K)")
        return FiniteWaitingPool(arrival_rate=rate, service_rate=mu, size=pool.size,
                                 max_waiting=pool.max_waiting)
    if timeout_fires:
        return TimeoutPool(arrival_rate=rate, service_rate=mu, size=pool.size,
                           timeout=pool.timeout)
    return MMcPool(arrival_rate=rate, service_rate=mu, size=pool.size)
