"""Scripted experiments: one policy, a hand-written list of calls, a manual clock.

Before any queue or network gets involved, a reader can watch a single state machine react to a
story told call by call: "the dependency fails at t = 1..5 s, recovers at 20 s". The output uses
the same event schema as ``RunResult.events``, so the same plots serve both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from .clocks import ManualClock
from .policies import BreakerConfig, BreakerTransition, CircuitBreaker, Guard, Status
from .results import EVENT_COLUMNS, transition_times

__all__ = ["BreakerTrace", "drive_breaker", "outage_script"]


@dataclass(frozen=True, eq=False)
class BreakerTrace:
    """What happened to each scripted call, and the breaker's transitions.

    ``calls``: ``time, dependency_ok, allowed, outcome, state`` (outcome is ``"success"``,
    ``"failure"`` or ``"rejected"``; state is the breaker's state after the call).
    ``events``: the transitions, in ``RunResult.events`` form (kind ``"breaker"``).
    """

    calls: pd.DataFrame
    events: pd.DataFrame
    until: float

    def first(self, new_state: str) -> float | None:
        """Time of the first transition into ``new_state`` ("open", "half_open", "closed")."""
        times = transition_times(self.events, new_state)
        return float(times[0]) if len(times) else None

    def last(self, new_state: str) -> float | None:
        """Time of the last transition into ``new_state``."""
        times = transition_times(self.events, new_state)
        return float(times[-1]) if len(times) else None


def drive_breaker(config: BreakerConfig, calls: Iterable[tuple[float, bool]],
                  *, name: str = "dependency") -> BreakerTrace:
    """Send each ``(time, dependency_ok)`` call through a fresh breaker built from ``config``.

    Calls take no time: each one asks ``allow()`` and, if admitted, reports at once whether the
    dependency answered. Times must not decrease.
    """
    clock = ManualClock()
    breaker = CircuitBreaker.from_config(config, clock=clock)
    transitions: list[BreakerTransition] = []
    breaker.add_listener(transitions.append)
    guard = Guard(breaker=breaker)  # one attempt per call, no retry: the breaker alone
    rows = []
    for time, dependency_ok in calls:
        if time < clock():
            raise ValueError(f"call times must not decrease: {time:g} after {clock():g}")
        clock.set(time)
        call = guard.call()
        allowed = call.before_attempt()
        if allowed:
            call.after_attempt(Status.OK if dependency_ok else Status.SERVICE_UNAVAILABLE)
            outcome = "success" if dependency_ok else "failure"
        else:
            outcome = "rejected"
        rows.append((time, bool(dependency_ok), allowed, outcome, breaker.state.value))
    until = clock()
    breaker.state  # noqa: B018 - let a pending OPEN -> HALF_OPEN change be reported
    events = pd.DataFrame(
        [(t.time, "breaker", name, t.new.value, t.reason) for t in transitions],
        columns=list(EVENT_COLUMNS),
    )
    frame = pd.DataFrame(rows, columns=["time", "dependency_ok", "allowed", "outcome", "state"])
    return BreakerTrace(calls=frame, events=events, until=until)


def outage_script(*, every: float = 1.0, until: float = 40.0, down_from: float = 5.0,
                  down_until: float = 20.0) -> list[tuple[float, bool]]:
    """A call every ``every`` seconds; the dependency fails from ``down_from`` to ``down_until``."""
    n = round(until / every) + 1
    return [(i * every, not (down_from <= i * every < down_until)) for i in range(n)]
