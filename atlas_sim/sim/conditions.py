"""Fault windows: what the active faults do right now, changed at every window edge."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from ..faults import FAULT_TABLE, FaultConditions
from .scenario import Fault

__all__ = ["Conditions", "fault_windows"]


class Conditions(FaultConditions):
    """What the active faults do right now: a ``FaultConditions`` (its fields are
    ``faults.FAULT_TABLE``'s, all off to begin with) that the server owns and ``apply`` updates
    in place at every fault boundary, so that whoever holds the server's conditions reads the
    current ones."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # it changes

    def apply(self, active: list[Fault]) -> None:
        now = FaultConditions.of(active)  # the one rule for overlapping windows
        for field in FAULT_TABLE:
            object.__setattr__(self, field.name, getattr(now, field.name))


def fault_windows(env: simpy.Environment, faults: Sequence[Fault],
                  apply: Callable[[list[Fault]], None]) -> Generator[simpy.Event, Any, None]:
    """A SimPy process: at every start or end of a window, ``apply`` the faults active then."""
    edges = {f.start for f in faults} | {f.end for f in faults if f.end < math.inf}
    for t in sorted(edges):
        yield env.timeout(t - env.now)
        apply([f for f in faults if f.start <= t < f.end])
