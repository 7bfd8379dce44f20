"""Timeouts that expire in the order they were set, on one timer (the engine's clients and
handlers use it; the server's queue reaper applies the same idea to its FIFO queue)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Run

__all__ = ["EPS", "Deadlines"]

EPS = 1e-12  # a deadline this close to now has passed (float sums of times drift)


class Deadlines:
    """Timeouts that expire in the order they were set (the timeout is constant, so a later
    start means a later deadline): one timer, for the oldest still pending, instead of one
    timer per attempt. An attempt answered in time costs a deque append and a pop, not an
    event in SimPy's heap. (The server's queue reaper and the live service's Timeout sweeper
    use the same idea.)
    """

    __slots__ = ("armed", "expire", "is_done", "pending", "run")

    def __init__(self, run: Run, *, is_done: Callable[[Any], bool],
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
        self.run.later(max(0.0, deadline - self.run.env._now), self.fire)

    def fire(self, _value: Any) -> None:
        self.armed = False
        pending, now = self.pending, self.run.env._now + EPS
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
