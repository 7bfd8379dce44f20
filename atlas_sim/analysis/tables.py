"""Summary tables: one row per run, side by side, whatever produced the runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from ..results import RunResult

__all__ = ["RunsLike", "compare_runs", "name_runs", "summary_table"]

RunsLike = RunResult | Mapping[str, RunResult] | Sequence[RunResult]

_COLUMNS = ["requests", "p50", "p95", "p99", "p999", "error_rate", "throughput", "goodput",
            "amplification"]


def name_runs(runs: RunsLike) -> dict[str, RunResult]:
    """Runs as a ``{name: run}`` dict: a dict as given, a single run or a list named by source
    (``"sim"``, ``"live"``; ``"sim 2"`` for a repeat)."""
    if isinstance(runs, RunResult):
        return {runs.source: runs}
    if isinstance(runs, Mapping):
        for name, run in runs.items():
            if not isinstance(run, RunResult):
                raise ValueError(f"runs[{name!r}] must be a RunResult, got {type(run).__name__}")
        return {str(k): v for k, v in runs.items()}
    named: dict[str, RunResult] = {}
    for i, run in enumerate(runs):
        if not isinstance(run, RunResult):
            raise ValueError(f"runs[{i}] must be a RunResult, got {type(run).__name__}")
        name, n = run.source, 2
        while name in named:
            name, n = f"{run.source} {n}", n + 1
        named[name] = run
    return named


def summary_table(runs: RunsLike, *, digits: int | None = None) -> pd.DataFrame:
    """p50, p95, p99, p99.9 (seconds), error rate, throughput and goodput (per second) and
    amplification (attempts per request) of each run, one row per run.

    ``digits`` rounds for display (printed tables in notebooks); None keeps full precision.
    """
    named = name_runs(runs)
    table = pd.DataFrame({name: run.summary() for name, run in named.items()}).T[_COLUMNS]
    table = table.astype({"requests": "int64"})
    table.index.name = "run"
    return table.round(digits) if digits is not None else table


def compare_runs(simulated: RunResult, live: RunResult,
                 metrics: tuple[str, ...] = ("p50", "p95", "p99", "error_rate", "amplification"),
                 ) -> pd.DataFrame:
    """The same numbers for a simulated and a live run, and how far live is from the model:
    ``relative difference`` is (live - simulated) / simulated (NaN where simulated is 0)."""
    sim, real = simulated.summary(), live.summary()
    rows = {}
    for name in metrics:
        s, r = sim[name], real[name]
        rows[name] = {"simulated": s, "live": r,
                      "relative difference": (r - s) / s if s else float("nan")}
    return pd.DataFrame(rows).T.rename_axis("metric")
