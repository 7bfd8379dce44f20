"""The handler's dependency call: work, then the call to the dependency as a driver of the
service's own ``GuardedCall`` (retry, budget, breaker), with the dependency's latencies, errors
and faults drawn as the live stand-in database draws them."""

from __future__ import annotations

import math
from heapq import heappush
from typing import TYPE_CHECKING, Any

import numpy as np
from simpy.events import NORMAL

from ..policies import GuardedCall, Status

if TYPE_CHECKING:
    from ..server_config import Dependency
    from .client import Attempt
    from .engine import Run
    from .server import Server

__all__ = ["DependencyClient", "Handler"]

_OK = int(Status.OK)
_UNAVAILABLE = int(Status.SERVICE_UNAVAILABLE)
_SERVER_TIMEOUT = int(Status.GATEWAY_TIMEOUT)
_CLIENT_TIMEOUT = int(Status.CLIENT_TIMEOUT)


class Uniforms:
    """Uniform(0, 1) draws one at a time, made in blocks (numpy is fast in bulk): the next is
    ``draws.buffer.pop() if draws.buffer else draws.refill()`` (what ``draws()`` does; the hot
    paths write it out, which saves a call per draw)."""

    __slots__ = ("block", "buffer", "rng")

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self.rng = rng
        self.block = block
        self.buffer: list[float] = []  # the block's draws, the next one last

    def refill(self) -> float:
        """The buffer is empty: draw the next block, and hand out its first number."""
        self.buffer.extend(reversed(self.rng.random(self.block).tolist()))
        return self.buffer.pop()

    def __call__(self) -> float:
        buffer = self.buffer
        return buffer.pop() if buffer else self.refill()


class DependencyClient:
    """One server instance's view of its dependency: latency and error draws (from that
    instance's ``"dependency"`` stream), and its ``Guard`` (retry, budget, breaker, drawing
    jitter from the instance's ``"server"`` stream) shared by every handler of the instance.
    ``share_all``: every request calls it (the ``/api/compose`` route), whatever ``dep.share``.
    """

    def __init__(self, run: Run, dep: Dependency, streams: dict[str, np.random.Generator],
                 index: int = 0, *, share_all: bool = False) -> None:
        self.run = run
        self.timeout = dep.client.timeout if dep.client.timeout is not None else math.inf
        self.error_rate = dep.error_rate
        self.share = 1.0 if share_all else dep.share
        # As in the live service: latencies from the "dependency" stream itself, error coins
        # from its first spawned child and slow-call coins from its third (one of each per
        # call, faults or not), and the draws that decide which requests call the dependency
        # at all from the second.
        stream = streams["dependency"]
        coins, shares, slow = stream.spawn(3)
        self.draw_latency = dep.latency.sampler(stream)
        self.draw_coin = Uniforms(coins)
        self.draw_uniform = Uniforms(shares)
        self.draw_slow = Uniforms(slow)
        # one breaker per instance: "dependency" when there is one, "dependency k" otherwise
        name = "dependency" if run.scenario.instances == 1 else f"dependency {index}"
        self.guard = dep.client.guard(clock=run.now, rng=streams["server"],
                                      on_transition=run.recorder.breaker(name))


class Handler:
    """One attempt's handling when there is a dependency: work, then the dependency call as a
    driver of ``GuardedCall`` (the service's retry, budget and breaker), bounded by the server
    timeout. Any outcome but success, a refusal by the breaker or the budget included, is a 503
    to the client."""

    __slots__ = ("attempt", "finished", "guarded", "in_call", "server")

    def __init__(self, server: Server, attempt: Attempt) -> None:
        self.server = server
        self.attempt = attempt
        self.guarded: GuardedCall | None = None
        self.finished = False
        self.in_call = False

    def start(self, work: float) -> None:
        server = self.server
        if server.timeout is not None:  # server.handler_deadlines.add(...), inline
            deadline = self.attempt.t_arrive + server.timeout
            deadlines = server.handler_deadlines
            deadlines.pending.append((deadline, self))
            if not deadlines.armed:
                deadlines.arm(deadline)
        run = server.run  # run.later(work, self.call), inline: once per dependency call
        heappush(run._queue, (server.env._now + work, NORMAL, next(run._eid), (self.call, None)))

    def call(self, _value: Any = None) -> None:
        if self.finished:
            return
        dep = self.server.dependency
        assert dep is not None
        if self.guarded is None:
            self.guarded = dep.guard.call()
        if not self.guarded.before_attempt():
            self.finish(_UNAVAILABLE)  # fail fast: the circuit is open
            return
        conditions = self.server.conditions
        error_rate = conditions.dependency_error_rate
        if error_rate is None:
            error_rate = dep.error_rate
        coins, slow = dep.draw_coin.buffer, dep.draw_slow.buffer  # one draw of each, inline
        failed = (coins.pop() if coins else dep.draw_coin.refill()) < error_rate
        latency = dep.draw_latency() + conditions.dependency_added_latency
        if (slow.pop() if slow else dep.draw_slow.refill()) < conditions.dependency_slow_rate:
            latency = max(latency, conditions.dependency_slow_latency)
        status = _OK
        if conditions.dependency_outage:  # silence, whatever the coin said, as live
            latency, status = math.inf, _CLIENT_TIMEOUT
        elif failed:
            latency, status = 0.0, _UNAVAILABLE  # an error comes back at once (refused)
        if latency >= dep.timeout:
            latency, status = dep.timeout, _CLIENT_TIMEOUT  # the call's own timeout
        self.in_call = True
        if latency < math.inf:  # else it hangs: only the server timeout can end it
            run = self.server.run  # run.later(latency, self.call_done, status), inline
            heappush(run._queue, (self.server.env._now + latency, NORMAL, next(run._eid),
                                  (self.call_done, status)))

    def call_done(self, status: int) -> None:
        if self.finished:
            return  # the attempt already timed out; its outcome was recorded then
        self.in_call = False
        guarded = self.guarded
        assert guarded is not None
        delay = guarded.after_attempt(status)
        if delay is None:
            self.finish(_OK if guarded.status == _OK else _UNAVAILABLE)
        else:
            self.server.run.later(delay, self.call)

    def is_finished(self) -> bool:
        return self.finished

    def time_out(self, _event: Any = None) -> None:
        """The server timeout fires mid-handling: 504, and the work stops."""
        if self.finished:
            return
        if self.in_call and self.guarded is not None:
            self.guarded.abandon()  # the call never answered in time: a failure
        self.finish(_SERVER_TIMEOUT)

    def finish(self, status: int) -> None:
        server = self.server
        if server.conditions.stall and status != _SERVER_TIMEOUT:
            server.held[self] = lambda: self.finish_now(status)  # the stall holds its answer
            return
        server.held.pop(self, None)  # a 504 while held: the timeout answers, not the stall
        self.finish_now(status)

    def finish_now(self, status: int) -> None:
        if self.finished:
            return
        self.finished = True
        server, attempt = self.server, self.attempt
        limiter = server.limiter  # server.release(attempt, status != _OK), inline
        if limiter is not None:
            limiter.release(server.env._now - attempt.t_arrive, status != _OK)
        if server.queue:
            server.take_next()
        else:
            server.free += 1
        if status == _OK:  # the recorder's completion(), inline
            server.run.recorder.server_rows.append((attempt.call.request_id, attempt.number,
                                                    server.env._now, server.index))
        attempt.answer(status)
