"""Clocks to hand to the policies.

The policies never read the time themselves; they call the clock they were given. A simulation
passes ``lambda: env.now``, the live service ``time.monotonic``, and a first experiment or a test
passes a ``ManualClock`` that moves only when told to.
"""

from __future__ import annotations

from .validation import check_real

__all__ = ["ManualClock"]


class ManualClock:
    """A clock that stands still until ``advance(dt)`` or ``set(t)`` moves it forward.

    >>> clock = ManualClock()
    >>> clock.advance(2.5); clock()
    2.5
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = check_real("start", start)

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        """Move forward by ``dt`` seconds (>= 0: time never runs backwards)."""
        self.now += check_real("dt", dt, low=0)

    def set(self, t: float) -> None:
        """Move forward to time ``t`` (>= the current time)."""
        self.now = check_real("t", t, low=self.now)

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now:g})"
