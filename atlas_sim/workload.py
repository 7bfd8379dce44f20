"""What the simulation and the live service agree on about load and work.

* ``Distribution``: how long work takes (service times, dependency latencies), drawn the same way
  in both worlds.
* ``Load``: who sends requests and when, the one description of offered load that ``Scenario``
  and ``run_load`` both take: an open-loop rate (Poisson or evenly spaced, with step changes)
  or a closed population of clients who think between requests.
* ``arrival_times``: when requests are sent (open-loop Poisson or evenly spaced, with optional
  step changes of the rate), used by the simulator's arrival process and the live load generator.
* ``Fault``: a window of trouble (server capacity, a stall, dependency errors, latency or
  outage) that the simulator models and the live generator switches on in the service
  (defined in ``atlas_sim.faults``, which owns the fault fields; re-exported here).
* ``request_inputs``: what each request carries, as one number per request, the same on every
  attempt and in both worlds (a bad input, ``Fault.bad_input_rate``, is decided by it).
* ``rng_streams``: one seed, split into named independent random streams. Simulation and live
  service take their streams by the same names, so a live run and a simulated run with the same
  seed send the same arrivals and draw the same service times (common random numbers): the two
  differ only where the real world differs from the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from .faults import Fault, FaultConditions
from .validation import check_choice, check_int, check_real

__all__ = [
    "STREAM_NAMES",
    "ArrivalProcess",
    "Distribution",
    "DistributionKind",
    "Fault",
    "FaultConditions",
    "Load",
    "RequestInputs",
    "arrival_times",
    "request_inputs",
    "rng_streams",
]

DistributionKind = Literal["exponential", "constant", "lognormal", "two_point"]
ArrivalProcess = Literal["poisson", "constant"]

#: The named random streams, in spawn order. Append only: a stream's numbers depend on its
#: position, so inserting a name would change every run after it.
STREAM_NAMES = ("arrivals", "service", "client", "dependency", "server", "think", "inputs",
                "routing", "store")

#: The spawn key under which instances 1, 2, ... of a cluster find their own streams; beyond
#: any index ``SeedSequence.spawn`` gives the named streams, so no instance's streams are
#: another's or a named stream's.
_INSTANCE_KEY = 1_000_003


def rng_streams(seed: int | None, instance: int = 0) -> dict[str, np.random.Generator]:
    """Independent generators for each of ``STREAM_NAMES``, all derived from ``seed``.

    ``instance`` (0, 1, ...) picks the streams of one server instance of a cluster: instance 0
    has the streams of ``rng_streams(seed)`` (so a single server draws what it always did) and
    every other instance a set of its own, independent of instance 0's and of each other's, the
    same in the simulator and the live service (``numpy.random.SeedSequence`` with the spawn key
    ``(_INSTANCE_KEY, instance)``).
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 or None, got {seed!r}")
    check_int("instance", instance, low=0)
    root = (np.random.SeedSequence(seed) if instance == 0
            else np.random.SeedSequence(seed, spawn_key=(_INSTANCE_KEY, instance)))
    children = root.spawn(len(STREAM_NAMES))
    return {
        name: np.random.default_rng(child)
        for name, child in zip(STREAM_NAMES, children, strict=True)
    }


def request_inputs(seed: int | None, count: int) -> np.ndarray:
    """What requests ``0 .. count - 1`` of a run carry, each as a number in [0, 1): the first
    ``count`` draws of the ``"inputs"`` stream, in request order (a request's index in its
    schedule, or the order closed-loop clients send in). Shape ``(count,)``.

    A request's input is fixed when it is made: every attempt of it, on any server, carries the
    same one. ``Fault(bad_input_rate=q)`` makes the handler crash on the inputs below ``q``, so
    raising ``q`` keeps the bad inputs of a smaller ``q`` bad (common random numbers). Drawing
    more later continues the same sequence: ``request_inputs(s, 10)`` is the start of
    ``request_inputs(s, 20)``.
    """
    check_int("count", count, low=0)
    return rng_streams(seed)["inputs"].random(count)


class RequestInputs:
    """``request_inputs(seed, ...)`` read by request index as far as a run goes, for a run
    that does not know its length in advance (a closed loop, the simulator): ``inputs[i]`` is
    ``float(request_inputs(seed, n)[i])`` for any ``n > i``, drawn in blocks as needed."""

    __slots__ = ("_draws", "_stream")

    def __init__(self, seed: int | None) -> None:
        self._stream = rng_streams(seed)["inputs"]
        self._draws = np.empty(0)

    def __getitem__(self, index: int) -> float:
        drawn = len(self._draws)
        if index >= drawn:
            more = max(1024, index + 1 - drawn, drawn)
            self._draws = np.concatenate([self._draws, self._stream.random(more)])
        return float(self._draws[index])


@dataclass(frozen=True, kw_only=True, repr=False)
class Distribution:
    """A positive random duration with a given ``mean`` (seconds).

    ``kind``: ``"exponential"`` (memoryless: the M in M/M/c), ``"constant"`` (every draw is the
    mean), ``"lognormal"`` (a long right tail; ``shape`` is the sigma of the underlying normal,
    so 0.5 is mild and 1.5 is heavy), or ``"two_point"`` (fast or slow: every draw is one of two
    values, the slow one with probability ``slow_share`` and ``slow_ratio`` times the fast one;
    the backend call of ``analysis.tail``'s ``TailModel`` with a constant fast latency: see
    ``two_point_values``). Each kind is parameterised so that its mean is ``mean``.

    Args:
        mean: seconds, >= 0.
        kind: one of the kinds above.
        shape: the lognormal's sigma, 0 < shape <= 5 (read by no other kind).
        slow_share: two_point only (required there, refused elsewhere): the probability of
            the slow value, 0..1.
        slow_ratio: two_point only (required there, refused elsewhere): the slow value over
            the fast one, 1..1e6.

    Raises:
        ValueError: a field out of range, or ``slow_share``/``slow_ratio`` given with another
            kind or missing with ``"two_point"`` (named).
    """

    mean: float
    kind: DistributionKind = "exponential"
    shape: float = 1.0
    slow_share: float | None = None
    slow_ratio: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", check_real("mean", self.mean, low=0))
        check_choice("kind", self.kind, get_args(DistributionKind))
        object.__setattr__(self, "shape", check_real("shape", self.shape, low=0, low_open=True,
                                                     high=5))
        if self.kind == "two_point":
            for name in ("slow_share", "slow_ratio"):
                if getattr(self, name) is None:
                    raise ValueError(f"kind='two_point' needs {name} (slow_share: the slow "
                                     f"draws' probability, 0..1; slow_ratio: slow over fast, "
                                     f"1..1e6)")
            object.__setattr__(self, "slow_share",
                               check_real("slow_share", self.slow_share, low=0, high=1))
            object.__setattr__(self, "slow_ratio",
                               check_real("slow_ratio", self.slow_ratio, low=1, high=1e6))
        else:
            for name in ("slow_share", "slow_ratio"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to kind='two_point' only, got "
                                     f"kind={self.kind!r}")

    def __repr__(self) -> str:
        text = f"Distribution(mean={self.mean!r}, kind={self.kind!r}, shape={self.shape!r}"
        if self.kind == "two_point":
            text += f", slow_share={self.slow_share!r}, slow_ratio={self.slow_ratio!r}"
        return text + ")"

    def two_point_values(self) -> tuple[float, float]:
        """A two_point distribution's (fast, slow) values in seconds: ``fast = mean / (1 +
        slow_share * (slow_ratio - 1))`` and ``slow = slow_ratio * fast``, so that the mean is
        ``mean``. ``TailModel(fast=Distribution(mean=fast, kind="constant"),
        slow_rate=slow_share, slow_latency=slow)`` is its closed form. Raises ValueError for
        another kind."""
        if self.kind != "two_point":
            raise ValueError(f"two_point_values needs kind='two_point', got {self.kind!r}")
        share, ratio = self.slow_share, self.slow_ratio
        assert share is not None and ratio is not None
        fast = self.mean / (1.0 + share * (ratio - 1.0))
        return fast, ratio * fast

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent draws (two_point: one uniform from ``rng`` per draw)."""
        if self.kind == "constant" or self.mean == 0:
            return np.full(size, self.mean)
        if self.kind == "exponential":
            return rng.exponential(self.mean, size)
        if self.kind == "two_point":
            fast, slow = self.two_point_values()
            assert self.slow_share is not None
            return np.where(rng.random(size) < self.slow_share, slow, fast)
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
        if self.kind == "two_point":
            fast, slow = self.two_point_values()
            assert self.slow_share is not None
            return 1.0 if t >= slow else (1.0 - self.slow_share if t >= fast else 0.0)
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
        if self.kind == "two_point":
            fast, slow = self.two_point_values()
            assert self.slow_share is not None
            return fast if q <= 1.0 - self.slow_share else slow
        from statistics import NormalDist

        sigma = self.shape
        z = NormalDist().inv_cdf(q)
        return float(np.exp(np.log(self.mean) - sigma * sigma / 2 + sigma * z))


def arrival_times(
    rate: float,
    duration: float,
    rng: np.random.Generator,
    *,
    process: ArrivalProcess = "poisson",
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


@dataclass(frozen=True, kw_only=True)
class Load:
    """The offered load: the same object drives ``simulate`` (``Scenario.load``) and
    ``run_load``. Give exactly one of ``rate`` (open loop) or ``clients`` (closed loop).

    Open loop (requests arrive whatever happened to earlier ones, as users do):
        rate: requests per second (>= 0).
        duration: seconds during which new requests start (> 0).
        process: ``"poisson"`` (random arrivals) or ``"constant"`` (evenly spaced).
        steps: ``((time, rate), ...)``: the rate changes at these times (increasing, within
            ``duration``), e.g. ``((10.0, 300.0),)`` for 300/s from t = 10 s on.
        requests: at most this many requests, the first of the schedule (>= 1). With
            ``requests`` and no ``duration``, the schedule runs until that many have left.

    Closed loop (each client waits for its answer before it sends again):
        clients: how many (1..100000).
        think_time: mean seconds a client thinks between requests (exponential; >= 0).
        synchronized: all clients send their first request at t = 0 (as after a partition
            heals) instead of after a first think.
        duration: seconds during which clients start new requests.
    """

    rate: float | None = None
    duration: float | None = None
    process: ArrivalProcess = "poisson"
    steps: tuple[tuple[float, float], ...] = ()
    requests: int | None = None
    clients: int | None = None
    think_time: float = 1.0
    synchronized: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if (self.rate is None) == (self.clients is None):
            raise ValueError(
                "give exactly one of rate (open loop, requests per second) or clients (closed "
                f"loop), got rate={self.rate!r}, clients={self.clients!r}")
        if self.duration is not None:
            set_(self, "duration", check_real("duration", self.duration, low=0, low_open=True))
        check_choice("process", self.process, get_args(ArrivalProcess))
        if self.rate is not None:
            set_(self, "rate", check_real("rate", self.rate, low=0))
            if self.requests is not None:
                set_(self, "requests", check_int("requests", self.requests, low=1))
            if self.duration is None and self.requests is None:
                raise ValueError("an open-loop load needs duration (seconds), requests (a "
                                 "count), or both")
            if self.duration is None and self.rate == 0:
                raise ValueError("rate must be > 0 when the load is given as a count of requests")
        else:
            set_(self, "clients", check_int("clients", self.clients, low=1, high=100_000))
            if self.duration is None:
                raise ValueError("a closed-loop load needs duration (seconds)")
            if self.requests is not None:
                raise ValueError("requests applies to an open-loop load (rate) only")
        set_(self, "think_time", check_real("think_time", self.think_time, low=0))
        if not isinstance(self.synchronized, bool):
            raise ValueError(f"synchronized must be True or False, got {self.synchronized!r}")
        steps = tuple(tuple(step) for step in self.steps)
        if steps and (self.rate is None or self.duration is None):
            raise ValueError("steps need an open-loop rate and a duration")
        previous = 0.0
        for i, step in enumerate(steps):
            if len(step) != 2:
                raise ValueError(f"steps[{i}] must be a (time, rate) pair, got {step!r}")
            previous = check_real(f"steps[{i}] time", step[0], low=previous, low_open=True,
                                  high=self.duration)
            check_real(f"steps[{i}] rate", step[1], low=0)
        set_(self, "steps", steps)

    @property
    def open_loop(self) -> bool:
        """True for a rate, False for a closed population of clients."""
        return self.rate is not None

    def schedule(self, seed: int) -> tuple[np.ndarray, float]:
        """Send times (seconds from the start) of an open-loop load, and its length.

        Drawn from the ``"arrivals"`` stream of ``rng_streams(seed)``, so the simulator and the
        live generator send the same requests at the same times. With ``requests``, the first
        that many; the length is then the time of the first request cut off (the window that
        holds exactly ``requests``). With ``requests`` only, the schedule is drawn over a window
        long enough to hold that many, then cut the same way.
        """
        if self.rate is None:
            raise ValueError("a closed-loop load (clients) has no schedule of send times")
        rate, requests = self.rate, self.requests
        if self.duration is not None:
            times = arrival_times(rate, self.duration, rng_streams(seed)["arrivals"],
                                  process=self.process, steps=self.steps)
            length = self.duration
        else:
            assert requests is not None
            length = (requests + 10 * math.sqrt(requests) + 10) / rate
            while True:
                times = arrival_times(rate, length, rng_streams(seed)["arrivals"],
                                      process=self.process)
                if len(times) > requests:
                    break
                length *= 2
        if requests is not None and len(times) > requests:
            length = float(times[requests])
            times = times[:requests]
        return times, length
