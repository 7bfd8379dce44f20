"""Who sends requests: open-loop arrivals on the load's schedule, or closed-loop clients that
send, wait for the end of their request, think, and send again."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import simpy

from .client import Call

if TYPE_CHECKING:
    from .engine import Run

__all__ = ["ClosedLoopClient", "closed_loop", "open_loop"]


def open_loop(run: Run) -> Generator[simpy.Event, Any, None]:
    """A SimPy process: one call at each of the schedule's send times."""
    env = run.env
    for t in run.times:
        yield env.timeout(max(0.0, t - env.now))
        Call(run).start()


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

    def send(self, _event: Any = None) -> None:
        run = self.run
        if run.env.now < run.duration:
            Call(run, self.after).start()

    def after(self) -> None:
        self.run.later(self.think(), self.send)
