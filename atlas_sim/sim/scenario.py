"""``Scenario``: a frozen, validated description of one simulated experiment.

A scenario says who sends requests (``load``: a ``Load``, the same object ``run_load`` takes),
what the server does with them (``servers`` workers behind one FIFO queue, load shedding, a
timeout), how the clients call (``client``: a ``ClientPolicy`` of timeout, retry, budget and
breaker, the same object ``run_load`` takes), what the handler depends on (a downstream
dependency called with its own ``ClientPolicy``) and what goes wrong when (``faults``: the
``Fault`` windows ``run_load`` applies to the live service too).

Give only load and capacity and you have a plain M/M/c queue::

    Scenario(load=Load(rate=8, duration=60), service_time_mean=0.1, servers=1)   # M/M/1, 80%

Policies are held as configs (``RetryPolicy``, ``BudgetConfig``, ``BreakerConfig``), never as live
state machines, so running the same scenario twice starts from the same state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..policies import ClientPolicy
from ..validation import check_int, check_real
from ..workload import Distribution, DistributionKind, Fault, Load

__all__ = ["Dependency", "Fault", "Scenario", "evolve"]


def _no_hedge(name: str, client: ClientPolicy) -> None:
    """The event engine's drivers (``Call``, ``Handler``) make one attempt at a time."""
    if client.hedge is not None:
        raise ValueError(f"{name}.hedge must be None: the event engine does not drive hedged "
                         "calls (the fan-out model, sim.fanout, does)")


def _optional(check: Any, name: str, value: Any, **limits: Any) -> Any:
    return None if value is None else check(name, value, **limits)


def _instance(name: str, value: Any, kind: type) -> None:
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Dependency:
    """A downstream service the handler calls after its own work, for a ``share`` of requests.

    Each call takes a latency drawn from ``latency_mean``/``latency_dist``/``latency_shape``,
    or fails at once with probability ``error_rate`` (as a refused connection does). The handler
    calls it as a client with its own ``client`` policy: ``client.timeout`` bounds each call
    (DATABASE_TIMEOUT), and its retry, budget and breaker are the service's (when the breaker
    is open the handler answers 503 at once). (The live service's dependency behaves the same
    way, draws the same random numbers and is called through the same ``GuardedCall``.) The
    handler keeps its worker busy while it calls, retries and waits. Any failure left after
    retries becomes a 503 to the client. Requests outside the ``share`` (0..1) never touch the
    dependency: they show whether its trouble spreads.
    """

    latency_mean: float = 0.01
    latency_dist: DistributionKind = "exponential"
    latency_shape: float = 1.0
    error_rate: float = 0.0
    client: ClientPolicy = field(default_factory=lambda: ClientPolicy(timeout=10.0))
    share: float = 1.0

    def __post_init__(self) -> None:
        Distribution(mean=self.latency_mean, kind=self.latency_dist, shape=self.latency_shape)
        check_real("share", self.share, low=0, high=1)
        check_real("error_rate", self.error_rate, low=0, high=1)
        if not isinstance(self.client, ClientPolicy):
            raise ValueError(f"client must be a ClientPolicy, got {self.client!r}")
        _no_hedge("client", self.client)

    @property
    def latency(self) -> Distribution:
        return Distribution(mean=self.latency_mean, kind=self.latency_dist,
                            shape=self.latency_shape)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One experiment.

    Load:
        load: who sends requests and when (``Load``: an open-loop rate, or closed-loop
            clients), the object ``run_load`` takes too.
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
        work_overhead: seconds every request holds its worker beyond its drawn work: the
            framework, the timer's resolution (0 for an ideal server; measured on the live one
            by ``atlas_sim.experiments.live.calibrate``, under the same name).
        drop_expired: deadline propagation: the server knows when each client will give up
            and skips a queued attempt that cannot be done by then (its remaining time is
            less than the expected work). False: it does work nobody will wait for. (Skipping
            only attempts that have *already* expired is not enough in a FIFO queue under
            overload: the oldest attempt still valid is always about to expire, so its work is
            wasted too. See the retry-storm scenario.)
    Client:
        round_trip: seconds each attempt spends on the wire and in the HTTP stacks, outside
            the server's queue: the round trip of an empty request, half on the way in and half
            on the way out (0: the model of a queue alone; ``calibrate`` measures it).
        client: the clients' ``ClientPolicy``: timeout per attempt (599), retry, budget,
            breaker, the object ``run_load`` takes too.
    Elsewhere:
        dependency: a downstream call made by the handler (see ``Dependency``).
        faults: time windows of trouble (see ``Fault``).
        seed: the one seed every random stream derives from.
    """

    load: Load
    service_time_mean: float = 0.05
    service_time_dist: DistributionKind = "exponential"
    service_time_shape: float = 1.0
    servers: int = 1
    max_concurrent: int | None = None
    retry_after: float = 1.0
    server_timeout: float | None = None
    work_overhead: float = 0.0
    round_trip: float = 0.0
    client: ClientPolicy = field(default_factory=ClientPolicy)
    drop_expired: bool = False
    dependency: Dependency | None = None
    faults: tuple[Fault, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.load, Load):
            raise ValueError(f"load must be a Load, got {self.load!r}")
        self.service_time  # noqa: B018 - validates mean, dist and shape
        check_int("servers", self.servers, low=1, high=10_000)
        _optional(check_int, "max_concurrent", self.max_concurrent, low=1)
        set_(self, "retry_after", check_real("retry_after", self.retry_after, low=0, high=3600))
        _optional(check_real, "server_timeout", self.server_timeout, low=0, low_open=True)
        check_real("work_overhead", self.work_overhead, low=0)
        check_real("round_trip", self.round_trip, low=0)
        if not isinstance(self.client, ClientPolicy):
            raise ValueError(f"client must be a ClientPolicy, got {self.client!r}")
        _no_hedge("client", self.client)
        if not isinstance(self.drop_expired, bool):
            raise ValueError(f"drop_expired must be True or False, got {self.drop_expired!r}")
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
        if self.load.rate is None:
            return None
        return self.load.rate / self.capacity

    def replace(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> Scenario:
        """A copy with some fields changed; nested fields by dotted path::

            scenario.replace(servers=2)
            scenario.replace({"client.retry.max_attempts": 5, "load.rate": 40.0})
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
