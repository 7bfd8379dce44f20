"""Summary tables: one row per run, side by side, whatever produced the runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from ..results import RunResult

__all__ = ["METRIC_LABELS", "RunsLike", "compare_runs", "name_runs", "summary_table", "with_units"]

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


#: How each summary metric is shown to a reader (``summary_table(..., units=True)``): its
#: label with the unit, and the factor its value is multiplied by (rates as percentages).
METRIC_LABELS: dict[str, tuple[str, float]] = {
    "requests": ("requests", 1.0),
    "attempts": ("attempts", 1.0),
    "p50": ("p50 (s)", 1.0),
    "p95": ("p95 (s)", 1.0),
    "p99": ("p99 (s)", 1.0),
    "p999": ("p99.9 (s)", 1.0),
    "mean_latency": ("mean latency (s)", 1.0),
    "error_rate": ("errors (%)", 100.0),
    "throughput": ("throughput (/s)", 1.0),
    "goodput": ("goodput (/s)", 1.0),
    "amplification": ("attempts per request", 1.0),
}


def summary_table(runs: RunsLike, *, digits: int | None = None,
                  columns: Sequence[str] | None = None, units: bool = False) -> pd.DataFrame:
    """p50, p95, p99, p99.9 (seconds), error rate, throughput and goodput (per second) and
    amplification (attempts per request) of each run, one row per run.

    ``columns`` keeps some of those (by their plain names, e.g. ``["p99", "error_rate"]``).
    ``units=True`` is for showing: each column is labelled with its unit and rates are given
    as percentages (``METRIC_LABELS``), e.g. ``errors (%)``. ``digits`` rounds for display
    (percentages to two digits fewer, at least one); None keeps full precision.
    """
    named = name_runs(runs)
    table = pd.DataFrame({name: run.summary() for name, run in named.items()}).T[_COLUMNS]
    table = table.astype({"requests": "int64"})
    table.index.name = "run"
    if columns is not None:
        unknown = [c for c in columns if c not in _COLUMNS]
        if unknown:
            raise ValueError(f"columns must be among {_COLUMNS}, got {unknown}")
        table = table[list(columns)]
    if not units:
        return table.round(digits) if digits is not None else table
    table = with_units(table)
    if digits is None:
        return table
    # a percentage carries two of the digits already: 19.3%, not 19.304%
    percent = {label for label, factor in METRIC_LABELS.values() if factor == 100.0}
    return table.round({c: max(digits - 2, 1) if c in percent else digits
                        for c in table.columns})


def with_units(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each summary-metric column relabelled with its unit, rates as
    percentages (``METRIC_LABELS``); other columns unchanged."""
    out = table.copy()
    for column in table.columns:
        if column in METRIC_LABELS:
            label, factor = METRIC_LABELS[column]
            if factor != 1.0:
                out[column] = out[column] * factor
            out = out.rename(columns={column: label})
    return out


def compare_runs(simulated: RunResult, live: RunResult,
                 metrics: tuple[str, ...] = ("p50", "p95", "p99", "error_rate", "amplification"),
                 ) -> pd.DataFrame:
    """The same numbers for a simulated and a live run, and how far live is from the model:
    ``difference (%)`` is 100 × (live - simulated) / simulated (NaN where simulated is 0)."""
    sim, real = simulated.summary(), live.summary()
    rows = {}
    for name in metrics:
        s, r = sim[name], real[name]
        rows[name] = {"simulated": s, "live": r,
                      "difference (%)": 100 * (r - s) / s if s else float("nan")}
    return pd.DataFrame(rows).T.rename_axis("metric")
