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
* ``store``: where the instance keeps its state (orders, idempotency keys, the event log),
  a ``StoreConfig`` (SQLite, PostgreSQL or memory, by ``url``), or None: in the instance's own
  memory, lost when it stops and shared with no other instance;
* ``pool``: the database connection pool in front of every call to the store
  (``policies.pool.PoolConfig``: ``size``, ``max_waiting``, ``timeout``, the card's
  ``DATABASE_TIMEOUT``), or None: ``PoolConfig()``;
* ``cache``: a Redis cache used cache-aside (``CacheConfig``), or None: no cache;
* ``events``: the event log's consumers (``EventLogConfig``), or None: no consumers;
* ``timelines``: how home timelines are served (``TimelineConfig``: DDIA's fan-out on read, on
  write, or the hybrid), or None: ``TimelineConfig()``.

Two defaults, one per world's habit, and the same object wherever one is given: ``ServerConfig()``
is the simulator's plain M/M/1 (1 worker, 50 ms exponential, no admission limit, no timeout, no
dependency), and ``Settings.server_config()`` is what ``create_app()`` runs when given none (the
card's settings: 2 workers, 20 ms, ``HTTP_TIMEOUT``, ``FixedLimit(LOAD_SHEDDING_MAX_CONCURRENT)``
and a 5 ms dependency behind ``DATABASE_TIMEOUT``, retry, budget and breaker). A config with
``dependency=None`` given to the live service still answers ``/api/compose`` and
``/api/fanout`` through the settings' stand-in dependency; its simulated twin on
``path="/api/compose"`` is refused (it has no dependency to model), so a compose experiment
names its dependency in the config.

The store, pool, cache and event log are DDIA's "Thinking About Data Systems" parts: the same
config tells the simulator what to model (``store.query_time`` and ``pool``) and the live
service what to connect to (``store.url``, ``cache.url``).
A cluster is N instances, each with its own workers, queue and limiter, built from one
``ServerConfig`` or a list of them (``Scenario(server=[...])``, ``service.Cluster``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .policies import AdmissionConfig, ClientPolicy, Fifo, PoolConfig, QueueConfig
from .validation import check_choice, check_config, check_int, check_real, renamed_fields
from .workload import Distribution

__all__ = ["STORE_SCHEMES", "TIMELINE_APPROACHES", "WORKERS_RENAMED", "CacheConfig",
           "Dependency", "EventLogConfig", "ServerConfig", "StoreConfig", "TimelineConfig"]


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


#: The kinds of store a ``StoreConfig.url`` may name, by its scheme.
STORE_SCHEMES = ("sqlite", "postgresql", "memory")


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """The database an instance keeps its state in (orders, idempotency keys, the event log).

    Args:
        url: ``"sqlite:///<absolute path>"`` (SQLite through aiosqlite, WAL mode: nothing to
            install), ``"postgresql://<user>@127.0.0.1:<port>/<database>"`` (a PostgreSQL
            server, such as the one ``PostgresServer`` starts), ``"memory://<name>"`` (in this
            process's memory, shared by the apps that name it), or None: a new SQLite database
            in a temporary directory, removed when the service stops; the instances of one
            ``Cluster`` share it. Instances that name the same ``url`` share one store, so a
            retry sent to another instance replays the first answer.
        query_time: how long each write's transaction holds its connection beyond the real
            query's own time, a ``Distribution`` drawn from the instance's ``"store"`` stream
            (live: ``pg_sleep`` on PostgreSQL, a sleeping SQL function on SQLite, a sleep in
            memory; a slow query), or None: the real query only. The simulator models the
            whole transaction as this time (None: zero).
        key_retention: seconds a completed (2xx) answer is kept under its idempotency key, > 0.
        key_capacity: idempotency keys held at most, in flight and kept together, >= 1.
        key_lease: seconds an in-flight key is held for the instance that began it; after that
            another instance may begin it again (the first one died: nobody will complete it).
            None: the server's ``timeout``, else 30 s (``HTTP_TIMEOUT``).

    Raises ``ValueError`` naming the field and its allowed values.
    """

    url: str | None = None
    query_time: Distribution | None = None
    key_retention: float = 300.0
    key_capacity: int = 10_000
    key_lease: float | None = None

    def __post_init__(self) -> None:
        if self.url is not None and (not isinstance(self.url, str) or "://" not in self.url
                                     or self.url.split("://", 1)[0] not in STORE_SCHEMES):
            raise ValueError(f"url must be None or start with one of "
                             f"{', '.join(s + '://' for s in STORE_SCHEMES)}, got {self.url!r}")
        if self.query_time is not None and not isinstance(self.query_time, Distribution):
            raise ValueError(f"query_time must be a Distribution or None, got {self.query_time!r}")
        object.__setattr__(self, "key_retention", check_real("key_retention", self.key_retention,
                                                             low=0, low_open=True))
        check_int("key_capacity", self.key_capacity, low=1, high=10_000_000)
        if self.key_lease is not None:
            object.__setattr__(self, "key_lease", check_real("key_lease", self.key_lease, low=0,
                                                             low_open=True))

    @property
    def scheme(self) -> str:
        """``"sqlite"``, ``"postgresql"`` or ``"memory"`` (None's url is SQLite)."""
        return "sqlite" if self.url is None else self.url.split("://", 1)[0]


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """A Redis cache the service reads and fills cache-aside.

    Args:
        url: ``"redis://127.0.0.1:<port>/0"``, such as the one ``RedisServer`` starts. Where it
            cannot be reached when the service starts, the service runs without a cache and
            says so in one line.
        ttl: seconds a cached entry lives, > 0.
        timeout: seconds each cache call may take (the card's ``REDIS_TIMEOUT``, 5), > 0; a
            call that takes longer counts as a miss and the database answers.
        max_connections: the client's connection pool, 1..10000.
    """

    url: str
    ttl: float = 60.0
    timeout: float = 5.0
    max_connections: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith("redis://"):
            raise ValueError(f"url must start with redis://, got {self.url!r}")
        object.__setattr__(self, "ttl", check_real("ttl", self.ttl, low=0, low_open=True))
        object.__setattr__(self, "timeout", check_real("timeout", self.timeout, low=0,
                                                       low_open=True))
        check_int("max_connections", self.max_connections, low=1, high=10_000)


@dataclass(frozen=True, kw_only=True)
class EventLogConfig:
    """The background consumers of the event log (kept in the store, with each consumer
    group's committed offset; Kafka's model on a database table).

    Args:
        consumers: consumer tasks per instance, 0..64 (0: events pile up, lag grows).
        poll_interval: seconds a consumer waits when it finds nothing new, > 0.
        batch: events a consumer takes at once, 1..10000; its offset is committed per batch.
    """

    consumers: int = 1
    poll_interval: float = 0.05
    batch: int = 100

    def __post_init__(self) -> None:
        check_int("consumers", self.consumers, low=0, high=64)
        object.__setattr__(self, "poll_interval", check_real(
            "poll_interval", self.poll_interval, low=0, low_open=True))
        check_int("batch", self.batch, low=1, high=10_000)


#: DDIA's approaches to home timelines ("Describing Load"), by the name a config uses.
TIMELINE_APPROACHES = ("read", "write", "hybrid")


@dataclass(frozen=True, kw_only=True)
class TimelineConfig:
    """How the service builds home timelines (DDIA chapter 1, "Describing Load").

    Args:
        approach: ``"read"`` (approach 1, fan-out on read: a read is one query joining the
            follows and the posts), ``"write"`` (approach 2, fan-out on write: a post is
            inserted, through the event log, into the home timeline of each follower of its
            author, kept in the cache or, without one, in the store) or ``"hybrid"`` (as
            ``"write"``, but authors with more than ``threshold`` followers are read at read
            time and merged in).
        threshold: the hybrid's follower count above which an author is not fanned out, >= 0.
        length: posts a home timeline keeps and a read returns, 1..1000.
        outbox: True: a post and its event are written in one transaction (the transactional
            outbox); False: a dual write: the post commits, then its event is appended in a
            second step, which a crash between the two (the ``lose_events`` fault) skips.

    Raises ``ValueError`` naming the field and its allowed values.
    """

    approach: Literal["read", "write", "hybrid"] = "write"
    threshold: int = 1000
    length: int = 50
    outbox: bool = True

    def __post_init__(self) -> None:
        check_choice("approach", self.approach, TIMELINE_APPROACHES)
        check_int("threshold", self.threshold, low=0)
        check_int("length", self.length, low=1, high=1000)
        if not isinstance(self.outbox, bool):
            raise ValueError(f"outbox must be True or False, got {self.outbox!r}")


@renamed_fields({**WORKERS_RENAMED,
                 "max_concurrent": "admission=FixedLimit(max_concurrent=...)",
                 "server_timeout": "timeout=..."})
@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """One server instance (see the module docstring for each field).

    Raises ``ValueError`` naming the field and its range: ``workers`` 1..10000, ``timeout`` >
    0 or None, ``retry_after`` 0..3600 whole seconds; ``admission`` and ``queue`` must be
    configs with ``build()``; ``dependency`` a ``Dependency`` or None; ``store``, ``pool``,
    ``cache`` and ``events`` a ``StoreConfig``, ``PoolConfig``, ``CacheConfig`` and
    ``EventLogConfig`` or None.
    """

    workers: int = 1
    service_time: Distribution = field(default_factory=lambda: Distribution(mean=0.05))
    admission: AdmissionConfig | None = None
    queue: QueueConfig = field(default_factory=Fifo)
    timeout: float | None = None
    drop_expired: bool = False
    retry_after: int = 1
    dependency: Dependency | None = None
    store: StoreConfig | None = None
    pool: PoolConfig | None = None
    cache: CacheConfig | None = None
    events: EventLogConfig | None = None
    timelines: TimelineConfig | None = None

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
        for name, kind in (("store", StoreConfig), ("cache", CacheConfig),
                           ("events", EventLogConfig), ("timelines", TimelineConfig)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__}(...) or None, got {value!r}")

    @property
    def capacity(self) -> float:
        """Requests per second the workers finish when healthy: workers / mean service time
        (infinite for work that takes no time)."""
        mean = self.service_time.mean
        return float("inf") if mean == 0 else self.workers / mean
