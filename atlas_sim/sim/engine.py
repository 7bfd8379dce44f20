"""The simulation engine: a scenario in, a ``RunResult`` out.

The model is the Atlas request path: clients send attempts to a server with ``servers`` workers
behind one FIFO queue; the server may shed (429), time out (504) or be down (503); a handler may
call a dependency through its own retry, budget and breaker; clients time out, retry with
backoff, and may be stopped by their budget or their breaker. Every decision a policy makes is
made by the very objects of ``atlas_sim.policies``, reading the simulated clock ``env.now``.

How it runs. The clock and the event queue are SimPy's. Arrivals, fault windows and closed-loop
clients are SimPy processes. A request, though, is not a process: it is a small state machine
(``_Call``, ``_Attempt``, ``_Handler``) whose steps are callbacks on SimPy events. A plain request
costs two events (its arrival and its completion) instead of the six or so of a process per
request with a ``Resource``, and that is what lets a slider answer in a blink (BENCHMARKS.md).

Randomness comes from named streams of one seed (``atlas_sim.workload.rng_streams``): arrivals,
service times (drawn in order of service start), client jitter, dependency latencies and errors,
server-side jitter and think times each have their own, so changing one knob does not reshuffle
the dice of the others, and a live run with the same seed sees the same arrivals and work.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import pandas as pd
import simpy
from simpy.events import Timeout

from ..policies import (
    BreakerTransition,
    ConcurrencyLimiter,
    GuardedCall,
    Status,
)
from ..results import RunResult
from ..workload import FaultConditions, RequestInputs, rng_streams
from .scenario import Fault, Scenario

__all__ = ["simulate"]

_OK = int(Status.OK)
_SHED = int(Status.TOO_MANY_REQUESTS)
_UNAVAILABLE = int(Status.SERVICE_UNAVAILABLE)
_CRASH = int(Status.INTERNAL_ERROR)
_SERVER_TIMEOUT = int(Status.GATEWAY_TIMEOUT)
_CLIENT_TIMEOUT = int(Status.CLIENT_TIMEOUT)
_NAN = math.nan
_EPS = 1e-12


def simulate(scenario: Scenario) -> RunResult:
    """Run ``scenario`` to completion: arrivals stop at the load's end, then the system drains.

    Same scenario (seed included), same tables, in any process on any machine.
    """
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario must be a Scenario, got {scenario!r}")
    return _Run(scenario).execute()


def _uniforms(rng: np.random.Generator, block: int = 4096) -> Callable[[], float]:
    """Uniform(0, 1) draws one at a time, made in blocks (numpy is fast in bulk)."""
    buffer: list[float] = []

    def draw() -> float:
        if not buffer:
            buffer.extend(reversed(rng.random(block).tolist()))
        return buffer.pop()

    return draw


class _Deadlines:
    """Timeouts that expire in the order they were set (the timeout is constant, so a later
    start means a later deadline): one timer, for the oldest still pending, instead of one
    timer per attempt. An attempt answered in time costs a deque append and a pop, not an
    event in SimPy's heap. (The server's queue reaper and the live service's Timeout sweeper
    use the same idea.)
    """

    __slots__ = ("armed", "expire", "is_done", "pending", "run")

    def __init__(self, run: _Run, *, is_done: Callable[[Any], bool],
                 expire: Callable[[Any], None]) -> None:
        self.run = run
        self.is_done = is_done
        self.expire = expire
        self.pending: deque[tuple[float, Any]] = deque()
        self.armed = False

    def add(self, deadline: float, item: Any) -> None:
        self.pending.append((deadline, item))
        if not self.armed:
            self.arm(deadline)

    def arm(self, deadline: float) -> None:
        self.armed = True
        self.run.later(max(0.0, deadline - self.run.env.now), self.fire)

    def fire(self, _event: Any) -> None:
        self.armed = False
        pending, now = self.pending, self.run.env.now + _EPS
        while pending:
            deadline, item = pending[0]
            if self.is_done(item):
                pending.popleft()
            elif deadline <= now:
                pending.popleft()
                self.expire(item)
            else:
                self.arm(deadline)
                return


class _Conditions:
    """What the active faults do right now (updated at every fault boundary)."""

    __slots__ = ("added_latency", "bad_input_rate", "capacity", "dependency_added_latency",
                 "dependency_error_rate", "dependency_outage", "dependency_slow_latency",
                 "dependency_slow_rate", "stall")

    def __init__(self) -> None:
        self.capacity = 1.0
        self.bad_input_rate = 0.0
        self.added_latency = 0.0
        self.stall = False
        self.dependency_error_rate: float | None = None
        self.dependency_added_latency = 0.0
        self.dependency_outage = False
        self.dependency_slow_rate = 0.0
        self.dependency_slow_latency = 0.0

    def apply(self, active: list[Fault]) -> None:
        now = FaultConditions.of(active)  # the one rule for overlapping windows
        for name in self.__slots__:
            setattr(self, name, getattr(now, name))


class _Run:
    """Everything one ``simulate`` call needs: the environment, the parts, the records."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = s = scenario
        self.env = simpy.Environment()
        self.streams = rng_streams(s.seed)
        self.request_rows: list[tuple] = []
        self.attempt_rows: list[tuple] = []
        self.event_rows: list[tuple] = []
        self.server_rows: list[tuple] = []  # work the server completed, waited for or not
        self.next_request_id = 0
        self.conditions = _Conditions()
        self.client_timeout = s.client.timeout
        self.half_trip = s.round_trip / 2
        self.client_guard = s.client.guard(clock=self.now, rng=self.streams["client"],
                                           on_transition=self.recorder("client"))
        load = s.load
        self.times: list[float] = []
        if load.open_loop:
            times, self.duration = load.schedule(s.seed)
            self.times = times.tolist()
        else:
            assert load.duration is not None  # Scenario checks it
            self.duration = load.duration
        self.client_deadlines = _Deadlines(self, is_done=_Attempt.is_answered,
                                           expire=_Attempt.time_out)
        self.server = _Server(self)
        self.inputs = RequestInputs(s.seed)  # what each request carries, by request id

    def now(self) -> float:
        """The simulated clock, as the policies read it."""
        return self.env.now

    def recorder(self, name: str) -> Callable[[BreakerTransition], None]:
        """A breaker listener that writes breaker ``name``'s transitions to the events table."""

        def record(t: BreakerTransition) -> None:
            self.event_rows.append((t.time, "breaker", name, t.new.value, t.reason))

        return record

    def log_completion(self, attempt: _Attempt) -> None:
        """The server finished ``attempt``'s work (whether or not its client still waits)."""
        self.server_rows.append((attempt.call.request_id, attempt.number, self.env.now))

    def later(self, delay: float, callback: Callable[[Any], None], value: Any = None) -> None:
        """Call ``callback(event)`` after ``delay`` seconds; ``event.value`` is ``value``."""
        Timeout(self.env, delay, value).callbacks.append(callback)

    # -- load ---------------------------------------------------------------------------

    def _open_loop(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        for t in self.times:
            yield env.timeout(max(0.0, t - env.now))
            _Call(self).start()

    def _closed_loop(self) -> None:
        load = self.scenario.load
        rng, mean = self.streams["think"], load.think_time
        think = (lambda: 0.0) if mean == 0 else (lambda: float(rng.exponential(mean)))
        assert load.clients is not None
        for _ in range(load.clients):
            _Client(self, think).start(load.synchronized)

    def _fault_windows(self) -> Generator[simpy.Event, Any, None]:
        env, faults, server, conditions = self.env, self.scenario.faults, self.server, \
            self.conditions
        edges = {f.start for f in faults} | {f.end for f in faults if f.end < math.inf}
        for t in sorted(edges):
            yield env.timeout(t - env.now)
            was_down, was_stalled = conditions.capacity == 0, conditions.stall
            conditions.apply([f for f in faults if f.start <= t < f.end])
            if was_stalled and not conditions.stall:
                server.release_held()
            if (was_down or was_stalled) and conditions.capacity > 0 and not conditions.stall:
                server.resume()

    # -- running ------------------------------------------------------------------------

    def execute(self) -> RunResult:
        s, env = self.scenario, self.env
        for f in s.faults:
            self.event_rows.append((f.start, "fault", f.name, "start", f.describe()))
            if f.end < math.inf:  # a fault without an end lasts until the run is over
                self.event_rows.append((f.end, "fault", f.name, "end", ""))
        for t, rate in s.load.steps:
            self.event_rows.append((t, "load", "rate", f"{rate:g}", "load step"))
        if s.faults:
            env.process(self._fault_windows())
        if s.load.open_loop:
            env.process(self._open_loop())
        else:
            self._closed_loop()
        env.run()
        return self._result()

    def _result(self) -> RunResult:
        requests = _columns(self.request_rows, 7)
        order = np.argsort(requests[0], kind="stable")
        attempts = _columns(self.attempt_rows, 7)
        by_time = np.lexsort((attempts[1], attempts[0], attempts[2]))
        return RunResult.from_columns(
            requests={name: col[order] for name, col in zip(
                ("request_id", "t_start", "t_end", "latency", "status", "attempts", "ok"),
                requests, strict=True)},
            attempts={name: col[by_time] for name, col in zip(
                ("request_id", "attempt", "t_start", "t_end", "latency", "status", "queue_wait"),
                attempts, strict=True)},
            events=self.event_rows,
            duration=self.duration,
            source="sim",
            meta={"scenario": self.scenario, "seed": self.scenario.seed,
                  "loop": "open" if self.scenario.load.open_loop else "closed",
                  "server_log": pd.DataFrame(self.server_rows,
                                             columns=["request_id", "attempt", "time"])},
        )


def _columns(rows: list[tuple], width: int) -> list[np.ndarray]:
    if not rows:
        return [np.empty(0) for _ in range(width)]
    return [np.asarray(col) for col in zip(*rows, strict=True)]


class _Client:
    """A closed-loop client: request, wait for its end, think, request again."""

    __slots__ = ("run", "think")

    def __init__(self, run: _Run, think: Callable[[], float]) -> None:
        self.run, self.think = run, think

    def start(self, synchronized: bool) -> None:
        if synchronized:
            self.send()
        else:
            self.run.later(self.think(), self.send)

    def send(self, _event: Any = None) -> None:
        run = self.run
        if run.env.now < run.duration:
            _Call(run, self.after).start()

    def after(self) -> None:
        self.run.later(self.think(), self.send)


class _Call:
    """One logical request: a driver of ``GuardedCall`` on simulated time (it sends attempts
    and waits; the guarded call decides)."""

    __slots__ = ("guarded", "on_end", "request_id", "run", "t_start")

    def __init__(self, run: _Run, on_end: Callable[[], None] | None = None) -> None:
        self.run = run
        self.on_end = on_end
        self.request_id = run.next_request_id
        run.next_request_id += 1
        self.guarded: GuardedCall = run.client_guard.call()
        self.t_start = 0.0

    def start(self) -> None:
        self.t_start = self.run.env.now
        self.send()

    def send(self, _event: Any = None) -> None:
        run = self.run
        now = run.env.now
        guarded = self.guarded
        if not guarded.before_attempt():
            self.end(guarded.status)
            return
        attempt = _Attempt(self, guarded.attempts, now)
        if run.client_timeout is not None:
            attempt.deadline = now + run.client_timeout
            run.client_deadlines.add(attempt.deadline, attempt)
        if run.half_trip:
            run.later(run.half_trip, run.server.arrive, attempt)  # on the wire to the server
        else:
            run.server.submit(attempt)

    def attempt_done(self, attempt: _Attempt, status: int) -> None:
        """Called once per attempt: with the server's answer, or 599 if the client gave up."""
        run = self.run
        now = run.env.now
        run.attempt_rows.append((self.request_id, attempt.number, attempt.t_send, now,
                                 now - attempt.t_send, status, attempt.queue_wait))
        retry_after = run.scenario.retry_after if status == _SHED else None
        delay = self.guarded.after_attempt(status, retry_after=retry_after)
        if delay is None:
            self.end(self.guarded.status)
        else:
            run.later(delay, self.send)

    def end(self, status: int) -> None:
        run = self.run
        now = run.env.now
        run.request_rows.append((self.request_id, self.t_start, now, now - self.t_start, status,
                                 self.guarded.attempts, status == _OK))
        if self.on_end is not None:
            self.on_end()


class _Attempt:
    """One attempt on the wire. Answered once: by the server, or by the client giving up."""

    __slots__ = ("answered", "call", "deadline", "number", "queue_wait", "status", "t_arrive",
                 "t_send")

    def __init__(self, call: _Call, number: int, t_send: float) -> None:
        self.call = call
        self.number = number
        self.t_send = t_send
        self.deadline = math.inf  # when the client gives up (deadline propagation)
        self.queue_wait = _NAN
        self.answered = False
        self.status = _OK
        self.t_arrive = t_send

    def answer(self, status: int) -> None:
        """The server's answer; it reaches the client after the way back on the wire."""
        half_trip = self.call.run.half_trip
        if half_trip:
            self.call.run.later(half_trip, self.arrive, status)
        else:
            self.settle(status)

    def arrive(self, event: Any) -> None:
        self.settle(event._value)

    def time_out(self) -> None:
        """The client's deadline passed without an answer: it gives up (599)."""
        self.settle(_CLIENT_TIMEOUT)

    def is_answered(self) -> bool:
        return self.answered

    def settle(self, status: int) -> None:
        """The client learns the outcome: the first of an answer or its own timeout counts."""
        if not self.answered:
            self.answered = True
            self.call.attempt_done(self, status)


class _Server:
    """``servers`` workers behind one FIFO queue, with shedding, a timeout and faults.

    During a stall (``Fault.stall``) no attempt starts: arrivals queue (after shedding), and an
    attempt whose work ends is held with its worker in ``held`` until the stall ends (or its
    server timeout, if that comes first: the timeout sits in front of the work, as the live
    Timeout layer does).
    """

    def __init__(self, run: _Run) -> None:
        s = run.scenario
        self.run = run
        self.env = run.env
        self.conditions = run.conditions
        self.free = s.servers
        self.queue: deque[_Attempt] = deque()
        # Load shedding admits through the same object as the live LoadShedding layer.
        self.limiter = (ConcurrencyLimiter(s.max_concurrent) if s.max_concurrent is not None
                        else None)
        self.timeout = s.server_timeout
        self.drop_expired = s.drop_expired
        self.draw_work = s.service_time.sampler(run.streams["service"])
        self.overhead = s.work_overhead
        dep = s.dependency
        self.mean_work = (s.service_time_mean + s.work_overhead
                          + (dep.share * dep.latency_mean if dep else 0.0))
        self.reaper_armed = False
        self.dependency = _DependencyClient(run) if s.dependency is not None else None
        self.handler_deadlines = _Deadlines(run, is_done=_Handler.is_finished,
                                            expire=_Handler.time_out)
        # answers held by a stall, oldest first: attempt or handler -> what answers it
        self.held: dict[Any, Callable[[], None]] = {}

    def arrive(self, event: Any) -> None:
        """An attempt reaches the server after its way there on the wire."""
        self.submit(event._value)

    def submit(self, attempt: _Attempt) -> None:
        """An attempt arrives: refuse it (503 down, 429 shed), crash on its input (500), start
        it, or queue it."""
        if self.conditions.capacity == 0:
            attempt.answer(_UNAVAILABLE)
            return
        if self.limiter is not None and not self.limiter.try_acquire():
            attempt.answer(_SHED)
            return
        rate = self.conditions.bad_input_rate
        if rate and self.run.inputs[attempt.call.request_id] < rate:
            self.leave()  # the handler died on what the request carries, before any work
            attempt.answer(_CRASH)
            return
        attempt.t_arrive = self.env.now
        if self.free and not self.conditions.stall:
            self.free -= 1
            self.start(attempt)
        else:
            self.queue.append(attempt)
            if self.timeout is not None and not self.reaper_armed:
                self.arm_reaper()

    def start(self, attempt: _Attempt) -> None:
        """A worker takes ``attempt``: local work, then the dependency call if any."""
        now = self.env.now
        attempt.queue_wait = now - attempt.t_arrive
        conditions = self.conditions
        work = self.draw_work() / conditions.capacity + conditions.added_latency + self.overhead
        dependency = self.dependency
        if dependency is not None and (dependency.share == 1.0
                                       or dependency.draw_uniform() < dependency.share):
            _Handler(self, attempt).start(work)
            return
        timeout = self.timeout
        if timeout is not None and attempt.queue_wait + work > timeout:
            attempt.status = _SERVER_TIMEOUT  # cut off at the deadline; the work is dropped
            work = attempt.t_arrive + timeout - now
        self.run.later(work, self.done, attempt)

    def done(self, event: Any) -> None:
        attempt = event._value
        if self.conditions.stall and attempt.status == _OK:
            self.held[attempt] = lambda: self.finish(attempt)  # answered when the stall ends
            if self.timeout is not None:  # ... or cut off at its deadline, if that is sooner
                self.run.later(attempt.t_arrive + self.timeout - self.env.now, self.cut_held,
                               attempt)
            return
        self.finish(attempt)

    def finish(self, attempt: _Attempt) -> None:
        """``attempt``'s work is over: free its worker and answer."""
        self.release()
        if attempt.status == _OK:
            self.run.log_completion(attempt)
        attempt.answer(attempt.status)

    def cut_held(self, event: Any) -> None:
        """The server timeout of an attempt held by a stall: 504, as the live Timeout layer."""
        attempt = event._value
        if self.held.pop(attempt, None) is not None:
            attempt.status = _SERVER_TIMEOUT
            self.finish(attempt)

    def release_held(self) -> None:
        """The stall is over: the held answers leave, in the order their work ended."""
        held, self.held = self.held, {}
        for answer in held.values():
            answer()

    def leave(self) -> None:
        """An admitted attempt leaves the server (answered, skipped or reaped)."""
        if self.limiter is not None:
            self.limiter.release()

    def release(self) -> None:
        """A worker finished its attempt."""
        self.leave()
        self.take_next()

    def take_next(self) -> None:
        """A worker is available: start the next queued attempt, or idle."""
        if self.conditions.capacity == 0 or self.conditions.stall:
            self.free += 1  # the server is down or stalled: workers wait until it resumes
            return
        queue = self.queue
        done_by = -math.inf  # when a queued attempt started now would be done, if we care
        if self.drop_expired:
            conditions = self.conditions
            done_by = (self.env.now + self.mean_work / conditions.capacity
                       + conditions.added_latency)
        while queue:
            attempt = queue.popleft()
            if done_by > attempt.deadline:
                self.leave()  # its client will have given up before it is done: skip
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
        head, timeout = self.queue[0], self.timeout
        assert timeout is not None  # armed only when there is a server timeout
        self.reaper_armed = True
        self.run.later(max(0.0, head.t_arrive + timeout - self.env.now), self.reap)

    def reap(self, _event: Any) -> None:
        """Answer 504 to queued attempts that reached the server timeout before a worker."""
        self.reaper_armed = False
        timeout = self.timeout
        assert timeout is not None
        queue, deadline = self.queue, self.env.now - timeout + _EPS
        while queue and queue[0].t_arrive <= deadline:
            attempt = queue.popleft()
            self.leave()
            attempt.answer(_SERVER_TIMEOUT)
        if queue:
            self.arm_reaper()


class _DependencyClient:
    """The handler's view of the dependency: latency and error draws, and its ``Guard`` (retry,
    budget, breaker) shared by every handler."""

    def __init__(self, run: _Run) -> None:
        dep = run.scenario.dependency
        assert dep is not None
        self.run = run
        self.timeout = dep.client.timeout if dep.client.timeout is not None else math.inf
        self.error_rate = dep.error_rate
        self.share = dep.share
        # As in the live service: latencies from the "dependency" stream itself, error coins
        # from its first spawned child and slow-call coins from its third (one of each per
        # call, faults or not), and the draws that decide which requests call the dependency
        # at all from the second.
        stream = run.streams["dependency"]
        coins, shares, slow = stream.spawn(3)
        self.draw_latency = dep.latency.sampler(stream)
        self.draw_coin = _uniforms(coins)
        self.draw_uniform = _uniforms(shares)
        self.draw_slow = _uniforms(slow)
        self.guard = dep.client.guard(clock=run.now, rng=run.streams["server"],
                                      on_transition=run.recorder("dependency"))


class _Handler:
    """One attempt's handling when there is a dependency: work, then the dependency call as a
    driver of ``GuardedCall`` (the service's retry, budget and breaker), bounded by the server
    timeout. Any outcome but success, a refusal by the breaker or the budget included, is a 503
    to the client."""

    __slots__ = ("attempt", "finished", "guarded", "in_call", "server")

    def __init__(self, server: _Server, attempt: _Attempt) -> None:
        self.server = server
        self.attempt = attempt
        self.guarded: GuardedCall | None = None
        self.finished = False
        self.in_call = False

    def start(self, work: float) -> None:
        server = self.server
        if server.timeout is not None:
            server.handler_deadlines.add(self.attempt.t_arrive + server.timeout, self)
        server.run.later(work, self.call)

    def call(self, _event: Any = None) -> None:
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
        failed = dep.draw_coin() < error_rate
        latency = dep.draw_latency() + conditions.dependency_added_latency
        if dep.draw_slow() < conditions.dependency_slow_rate:
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
            self.server.run.later(latency, self.call_done, status)

    def call_done(self, event: Any) -> None:
        if self.finished:
            return  # the attempt already timed out; its outcome was recorded then
        self.in_call = False
        guarded = self.guarded
        assert guarded is not None
        delay = guarded.after_attempt(event._value)
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
        self.server.release()
        if status == _OK:
            self.server.run.log_completion(self.attempt)
        self.attempt.answer(status)
