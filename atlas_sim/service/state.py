"""``ServiceState``: the live parts of one app (one instance of the service), reached as
``app.state.atlas``: settings and seed, metrics, admission limiter, work station, dependency
and its callers, idempotency keys, and the counts its routes keep.

Everything here belongs to one app and is used only from the event loop that serves it. The
route handlers find it through ``request.app`` (``routes.base.state_of``), never through a
closure (see ``routes``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import HTTPException, Request

from ..config import Settings
from ..policies import AdmissionLimiter, ClientPolicy, HedgePolicy
from ..server_config import ServerConfig
from ..workload import rng_streams
from .dependency import FaultyDependency
from .idempotency import IdempotencyStore, MemoryIdempotencyStore
from .inputs import INPUT_HEADER, BadInput, parse_input
from .metrics import ServiceMetrics
from .resilience import CallOutcome, ResilientCaller
from .work import WorkStation

__all__ = ["FanoutCounts", "ServiceState", "fanout_client", "instance_streams"]


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
    idempotency: IdempotencyStore = field(default_factory=MemoryIdempotencyStore)
    orders_applied: int = 0  # writes /api/orders has applied (duplicates included)
    bad_input_rate: float = 0.0  # the handlers crash on inputs below this (a software error)
    fanout_counts: FanoutCounts = field(default_factory=FanoutCounts)

    def check_input(self, request: Request) -> None:
        """Refuse a malformed ``X-Atlas-Input`` (400, whatever the faults: ``parse_input``),
        and crash (``BadInput``) if the request carries a bad input, one below
        ``bad_input_rate``; a request without the header carries a good one. A server that is
        down (capacity 0) answers 503 before any handler code runs, as in the simulator."""
        try:
            value = parse_input(request.headers.getlist(INPUT_HEADER))
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
