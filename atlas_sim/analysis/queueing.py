"""Queueing theory for the M/M/c queue, to check the simulator against and to teach with.

Poisson arrivals at ``arrival_rate``, exponential service at ``service_rate`` per server,
``servers`` servers sharing one FIFO queue. Erlang's formulas give the chance of waiting and the
mean wait; the response-time distribution is a mix of an exponential service time and a wait
that is zero with probability 1 - C and exponential with rate ``c mu - lambda`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq

from ..validation import check_int, check_real

__all__ = ["MMc", "erlang_b", "erlang_c"]


def erlang_b(servers: int, offered: float) -> float:
    """Blocking probability of M/M/c/c with ``offered`` = lambda / mu erlangs (the recursion
    B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)), stable for any c)."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return b


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c (needs offered < servers)."""
    rho = offered / servers
    if rho >= 1:
        return 1.0
    b = erlang_b(servers, offered)
    return b / (1 - rho * (1 - b))


@dataclass(frozen=True, kw_only=True)
class MMc:
    """Steady-state M/M/c figures: ``MMc(arrival_rate=0.8, service_rate=1, servers=1).W``."""

    arrival_rate: float
    service_rate: float
    servers: int = 1

    def __post_init__(self) -> None:
        check_real("service_rate", self.service_rate, low=0, low_open=True)
        check_int("servers", self.servers, low=1)
        check_real("arrival_rate", self.arrival_rate, low=0,
                   high=self.servers * self.service_rate, high_open=True)

    @property
    def utilisation(self) -> float:
        return self.arrival_rate / (self.servers * self.service_rate)

    @property
    def P_wait(self) -> float:
        """Erlang C: the chance an arrival finds every server busy."""
        return erlang_c(self.servers, self.arrival_rate / self.service_rate)

    @property
    def Wq(self) -> float:
        """Mean wait in the queue."""
        return self.P_wait / (self.servers * self.service_rate - self.arrival_rate)

    @property
    def W(self) -> float:
        """Mean response time: wait plus service."""
        return self.Wq + 1 / self.service_rate

    @property
    def L(self) -> float:
        """Mean number in the system (Little's law: L = lambda W)."""
        return self.arrival_rate * self.W

    def tail(self, t: float) -> float:
        """P(response time > t)."""
        mu, c = self.service_rate, self.P_wait
        theta = self.servers * mu - self.arrival_rate
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
        return brentq(lambda t: self.tail(t) - (1 - p), 0.0, high, xtol=1e-12)
