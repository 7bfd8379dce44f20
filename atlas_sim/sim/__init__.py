"""The SimPy simulation of the Atlas request path.

``Scenario`` describes an experiment, ``simulate`` runs it and returns a ``RunResult``,
``sweep`` runs it over a grid of parameters, and ``scenarios`` holds the canonical experiments
of the workbook (contention, fan-out and hardware faults at fleet scale have small models of
their own).
"""

from __future__ import annotations

from ..server_config import Dependency
from . import scenarios
from .contention import CONTENTION_STRATEGIES, compare_contention, contention
from .engine import simulate
from .fanout import fanout, slow_request_probability
from .fleet import FleetRun, fleet, replica_loss
from .scenario import Fault, Scenario, evolve
from .sweep import grid_points, sweep
from .timelines import (
    TimelineCostModel,
    TimelineSchedule,
    TimelineSimRun,
    calibrate_timelines,
    simulate_timelines,
    timeline_schedule,
)

__all__ = [
    "CONTENTION_STRATEGIES",
    "Dependency",
    "Fault",
    "FleetRun",
    "Scenario",
    "TimelineCostModel",
    "TimelineSchedule",
    "TimelineSimRun",
    "calibrate_timelines",
    "compare_contention",
    "contention",
    "evolve",
    "fanout",
    "fleet",
    "grid_points",
    "replica_loss",
    "scenarios",
    "simulate",
    "simulate_timelines",
    "slow_request_probability",
    "sweep",
    "timeline_schedule",
]
