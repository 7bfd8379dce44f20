"""``ServiceState``: the live parts of one app (one instance of the service), reached as
``app.state.atlas``: settings and seed, metrics, admission limiter, work station, dependency
and its callers, its store (orders and idempotency keys), and the counts its routes keep.

The store's life (``open_store`` / ``close_store``): the app's ASGI lifespan opens it on the
event loop that serves the app (``LiveServer`` runs the lifespan) and closes it there when the
server stops; an app used without a lifespan (an ASGI transport in a test) opens it on first use
instead. A ``StoreConfig(url=None)`` is a SQLite file in a temporary directory made when the
store opens and removed when it closes, unless the app was given a ``store_url`` (a ``Cluster``'s
one directory, shared by every instance and removed by the cluster).

Everything here belongs to one app and is used only from the event loop that serves it. The
route handlers find it through ``request.app`` (``routes.base.state_of``), never through a
closure (see ``routes``).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import HTTPException, Request

from ..config import Settings
from ..policies import AdmissionLimiter, ClientPolicy, HedgePolicy, PoolConfig
from ..server_config import ServerConfig, TimelineConfig
from ..workload import rng_streams
from .dependency import FaultyDependency
from .idempotency import IdempotencyStore
from .inputs import INPUT_HEADER, BadInput, parse_input
from .metrics import ServiceMetrics
from .resilience import CallOutcome, ResilientCaller
from .store import Store, open_store
from .timelines import Timelines
from .work import WorkStation

_INPUT_KEY = INPUT_HEADER.encode("latin-1")  # lower case, as servers give header names

__all__ = ["FanoutCounts", "ServiceState", "fanout_client", "instance_streams", "key_lease",
           "store_location"]

#: The SQLite file's name inside a temporary store directory (``StoreConfig(url=None)``).
STORE_FILE = "atlas.sqlite3"
#: Seconds an in-flight idempotency key is held when neither ``key_lease`` nor the server's
#: ``timeout`` says (the card's ``HTTP_TIMEOUT``).
DEFAULT_LEASE = 30.0


def key_lease(server: ServerConfig) -> float:
    """Seconds an instance holds an in-flight idempotency key: ``server.store.key_lease``, else
    the server's ``timeout`` (a request never runs longer), else 30 s."""
    if server.store is not None and server.store.key_lease is not None:
        return server.store.key_lease
    return server.timeout if server.timeout is not None else DEFAULT_LEASE


def store_location() -> tuple[str, str]:
    """A new temporary store directory's path (not yet made: ``os.mkdir`` it when the store
    opens) and the ``sqlite:///`` URL of the SQLite file in it. The name is random, so nobody
    can guess it before it is made."""
    directory = os.path.join(tempfile.gettempdir(), f"atlas-store-{uuid.uuid4().hex}")
    return directory, f"sqlite:///{os.path.join(directory, STORE_FILE)}"


def instance_streams(seed: int, instance: int = 0) -> dict[str, np.random.Generator]:
    """The random streams of instance ``instance`` of a service seeded ``seed``
    (``rng_streams(seed, instance=instance)``, made once), plus ``"fanout"``: a copy of its
    ``"server"`` stream in the same state, for ``/api/fanout``'s caller, which draws the same
    numbers as the dependency caller without sharing its generator."""
    streams = rng_streams(seed, instance=instance)
    streams["fanout"] = copy.deepcopy(streams["server"])
    return streams


@dataclass(eq=False)
class FanoutCounts:
    """What ``/api/fanout`` has done since the last reset or policy change: requests answered,
    logical backend calls, copies sent (calls plus hedges), hedges, and copies cancelled."""

    requests: int = 0
    calls: int = 0
    copies: int = 0
    hedges: int = 0
    cancelled: int = 0

    def add(self, outcomes: list[CallOutcome]) -> tuple[int, int, int]:
        """Count one request's calls; returns its copies, hedges and cancelled copies."""
        copies = sum(len(o.attempts) for o in outcomes)
        hedges = sum(max(0, len(o.attempts) - 1) for o in outcomes)
        cancelled = sum(a.outcome == "cancelled" for o in outcomes for a in o.attempts)
        self.requests += 1
        self.calls += len(outcomes)
        self.copies += copies
        self.hedges += hedges
        self.cancelled += cancelled
        return copies, hedges, cancelled


@dataclass(eq=False)
class ServiceState:
    """The live parts of one app (reach them as ``app.state.atlas``). Its faults are read and
    set through ``faults`` (the dependency's ``Faults``, the work station's capacity and stall,
    ``bad_input_rate``).

    ``server`` is the ``ServerConfig`` the app was built from (the very object given to
    ``create_app``), ``instance`` its index in a cluster (its random streams are
    ``rng_streams(seed, instance=instance)``), ``limiter`` its admission limiter built from
    ``server.admission`` (None: no load shedding).

    ``store`` is where its orders and idempotency keys live (``store.open_store(server.store,
    pool=server.pool or PoolConfig(), lease=key_lease(server))``: ``server.store=None`` is a
    ``MemoryStore`` of its own, as the state in memory always was); ``idempotency`` is that
    store too, so ``/api/orders`` stores an order and its key's answer in one transaction.
    ``cache`` and ``events`` are set by the cache and the event consumers when they run (None:
    none); ``/metrics`` reads them. ``timelines`` are the home timelines (``timelines``).
    """

    settings: Settings
    server: ServerConfig
    seed: int
    instance: int
    metrics: ServiceMetrics
    limiter: AdmissionLimiter | None
    work: WorkStation
    dependency: FaultyDependency
    caller: ResilientCaller
    max_body_bytes: int
    fanout: ResilientCaller  # /api/fanout's calls: DATABASE_TIMEOUT, budget, breaker, hedge
    store: Store = field(default=None)  # type: ignore[assignment]  # made in __post_init__
    #: the key store ``/api/orders`` asks: the store itself (so an order and its key's answer
    #: are kept in one transaction), unless replaced (tests put a ``MemoryIdempotencyStore``)
    idempotency: IdempotencyStore = field(default=None)  # type: ignore[assignment]
    bad_input_rate: float = 0.0  # the handlers crash on inputs below this (a software error)
    fanout_counts: FanoutCounts = field(default_factory=FanoutCounts)
    #: the SQLite location for ``StoreConfig(url=None)`` (a ``Cluster``'s shared file); None:
    #: a temporary directory of this app's own, made on open and removed on close
    store_url: str | None = None
    cache: Any = None  # the cache (int attributes hits, misses, errors), or None
    events: Any = None  # the event consumers (``async lag() -> {(group, topic): int}``), or None
    #: orders the "receipts" consumer group has seen (``eventlog.order_receipts``)
    receipted: set[int] = field(default_factory=set)
    draw_hold: Callable[[], float] = field(default=lambda: 0.0)  # the "store" stream's draws
    #: the home timelines (``timelines.Timelines``: ``server.timelines or TimelineConfig()``)
    timelines: Timelines = field(default=None)  # type: ignore[assignment]
    #: whether the app's lifespan runs (its background tasks have somebody to stop them)
    serving: bool = field(default=False, init=False)
    #: why the app's lifespan could not open the store (None: it could, or never tried)
    startup_error: BaseException | None = field(default=None, init=False, repr=False)
    _store_open: bool = field(default=False, init=False, repr=False)
    _store_lock: asyncio.Lock | None = field(default=None, init=False, repr=False)
    #: the temporary directory this app makes for its store (None: none)
    _store_directory: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = self._new_store()
        if self.idempotency is None:
            self.idempotency = self.store
        self.draw_hold = self._hold_sampler(instance_streams(self.seed, self.instance))
        if self.timelines is None:
            self.timelines = Timelines(self.server.timelines or TimelineConfig(),
                                       seed=self.seed, instance=self.instance)

    # -- the store's life -----------------------------------------------------------------

    def _store_config(self) -> tuple[Any, str | None]:
        """The config to open (``server.store`` with its location filled in when its url is
        None) and the temporary directory to make for it (None: none)."""
        config = self.server.store
        if config is None or config.url is not None:
            return config, None
        if self.store_url is not None:
            return dataclasses.replace(config, url=self.store_url), None
        directory, url = store_location()
        return dataclasses.replace(config, url=url), directory

    def _new_store(self) -> Store:
        config, directory = self._store_config()
        self._store_directory = directory
        return open_store(config, pool=self.server.pool or PoolConfig(),
                          lease=key_lease(self.server))

    async def open_store(self) -> Store:
        """The store, opened (on the running loop) if it is not yet: its connections made, its
        schema created if missing, its temporary directory made if it needs one. Called by the
        app's lifespan and, for an app used without one, by the routes on first use."""
        if self._store_open:
            return self.store
        if self._store_lock is None:
            self._store_lock = asyncio.Lock()
        async with self._store_lock:
            if self._store_open:
                return self.store
            if self._store_directory is not None:
                os.mkdir(self._store_directory, 0o700)
            try:
                await self.store.open()
            except BaseException:
                await self._discard_store()
                raise
            self._store_open = True
        return self.store

    async def close_store(self) -> None:
        """Close the store (its connections) and remove its temporary directory; a new store
        object, not yet open, takes its place, so the app can be served again. Idempotent."""
        if not self._store_open:
            return
        await self._discard_store()

    async def _discard_store(self) -> None:
        old = self.store
        try:
            await old.close()
        finally:
            if self._store_directory is not None:
                shutil.rmtree(self._store_directory, ignore_errors=True)
            self._store_open = False
            self._store_lock = None
            if old.kind != "memory":  # a memory store holds nothing to close: it is kept,
                self.store = self._new_store()  # as the app's state always was
                if self.idempotency is old:
                    self.idempotency = self.store

    def check_input(self, request: Request) -> None:
        """Refuse a malformed ``X-Atlas-Input`` (400, whatever the faults: ``parse_input``),
        and crash (``BadInput``) if the request carries a bad input, one below
        ``bad_input_rate``; a request without the header carries a good one. A server that is
        down (capacity 0) answers 503 before any handler code runs, as in the simulator."""
        try:
            # the raw fields, as request.headers.getlist(INPUT_HEADER) reads them, without
            # building a Headers object on every request
            value = parse_input([v.decode("latin-1") for k, v in request.scope["headers"]
                                 if k == _INPUT_KEY])
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if value is None or not self.bad_input_rate or self.work.capacity == 0:
            return
        if value < self.bad_input_rate:
            raise BadInput(f"the handler cannot process input {value!r} "
                           f"(bad_input_rate {self.bad_input_rate:g})")

    def rewind(self) -> None:
        """Restart every random stream from the seed: the next requests draw what a fresh
        service (and a simulation with the same seed) would."""
        streams = instance_streams(self.seed, self.instance)
        self.work.use_stream(streams["service"])
        self.dependency.use_stream(streams["dependency"])
        self.caller.use_stream(streams["server"])
        # its own copy of the stream, as create_app gives it: not the caller's generator
        self.fanout.use_stream(streams["fanout"])
        self.draw_hold = self._hold_sampler(streams)

    def _hold_sampler(self, streams: dict[str, np.random.Generator]) -> Callable[[], float]:
        """Draws of ``server.store.query_time`` on the ``"store"`` stream (0 when None)."""
        config = self.server.store
        if config is None or config.query_time is None:
            return lambda: 0.0
        return config.query_time.sampler(streams["store"])

    def set_hedge(self, delay: float | None) -> None:
        """Hedge ``/api/fanout``'s calls after ``delay`` seconds (None: no hedging), with a
        fresh breaker and budget, and its counts from 0."""
        hedge = HedgePolicy(delay=delay) if delay is not None else None
        self.fanout = ResilientCaller(self.dependency, policy=fanout_client(self.settings, hedge),
                                      rng=instance_streams(self.seed, self.instance)["fanout"])
        self.fanout_counts = FanoutCounts()

    def fanout_view(self) -> dict[str, Any]:
        hedge = self.fanout.policy.hedge
        c = self.fanout_counts
        return {"hedge_delay": hedge.delay if hedge is not None else None,
                "max_extra": hedge.max_extra if hedge is not None else 0,
                "requests": c.requests, "calls": c.calls, "copies": c.copies,
                "hedges": c.hedges, "cancelled": c.cancelled}


def fanout_client(settings: Settings, hedge: HedgePolicy | None = None) -> ClientPolicy:
    """How ``/api/fanout`` calls the dependency: ``DATABASE_TIMEOUT`` per copy, the service's
    budget and breaker settings (a breaker and a budget of its own), and ``hedge``; no retry
    (a call is retried or hedged, never both)."""
    return ClientPolicy(timeout=settings.database_timeout, budget=settings.budget_config(),
                        breaker=settings.breaker_config(), hedge=hedge)
