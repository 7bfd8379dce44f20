"""Matplotlib figures for results. Every function draws on an ``ax`` (made if not given) and
returns it, so a notebook cell is one call plus ``plt.show()``."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch

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

#: Background colours of the three breaker states: calm, cautious, alarmed.
STATE_COLORS = {"closed": "#dcefd6", "half_open": "#fbe7a6", "open": "#f5c0c0"}
_OUTCOME_STYLE: dict[str, dict[str, Any]] = {
    "success": {"marker": "o", "color": "#2e7d32"},
    "failure": {"marker": "x", "color": "#c62828"},
    "rejected": {"marker": "s", "color": "#757575"},
}


def _legend_outside(ax: Axes, handles: list[Any], **options: Any) -> None:
    """The legend to the right of ``ax``, outside the data, so that it never covers a line,
    a band or a band's label (constrained layout makes room for it)."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              fontsize="small", **options)


def _axes(ax: Axes | None, **figure: Any) -> Axes:
    if ax is not None:
        return ax
    _, new = plt.subplots(**({"figsize": (9, 3.2), "layout": "constrained"} | figure))
    return new


def shade_breaker_states(ax: Axes, events: pd.DataFrame, *, until: float, start: float = 0.0,
                         name: str | None = None) -> list[Patch]:
    """Shade the background of ``ax`` by breaker state over ``[start, until]``.

    ``events`` is a ``RunResult.events`` table; ``name`` picks one breaker when there are
    several (default: the first). Returns legend handles for the states shown.
    """
    breaker = events[events["kind"] == "breaker"]
    if name is None and len(breaker):
        name = str(breaker["name"].iloc[0])
    breaker = breaker[breaker["name"] == name]
    times = [start, *breaker["time"].tolist(), until]
    states = ["closed", *breaker["detail"].tolist()]
    shown = []
    for left, right, state in zip(times[:-1], times[1:], states, strict=True):
        if right > left:
            ax.axvspan(left, right, color=STATE_COLORS[state], lw=0, zorder=0)
            shown.append(state)
        elif state == "half_open":  # a probe that was answered at once: show the moment
            ax.axvline(left, color="#e0a800", lw=2.5, zorder=1)
            shown.append(state)
    return [Patch(color=STATE_COLORS[s], label=s.replace("_", "-")) for s in STATE_COLORS
            if s in shown]


def plot_breaker_trace(trace: Any, ax: Axes | None = None) -> Axes:
    """Each scripted call as a marker (succeeded, failed, rejected) over the breaker's states.

    ``trace`` is a ``BreakerTrace`` (``atlas_sim.scripted.drive_breaker``).
    """
    ax = _axes(ax)
    handles = shade_breaker_states(ax, trace.events, until=trace.until)
    calls = trace.calls
    down = ~calls["dependency_ok"].to_numpy()
    times = calls["time"].to_numpy()
    if down.any():  # the dependency's bad stretches, as a bar along the top
        step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
        for t in times[down]:
            ax.axvspan(t - step / 2, t + step / 2, ymin=0.94, ymax=1.0, color="#616161",
                       alpha=0.6, lw=0, zorder=2)
        handles.append(Patch(color="#616161", alpha=0.6, label="dependency failing"))
    rows = list(_OUTCOME_STYLE)
    for row, outcome in enumerate(rows):
        calls = trace.calls[trace.calls["outcome"] == outcome]
        ax.scatter(calls["time"], [row] * len(calls), label=outcome, zorder=3,
                   **_OUTCOME_STYLE[outcome])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(0, trace.until)
    ax.set_xlabel("time (s)")
    ax.set_title("Circuit breaker: each call, and the state it met")
    _legend_outside(ax, handles)
    return ax


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
                            fontsize="x-small", color=color["color"])
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
    for start, end, name in _fault_windows(events, right):
        _fault_span(ax, start, end, name, label)


def _fault_span(ax: Axes, start: float, end: float, name: str, label: bool) -> None:
    ax.axvspan(start, end, ymin=0.93, ymax=1.0, color="#616161", alpha=0.6, lw=0, zorder=2)
    if label:
        ax.annotate(name, (start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -9),
                    textcoords="offset points", fontsize="x-small", color="white", zorder=3)


def _fault_names(events: pd.DataFrame) -> list[str]:
    faults = events[events["kind"] == "fault"]
    return [str(name) for name in dict.fromkeys(faults["name"])]


def _fault_windows(events: pd.DataFrame, until: float) -> list[tuple[float, float, str]]:
    """``(start, end, name)`` of each fault window in ``events``; one still on ends at
    ``until``."""
    windows = []
    faults = events[events["kind"] == "fault"]
    for name, group in faults.groupby("name", sort=False):
        begun: float | None = None
        for time, detail in zip(group["time"], group["detail"], strict=True):
            if detail == "start" and begun is None:
                begun = float(time)
            elif detail == "end" and begun is not None:
                windows.append((begun, float(time), str(name)))
                begun = None
        if begun is not None:
            windows.append((begun, until, str(name)))
    return windows


def bar_label(value: float) -> str:
    """A bar's value as a reader writes it: ``2,426``, ``63.8``, ``5``, ``0.0123``; never
    ``2.43e+03``."""
    if not np.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def plot_timeseries(run: Any, window: float = 1.0, *, breaker: str | None = None,
                    title: str | None = None) -> Any:
    """A run over time, as an operator's dashboard would show it, in three panels.

    Top: offered load, attempts and goodput per second. Middle: error rate. Bottom: p99
    latency. Underneath every panel, the state of a circuit breaker (``breaker`` names one,
    default: the first in the run), and fault windows hatched along the top.
    """
    ts = run.timeseries(window)
    fig, axes = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": [1.4, 1, 1]})
    until = float(ts["t"].iloc[-1] + window)
    handles: list[Patch] = []
    for ax in axes:
        if (run.events["kind"] == "breaker").any():
            handles = shade_breaker_states(ax, run.events, until=until, name=breaker)
        mark_faults(ax, run.events, until=until, label=ax is axes[0])
    x = ts["t"] + window / 2
    rates, errors, tail = axes
    rates.plot(x, ts["offered"], label="offered", color="#1565c0")
    rates.plot(x, ts["attempts"], label="attempts", color="#ef6c00", ls="--")
    rates.plot(x, ts["goodput"], label="goodput", color="#2e7d32")
    rates.set_ylabel("per second")
    fault_handles = [Patch(color="#616161", alpha=0.6, label=name)
                     for name in _fault_names(run.events)]
    _legend_outside(rates, [*rates.get_legend_handles_labels()[0], *handles, *fault_handles])
    errors.plot(x, ts["error_rate"], color="#c62828")
    errors.set_ylabel("error rate")
    errors.set_ylim(-0.02, 1.02)
    tail.plot(x, ts["p99"], color="#6a1b9a")
    tail.set_ylabel("p99 latency (s)")
    tail.set_xlabel("time (s)")
    tail.set_xlim(0, until)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"{run.source} run, {window:g} s windows", fontsize="medium")
    return fig


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
    """Bars for each row of ``table`` (strategies, fixes, runs), one panel per column."""
    columns = list(table.columns if columns is None else columns)
    if axes is None:
        fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4),
                                 layout="constrained",
                                 squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    for ax, column in zip(axes, columns, strict=True):
        values = table[column]
        ax.bar([str(i) for i in table.index], values, color="#5c6bc0")
        ax.set_title(column.replace("_", " "), fontsize="medium")
        ax.tick_params(axis="x", rotation=30)
        for i, v in enumerate(values):
            ax.annotate(bar_label(v), (i, v), ha="center", va="bottom", fontsize="x-small")
        ax.margins(y=0.12)  # room above the tallest bar for its label
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def plot_sim_vs_live(sim: Any, live: Any, ax: Axes | None = None) -> Axes:
    """The simulated and the live latency CDFs on one axis, with their percentiles."""
    ax = plot_latency_cdf({"simulated": sim, "live": live}, ax)
    ax.set_title("Simulated versus live")
    return ax


def plot_call_timeline(runs: Any, *, bin_width: float = 0.01, until: float | None = None,
                       what: str = "calls") -> Any:
    """When attempts were sent, as a rate (``what`` per second, in ``bin_width`` bins), one
    panel per run, all on the same scale: clustered waves versus a smooth spread. A run's
    fault windows (an outage, say) are shaded and named in the legend."""
    named = _runs(runs)
    fig, axes = plt.subplots(len(named), 1, figsize=(9, 1.6 * len(named) + 0.7), sharex=True,
                             sharey=True, layout="constrained", squeeze=False)
    end = until if until is not None else max(float(r.attempts["t_start"].max())
                                              for r in named.values())
    edges = np.arange(0.0, end + bin_width, bin_width)
    for ax, (name, run) in zip(axes[:, 0], named.items(), strict=True):
        counts, _ = np.histogram(run.attempts["t_start"], bins=edges)
        ax.stairs(counts / bin_width, edges, fill=True, color="#5c6bc0", label=what)
        for start, stop, fault in _fault_windows(run.events, end):
            ax.axvspan(start, stop, color="#9e9e9e", alpha=0.35, lw=0, zorder=0, label=fault)
        ax.set_title(name, fontsize="small", loc="left")
        ax.set_ylabel(f"{what}/s")
        ax.grid(axis="y", alpha=0.3)
        if len(run.events) and (run.events["kind"] == "fault").any():
            _legend_outside(ax, ax.get_legend_handles_labels()[0])
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 0].set_xlim(0, end)
    fig.suptitle(f"{what.capitalize()} sent per second ({_seconds(bin_width)} bins)",
                 fontsize="medium")
    return fig


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
