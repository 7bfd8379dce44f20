"""``ServerConfig``: what one server instance is, the one object both worlds take.

The simulator's ``Scenario(server=...)`` and the live service's ``create_app(server=...)`` take
the same frozen, keyword-only object, as ``ClientPolicy`` is the one description of a client:
nothing maps one world's fields onto the other's. It holds

* ``workers``: how many requests are worked on at once (the c of M/M/c);
* ``service_time``: the work one request asks for, a ``Distribution`` (at capacity 1);
* ``admission``: the admission limit, a config whose ``build()`` gives an ``AdmissionLimiter``
  (``policies.admission``; ``FixedLimit(max_concurrent=n)`` is the card's load shedding: the
  request that would make n + 1 in progress, queued or at work, gets 429), or None;
* ``queue``: the order queued requests are served in (``policies.queues``; ``Fifo()``);
* ``timeout``: the server timeout (``HTTP_TIMEOUT``): a request not answered within it gets 504
  and its work is dropped, queued or in service; None: none;
* ``drop_expired``: deadline propagation: a queued request that cannot be done before its
  client gives up is skipped (``sim`` only so far);
* ``retry_after``: whole seconds in a 429's ``Retry-After`` header;
* ``dependency``: what the handler calls after its own work (``Dependency``), or None;
* ``pool``: the database connection pool (``policies.pool.PoolConfig``: ``size``,
  ``max_waiting``, ``timeout``, the card's ``DATABASE_TIMEOUT``), or None: no pool. Nothing
  reads it yet: the store of issue "The data system behind the service" will put it in front
  of every database call, live and simulated.

Two defaults, one per world's habit, and the same object wherever one is given: ``ServerConfig()``
is the simulator's plain M/M/1 (1 worker, 50 ms exponential, no admission limit, no timeout, no
dependency), and ``Settings.server_config()`` is what ``create_app()`` runs when given none (the
card's settings: 2 workers, 20 ms, ``HTTP_TIMEOUT``, ``FixedLimit(LOAD_SHEDDING_MAX_CONCURRENT)``
and a 5 ms dependency behind ``DATABASE_TIMEOUT``, retry, budget and breaker). A config with
``dependency=None`` given to the live service still answers ``/api/compose`` and
``/api/fanout`` through the settings' stand-in dependency; its simulated twin on
``path="/api/compose"`` is refused (it has no dependency to model), so a compose experiment
names its dependency in the config.

Issue "The data system behind the service" adds the database pool, cache and event log here.
A cluster is N instances, each with its own workers, queue and limiter, built from one
``ServerConfig`` or a list of them (``Scenario(server=[...])``, ``service.Cluster``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .policies import AdmissionConfig, ClientPolicy, Fifo, PoolConfig, QueueConfig
from .validation import check_config, check_int, check_real, renamed_fields
from .workload import Distribution

__all__ = ["WORKERS_RENAMED", "Dependency", "ServerConfig"]


#: ``servers`` meant the c of M/M/c, now ``workers`` everywhere: what every function that took
#: it says when it is given (``validation.renamed_fields`` / ``refuse_renamed``).
WORKERS_RENAMED = {"servers": "workers=... (the c of M/M/c)"}


_LATENCY = "latency=Distribution(mean=..., kind=..., shape=...)"


@renamed_fields({"latency_mean": _LATENCY, "latency_dist": _LATENCY, "latency_shape": _LATENCY})
@dataclass(frozen=True, kw_only=True)
class Dependency:
    """A downstream service the handler calls after its own work, for a ``share`` of requests.

    Each call takes a ``latency`` drawn from a ``Distribution``, or fails at once with
    probability ``error_rate`` (as a refused connection does). The handler calls it as a client
    with its own ``client`` policy: ``client.timeout`` bounds each call (``DATABASE_TIMEOUT``),
    and its retry, budget and breaker are the service's (when the breaker is open the handler
    answers 503 at once). Both worlds draw the same random numbers for it (the
    ``"dependency"`` stream) and call it through the same ``GuardedCall``. The handler keeps its
    worker busy while it calls, retries and waits. Any failure left after retries becomes a 503
    to the client. Requests outside the ``share`` (0..1) never touch the dependency: they show
    whether its trouble spreads.
    """

    latency: Distribution = field(default_factory=lambda: Distribution(mean=0.01))
    error_rate: float = 0.0
    client: ClientPolicy = field(default_factory=lambda: ClientPolicy(timeout=10.0))
    share: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.latency, Distribution):
            raise ValueError(f"latency must be a Distribution, got {self.latency!r}")
        check_real("share", self.share, low=0, high=1)
        check_real("error_rate", self.error_rate, low=0, high=1)
        if not isinstance(self.client, ClientPolicy):
            raise ValueError(f"client must be a ClientPolicy, got {self.client!r}")


@renamed_fields({**WORKERS_RENAMED,
                 "max_concurrent": "admission=FixedLimit(max_concurrent=...)",
                 "server_timeout": "timeout=..."})
@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """One server instance (see the module docstring for each field).

    Raises ``ValueError`` naming the field and its range: ``workers`` 1..10000, ``timeout`` >
    0 or None, ``retry_after`` 0..3600 whole seconds; ``admission`` and ``queue`` must be
    configs with ``build()``; ``dependency`` a ``Dependency`` or None; ``pool`` a ``PoolConfig``
    or None.
    """

    workers: int = 1
    service_time: Distribution = field(default_factory=lambda: Distribution(mean=0.05))
    admission: AdmissionConfig | None = None
    queue: QueueConfig = field(default_factory=Fifo)
    timeout: float | None = None
    drop_expired: bool = False
    retry_after: int = 1
    dependency: Dependency | None = None
    pool: PoolConfig | None = None

    def __post_init__(self) -> None:
        check_int("workers", self.workers, low=1, high=10_000)
        if not isinstance(self.service_time, Distribution):
            raise ValueError(f"service_time must be a Distribution, got {self.service_time!r}")
        if self.admission is not None:
            check_config("admission", self.admission,
                         "a config with build(), such as FixedLimit(max_concurrent=100)")
        check_config("queue", self.queue, "a config with build(), such as Fifo()")
        if self.timeout is not None:
            object.__setattr__(self, "timeout",
                               check_real("timeout", self.timeout, low=0, low_open=True))
        if not isinstance(self.drop_expired, bool):
            raise ValueError(f"drop_expired must be True or False, got {self.drop_expired!r}")
        check_int("retry_after", self.retry_after, low=0, high=3600)
        if self.dependency is not None and not isinstance(self.dependency, Dependency):
            raise ValueError(f"dependency must be a Dependency or None, got {self.dependency!r}")
        if self.pool is not None and not isinstance(self.pool, PoolConfig):
            raise ValueError(f"pool must be a PoolConfig(size=..., max_waiting=..., timeout=...) "
                             f"or None, got {self.pool!r}")

    @property
    def capacity(self) -> float:
        """Requests per second the workers finish when healthy: workers / mean service time
        (infinite for work that takes no time)."""
        mean = self.service_time.mean
        return float("inf") if mean == 0 else self.workers / mean
