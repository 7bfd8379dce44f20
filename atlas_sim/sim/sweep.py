"""Run one scenario over a grid of parameters and collect the summaries in one table.

The work goes to any ``concurrent.futures.Executor``: by default a local process pool, and, when
one machine is not enough, a Dask cluster through ``distributed.Client(...).get_executor()``.
No home-made scheduler: each grid point is an independent ``simulate`` call.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from typing import Any

import pandas as pd

from ..progress import Progress
from .engine import simulate
from .scenario import Scenario

__all__ = ["grid_points", "sweep"]


def grid_points(grid: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, as ``{field path: value}`` dicts, in order."""
    if not grid:
        return [{}]
    names = list(grid)
    values = []
    for name in names:
        options = list(grid[name])
        if not options:
            raise ValueError(f"grid[{name!r}] must list at least one value")
        values.append(options)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _summarise(scenario: Scenario) -> dict[str, float]:
    return simulate(scenario).summary()


def _default_executor(points: int) -> ProcessPoolExecutor:
    # Not "fork": a Jupyter kernel has threads (a live server, the kernel's own) that a forked
    # child would inherit in an unknown state. "forkserver" starts children from a clean process.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    workers = max(1, min(points, os.cpu_count() or 1))
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def sweep(scenario: Scenario, grid: Mapping[str, Iterable[Any]], executor: Executor | None = None,
          *, progress: bool = True) -> pd.DataFrame:
    """Simulate ``scenario`` at every point of ``grid`` and return one row of summary per point.

    ``grid`` maps field paths to values, e.g. ``{"server.workers": [1, 2],
    "client.retry.max_attempts": [1, 3, 5], "seed": range(5)}``; nested fields use dotted
    paths (``Scenario.replace``). The table has one column per grid field, then the
    ``summary()`` keys, in grid order.

    ``executor``: any ``concurrent.futures.Executor``; None makes (and closes) a local process
    pool. Every point is validated before any work starts, so a bad value fails at once.
    """
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario must be a Scenario, got {scenario!r}")
    points = grid_points(grid)
    scenarios = [scenario.replace(point) for point in points]
    own = executor is None
    pool = _default_executor(len(points)) if executor is None else executor
    try:
        futures: dict[Future, int] = {pool.submit(_summarise, s): i
                                      for i, s in enumerate(scenarios)}
        summaries: list[dict[str, float] | None] = [None] * len(points)
        # a context manager: a failed run ends the line "failed", not "done"
        with Progress(len(futures), desc="sweep", unit="run", enabled=progress) as bar:
            for future in as_completed(futures):
                summaries[futures[future]] = future.result()
                bar.update()
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
    rows = [{**point, **(summary or {})}
            for point, summary in zip(points, summaries, strict=True)]
    return pd.DataFrame(rows)
