"""The SimPy simulation of the Atlas request path.

``Scenario`` describes an experiment, ``simulate`` runs it and returns a ``RunResult``,
``sweep`` runs it over a grid of parameters, and ``scenarios`` holds the canonical experiments
of the workbook (contention and fan-out have small models of their own).
"""

from __future__ import annotations

from . import scenarios
from .contention import CONTENTION_STRATEGIES, compare_contention, contention
from .engine import simulate
from .fanout import fanout, slow_request_probability
from .scenario import Dependency, Fault, Scenario, evolve
from .sweep import grid_points, sweep

__all__ = [
    "CONTENTION_STRATEGIES",
    "Dependency",
    "Fault",
    "Scenario",
    "compare_contention",
    "contention",
    "evolve",
    "fanout",
    "grid_points",
    "scenarios",
    "simulate",
    "slow_request_probability",
    "sweep",
]
