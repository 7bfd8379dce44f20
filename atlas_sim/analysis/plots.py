"""Matplotlib figures for results. Every function draws on an ``ax`` (made if not given) and
returns it, so a notebook cell is one call plus ``plt.show()``."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch

__all__ = ["STATE_COLORS", "plot_breaker_trace", "shade_breaker_states"]

#: Background colours of the three breaker states: calm, cautious, alarmed.
STATE_COLORS = {"closed": "#dcefd6", "half_open": "#fbe7a6", "open": "#f5c0c0"}
_OUTCOME_STYLE = {
    "success": {"marker": "o", "color": "#2e7d32"},
    "failure": {"marker": "x", "color": "#c62828"},
    "rejected": {"marker": "s", "color": "#757575"},
}


def _axes(ax: Axes | None, **figure: Any) -> Axes:
    if ax is not None:
        return ax
    _, new = plt.subplots(**({"figsize": (9, 3.2)} | figure))
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
    ax.legend(handles=handles, loc="upper right", fontsize="small", title="state")
    return ax
