"""Tail latency in closed form: fan-out amplification and hedged requests.

The backend call of the fan-out model (``sim.fanout``) and of the live service's
``/api/fanout``: a fast latency ``X`` drawn from ``fast`` (a ``Distribution``), except that with
probability ``slow_rate`` the call is slow and takes ``max(X, slow_latency)``. Its survival function
(the share of calls slower than ``t``) is

    S(t) = (1 - slow_rate) * F̄(t) + slow_rate * [1 if t < slow_latency else F̄(t)],

with ``F̄ = 1 - fast.cdf``. From it:

* **Fan-out.** A request that waits for ``width`` independent calls is slower than ``t`` unless
  every call is faster: ``P(request > t) = 1 - (1 - S(t))**width``. The share of requests held up by
  at least one slow call is ``1 - (1 - slow_rate)**width`` (Dean and Barroso, "The Tail at Scale",
  CACM 2013: 63% for one slow call in 100 and width 100).
* **Hedging.** Copy ``i`` (``i = 0..k``, ``k = max_extra``) is sent at ``i * d`` unless an
  answer came first, and the call ends with the first answer, so its latency is
  ``T = min_i (i * d + X_i)`` for independent ``X_i``:
  ``P(T > t) = prod_i S(t - i * d)`` with ``S(u) = 1`` for ``u < 0``; for one extra copy,
  ``S(t)`` below ``d`` and ``S(t) * S(t - d)`` from ``d`` on. Copy ``j`` is sent iff none of
  the earlier ones has answered at ``j * d``, with probability ``prod_{m=1..j} S(m * d)``; the
  extra calls per call are the sum of these (``S(d)`` for one extra copy: hedging at the
  p95 costs at most 5% more calls, Dean and Barroso's "approximately 5%").

Percentiles are found by bisection on the survival function (monotone, with one jump at
``slow_latency``), to a nanosecond.
"""

from __future__ import annotations

import math

from ..sim.fanout import slow_request_probability
from ..validation import check_int, check_real
from ..workload import Distribution

__all__ = ["TailModel", "hedge_delay_at"]

_QUANTILE_TOLERANCE = 1e-9  # seconds


class TailModel:
    """The backend call above, and what fan-out and hedging make of it.

    Args:
        fast: the latency of a call that is not slow (seconds).
        slow_rate: the probability that a call is slow, 0..1.
        slow_latency: the least latency of a slow call (seconds, >= 0).
    """

    __slots__ = ("fast", "slow_latency", "slow_rate")

    def __init__(self, *, fast: Distribution, slow_rate: float, slow_latency: float) -> None:
        if not isinstance(fast, Distribution):
            raise ValueError(f"fast must be a Distribution, got {fast!r}")
        self.fast = fast
        self.slow_rate = check_real("slow_rate", slow_rate, low=0, high=1)
        self.slow_latency = check_real("slow_latency", slow_latency, low=0)

    @classmethod
    def two_point(cls, service_time: Distribution) -> TailModel:
        """The closed form of a ``Distribution(kind="two_point", ...)``: a constant fast latency,
        slow with probability ``slow_share`` at ``slow_ratio`` times the fast one (a service
        time of the shape this model assumes). Raises ValueError for another kind."""
        if not isinstance(service_time, Distribution):
            raise ValueError(f"service_time must be a Distribution, got {service_time!r}")
        fast, slow = service_time.two_point_values()
        assert service_time.slow_share is not None
        return cls(fast=Distribution(mean=fast, kind="constant"),
                   slow_rate=service_time.slow_share, slow_latency=slow)

    def __repr__(self) -> str:
        return (f"TailModel(fast={self.fast!r}, slow_rate={self.slow_rate:g}, "
                f"slow_latency={self.slow_latency:g})")

    # -- one call ----------------------------------------------------------------------------

    def survival(self, t: float) -> float:
        """``P(X > t)`` for one call (1 for t < 0)."""
        if t < 0:
            return 1.0
        fast = 1.0 - self.fast.cdf(t)
        if t < self.slow_latency:
            return (1.0 - self.slow_rate) * fast + self.slow_rate
        return fast

    def hedged_survival(self, t: float, delay: float | None, max_extra: int = 1) -> float:
        """``P(T > t)`` for a call hedged after ``delay`` seconds with up to ``max_extra``
        extra copies (``delay`` None: not hedged)."""
        if delay is None:
            return self.survival(t)
        check_real("delay", delay, low=0)
        check_int("max_extra", max_extra, low=1, high=4)
        result = 1.0
        for i in range(max_extra + 1):
            u = t - i * delay
            if u < 0:
                break
            result *= self.survival(u)
        return result

    def extra_calls(self, delay: float | None, max_extra: int = 1) -> float:
        """Expected copies sent beyond the first, per call: ``sum_j prod_{m<=j} S(m * d)``."""
        if delay is None:
            return 0.0
        check_real("delay", delay, low=0)
        check_int("max_extra", max_extra, low=1, high=4)
        total, sent = 0.0, 1.0
        for j in range(1, max_extra + 1):
            sent *= self.survival(j * delay)
            total += sent
        return total

    # -- width calls in parallel ------------------------------------------------------------

    def request_survival(self, t: float, width: int = 1, delay: float | None = None,
                         max_extra: int = 1) -> float:
        """``P(request > t)`` for a request waiting on ``width`` independent (hedged) calls."""
        check_int("width", width, low=1)
        s = self.hedged_survival(t, delay, max_extra)
        return -math.expm1(width * math.log1p(-s)) if s < 1 else 1.0

    def quantile(self, q: float, width: int = 1, delay: float | None = None,
                 max_extra: int = 1) -> float:
        """The ``q``-quantile (0 < q < 1) of a request's latency: the least ``t`` with
        ``P(request > t) <= 1 - q``. ``width=1, delay=None`` is one plain call."""
        q = check_real("q", q, low=0, high=1, low_open=True, high_open=True)
        target = 1.0 - q
        low, high = 0.0, max(self.slow_latency, self.fast.mean, 1e-3)
        while self.request_survival(high, width, delay, max_extra) > target:
            high *= 2.0
        if self.request_survival(low, width, delay, max_extra) <= target:
            return 0.0
        while high - low > _QUANTILE_TOLERANCE:
            mid = 0.5 * (low + high)
            if self.request_survival(mid, width, delay, max_extra) > target:
                low = mid
            else:
                high = mid
        if delay is None and high < self.slow_latency and self.slow_rate > 0:
            # Below slow_latency the survival is 1 - (1 - p)^width plus the fast calls' tail, which
            # is never 0 but falls below a float's resolution: where the plateau itself is the
            # target (the p99 of one call slow once in 100), the quantile is slow_latency.
            plateau = self.slow_share(width)
            if abs(plateau - target) <= 1e-12 * target:
                return self.slow_latency
        return high

    def slow_share(self, width: int) -> float:
        """The share of requests held up by at least one slow call: ``1 - (1 - p)**width``."""
        return slow_request_probability(width, self.slow_rate)


def hedge_delay_at(model: TailModel, percentile: float) -> float:
    """The hedge delay at the ``percentile`` (0 < percentile < 100) of one call's latency, as
    Dean and Barroso suggest (the 95th: "limits the additional load to approximately 5%")."""
    percentile = check_real("percentile", percentile, low=0, high=100, low_open=True,
                            high_open=True)
    return model.quantile(percentile / 100.0)
