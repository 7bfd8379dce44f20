"""``Scenario``: a frozen, validated description of one simulated experiment.

A scenario says who sends requests (an open-loop Poisson stream, or a closed population of
clients who think between requests), what the server does with them (``servers`` workers behind
one FIFO queue, load shedding, a timeout), what the clients do when an attempt fails (timeout,
retry with backoff, budget, circuit breaker), what the handler depends on (a downstream
dependency with its own retry and breaker) and what goes wrong when (``faults``).

Give only load and capacity and you have a plain M/M/c queue::

    Scenario(arrival_rate=8, service_time_mean=0.1, servers=1)   # M/M/1 at 80% utilisation

Policies are held as configs (``RetryPolicy``, ``BudgetConfig``, ``BreakerConfig``), never as live
state machines, so running the same scenario twice starts from the same state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..policies import BreakerConfig, BudgetConfig, RetryPolicy
from ..validation import check_choice, check_int, check_real
from ..workload import Distribution, DistributionKind

__all__ = ["Dependency", "Fault", "Scenario", "evolve"]

ArrivalProcess = Literal["poisson", "constant"]


def _optional(check, name: str, value: Any, **limits: Any) -> Any:
    return None if value is None else check(name, value, **limits)


def _instance(name: str, value: Any, kind: type) -> None:
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Something going wrong between ``start`` and ``end`` (seconds of simulated time).

    Args:
        capacity: the server's speed as a fraction of normal, in [0, 1]. 0.3 means work takes
            3.3 times as long; 0 means the server is down and answers 503 at once.
        added_latency: seconds added to the handling of every request the server starts
            (a slow disk, a garbage-collection pause).
        dependency_error_rate: probability that a dependency call fails (instead of the
            dependency's own rate), in [0, 1].
        dependency_added_latency: seconds added to every dependency call; set it above the
            dependency's timeout for a dependency that hangs rather than fails.
        name: a label for the events table.

    Overlapping faults combine: capacities multiply, latencies add, the larger error rate wins.
    A request's speed is fixed when its service starts.
    """

    start: float
    end: float
    capacity: float = 1.0
    added_latency: float = 0.0
    dependency_error_rate: float | None = None
    dependency_added_latency: float = 0.0
    name: str = "fault"

    def __post_init__(self) -> None:
        start = check_real("start", self.start, low=0)
        check_real("end", self.end, low=start, low_open=True)
        check_real("capacity", self.capacity, low=0, high=1)
        check_real("added_latency", self.added_latency, low=0)
        _optional(check_real, "dependency_error_rate", self.dependency_error_rate, low=0, high=1)
        check_real("dependency_added_latency", self.dependency_added_latency, low=0)


@dataclass(frozen=True, kw_only=True)
class Dependency:
    """A downstream service the handler calls after its own work, for a ``share`` of requests.

    Each call takes a latency drawn from ``latency_mean``/``latency_dist``/``latency_shape``,
    or fails at once with probability ``error_rate`` (as a refused connection does); a call
    slower than ``timeout`` fails at the timeout. (The live service's dependency behaves the
    same way and draws the same random numbers.) The handler keeps its worker busy while it
    calls, retries (``retry``, with ``budget``) and waits. ``breaker`` guards the calls: when
    it is open the handler answers 503 at once. Any failure left after retries becomes a 503 to
    the client. Requests outside the ``share`` (0..1) never touch the dependency: they show
    whether its trouble spreads.
    """

    latency_mean: float = 0.01
    latency_dist: DistributionKind = "exponential"
    latency_shape: float = 1.0
    error_rate: float = 0.0
    timeout: float = 10.0
    retry: RetryPolicy | None = None
    budget: BudgetConfig | None = None
    breaker: BreakerConfig | None = None
    share: float = 1.0

    def __post_init__(self) -> None:
        Distribution(mean=self.latency_mean, kind=self.latency_dist, shape=self.latency_shape)
        check_real("share", self.share, low=0, high=1)
        check_real("error_rate", self.error_rate, low=0, high=1)
        check_real("timeout", self.timeout, low=0, low_open=True)
        _instance("retry", self.retry, RetryPolicy)
        _instance("budget", self.budget, BudgetConfig)
        _instance("breaker", self.breaker, BreakerConfig)

    @property
    def latency(self) -> Distribution:
        return Distribution(mean=self.latency_mean, kind=self.latency_dist,
                            shape=self.latency_shape)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One experiment. Give exactly one of ``arrival_rate`` (open loop) or ``clients`` (closed).

    Load:
        duration: seconds during which new requests start (the run then drains).
        arrival_rate: open-loop Poisson arrivals per second, whatever the server does.
        arrival_process: ``"poisson"`` or ``"constant"`` (evenly spaced).
        load_steps: ``((time, rate), ...)``: step changes of the open-loop rate.
        clients: a closed population; each client sends a request, waits for its end, thinks
            (exponential, mean ``think_time``) and sends the next.
        synchronized: closed clients all send their first request at t = 0 (as after a
            partition heals) instead of after a first think.
    Server:
        service_time_mean, service_time_dist, service_time_shape: the work per request
            (``"exponential"``, ``"constant"`` or ``"lognormal"`` with sigma ``shape``).
        servers: workers behind one FIFO queue.
        max_concurrent: load shedding: an attempt arriving when this many are in service or
            queued gets 429 at once (the server admits through a ``ConcurrencyLimiter``, as the
            live service's LoadShedding layer does). None: no shedding.
        retry_after: seconds in a shed attempt's ``Retry-After`` (0..3600; the live service's
            ``create_app(retry_after=1)``); a client waits for it only with
            ``RetryPolicy(honor_retry_after=True)``.
        server_timeout: HTTP_TIMEOUT: an attempt not answered within it gets 504 and its work
            is dropped (queued or in service). None: no timeout.
        handling_overhead: seconds every request holds its worker beyond its drawn work: the
            framework, the timer's resolution (0 for an ideal server; measure it on a real one,
            see ``atlas_sim.experiments.live.calibrate``).
        drop_expired: deadline propagation: the server knows when each client will give up
            and skips a queued attempt that cannot be done by then (its remaining time is
            less than the expected work). False: it does work nobody will wait for. (Skipping
            only attempts that have *already* expired is not enough in a FIFO queue under
            overload: the oldest attempt still valid is always about to expire, so its work is
            wasted too. See the retry-storm scenario.)
    Client:
        network_delay: seconds each attempt spends on the wire and in the HTTP stacks, outside
            the server's queue: the round trip of an empty request, half on the way in and half
            on the way out (0: the model of a queue alone).
        client_timeout: seconds a client waits for each attempt before giving up (599).
        retry, budget, breaker: the client's retry policy, retry budget and circuit breaker.
    Elsewhere:
        dependency: a downstream call made by the handler (see ``Dependency``).
        faults: time windows of trouble (see ``Fault``).
        seed: the one seed every random stream derives from.
    """

    duration: float = 60.0
    arrival_rate: float | None = None
    arrival_process: ArrivalProcess = "poisson"
    load_steps: tuple[tuple[float, float], ...] = ()
    clients: int | None = None
    think_time: float = 1.0
    synchronized: bool = False
    service_time_mean: float = 0.05
    service_time_dist: DistributionKind = "exponential"
    service_time_shape: float = 1.0
    servers: int = 1
    max_concurrent: int | None = None
    retry_after: float = 1.0
    server_timeout: float | None = None
    handling_overhead: float = 0.0
    network_delay: float = 0.0
    client_timeout: float | None = None
    drop_expired: bool = False
    retry: RetryPolicy | None = None
    budget: BudgetConfig | None = None
    breaker: BreakerConfig | None = None
    dependency: Dependency | None = None
    faults: tuple[Fault, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check_real("duration", self.duration, low=0, low_open=True)
        if (self.arrival_rate is None) == (self.clients is None):
            raise ValueError(
                "give exactly one of arrival_rate (open loop, requests per second) or clients "
                f"(closed loop), got arrival_rate={self.arrival_rate!r}, clients={self.clients!r}"
            )
        _optional(check_real, "arrival_rate", self.arrival_rate, low=0)
        check_choice("arrival_process", self.arrival_process, get_args(ArrivalProcess))
        steps = tuple(tuple(step) for step in self.load_steps)
        if steps and self.arrival_rate is None:
            raise ValueError("load_steps needs an open-loop arrival_rate")
        previous = 0.0
        for i, step in enumerate(steps):
            if len(step) != 2:
                raise ValueError(f"load_steps[{i}] must be a (time, rate) pair, got {step!r}")
            previous = check_real(f"load_steps[{i}] time", step[0], low=previous, low_open=True,
                                  high=self.duration)
            check_real(f"load_steps[{i}] rate", step[1], low=0)
        set_(self, "load_steps", steps)
        _optional(check_int, "clients", self.clients, low=1, high=100_000)
        check_real("think_time", self.think_time, low=0)
        if not isinstance(self.synchronized, bool):
            raise ValueError(f"synchronized must be True or False, got {self.synchronized!r}")
        self.service_time  # noqa: B018 - validates mean, dist and shape
        check_int("servers", self.servers, low=1, high=10_000)
        _optional(check_int, "max_concurrent", self.max_concurrent, low=1)
        set_(self, "retry_after", check_real("retry_after", self.retry_after, low=0, high=3600))
        _optional(check_real, "server_timeout", self.server_timeout, low=0, low_open=True)
        check_real("handling_overhead", self.handling_overhead, low=0)
        check_real("network_delay", self.network_delay, low=0)
        _optional(check_real, "client_timeout", self.client_timeout, low=0, low_open=True)
        if not isinstance(self.drop_expired, bool):
            raise ValueError(f"drop_expired must be True or False, got {self.drop_expired!r}")
        _instance("retry", self.retry, RetryPolicy)
        _instance("budget", self.budget, BudgetConfig)
        _instance("breaker", self.breaker, BreakerConfig)
        _instance("dependency", self.dependency, Dependency)
        faults = tuple(self.faults)
        for i, fault in enumerate(faults):
            if not isinstance(fault, Fault):
                raise ValueError(f"faults[{i}] must be a Fault, got {fault!r}")
        set_(self, "faults", faults)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def service_time(self) -> Distribution:
        """The server's work per request, as a ``Distribution``."""
        try:
            return Distribution(mean=self.service_time_mean, kind=self.service_time_dist,
                                shape=self.service_time_shape)
        except ValueError as err:  # name the scenario's field, not the distribution's
            message = str(err)
            for inner, outer in (("mean", "service_time_mean"), ("kind", "service_time_dist"),
                                 ("shape", "service_time_shape")):
                if message.startswith(inner + " "):
                    message = outer + message[len(inner):]
            raise ValueError(message) from None

    @property
    def capacity(self) -> float:
        """Requests per second the servers can finish when healthy: servers / mean service."""
        if self.service_time_mean == 0:
            return float("inf")
        return self.servers / self.service_time_mean

    @property
    def utilisation(self) -> float | None:
        """Offered load over capacity for an open-loop scenario (None for a closed one)."""
        if self.arrival_rate is None:
            return None
        return self.arrival_rate / self.capacity

    def replace(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> Scenario:
        """A copy with some fields changed; nested fields by dotted path::

            scenario.replace(servers=2)
            scenario.replace({"retry.max_attempts": 5, "retry.backoff.jitter": "none"})
        """
        return evolve(self, {**(changes or {}), **fields})


def evolve(obj: Any, changes: Mapping[str, Any]) -> Any:
    """``dataclasses.replace`` that also reaches into nested dataclasses by dotted path."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    names = {f.name for f in dataclasses.fields(obj)}
    for path, value in changes.items():
        head, _, rest = path.partition(".")
        if head not in names:
            raise ValueError(f"{type(obj).__name__} has no field {head!r} (in {path!r})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        inner = direct.get(head, getattr(obj, head))
        if inner is None or not dataclasses.is_dataclass(inner):
            raise ValueError(
                f"cannot set {head}.{next(iter(sub))}: {type(obj).__name__}.{head} is "
                f"{inner!r}; give it a value first"
            )
        direct[head] = evolve(inner, sub)
    return dataclasses.replace(obj, **direct)
