"""Fault windows: what the active faults do right now, changed at every window edge."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from ..workload import FaultConditions
from .scenario import Fault

__all__ = ["Conditions", "fault_windows"]


class Conditions:
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


def fault_windows(env: simpy.Environment, faults: Sequence[Fault],
                  apply: Callable[[list[Fault]], None]) -> Generator[simpy.Event, Any, None]:
    """A SimPy process: at every start or end of a window, ``apply`` the faults active then."""
    edges = {f.start for f in faults} | {f.end for f in faults if f.end < math.inf}
    for t in sorted(edges):
        yield env.timeout(t - env.now)
        apply([f for f in faults if f.start <= t < f.end])
