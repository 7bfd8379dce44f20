"""One server instance: ``workers`` behind its queue (``ServerConfig.queue``: FIFO by
default), with admission (503 when down, 429 when its ``AdmissionLimiter`` refuses, 500 on a bad
input), the server timeout (504), deadline propagation, and the stall that holds answers; its
``Conditions`` are what the fault windows that hit it make of it now."""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappush
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from simpy.events import NORMAL

from ..policies import PoolConfig, Status
from ..server_config import ServerConfig
from ..workload import rng_streams
from .conditions import Conditions
from .deadlines import EPS, Deadlines
from .dependency import DependencyClient, Handler
from .pool import OrderHandler, SimPool, query_sampler
from .scenario import Fault

if TYPE_CHECKING:
    from .client import Attempt
    from .engine import Run

__all__ = ["Server"]

_OK = int(Status.OK)
_SHED = int(Status.TOO_MANY_REQUESTS)
_UNAVAILABLE = int(Status.SERVICE_UNAVAILABLE)
_CRASH = int(Status.INTERNAL_ERROR)
_SERVER_TIMEOUT = int(Status.GATEWAY_TIMEOUT)


class Server:
    """Instance ``index`` of the run, built from ``config``: its workers, its queue (the
    config's ``QueueDiscipline``), its admission limiter (the config's ``AdmissionLimiter``,
    told each admitted attempt's latency and whether it was dropped), its timeout, its
    dependency client, and the faults that hit it. It draws from ``rng_streams(seed,
    instance=index)``'s ``"service"``, ``"dependency"`` and ``"server"`` streams (instance 0's
    are the run's own, so one instance draws what a single server always did).

    The scenario's ``path`` picks the handler: None, the work then the dependency for its
    ``share`` of requests; ``"/api/work"``, the work only; ``"/api/compose"``, no worker and
    no queue (unbounded workers, no work drawn), the dependency for every request;
    ``"/api/orders"``, the work, then one transaction on the instance's connection pool
    (``pool``, a ``sim.pool.SimPool`` of ``config.pool or PoolConfig()``, holding a connection
    for ``config.store.query_time`` drawn from the ``"store"`` stream; ``sim.pool``), no
    dependency.

    During a stall (``Fault.stall``) no attempt starts: arrivals queue (after shedding), and an
    attempt whose work ends is held with its worker in ``held`` until the stall ends (or its
    server timeout, if that comes first: the timeout sits in front of the work, as the live
    Timeout layer does).
    """

    def __init__(self, run: Run, config: ServerConfig, index: int = 0) -> None:
        s = run.scenario
        self.run = run
        self.env = run.env
        self.config = config
        self.index = index
        streams = run.streams if index == 0 else rng_streams(s.seed, instance=index)
        self.conditions = Conditions()
        compose = s.path == "/api/compose"
        self.free: float = math.inf if compose else config.workers
        self.queue = config.queue.build()
        self.push = self.queue.push
        self.limiter = config.admission.build() if config.admission is not None else None
        self.timeout = config.timeout
        self.retry_after = config.retry_after
        self.drop_expired = config.drop_expired
        orders = s.path == "/api/orders"
        dep = None if s.path == "/api/work" or orders else config.dependency
        if compose:
            self.draw_work: Callable[[], float] = lambda: 0.0
            self.overhead = 0.0
        else:
            self.draw_work = config.service_time.sampler(streams["service"])
            self.overhead = s.work_overhead
        # the expected time at work, for deadline propagation
        self.mean_work = 0.0 if compose else config.service_time.mean + s.work_overhead
        if dep is not None:
            self.mean_work += dep.latency.mean if compose else dep.share * dep.latency.mean
        self.pool: SimPool | None = None
        if orders:
            self.pool = SimPool(self.env, config.pool or PoolConfig())
            self.draw_query = query_sampler(config, streams["store"])
            store = config.store
            if store is not None and store.query_time is not None:
                self.mean_work += store.query_time.mean
            self.done = self.work_done  # type: ignore[method-assign]  # then the transaction
        self.reaper_armed = False
        # where a worker's work ends: ``done`` (``work_done`` on /api/orders), or straight to
        # ``finish`` when no fault can stall this instance (``done`` then always finishes)
        can_stall = any(f.stall and f.applies_to(index) for f in s.faults)
        self.work_ends: Callable[[Attempt], None] = (self.done if can_stall or orders
                                                     else self.finish)
        self.dependency = (DependencyClient(run, dep, streams, index, share_all=compose)
                           if dep is not None else None)
        self.handler_deadlines = Deadlines(run, is_done=attrgetter("finished"),
                                           expire=Handler.time_out)
        # answers held by a stall, oldest first: attempt or handler -> what answers it
        self.held: dict[Any, Callable[[], None]] = {}

    def apply_faults(self, active: list[Fault]) -> None:
        """A fault window opened or closed: the conditions change (by the ``active`` faults
        that apply to this instance), and when the server is back up or its stall is over, the
        held answers leave and idle workers take queued work."""
        index = self.index
        active = [fault for fault in active if fault.applies_to(index)]
        conditions = self.conditions
        was_down, was_stalled = conditions.capacity == 0, conditions.stall
        conditions.apply(active)
        if was_stalled and not conditions.stall:
            self.release_held()
        if (was_down or was_stalled) and conditions.capacity > 0 and not conditions.stall:
            self.resume()

    def submit(self, attempt: Attempt) -> None:
        """An attempt arrives: refuse it (503 down, 429 shed), crash on its input (500), start
        it, or queue it."""
        if self.conditions.capacity == 0:
            attempt.answer(_UNAVAILABLE)
            return
        if self.limiter is not None and not self.limiter.try_acquire():
            attempt.answer(_SHED)
            return
        attempt.t_arrive = self.env._now
        rate = self.conditions.bad_input_rate
        if rate and self.run.inputs[attempt.call.request_id] < rate:
            self.leave(attempt, True)  # the handler died on what the request carries
            attempt.answer(_CRASH)
            return
        if self.free and not self.conditions.stall:
            self.free -= 1
            self.start(attempt)
        else:
            self.push(attempt)
            if self.timeout is not None and not self.reaper_armed:
                self.arm_reaper()

    def start(self, attempt: Attempt) -> None:
        """A worker takes ``attempt``: local work, then the dependency call if any."""
        now = self.env._now
        attempt.queue_wait = now - attempt.t_arrive
        conditions = self.conditions
        work = self.draw_work() / conditions.capacity + conditions.added_latency + self.overhead
        dependency = self.dependency
        if dependency is not None and (
                dependency.share == 1.0
                or (dependency.draw_uniform.buffer.pop() if dependency.draw_uniform.buffer
                    else dependency.draw_uniform.refill()) < dependency.share):
            Handler(self, attempt).start(work)
            return
        timeout = self.timeout
        if timeout is not None and attempt.queue_wait + work > timeout:
            attempt.status = _SERVER_TIMEOUT  # cut off at the deadline; the work is dropped
            work = attempt.t_arrive + timeout - now
        run = self.run  # run.later(work, self.work_ends, attempt), inline: once per request
        heappush(run._queue, (now + work, NORMAL, next(run._eid), (self.work_ends, attempt)))

    def done(self, attempt: Attempt) -> None:
        if self.conditions.stall and attempt.status == _OK:
            self.held[attempt] = lambda: self.finish(attempt)  # answered when the stall ends
            if self.timeout is not None:  # ... or cut off at its deadline, if that is sooner
                self.run.later(attempt.t_arrive + self.timeout - self.env._now, self.cut_held,
                               attempt)
            return
        self.finish(attempt)

    def work_done(self, attempt: Attempt) -> None:
        """``/api/orders``: the work is over; the slot is given back and the transaction
        starts (or, cut off by the server timeout or held by a stall, as ``done``)."""
        if attempt.status != _OK:
            self.finish(attempt)  # 504 during the work: no transaction
            return
        if self.conditions.stall:
            self.held[attempt] = lambda: self.transaction(attempt)
            if self.timeout is not None:
                self.run.later(attempt.t_arrive + self.timeout - self.env._now, self.cut_held,
                               attempt)
            return
        self.transaction(attempt)

    def transaction(self, attempt: Attempt) -> None:
        """``/api/orders``: free the work slot, then the pooled transaction (``sim.pool``)."""
        self.take_next()
        OrderHandler(self, attempt).start(self.draw_query())

    def finish(self, attempt: Attempt) -> None:
        """``attempt``'s work is over: free its worker and answer (``release``, then the
        recorder's ``completion`` if it was served, inline: once per request)."""
        status = attempt.status
        limiter = self.limiter
        if limiter is not None:
            limiter.release(self.env._now - attempt.t_arrive, status != _OK)
        if self.queue:
            self.take_next()
        else:  # what take_next does when nothing waits
            self.free += 1
        if status == _OK:
            self.run.recorder.server_rows.append((attempt.call.request_id, attempt.number,
                                                  self.env._now, self.index))
        attempt.answer(status)

    def cut_held(self, attempt: Attempt) -> None:
        """The server timeout of an attempt held by a stall: 504, as the live Timeout layer."""
        if self.held.pop(attempt, None) is not None:
            attempt.status = _SERVER_TIMEOUT
            self.finish(attempt)

    def release_held(self) -> None:
        """The stall is over: the held answers leave, in the order their work ended."""
        held, self.held = self.held, {}
        for answer in held.values():
            answer()

    def leave(self, attempt: Attempt, dropped: bool) -> None:
        """An admitted attempt leaves the server (answered, skipped or reaped): the limiter is
        told how long since it was admitted and whether it was ``dropped`` (a 5xx: timed out,
        skipped, reaped, refused by the dependency's breaker, crashed) rather than served."""
        limiter = self.limiter
        if limiter is not None:
            limiter.release(self.env._now - attempt.t_arrive, dropped)  # positional: hot path

    def release(self, attempt: Attempt, dropped: bool) -> None:
        """A worker finished ``attempt``: the limiter is told (``leave``), the worker takes the
        next."""
        limiter = self.limiter
        if limiter is not None:
            limiter.release(self.env._now - attempt.t_arrive, dropped)  # leave(), inline
        if self.queue:
            self.take_next()
        else:  # what take_next does when nothing waits
            self.free += 1

    def take_next(self) -> None:
        """A worker is available: start the next queued attempt, or idle."""
        if self.conditions.capacity == 0 or self.conditions.stall:
            self.free += 1  # the server is down or stalled: workers wait until it resumes
            return
        queue = self.queue
        done_by = -math.inf  # when a queued attempt started now would be done, if we care
        if self.drop_expired:
            conditions = self.conditions
            done_by = (self.env._now + self.mean_work / conditions.capacity
                       + conditions.added_latency)
        while queue:
            attempt = queue.pop()
            if done_by > attempt.deadline:
                self.leave(attempt, True)  # its client will have given up before it is done
                continue
            self.start(attempt)
            return
        self.free += 1

    def resume(self) -> None:
        """The server is back up (or its stall is over): idle workers take queued attempts."""
        while self.free and self.queue:
            self.free -= 1
            self.take_next()

    def arm_reaper(self) -> None:
        head, timeout = self.queue.oldest(), self.timeout
        assert timeout is not None  # armed only when there is a server timeout
        self.reaper_armed = True
        self.run.later(max(0.0, head.t_arrive + timeout - self.env._now), self.reap)

    def reap(self, _value: Any) -> None:
        """Answer 504 to queued attempts that reached the server timeout before a worker."""
        self.reaper_armed = False
        timeout = self.timeout
        assert timeout is not None
        queue, deadline = self.queue, self.env._now - timeout + EPS
        while queue and queue.oldest().t_arrive <= deadline:
            attempt = queue.pop_oldest()
            self.leave(attempt, True)
            attempt.answer(_SERVER_TIMEOUT)
        if queue:
            self.arm_reaper()
