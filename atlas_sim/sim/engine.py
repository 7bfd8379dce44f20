"""The simulation engine: a scenario in, a ``RunResult`` out.

The model is the Atlas request path: clients send attempts to one or more server instances (each
built from a ``ServerConfig``: ``workers`` behind its own queue, FIFO by default, with its own
admission limiter), routed by the client's routing policy; an instance may shed (429), time out
(504) or be down (503); a handler may call a dependency through its own retry, budget and
breaker; clients time out, retry with backoff, and may be stopped by their budget or breaker.
Every decision a policy makes is made by the very objects of ``atlas_sim.policies``, reading the
simulated clock ``env.now``.

How it runs. The clock and the event queue are SimPy's. Arrivals and fault windows are SimPy
processes; closed-loop clients are chains of callbacks. A request is not a process either: it
is a small state machine (``Call``, ``Attempt``, ``Handler``) whose steps are callbacks on SimPy
events. A plain request costs two events (its arrival and its completion) instead of the six or
so of a process per request with a ``Resource``, and that is what lets a slider answer in a
blink (BENCHMARKS.md).

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
from typing import Any

import simpy
from simpy.events import Timeout

from ..policies import Guard
from ..results import RunResult
from ..workload import Fault, RequestInputs, rng_streams
from .client import Attempt
from .conditions import fault_windows
from .deadlines import Deadlines
from .load import closed_loop, open_loop
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
        self.client_deadlines = Deadlines(self, is_done=Attempt.is_answered,
                                          expire=Attempt.time_out)
        self.servers = [Server(self, config, k) for k, config in enumerate(s.configs)]
        self.server = self.servers[0]
        # the client's attempts in flight, per instance (what a router reads)
        n = len(self.servers)
        self.outstanding: list[int] | None = [0] * n if n > 1 else None
        self.hedged = s.client.hedge is not None  # the client's calls are driven by actions
        self.inputs = RequestInputs(s.seed)  # what each request carries, by request id

    def now(self) -> float:
        """The simulated clock, as the policies read it."""
        return self.env.now

    def later(self, delay: float, callback: Callable[[Any], None], value: Any = None) -> None:
        """Call ``callback(event)`` after ``delay`` seconds; ``event.value`` is ``value``."""
        Timeout(self.env, delay, value).callbacks.append(callback)

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
            env.process(open_loop(self))
        else:
            closed_loop(self)
        env.run()
        return self.recorder.result(s, self.duration)
