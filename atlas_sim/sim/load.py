"""Who sends requests: open-loop arrivals on the load's schedule, or closed-loop clients that
send, wait for the end of their request, think, and send again (both chains of callbacks)."""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from typing import TYPE_CHECKING, Any

from simpy.events import NORMAL

from .client import Call

if TYPE_CHECKING:
    from .engine import Run

__all__ = ["ClosedLoopClient", "OpenLoop", "closed_loop"]


class OpenLoop:
    """One call at each of the schedule's send times: a chain of callbacks, each arrival
    scheduling the next after its call has started, in the order (and so with the SimPy event
    ids) of a process that loops ``yield env.timeout(max(0, t - env.now)); Call(run).start()``."""

    __slots__ = ("next", "run", "times")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.times = run.times
        self.next = 0

    def start(self, _value: Any = None) -> None:
        self.wait()

    def wait(self) -> None:
        """Wait until the next send time, if any is left."""
        i = self.next
        if i < len(self.times):
            self.next = i + 1
            run = self.run
            run.later(max(0.0, self.times[i] - run.env._now), self.send)

    def send(self, _value: Any) -> None:
        """A send time: the call starts, then the wait for the next (``wait``, inline: this
        runs once per request)."""
        run = self.run
        call = Call(run)
        if run.hedged:
            call.start_hedged()
        else:
            call.send()
        i = self.next
        if i < len(self.times):
            self.next = i + 1
            now = run.env._now
            delay = self.times[i] - now  # max(0.0, delay) exactly, and run.later inline:
            heappush(run._queue, (now + (delay if delay > 0.0 else 0.0), NORMAL,
                                  next(run._eid), (self.send, None)))


def closed_loop(run: Run) -> None:
    """Start the load's clients (each one a chain of callbacks, not a process)."""
    load = run.scenario.load
    rng, mean = run.streams["think"], load.think_time
    think = (lambda: 0.0) if mean == 0 else (lambda: float(rng.exponential(mean)))
    assert load.clients is not None
    for _ in range(load.clients):
        ClosedLoopClient(run, think).start(load.synchronized)


class ClosedLoopClient:
    """A closed-loop client: request, wait for its end, think, request again."""

    __slots__ = ("run", "think")

    def __init__(self, run: Run, think: Callable[[], float]) -> None:
        self.run, self.think = run, think

    def start(self, synchronized: bool) -> None:
        if synchronized:
            self.send()
        else:
            self.run.later(self.think(), self.send)

    def send(self, _value: Any = None) -> None:
        run = self.run
        if run.env._now < run.duration:
            Call(run, self.after).start()

    def after(self) -> None:
        self.run.later(self.think(), self.send)
