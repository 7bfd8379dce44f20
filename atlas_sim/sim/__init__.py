"""The SimPy simulation of the Atlas request path.

``Scenario`` describes an experiment, ``simulate`` runs it and returns a ``RunResult``,
``sweep`` runs it over a grid of parameters, and ``scenarios`` holds the canonical experiments
of the workbook.
"""

from __future__ import annotations

from .engine import simulate
from .scenario import Dependency, Fault, Scenario, evolve

__all__ = ["Dependency", "Fault", "Scenario", "evolve", "simulate"]
