"""Notebook 03, section 1: load parameters, with DDIA's home-timeline example (fan-out on write,
on read, and the hybrid) over a heavy-tailed follower distribution. The model and its formulas
are in ``atlas_sim.analysis.timeline``; here are its tables, its figure and its panel."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from ..analysis.figures import InPlaceFigure
from ..analysis.timeline import (
    DDIA_LARGEST_FOLLOWERS,
    DDIA_POSTS_PER_SECOND,
    DDIA_READS_PER_SECOND,
    FollowerDistribution,
    HomeTimeline,
    TimelineCosts,
)
from ..widgets import Control, Panel

__all__ = [
    "DEFAULT_THRESHOLD",
    "LoadFigure",
    "approaches_table",
    "count",
    "ddia_check",
    "load_panel",
    "plot_load",
    "si",
    "threshold_table",
    "timeline_model",
]

#: The hybrid's default threshold: accounts with more than a million followers are read on
#: demand.
DEFAULT_THRESHOLD = 1e6
_DDIA_RATIO = DDIA_READS_PER_SECOND / DDIA_POSTS_PER_SECOND


def si(x: float) -> str:
    """A count with three significant digits and a k/M/G suffix: 345000 -> "345k"."""
    if not math.isfinite(x):
        return "none" if x > 0 else "-"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size * 0.9995:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"


def count(x: float) -> str:
    """A number of things (accounts), which is whole: the model's expected count rounded to
    the nearest integer below a thousand ("97", "0"), "<1" for an expected count between 0
    and one half (0.445 accounts is not a thing one can read), ``si`` from a thousand on."""
    if math.isfinite(x) and abs(x) < 999.5:
        return "<1" if 0 < x < 0.5 else f"{round(x):d}"
    return si(x)


def timeline_model(tail_index: float = 1.3, read_write_ratio: float = _DDIA_RATIO) \
        -> HomeTimeline:
    """DDIA's figures, with the follower tail index and the reads per post changed (the
    posts per second stay at 4.6k, average, and 12k, peak; reads are the ratio times 4.6k)."""
    return HomeTimeline(reads_per_second=read_write_ratio * DDIA_POSTS_PER_SECOND,
                        followers=FollowerDistribution(tail_index=tail_index))


def _row(costs: TimelineCosts) -> dict[str, str]:
    return {
        "post writes (/s)": si(costs.post_writes),
        "timeline inserts (/s)": si(costs.timeline_inserts),
        "timeline inserts at peak (/s)": si(costs.peak_timeline_inserts),
        "lookups per read": f"{costs.lookups_per_read:.3g}",
        "lookups (/s)": si(costs.lookups),
        "total (/s)": si(costs.total),
        "one post, at most (inserts)": si(costs.worst_post),
        "accounts read on demand": count(costs.accounts_read_on_demand),
    }


def approaches_table(model: HomeTimeline, threshold: float = DEFAULT_THRESHOLD) \
        -> pd.DataFrame:
    """The three approaches side by side (rows), operations per second (columns), the hybrid
    at ``threshold`` followers. Numbers as text, three significant digits."""
    rows = {name if name != "hybrid" else f"hybrid (above {si(threshold)} read on demand)":
            _row(costs) for name, costs in model.approaches(threshold).items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def ddia_check(model: HomeTimeline | None = None) -> pd.DataFrame:
    """The model's numbers beside DDIA's arithmetic, at DDIA's figures by default."""
    model = model or HomeTimeline()
    f = model.followers
    write, read = model.fan_out_on_write(), model.fan_out_on_read()
    p, peak, r = model.posts_per_second, model.peak_posts_per_second, model.reads_per_second
    rows = {
        "mean followers per post": (f"{f.partial_mean():.4g}", f"{f.mean:g}"),
        "largest account (followers)": (si(f.largest), f"over {si(DDIA_LARGEST_FOLLOWERS)}"),
        "fan-out on write: timeline inserts/s": (
            f"{write.timeline_inserts:,.0f}", f"{si(p)} x {f.mean:g} = {p * f.mean:,.0f}"),
        "fan-out on write, at peak: inserts/s": (
            f"{write.peak_timeline_inserts:,.0f}",
            f"{si(peak)} x {f.mean:g} = {peak * f.mean:,.0f}"),
        "fan-out on read: lookups/s": (
            f"{read.lookups:,.0f}", f"{si(r)} x {f.mean:g} = {r * f.mean:,.0f}"),
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["model", "DDIA's arithmetic"])


def threshold_table(model: HomeTimeline,
                    thresholds: tuple[float, ...] = (1e4, 1e5, 1e6, 1e7, math.inf)) \
        -> pd.DataFrame:
    """The hybrid at several thresholds (rows, followers): how many accounts are read on
    demand, what share of all follows that is, the largest single post's fan-out, and the work
    per second, total and against fan-out on write's."""
    f = model.followers
    base = model.fan_out_on_write().total
    rows = {}
    for t in thresholds:
        c = model.hybrid(t)
        rows[si(t) if math.isfinite(t) else "none (fan-out on write)"] = {
            "accounts read on demand": count(c.accounts_read_on_demand),
            "follows read on demand (%)": f"{100 * f.partial_mean(low=t) / f.mean:.3g}",
            "one post, at most (inserts)": si(c.worst_post),
            "timeline inserts (/s)": si(c.timeline_inserts),
            "lookups (/s)": si(c.lookups),
            "total (/s)": si(c.total),
            "total / fan-out on write's": f"{c.total / base:.2f}",
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("threshold")


def _log_axes(ax: Any) -> None:
    """Log ticks at powers of ten labelled "1k", "1M" (plain text, quick to lay out: mathtext
    labels and minor ticks over eight decades made each figure take seconds to draw)."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10.0, numticks=6))
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))


def plot_load(model: HomeTimeline, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """Two panels: the follower distribution (accounts with more than x followers, log-log,
    the threshold and the largest account marked) and the work per second against the hybrid's
    threshold (inserts, lookups, total; the pure approaches as horizontal lines). Drawn by
    ``LoadFigure``, which the load panel updates in place."""
    return LoadFigure(pyplot=True).draw({"model": model, "threshold": threshold})


class LoadFigure(InPlaceFigure):
    """``plot_load``'s figure. Results: ``{"model": HomeTimeline, "threshold": followers}``."""

    def build(self, results: dict[str, Any]) -> Any:
        figure, (left, right) = self.subplots(1, 2, figsize=(11, 3.8))
        self.left, self.right = left, right
        (self.accounts,) = left.loglog([], [], color="#37474f")
        self.threshold = left.axvline(1.0, color="#c62828", ls="--", lw=1)
        self.largest = left.axvline(1.0, color="0.5", ls=":", lw=1)
        self.ddia = left.axvline(DDIA_LARGEST_FOLLOWERS, color="0.75", lw=3, alpha=0.5,
                                 label="DDIA: over 30M")
        left.set_xlabel("followers x")
        left.set_ylabel("accounts with more than x followers")
        left.grid(alpha=0.3)
        _log_axes(left)
        self.shown_labels: tuple[str, ...] | None = None

        self.inserts = right.loglog([], [], label="timeline inserts", color="#1565c0")[0]
        self.lookups = right.loglog([], [], label="lookups", color="#ef6c00")[0]
        self.total = right.loglog([], [], label="total", color="#37474f", lw=2)[0]
        self.on_write = right.axhline(1.0, color="#1565c0", ls=":", lw=1,
                                      label="fan-out on write, total")
        self.on_read = right.axhline(1.0, color="#ef6c00", ls=":", lw=1,
                                     label="fan-out on read, total")
        self.threshold_right = right.axvline(1.0, color="#c62828", ls="--", lw=1)
        right.set_xlabel("threshold (followers above it are read on demand)")
        right.set_ylabel("operations per second")
        right.grid(alpha=0.3)
        _log_axes(right)
        right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        return figure

    def update(self, results: dict[str, Any]) -> None:
        model: HomeTimeline = results["model"]
        threshold: float = results["threshold"]
        f = model.followers
        left, right = self.left, self.right
        xs = np.geomspace(1.0, f.largest * 0.999, 200)
        self.accounts.set_data(xs, [max(f.accounts_above(x), 0.5) for x in xs])
        self.threshold.set_xdata([threshold, threshold])
        self.threshold.set_label(f"threshold {si(threshold)}")
        self.largest.set_xdata([f.largest, f.largest])
        self.largest.set_label(f"largest {si(f.largest)}")
        labels = (self.threshold.get_label(), self.largest.get_label())
        if labels != self.shown_labels:
            left.legend(loc="lower left", fontsize="small")
            self.shown_labels = labels
        left.set_title(f"Followers: Pareto, tail index {f.tail_index:g}, mean {f.mean:g}",
                       fontsize="medium")
        _autoscale_as_drawn(left, [(self.threshold, "x"), (self.largest, "x"),
                                   (self.ddia, "x")], scaley=False)
        left.set_ylim(0.5, f.accounts * 2)

        ts = np.geomspace(max(f.minimum, 1.0), max(f.largest, threshold) * 1.5, 200)
        costs = [model.hybrid(t) for t in ts]
        self.inserts.set_data(ts, [c.timeline_inserts for c in costs])
        self.lookups.set_data(ts, [c.lookups for c in costs])
        self.total.set_data(ts, [c.total for c in costs])
        on_write, on_read = model.fan_out_on_write().total, model.fan_out_on_read().total
        self.on_write.set_ydata([on_write, on_write])
        self.on_read.set_ydata([on_read, on_read])
        self.threshold_right.set_xdata([threshold, threshold])
        hybrid = model.hybrid(threshold)
        right.set_title(f"Hybrid at {si(threshold)}: {si(hybrid.total)} ops/s, one post at "
                        f"most {si(hybrid.worst_post)} inserts", fontsize="medium")
        _autoscale_as_drawn(right, [(self.on_write, "y"), (self.on_read, "y"),
                                    (self.threshold_right, "x")])


def _autoscale_as_drawn(ax: Any, marks: list[tuple[Any, str]], *, scaley: bool = True) -> None:
    """Limits of ``ax`` as a new figure gets them when its curves are drawn first and then
    ``marks`` (``axvline`` "x", ``axhline`` "y") one by one: a mark widens the limits only if
    it falls outside those in view when it is added (matplotlib's ``axvline``)."""
    for line, _ in marks:
        line.set_visible(False)
    ax.relim(visible_only=True)
    ax.autoscale_view(scaley=scaley)
    for line, axis in marks:
        line.set_visible(True)
        low, high = ax.get_xbound() if axis == "x" else ax.get_ybound()
        at = float((line.get_xdata() if axis == "x" else line.get_ydata())[0])
        if not low <= at <= high:
            ax.relim(visible_only=True)
            ax.autoscale_view(scalex=axis == "x", scaley=axis == "y")


def load_panel() -> Panel:
    """Sliders: the follower tail index (skew; the mean stays 75), the hybrid's threshold
    (log10 of followers) and the reads per post (read/write ratio; DDIA: 300k / 4.6k)."""

    def run(tail_index: float, log10_threshold: float, read_write_ratio: float) \
            -> dict[str, Any]:
        return {"model": timeline_model(tail_index, read_write_ratio),
                "threshold": 10.0 ** log10_threshold}

    def table(results: dict[str, Any]) -> pd.DataFrame:
        return approaches_table(results["model"], results["threshold"])

    return Panel(
        run,
        [Control.slider("tail_index", 1.15, 2.5, 1.3, step=0.05,
                        label="follower tail index (lower = more skewed)"),
         Control.slider("log10_threshold", 2.0, 8.0, 6.0, step=0.1,
                        label="celebrity threshold (log10 followers)"),
         Control.slider("read_write_ratio", 0.5, 200.0, _DDIA_RATIO, step=0.5,
                        label="timeline reads per post")],
        LoadFigure(), table=table,
        title="Home timelines: fan-out on write, on read, and the hybrid",
    )
