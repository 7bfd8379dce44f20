"""``Scenario``: a frozen, validated description of one simulated experiment.

A scenario says who sends requests (``load``: a ``Load``, the same object ``run_load`` takes),
what each server instance is (``server``: a ``ServerConfig``, the same object ``create_app``
takes: workers, work per request, admission limit, queue discipline, timeout, dependency), how
many instances there are (``instances``, or one ``ServerConfig`` each), which handler they run
(``path``), how the clients call (``client``: a ``ClientPolicy`` of timeout, retry, budget,
breaker and routing, the same object ``run_load`` takes) and what goes wrong when (``faults``:
the ``Fault`` windows ``run_load`` applies to the live service too).

Give only load and capacity and you have a plain M/M/c queue::

    Scenario(load=Load(rate=8, duration=60),
             server=ServerConfig(workers=1, service_time=Distribution(mean=0.1)))  # M/M/1, 80%

Policies are held as configs (``RetryPolicy``, ``BudgetConfig``, ``FixedLimit``, ``Fifo``...),
never as live state machines, so running the same scenario twice starts from the same state.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..policies import ClientPolicy
from ..server_config import Dependency, ServerConfig
from ..validation import check_choice, check_int, check_real, renamed_fields
from ..workload import Fault, Load

__all__ = ["PATHS", "Dependency", "Fault", "Path", "Scenario", "evolve"]

#: The handlers a scenario's instances can run: None is the model's own handler (work, then the
#: dependency for its ``share`` of requests); the others are the live service's routes.
Path = Literal["/api/work", "/api/compose", "/api/orders"]
PATHS: tuple[str, ...] = get_args(Path)

_WRITE = "server=ServerConfig({}) (or replace({{'server.{}': ...}}))"
_RENAMED = {
    "servers": _WRITE.format("workers=...", "workers"),
    "service_time_mean": _WRITE.format("service_time=Distribution(mean=...)",
                                       "service_time.mean"),
    "service_time_dist": _WRITE.format("service_time=Distribution(kind=...)",
                                       "service_time.kind"),
    "service_time_shape": _WRITE.format("service_time=Distribution(shape=...)",
                                        "service_time.shape"),
    "max_concurrent": _WRITE.format("admission=FixedLimit(max_concurrent=...)", "admission"),
    "retry_after": _WRITE.format("retry_after=...", "retry_after"),
    "server_timeout": _WRITE.format("timeout=...", "timeout"),
    "drop_expired": _WRITE.format("drop_expired=True", "drop_expired"),
    "dependency": _WRITE.format("dependency=Dependency(...)", "dependency"),
}


def _no_hedge(name: str, client: ClientPolicy) -> None:
    """The handler's dependency call (``sim.dependency.Handler``) makes one attempt at a time;
    the clients' calls may hedge (``sim.client.Call``, by the call's actions)."""
    if client.hedge is not None:
        raise ValueError(f"{name}.hedge must be None: the event engine's dependency call makes "
                         "one attempt at a time (the scenario's client may hedge; so does the "
                         "fan-out model, sim.fanout)")


@renamed_fields(_RENAMED)
@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One experiment.

    Load:
        load: who sends requests and when (``Load``: an open-loop rate, or closed-loop
            clients), the object ``run_load`` takes too.
    Server:
        server: what each instance is, a ``ServerConfig`` (the object ``create_app`` takes),
            or a tuple of them, one per instance.
        instances: how many identical instances of a single ``server`` (1..1000); with a
            tuple, its length (``instances`` may be left at 1). Each instance has its own
            workers, queue, admission limiter, dependency client and random streams
            (``rng_streams(seed, instance=k)``); the clients pick one for every attempt with
            ``client.routing``.
        path: the handler the instances run. None: the model's (the work on a worker, then
            the dependency call for ``dependency.share`` of requests). ``"/api/work"``: the
            live route, the work only (the dependency is never called). ``"/api/compose"``:
            the live route, no worker and no queue (admission and the server timeout still
            apply), a dependency call for every request (``server.dependency`` required).
            ``"/api/orders"``: the live route, the work on a worker, then one transaction on
            the instance's connection pool (``server.pool``, None: ``PoolConfig()``) holding a
            connection for ``server.store.query_time`` (None: 0); a pool timeout or refusal
            is a 503, the server timeout covers the pool wait (``sim.pool``). It needs no
            dependency and calls none (a config's ``dependency`` is ignored, as on
            ``"/api/work"``).
        work_overhead: seconds every request holds its worker beyond its drawn work: the
            framework, the timer's resolution (0 for an ideal server; measured on the live one
            by ``atlas_sim.experiments.live.calibrate``, under the same name). It calibrates
            the model to a host, so it is the scenario's, not the server's.
    Client:
        round_trip: seconds each attempt spends on the wire and in the HTTP stacks, outside
            the server's queue: the round trip of an empty request, half on the way in and half
            on the way out (0: the model of a queue alone; ``calibrate`` measures it).
        client: the clients' ``ClientPolicy``: timeout per attempt (599), retry, budget,
            breaker, routing, the object ``run_load`` takes too; or hedging
            (``HedgePolicy``: each copy an attempt of its own, the losers cancelled, see
            ``sim.client``). A dependency's client (``Dependency.client``) may not hedge.
    Elsewhere:
        faults: time windows of trouble (see ``Fault``; ``Fault(instances=...)`` hits some
            instances only).
        seed: the one seed every random stream derives from.

    The old flat server fields (``servers``, ``service_time_mean``/``_dist``/``_shape``,
    ``max_concurrent``, ``retry_after``, ``server_timeout``, ``drop_expired``,
    ``dependency``) raise ``ValueError`` saying what to write instead. Other bad values raise
    ``ValueError`` naming the field and its range.
    """

    load: Load
    server: ServerConfig | tuple[ServerConfig, ...] = field(default_factory=ServerConfig)
    instances: int = 1
    path: Path | None = None
    work_overhead: float = 0.0
    round_trip: float = 0.0
    client: ClientPolicy = field(default_factory=ClientPolicy)
    faults: tuple[Fault, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.load, Load):
            raise ValueError(f"load must be a Load, got {self.load!r}")
        check_int("instances", self.instances, low=1, high=1000)
        server = self.server
        if isinstance(server, list):
            server = tuple(server)
        if isinstance(server, tuple):
            if not server:
                raise ValueError("server must be a ServerConfig or a non-empty tuple of them, "
                                 "got ()")
            for i, config in enumerate(server):
                if not isinstance(config, ServerConfig):
                    raise ValueError(f"server[{i}] must be a ServerConfig, got {config!r}")
            if self.instances not in (1, len(server)):
                raise ValueError(f"instances must be 1 or len(server) = {len(server)} when "
                                 f"server is a tuple of configs, got {self.instances!r}")
            set_(self, "server", server)
            set_(self, "instances", len(server))
        elif not isinstance(server, ServerConfig):
            raise ValueError(f"server must be a ServerConfig or a tuple of them, got {server!r}")
        if self.path is not None:
            check_choice("path", self.path, PATHS)
        for i, config in enumerate(self.configs):
            where = "server" if isinstance(self.server, ServerConfig) else f"server[{i}]"
            if config.dependency is not None:
                _no_hedge(f"{where}.dependency.client", config.dependency.client)
            elif self.path == "/api/compose":
                raise ValueError(f"{where}.dependency must be a Dependency when path is "
                                 "'/api/compose' (the route only calls the dependency)")
        check_real("work_overhead", self.work_overhead, low=0)
        check_real("round_trip", self.round_trip, low=0)
        if not isinstance(self.client, ClientPolicy):
            raise ValueError(f"client must be a ClientPolicy, got {self.client!r}")
        faults = tuple(self.faults)
        for i, fault in enumerate(faults):
            if not isinstance(fault, Fault):
                raise ValueError(f"faults[{i}] must be a Fault, got {fault!r}")
            if fault.instances is not None and max(fault.instances) >= self.instances:
                raise ValueError(f"faults[{i}].instances must be instance indexes 0.."
                                 f"{self.instances - 1}, got {fault.instances!r}")
        set_(self, "faults", faults)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def configs(self) -> tuple[ServerConfig, ...]:
        """The ``ServerConfig`` of each instance, by index (length ``instances``)."""
        server = self.server
        if isinstance(server, ServerConfig):
            return (server,) * self.instances
        return server

    @property
    def capacity(self) -> float:
        """Requests per second all instances finish when healthy: the sum of each one's
        workers / mean service time (infinite if any work takes no time)."""
        return sum(config.capacity for config in self.configs)

    @property
    def utilisation(self) -> float | None:
        """Offered load over capacity for an open-loop scenario (None for a closed one)."""
        if self.load.rate is None:
            return None
        return self.load.rate / self.capacity

    def replace(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> Scenario:
        """A copy with some fields changed; nested fields by dotted path (into every instance's
        config when ``server`` is a tuple)::

            scenario.replace(instances=3)
            scenario.replace({"server.workers": 2, "server.service_time.mean": 0.02})
            scenario.replace({"client.retry.max_attempts": 5, "load.rate": 40.0})

        An old flat name (``servers=2``) raises ``ValueError`` saying what to write.
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
            if not rest:  # a renamed field: the class's own refusal says what to write
                with contextlib.suppress(TypeError):
                    dataclasses.replace(obj, **{head: value})
            raise ValueError(f"{type(obj).__name__} has no field {head!r} (in {path!r})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        inner = direct.get(head, getattr(obj, head))
        if isinstance(inner, tuple) and inner and all(dataclasses.is_dataclass(x)
                                                      for x in inner):
            direct[head] = tuple(evolve(x, sub) for x in inner)  # e.g. every instance's config
            continue
        if inner is None or not dataclasses.is_dataclass(inner):
            raise ValueError(
                f"cannot set {head}.{next(iter(sub))}: {type(obj).__name__}.{head} is "
                f"{inner!r}; give it a value first"
            )
        direct[head] = evolve(inner, sub)
    return dataclasses.replace(obj, **direct)
