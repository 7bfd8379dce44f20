"""The simulation engine: a scenario in, a ``RunResult`` out.

The model is the Atlas request path: clients send attempts to one or more server instances (each
built from a ``ServerConfig``: ``workers`` behind its own queue, FIFO by default, with its own
admission limiter), routed by the client's routing policy; an instance may shed (429), time out
(504) or be down (503); a handler may call a dependency through its own retry, budget and
breaker; clients time out, retry with backoff, and may be stopped by their budget or breaker.
Every decision a policy makes is made by the very objects of ``atlas_sim.policies``, reading the
simulated clock ``env.now``.

How it runs. The clock and the event queue are SimPy's: ``env.now``, and its heap ordered by
time, priority and SimPy's event counter. Fault windows are a SimPy process; open-loop arrivals
and closed-loop clients are chains of callbacks. A request is not a process either: it is a
small state machine (``Call``, ``Attempt``, ``Handler``) whose steps are callbacks. A plain
request costs two events (its arrival and its completion) instead of the six or so of a process
per request with a ``Resource``, and that is what lets a slider answer in a blink
(BENCHMARKS.md). A callback's timeout (``Run.later``) is not a SimPy ``Timeout`` but a pair
``(callback, value)`` pushed on SimPy's heap with SimPy's own key (``now + delay``, ``NORMAL``,
the next event id), so it is ordered among SimPy's events exactly as a ``Timeout`` would be,
without an event object, its callback list and the scheduling call; ``Run.step_all`` steps the
heap itself, calling ``callback(value)`` for a pair and handling any other event (the fault
windows' process, the connection pool's events) as ``Environment.step`` does.

A FIFO queue without policies (``sim.fastpath.qualifies``: plain M/M/c) is not run on events
at all: ``simulate`` computes it by the Lindley / Kiefer-Wolfowitz recursion
(``sim.fastpath.fifo_queue``), with the same draws and the same float operations, so the same
tables to the last bit.

The actors live in modules of their own, and this one wires them: ``load`` (who sends),
``client`` (each call and its attempts), ``server`` (workers, queue, admission, timeouts,
stall), ``dependency`` (the handler's dependency call), ``conditions`` (fault windows),
``recorder`` (the rows that become the ``RunResult``), ``deadlines`` (ordered timeouts).
``Run.servers`` holds the instances (instance ``k`` draws its service times, dependency and
server-side jitter from ``rng_streams(seed, instance=k)``; instance 0's are the run's own), and
``Run.outstanding`` the client's attempts in flight to each (None with one instance: nothing to
route, nothing to count).

Randomness comes from named streams of one seed (``atlas_sim.workload.rng_streams``): arrivals,
service times (drawn in order of service start), client jitter, dependency latencies and errors,
server-side jitter and think times each have their own, so changing one knob does not reshuffle
the dice of the others, and a live run with the same seed sees the same arrivals and work.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from operator import attrgetter
from typing import Any

import simpy
from simpy.events import NORMAL, URGENT

from ..policies import Guard
from ..results import RunResult
from ..workload import Fault, RequestInputs, rng_streams
from . import fastpath
from .client import Attempt
from .conditions import fault_windows
from .deadlines import Deadlines
from .load import OpenLoop, closed_loop
from .recorder import Recorder
from .scenario import Scenario
from .server import Server

__all__ = ["simulate"]


def simulate(scenario: Scenario) -> RunResult:
    """Run ``scenario`` to completion: arrivals stop at the load's end, then the system drains.

    Same scenario (seed included), same tables, in any process on any machine.
    """
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario must be a Scenario, got {scenario!r}")
    if fastpath.qualifies(scenario):
        return fastpath.fifo_queue(scenario)  # the same tables, by recursion (sim.fastpath)
    run = Run(scenario)
    result = run.execute()
    # The actors and the run refer to each other (server.run, the guards' clock run.now), so
    # the finished run is a reference cycle holding its rows and streams until a full garbage
    # collection, which a notebook's kernel, with ~10^6 objects alive, rarely makes: each run
    # stayed resident (a panel's 20 runs, ~50 MiB; issue 23). Breaking it at the run frees
    # them now; the RunResult holds none of them.
    run.__dict__.clear()
    return result


class Run:
    """Everything one ``simulate`` call needs: the environment, the streams, the actors, the
    records; the actors reach each other through it."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = s = scenario
        self.env = simpy.Environment()
        self.streams = rng_streams(s.seed)
        self.recorder = Recorder(self.env)
        self.next_request_id = 0
        self.client_timeout = s.client.timeout
        self.half_trip = s.round_trip / 2
        self.client_guard: Guard = s.client.guard(clock=self.now, rng=self.streams["client"],
                                                  on_transition=self.recorder.breaker("client"),
                                                  routing_rng=self.streams["routing"])
        load = s.load
        self.times: list[float] = []
        if load.open_loop:
            times, self.duration = load.schedule(s.seed)
            self.times = times.tolist()
        else:
            assert load.duration is not None  # Scenario checks it
            self.duration = load.duration
        self.client_deadlines = Deadlines(self, is_done=attrgetter("answered"),
                                          expire=Attempt.time_out)
        self.servers = [Server(self, config, k) for k, config in enumerate(s.configs)]
        self.server = self.servers[0]
        # the client's attempts in flight, per instance (what a router reads)
        n = len(self.servers)
        self.outstanding: list[int] | None = [0] * n if n > 1 else None
        self.hedged = s.client.hedge is not None  # the client's calls are driven by actions
        self.inputs = RequestInputs(s.seed)  # what each request carries, by request id
        # SimPy's heap (its events, and the pairs of ``later``) and its event counter
        self._queue: list[Any] = self.env._queue
        self._eid = self.env._eid

    def now(self) -> float:
        """The simulated clock, as the policies read it."""
        return self.env._now

    def later(self, delay: float, callback: Callable[[Any], None], value: Any = None) -> None:
        """Call ``callback(value)`` after ``delay`` seconds (>= 0), ordered among the other
        events as ``simpy.Timeout(env, delay, value)`` would be (see the module docstring)."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0 s, got {delay!r}")
        heappush(self._queue, (self.env._now + delay, NORMAL, next(self._eid), (callback, value)))

    def soon(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(None)`` now, before any ordinary event of this instant, as SimPy
        starts a process (``URGENT``)."""
        heappush(self._queue, (self.env._now, URGENT, next(self._eid), (callback, None)))

    def apply_faults(self, active: list[Fault]) -> None:
        """A fault window opened or closed: each instance applies the active faults that hit it."""
        for server in self.servers:
            server.apply_faults(active)

    def execute(self) -> RunResult:
        s, env = self.scenario, self.env
        self.recorder.plan(s)
        if s.faults:
            env.process(fault_windows(env, s.faults, self.apply_faults))
        if s.load.open_loop:
            self.soon(OpenLoop(self).start)  # where env.process would start it
        else:
            closed_loop(self)
        self.step_all()
        return self.recorder.result(s, self.duration)

    def step_all(self) -> None:
        """Process every event on SimPy's heap, in its order, until none is left: a pair of
        ``later`` by calling ``callback(value)``, any other event (a fault window, the pool) as
        SimPy 4.1's ``Environment.step`` processes one, which it must match for those events
        to behave as in SimPy: the clock set to the event's time, its callbacks run once, and
        a failed event nobody defused raised again as a copy chained to the original (SimPy's
        documented rule for unhandled failures). Relies on SimPy's private ``_queue``,
        ``_eid`` and ``_now``, hence the pin below 4.2 in pyproject.toml."""
        env = self.env
        queue = self._queue
        while queue:
            env._now, _, _, event = heappop(queue)
            if event.__class__ is tuple:
                event[0](event[1])
                continue
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc
