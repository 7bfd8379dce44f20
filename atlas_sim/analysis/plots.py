"""Matplotlib figures for results. Every function draws on an ``ax`` (made if not given) and
returns it, so a notebook cell is one call plus ``plt.show()``."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from .figures import (
    STATE_COLORS,
    BreakerTraceFigure,
    CallTimelineFigure,
    ComparisonFigure,
    FaultBars,
    StateShading,
    TimeseriesFigure,
    bar_label,
    fault_windows,
    legend_outside,
)

__all__ = [
    "STATE_COLORS",
    "bar_label",
    "mark_faults",
    "plot_breaker_timelines",
    "plot_breaker_trace",
    "plot_call_timeline",
    "plot_comparison",
    "plot_in_flight",
    "plot_latency_cdf",
    "plot_latency_histogram",
    "plot_sim_vs_live",
    "plot_timeseries",
    "shade_breaker_states",
]

_legend_outside = legend_outside


def _axes(ax: Axes | None, **figure: Any) -> Axes:
    if ax is not None:
        return ax
    _, new = plt.subplots(**({"figsize": (9, 3.2), "layout": "constrained"} | figure))
    return new


def shade_breaker_states(ax: Axes, events: pd.DataFrame, *, until: float, start: float = 0.0,
                         name: str | None = None) -> list[Patch]:
    """Shade the background of ``ax`` by breaker state over ``[start, until]``.

    ``events`` is a ``RunResult.events`` table; ``name`` picks one breaker when there are
    several (default: the first). Returns legend handles for the states shown. (One band
    collection per state: ``figures.StateShading``.)
    """
    return StateShading(ax).update(events, until=until, start=start, name=name)


def plot_breaker_trace(trace: Any, ax: Axes | None = None) -> Axes:
    """Each scripted call as a marker (succeeded, failed, rejected) over the breaker's states.

    ``trace`` is a ``BreakerTrace`` (``atlas_sim.scripted.drive_breaker``). Drawn by
    ``figures.BreakerTraceFigure``, which a slider panel updates in place.
    """
    figure = BreakerTraceFigure(ax=ax, pyplot=True)
    figure.draw(trace)
    return figure.ax


# -- latency distributions ------------------------------------------------------------------

_PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))
_LINESTYLES = {"p50": ":", "p95": "--", "p99": "-.", "p99.9": (0, (1, 4))}


def _runs(runs: Any) -> dict[str, Any]:
    from .tables import name_runs

    return name_runs(runs)


def plot_latency_cdf(runs: Any, ax: Axes | None = None, *, log: bool = True,
                     markers: bool = True) -> Axes:
    """Latency CDF of one or more runs, with p50/p95/p99/p99.9 marked on each curve.

    ``runs``: a ``RunResult``, a list, or a ``{name: RunResult}`` dict. The y axis is the share
    of requests answered within x seconds; ``log`` spreads out the tail.
    """
    ax = _axes(ax, figsize=(8, 4))
    for (name, run), color in zip(_runs(runs).items(), plt.rcParams["axes.prop_cycle"](),
                                  strict=False):
        latency = np.sort(run.requests["latency"].to_numpy())
        if latency.size == 0:
            continue
        shown = np.maximum(latency, 1e-4) if log else latency
        share = np.arange(1, latency.size + 1) / latency.size
        ax.step(shown, share, where="post", label=name, **color)
        if markers:
            for label, q in _PERCENTILES:
                x = max(float(np.percentile(latency, q)), 1e-4 if log else 0.0)
                ax.plot([x], [q / 100], "o", ms=4, **color)
                ax.annotate(label, (x, q / 100), textcoords="offset points", xytext=(4, -10),
                            fontsize="small", color=color["color"])
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("share of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("Latency distribution")
    return ax


def plot_latency_histogram(run: Any, ax: Axes | None = None, *, bins: int = 60,
                           log: bool = True) -> Axes:
    """Histogram of one run's latencies with the percentiles as vertical lines."""
    ax = _axes(ax, figsize=(8, 3.5))
    latency = run.requests["latency"].to_numpy()
    if latency.size:
        positive = np.maximum(latency, 1e-4)
        edges = (np.geomspace(positive.min(), positive.max() * 1.001 + 1e-9, bins + 1) if log
                 else bins)
        counts, edges = np.histogram(positive if log else latency, bins=edges)
        ax.stairs(counts, edges, fill=True, color="#90a4ae")
        for label, q in _PERCENTILES:
            x = float(np.percentile(latency, q))
            ax.axvline(max(x, 1e-4) if log else x, color="#37474f", ls=_LINESTYLES[label],
                       label=f"{label} = {_seconds(x)}")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("requests")
    ax.legend(fontsize="small")
    ax.set_title("Latency histogram")
    return ax


def _seconds(x: float) -> str:
    return f"{1000 * x:.0f} ms" if x < 1 else f"{x:.2f} s"


# -- a run over time -----------------------------------------------------------------------

def mark_faults(ax: Axes, events: pd.DataFrame, *, until: float | None = None,
                label: bool = True) -> None:
    """Hatch the fault windows of ``events`` along the top of ``ax``.

    Each fault's ``start`` is paired with the next ``end`` of the same name; a fault still on at
    the end of the run reaches ``until`` (default: the last event's time).
    """
    right = until if until is not None else (float(events["time"].max()) if len(events) else 0)
    FaultBars(ax, label=label).update(fault_windows(events, right))


def plot_timeseries(run: Any, window: float = 1.0, *, breaker: str | None = None,
                    title: str | None = None) -> Any:
    """A run over time, as an operator's dashboard would show it, in three panels.

    Top: offered load, attempts and goodput per second. Middle: error rate. Bottom: p99
    latency. Underneath every panel, the state of a circuit breaker (``breaker`` names one,
    default: the first in the run), and fault windows hatched along the top. Drawn by
    ``figures.TimeseriesFigure``, which a slider panel updates in place.
    """
    return TimeseriesFigure(window, breaker=breaker, title=title, pyplot=True).draw(run)


def plot_in_flight(runs: Any, ax: Axes | None = None, *, step: float = 0.1) -> Axes:
    """Attempts in flight over time (sent, not yet answered): queues and held workers."""
    ax = _axes(ax, figsize=(9, 3))
    for name, run in _runs(runs).items():
        a = run.attempts
        end = float(a["t_end"].max()) if len(a) else run.duration
        grid = np.arange(0.0, end + step, step)
        started = np.searchsorted(np.sort(a["t_start"].to_numpy()), grid, side="right")
        ended = np.searchsorted(np.sort(a["t_end"].to_numpy()), grid, side="right")
        ax.plot(grid, started - ended, label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("in flight")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


# -- comparisons ---------------------------------------------------------------------------

def plot_comparison(table: pd.DataFrame, columns: Any = None, *, title: str = "",
                    axes: Any = None) -> Any:
    """Bars for each row of ``table`` (strategies, fixes, runs), one panel per column
    (``figures.ComparisonFigure``)."""
    return ComparisonFigure(columns, title=title, axes=axes, pyplot=True).draw(table)


def plot_sim_vs_live(sim: Any, live: Any, ax: Axes | None = None) -> Axes:
    """The simulated and the live latency CDFs on one axis, with their percentiles."""
    ax = plot_latency_cdf({"simulated": sim, "live": live}, ax)
    ax.set_title("Simulated versus live")
    return ax


def plot_call_timeline(runs: Any, *, bin_width: float = 0.01, until: float | None = None,
                       what: str = "calls") -> Any:
    """When attempts were sent, as a rate (``what`` per second, in ``bin_width`` bins), one
    panel per run, all on the same scale: clustered waves versus a smooth spread. A run's
    fault windows (an outage, say) are shaded and named in the legend
    (``figures.CallTimelineFigure``)."""
    return CallTimelineFigure(bin_width=bin_width, until=until, what=what,
                              pyplot=True).draw(runs)


def plot_breaker_timelines(runs: Any, *, name: str = "dependency",
                           title: str = "Circuit breaker over time") -> Any:
    """One row per run: every request as a dot (when it started, how long it took; green if it
    succeeded, red if not) over the states of the breaker called ``name``, faults on top.
    Simulated and live runs side by side, on the same clock."""
    named = _runs(runs)
    fig, axes = plt.subplots(len(named), 1, figsize=(9, 2.6 * len(named) + 0.4), sharex=True,
                             squeeze=False, layout="constrained")
    until = max(max(float(r.requests["t_end"].max()) if len(r.requests) else 0.0, r.duration)
                for r in named.values())
    for ax, (label, run) in zip(axes[:, 0], named.items(), strict=True):
        handles = shade_breaker_states(ax, run.events, until=until, name=name)
        mark_faults(ax, run.events, until=until, label=True)
        req = run.requests
        for ok, color, marker in ((True, "#2e7d32", "o"), (False, "#c62828", "x")):
            part = req[req["ok"] == ok]
            ax.scatter(part["t_start"], np.maximum(part["latency"], 1e-4), s=6, color=color,
                       marker=marker, label="ok" if ok else "failed", zorder=3)
        ax.set_yscale("log")
        slowest = float(req["latency"].max()) if len(req) else 1.0
        ax.set_ylim(5e-5, max(slowest, 1e-3) * 8)  # room above the dots for the fault bar
        ax.set_ylabel("latency (s)")
        ax.set_title(label, fontsize="medium", loc="left")
        _legend_outside(ax, [*ax.get_legend_handles_labels()[0], *handles])
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 0].set_xlim(0, until)
    fig.suptitle(title, fontsize="medium")
    return fig
