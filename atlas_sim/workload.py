"""What the simulation and the live service agree on about load and work.

* ``Distribution``: how long work takes (service times, dependency latencies), drawn the same way
  in both worlds.
* ``arrival_times``: when requests are sent (open-loop Poisson or evenly spaced, with optional
  step changes of the rate), used by the simulator's arrival process and the live load generator.
* ``rng_streams``: one seed, split into named independent random streams. Simulation and live
  service take their streams by the same names, so a live run and a simulated run with the same
  seed send the same arrivals and draw the same service times (common random numbers): the two
  differ only where the real world differs from the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from .validation import check_choice, check_real

__all__ = [
    "STREAM_NAMES",
    "Distribution",
    "DistributionKind",
    "arrival_times",
    "rng_streams",
]

DistributionKind = Literal["exponential", "constant", "lognormal"]

#: The named random streams, in spawn order. Append only: a stream's numbers depend on its
#: position, so inserting a name would change every run after it.
STREAM_NAMES = ("arrivals", "service", "client", "dependency", "server", "think")


def rng_streams(seed: int | None) -> dict[str, np.random.Generator]:
    """Independent generators for each of ``STREAM_NAMES``, all derived from ``seed``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 or None, got {seed!r}")
    children = np.random.SeedSequence(seed).spawn(len(STREAM_NAMES))
    return {
        name: np.random.default_rng(child)
        for name, child in zip(STREAM_NAMES, children, strict=True)
    }


@dataclass(frozen=True, kw_only=True)
class Distribution:
    """A positive random duration with a given ``mean`` (seconds).

    ``kind``: ``"exponential"`` (memoryless: the M in M/M/c), ``"constant"`` (every draw is the
    mean), or ``"lognormal"`` (a long right tail; ``shape`` is the sigma of the underlying
    normal, so 0.5 is mild and 1.5 is heavy). The lognormal is parameterised so that its mean is
    ``mean`` whatever the shape.
    """

    mean: float
    kind: DistributionKind = "exponential"
    shape: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", check_real("mean", self.mean, low=0))
        check_choice("kind", self.kind, get_args(DistributionKind))
        object.__setattr__(self, "shape", check_real("shape", self.shape, low=0, low_open=True,
                                                     high=5))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent draws."""
        if self.kind == "constant" or self.mean == 0:
            return np.full(size, self.mean)
        if self.kind == "exponential":
            return rng.exponential(self.mean, size)
        sigma = self.shape
        return rng.lognormal(np.log(self.mean) - sigma * sigma / 2.0, sigma, size)

    def sampler(self, rng: np.random.Generator, block: int = 4096) -> Callable[[], float]:
        """A zero-argument function returning one draw at a time, fast.

        Draws are made ``block`` at a time (numpy is much faster per number in bulk) and handed
        out in order, so the sequence is the same as ``sample(rng, n)``'s for any ``n``.
        """
        if self.kind == "constant" or self.mean == 0:
            value = float(self.mean)
            return lambda: value
        buffer: list[float] = []

        def draw() -> float:
            if not buffer:
                buffer.extend(reversed(self.sample(rng, block).tolist()))
            return buffer.pop()

        return draw

    def cdf(self, t: float) -> float:
        """P(draw <= t): e.g. ``1 - cdf(timeout)`` is the share a timeout would cut off."""
        t = check_real("t", t)
        if t < 0:
            return 0.0
        if self.kind == "constant" or self.mean == 0:
            return 1.0 if t >= self.mean else 0.0
        if self.kind == "exponential":
            return float(-np.expm1(-t / self.mean))
        if t == 0:
            return 0.0
        from statistics import NormalDist

        sigma = self.shape
        return NormalDist().cdf((np.log(t) - np.log(self.mean) + sigma * sigma / 2) / sigma)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0 < q < 1) of this distribution, for choosing timeouts."""
        q = check_real("q", q, low=0, high=1, low_open=True, high_open=True)
        if self.kind == "constant" or self.mean == 0:
            return self.mean
        if self.kind == "exponential":
            return float(-self.mean * np.log1p(-q))
        from statistics import NormalDist

        sigma = self.shape
        z = NormalDist().inv_cdf(q)
        return float(np.exp(np.log(self.mean) - sigma * sigma / 2 + sigma * z))


def arrival_times(
    rate: float,
    duration: float,
    rng: np.random.Generator,
    *,
    process: Literal["poisson", "constant"] = "poisson",
    steps: Sequence[tuple[float, float]] = (),
) -> np.ndarray:
    """Send times in ``[0, duration)`` for an open-loop load of ``rate`` requests per second.

    ``steps`` changes the rate at given times: ``[(10.0, 300.0)]`` means 300/s from t = 10 s on.
    Poisson arrivals are drawn segment by segment (the count is Poisson, the times uniform and
    sorted, which is exact for a Poisson process); constant arrivals are evenly spaced.
    """
    duration = check_real("duration", duration, low=0, low_open=True)
    rate = check_real("rate", rate, low=0)
    check_choice("process", process, ("poisson", "constant"))
    edges, rates = [0.0], [rate]
    for i, step in enumerate(steps):
        if len(step) != 2:
            raise ValueError(f"steps[{i}] must be a (time, rate) pair, got {step!r}")
        t = check_real(f"steps[{i}] time", step[0], low=edges[-1], low_open=True, high=duration)
        edges.append(t)
        rates.append(check_real(f"steps[{i}] rate", step[1], low=0))
    edges.append(duration)
    parts = []
    for start, end, r in zip(edges[:-1], edges[1:], rates, strict=True):
        length = end - start
        if r == 0 or length <= 0:
            continue
        if process == "poisson":
            n = rng.poisson(r * length)
            parts.append(np.sort(rng.uniform(start, end, n)))
        else:
            parts.append(start + np.arange(int(np.floor(r * length - 1e-9)) + 1) / r)
    if not parts:
        return np.empty(0)
    times = np.concatenate(parts)
    return times[times < duration]
