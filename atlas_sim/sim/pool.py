"""The connection pool on SimPy's clock, and the ``/api/orders`` handler that uses it.

``SimPool`` drives the one pool policy, ``policies.pool.ConnectionPool`` (psycopg_pool's
semantics: ``size``, ``max_waiting``, ``timeout``), on ``env.now``, as the live store's
``AsyncPool`` drives it on ``time.monotonic``: the policy decides, the driver waits.

========================  ======================================================================
``acquire(timeout)``      a ``PoolRequest`` (a SimPy event): already triggered with ``Granted``
                          (an idle connection, at once) or ``Refused`` (``max_waiting`` clients
                          already wait); else it waits, and is triggered by the ``release()``
                          whose ``Granted`` names its ticket, or by its deadline's timer, whose
                          ``expire`` gives ``TimedOut`` (a stale timer, for a ticket granted or
                          cancelled first, is ignored, as the policy's ``expire`` returns None).
                          A process may ``yield`` it; the engine's callbacks append to it.
``release()``             a connection comes back: the oldest waiter's request is triggered
                          with its ``Granted`` (and its wait), or the connection goes idle.
``cancel(request)``       the caller stops waiting (its request was reaped by the server
                          timeout): a waiter leaves the queue (``cancelled``); a request already
                          granted holds a connection, which goes back (``release()``).
========================  ======================================================================

The ``/api/orders`` route (``OrderHandler``), as the live service runs it: the request takes a
work slot for its service time (``ServerConfig.service_time`` on ``workers``, as
``/api/work``), gives the slot back, then runs ONE transaction on a pooled connection: acquire
(the instance's pool, ``ServerConfig.pool or PoolConfig()``), hold the connection for
``query_time`` (``ServerConfig.store.query_time``, drawn from the instance's ``"store"`` stream
when the request reaches the pool, in that order; 0 when there is no store or no
``query_time``), release, answer 200. A pool timeout (``TimedOut``) or refusal (``Refused``) is
answered 503 (with the server's ``Retry-After``, as live). The server timeout (504) covers the
whole request, the pool wait included: a request still waiting then leaves the queue
(``cancel``), and one holding a connection gives it back at that instant (live: the handler's
task is cancelled and the pool's context manager returns the connection). An admitted request
leaves the admission limiter when it is answered, not when its work slot is free.

During a stall the work's end is held with its slot, as every route's is (``sim.server``); the
transaction's answer is held too (its connection is given back first).

Each acquire is written down (``Recorder.pool``): ``meta["pool"]`` of a run on
``/api/orders`` is a table ``request_id, attempt, instance, time, wait, outcome`` (``time``:
when the acquire was asked, seconds; ``wait``: seconds until granted, timed out or cancelled,
0 for a refusal; ``outcome``: ``"granted"``, ``"timeout"``, ``"refused"`` or
``"cancelled"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy
from simpy.events import Event

from ..policies import Status
from ..policies.pool import ConnectionPool, Granted, PoolConfig, Queued, Refused, TimedOut

if TYPE_CHECKING:
    from ..server_config import ServerConfig
    from .client import Attempt
    from .server import Server

__all__ = ["OrderHandler", "PoolRequest", "SimPool", "query_sampler"]

_OK = int(Status.OK)
_UNAVAILABLE = int(Status.SERVICE_UNAVAILABLE)
_SERVER_TIMEOUT = int(Status.GATEWAY_TIMEOUT)


class PoolRequest(Event):
    """One acquire: a SimPy event whose value is ``Granted``, ``Refused`` or ``TimedOut``.
    ``ticket`` is the pool's ticket; ``time`` when it was asked (simulated seconds)."""

    def __init__(self, env: simpy.Environment, ticket: int) -> None:
        super().__init__(env)
        self.ticket = ticket
        self.time = env.now


class SimPool:
    """``ConnectionPool`` driven on ``env.now`` (see the module docstring). ``policy`` is the
    pool itself: its counts (``in_use``, ``waiting``, ``timeouts``, ...) are the run's."""

    __slots__ = ("env", "policy", "waiting")

    def __init__(self, env: simpy.Environment, config: PoolConfig) -> None:
        if not isinstance(config, PoolConfig):
            raise ValueError(f"config must be a PoolConfig, got {config!r}")
        self.env = env
        self.policy: ConnectionPool = config.build(clock=lambda: env.now)
        self.waiting: dict[int, PoolRequest] = {}  # ticket -> its request, while it waits

    def acquire(self, timeout: float | None = None) -> PoolRequest:
        """Ask for a connection (``timeout``: seconds, default the pool's): the request is
        triggered now (granted or refused) or later (granted by a release, or timed out)."""
        decision = self.policy.acquire(timeout)
        request = PoolRequest(self.env, decision.ticket)
        if isinstance(decision, Queued):
            self.waiting[decision.ticket] = request
            simpy.Timeout(self.env, decision.deadline - self.env.now,
                          decision.ticket).callbacks.append(self._deadline)
        else:
            request.succeed(decision)
        return request

    def _deadline(self, event: Any) -> None:
        out: TimedOut | None = self.policy.expire(event._value)
        if out is not None:
            self.waiting.pop(out.ticket).succeed(out)

    def release(self) -> None:
        """A connection comes back: to the oldest waiter, whose request is triggered, or idle."""
        granted = self.policy.release()
        if granted is not None:
            self.waiting.pop(granted.ticket).succeed(granted)

    def cancel(self, request: PoolRequest) -> None:
        """The caller gives ``request`` up: it leaves the queue if it waits; if it was granted
        (at once or by a release), its connection goes back. A refused or timed-out request
        holds nothing. Call it at most once per request, and never after releasing it."""
        if self.policy.cancel(request.ticket):
            del self.waiting[request.ticket]
        elif request.triggered and isinstance(request.value, Granted):
            self.release()


class OrderHandler:
    """One attempt's transaction on ``/api/orders``, after its work: acquire, hold for
    ``hold`` seconds, release, answer (see the module docstring)."""

    __slots__ = ("attempt", "finished", "holding", "over", "request", "server")

    def __init__(self, server: Server, attempt: Attempt) -> None:
        self.server = server
        self.attempt = attempt
        self.request: PoolRequest | None = None
        self.holding = False
        self.over = False  # the transaction is over: granted-and-released, refused, timed out
        self.finished = False  # answered

    def start(self, hold: float) -> None:
        server = self.server
        pool = server.pool
        assert pool is not None
        request = self.request = pool.acquire()
        request.callbacks.append(lambda event: self.acquired(event, hold))
        if server.timeout is not None:
            deadline = self.attempt.t_arrive + server.timeout
            server.run.later(max(0.0, deadline - server.env.now), self.time_out)

    def acquired(self, event: Any, hold: float) -> None:
        if self.over:
            return  # reaped by the server timeout first (a granted connection went back then)
        decision = event._value
        self.record(decision)
        if isinstance(decision, Granted):
            self.holding = True
            self.server.run.later(hold, self.committed)
        else:  # TimedOut (psycopg_pool's PoolTimeout) or Refused (TooManyRequests)
            self.over = True
            self.attempt.retry_after = self.server.retry_after  # sent with it, as live
            self.finish(_UNAVAILABLE)

    def committed(self, _event: Any) -> None:
        if self.over:
            return
        self.over = True
        self.holding = False
        pool = self.server.pool
        assert pool is not None
        pool.release()
        self.finish(_OK)

    def time_out(self, _event: Any) -> None:
        """The server timeout: a waiter leaves the queue, a holder gives its connection back,
        and the request is answered 504."""
        if self.finished:
            return  # answered in time (or a stall holds an answer: the 504 replaces it)
        if not self.over:
            self.over = True
            self.give_up()
        self.finish(_SERVER_TIMEOUT)

    def give_up(self) -> None:
        request, pool = self.request, self.server.pool
        assert request is not None and pool is not None
        if self.holding:
            self.holding = False
            pool.release()
        elif not request.processed:  # waiting, or granted this instant and not yet told
            self.record(request.value if request.triggered else None)
            pool.cancel(request)

    def record(self, decision: Granted | Refused | TimedOut | None) -> None:
        """One row of ``meta["pool"]`` (None: cancelled by the server timeout)."""
        request = self.request
        assert request is not None
        now = self.server.env.now
        if isinstance(decision, Granted):
            outcome, wait = "granted", decision.waited
        elif isinstance(decision, TimedOut):
            outcome, wait = "timeout", decision.waited
        elif isinstance(decision, Refused):
            outcome, wait = "refused", 0.0
        else:
            outcome, wait = "cancelled", now - request.time
        attempt = self.attempt
        self.server.run.recorder.pool_rows.append(
            (attempt.call.request_id, attempt.number, self.server.index, request.time, wait,
             outcome))

    def finish(self, status: int) -> None:
        server = self.server
        if server.conditions.stall and status != _SERVER_TIMEOUT:
            server.held[self] = lambda: self.answer(status)  # the stall holds its answer
            return
        server.held.pop(self, None)
        self.answer(status)

    def answer(self, status: int) -> None:
        server, attempt = self.server, self.attempt
        if self.finished:
            return
        self.finished = True
        server.leave(attempt, status != _OK)
        if status == _OK:
            server.run.recorder.completion(attempt.call.request_id, attempt.number,
                                           server.index)
        attempt.answer(status)


def query_sampler(server_config: ServerConfig,
                  stream: np.random.Generator) -> Callable[[], float]:
    """The hold time of each transaction: ``store.query_time`` drawn from ``stream`` (the
    instance's ``"store"`` stream), or 0 with no store or no ``query_time``."""
    store = server_config.store
    if store is None or store.query_time is None:
        return lambda: 0.0
    return store.query_time.sampler(stream)
