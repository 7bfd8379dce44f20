"""Notebook 03, section 2: describing performance. Response time as a distribution (mean,
median, p95, p99, p99.9), why percentiles must not be averaged across windows, and what an HDR
histogram and Prometheus buckets report against the exact percentiles. The arithmetic is in
``atlas_sim.analysis.percentiles``; here are the notebook's runs, tables, figures and panel."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.figures import InPlaceFigure, autoscale, plain_log_ticks
from ..analysis.percentiles import (
    PERCENTILES,
    PROMETHEUS_DEFAULT_BUCKETS,
    HdrRecorder,
    averaged_vs_merged,
    bucket_counts,
    bucket_quantile,
    exact_percentiles,
    percentile_label,
)
from ..results import RunResult
from ..server_config import ServerConfig
from ..sim import Scenario, simulate
from ..validation import check_int, check_real
from ..widgets import Control, Panel
from ..workload import Distribution, Load, rng_streams

__all__ = [
    "BUCKET_SETS",
    "DDIA_SLA",
    "RECORDING_PERCENTILES",
    "RecordingFigure",
    "averaging_table",
    "distribution_table",
    "plot_distribution",
    "plot_recording",
    "plot_windows",
    "recording_panel",
    "recording_table",
    "sla_table",
    "spike_run",
    "spike_scenario",
    "throughput_table",
    "window_groups",
]

#: The percentiles the recording comparison reports.
RECORDING_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)
#: Bucket sets to compare: prometheus_client's defaults, and the reference card's (what the
#: Atlas service's ``/metrics`` histogram uses; ``atlas_sim.service.metrics.BUCKETS``).
BUCKET_SETS: dict[str, tuple[float, ...]] = {
    "prometheus_client default": PROMETHEUS_DEFAULT_BUCKETS,
    "reference card (Atlas service)": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                       10.0, float("inf")),
}


def _ms(seconds: Any) -> Any:
    return np.round(1000.0 * np.asarray(seconds, dtype=float), 1)


# -- one latency sample, and how to describe it ------------------------------------------------

def spike_scenario(*, seed: int = 0) -> Scenario:
    """Four workers, lognormal work (mean 20 ms, shape 1), 120 requests/s (60% busy) for two
    minutes, except for ten seconds from t = 50 s at 210/s (105% of capacity): a queue builds,
    then drains."""
    return Scenario(load=Load(rate=120.0, duration=120.0, steps=((50.0, 210.0), (60.0, 120.0))),
                    server=ServerConfig(workers=4, service_time=Distribution(
                        mean=0.02, kind="lognormal", shape=1.0)), seed=seed)


def spike_run(*, seed: int = 0) -> RunResult:
    """``simulate(spike_scenario(seed=seed))``: about 15,000 requests."""
    return simulate(spike_scenario(seed=seed))


def distribution_table(latencies: Any) -> pd.DataFrame:
    """Mean, median, p95, p99, p99.9 and maximum of ``latencies`` (seconds), in ms, with the
    share of requests at or below each (the mean's says which percentile the mean is)."""
    x = np.asarray(latencies, dtype=float)
    values = {"mean": float(x.mean())}
    values.update(zip([percentile_label(p) for p in PERCENTILES],
                      exact_percentiles(x, PERCENTILES).tolist(), strict=True))
    values["max"] = float(x.max())
    return pd.DataFrame({
        "latency (ms)": _ms(list(values.values())),
        "requests at or below (%)": [round(100 * float((x <= v).mean()), 2)
                                     for v in values.values()],
    }, index=pd.Index(list(values), name="statistic"))


#: DDIA's example of a service level agreement stated with percentiles ("Describing
#: Performance"): the service counts as up if its median response time is under 200 ms and its
#: 99th percentile under 1 s. Percentile -> objective, in seconds.
DDIA_SLA: dict[float, float] = {50.0: 0.2, 99.0: 1.0}


def sla_table(latencies: Any, objectives: dict[float, float] | None = None) -> pd.DataFrame:
    """Each objective of a percentile SLA (``{percentile: seconds}``, DDIA's example by
    default) beside the measured percentile of ``latencies`` (seconds; the exact percentile,
    nearest rank as ``exact_percentiles``), in ms, and whether it is met. Rows: "p50", "p99"."""
    objectives = DDIA_SLA if objectives is None else objectives
    if not objectives:
        raise ValueError("objectives must name at least one percentile")
    for percentile, seconds in objectives.items():
        check_real("percentile", percentile, low=0.0, high=100.0)
        check_real("objective (s)", seconds, low=0.0, low_open=True)
    x = np.asarray(latencies, dtype=float)
    if x.size == 0:
        raise ValueError("latencies must not be empty")
    points = list(objectives)
    measured = exact_percentiles(x, points)
    return pd.DataFrame({
        "objective (ms)": _ms([objectives[p] for p in points]),
        "measured (ms)": _ms(measured),
        "met": ["yes" if m < objectives[p] else "no" for p, m in zip(points, measured,
                                                                     strict=True)],
    }, index=pd.Index([percentile_label(p) for p in points], name="percentile"))


def throughput_table(run: RunResult, window: float = 10.0) -> pd.DataFrame:
    """Per window of ``window`` seconds (rows, by start time in s): requests sent per second
    (the offered load), requests finished per second (the **throughput**), and the p99
    response time of the requests sent in that window (ms). A request counts as sent in the
    window of its ``t_start`` and as finished in the window of its ``t_end``; the windows cover
    ``[0, run.duration)``, so a request that finishes after that is in no window's throughput.
    Past capacity the throughput stops growing and the extra load becomes waiting: response
    time is what rises."""
    check_real("window", window, low=0.0, low_open=True)
    requests = run.requests
    start = np.floor(requests["t_start"].to_numpy() / window).astype(int)
    end = np.floor(requests["t_end"].to_numpy() / window).astype(int)
    windows = int(np.ceil(run.duration / window))
    rows = {}
    for k in range(windows):
        sent = requests["latency"].to_numpy()[start == k]
        rows[f"{k * window:g}"] = {
            "sent (/s)": round(sent.size / window, 1),
            "throughput: finished (/s)": round(int((end == k).sum()) / window, 1),
            "p99 (ms)": float(_ms(exact_percentiles(sent, [99.0])[0])) if sent.size
            else float("nan"),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("window from (s)")


def plot_distribution(latencies: Any, ax: Any = None) -> Any:
    """A histogram of ``latencies`` on a log axis, with the mean and percentiles marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.4), layout="constrained")
    x = np.maximum(np.asarray(latencies, dtype=float), 1e-4)
    edges = np.geomspace(x.min(), x.max() * 1.001, 80)
    counts, edges = np.histogram(x, bins=edges)
    ax.stairs(counts, edges, fill=True, color="#b0bec5")
    ax.axvline(float(x.mean()), color="#c62828", lw=1.5, label=f"mean {1000 * x.mean():.0f} ms")
    styles = dict(zip(PERCENTILES, ("-", "--", "-.", ":"), strict=True))
    for p, v in zip(PERCENTILES, exact_percentiles(x, PERCENTILES), strict=True):
        ax.axvline(float(v), color="#37474f", ls=styles[p],
                   label=f"{percentile_label(p)} {1000 * v:.0f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("response time (s)")
    ax.set_ylabel("requests")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title("One run's response times: a distribution, not a number", fontsize="medium")
    return ax


# -- averaging percentiles across windows --------------------------------------------------------

def window_groups(run: RunResult, window: float = 10.0) -> dict[str, np.ndarray]:
    """The run's latencies split into windows of ``window`` seconds by when each request
    finished (as a metrics library records it); requests finishing after the last whole window
    count in the last one. ``{"0-10 s": latencies, ...}``."""
    window = check_real("window", window, low=0, low_open=True, high=run.duration)
    n = int(run.duration // window)
    latency = run.requests["latency"].to_numpy()
    index = np.minimum((run.requests["t_end"].to_numpy() // window).astype(int), n - 1)
    return {f"{k * window:g}-{(k + 1) * window:g} s": latency[index == k] for k in range(n)
            if np.any(index == k)}


def averaging_table(run: RunResult, window: float = 10.0) -> pd.DataFrame:
    """Each percentile of the run, in ms: the mean of the windows' percentiles (a dashboard
    that averages them), the highest window's, the true one (all requests together), and the
    true one recovered from per-window histograms added together, HDR (3 significant figures)
    and Prometheus buckets (prometheus_client's defaults, ``histogram_quantile``)."""
    groups = window_groups(run, window)
    table = averaged_vs_merged(groups, PERCENTILES)
    hdr = HdrRecorder.merged(HdrRecorder.of(g) for g in groups.values())
    buckets = np.sum([bucket_counts(g) for g in groups.values()], axis=0)
    out = table[["mean of the groups", "highest group", "merged (true)"]].apply(_ms)
    out.columns = ["mean of the windows' (ms)", "highest window's (ms)", "true (ms)"]
    out["error of the mean (%)"] = table["error of the mean (%)"].round(0)
    out["windows' HDR histograms added (ms)"] = _ms(hdr.percentiles(PERCENTILES))
    out["windows' buckets added (ms)"] = _ms(
        [bucket_quantile(p / 100, buckets) for p in PERCENTILES])
    return out


def plot_windows(run: RunResult, window: float = 10.0, percentile: float = 99.0) -> Any:
    """Each window's ``percentile`` (bars) and request count (line), with the mean of the
    windows' values and the true value of the whole run as horizontal lines."""
    groups = window_groups(run, window)
    label = percentile_label(percentile)
    per_window = np.array([exact_percentiles(g, [percentile])[0] for g in groups.values()])
    true = exact_percentiles(np.concatenate(list(groups.values())), [percentile])[0]
    fig, ax = plt.subplots(figsize=(9, 3.4), layout="constrained")
    starts = np.arange(len(groups)) * window
    ax.bar(starts, per_window, width=window * 0.9, align="edge", color="#b0bec5",
           label=f"{label} of each window")
    ax.axhline(per_window.mean(), color="#37474f", ls="--",
               label=f"mean of the windows' {label}: {1000 * per_window.mean():.0f} ms")
    ax.axhline(true, color="#c62828", label=f"true {label} of the run: {1000 * true:.0f} ms")
    ax.set_xlabel("window start (s)")
    ax.set_ylabel(f"{label} (s)")
    counts = ax.twinx()
    counts.plot(starts + window / 2, [g.size for g in groups.values()], "o-", color="#1565c0",
                ms=3, lw=1, label="requests in the window")
    counts.set_ylabel("requests", color="#1565c0")
    counts.set_ylim(0, None)
    handles = ax.get_legend_handles_labels()[0] + counts.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small")
    ax.set_title(f"Averaging the windows' {label} hides the busy window", fontsize="medium")
    return fig


# -- recording: exact, HDR histogram, Prometheus buckets ---------------------------------------

def recording_table(latencies: Any, *, significant_figures: int = 3,
                    bounds: tuple[float, ...] = PROMETHEUS_DEFAULT_BUCKETS,
                    percentiles: tuple[float, ...] = RECORDING_PERCENTILES) -> pd.DataFrame:
    """Each percentile of ``latencies`` (seconds) three ways, in ms: exact (numpy,
    ``closest_observation``: the rank an HDR histogram reads), from an HDR histogram with
    ``significant_figures``, and from Prometheus buckets with upper ``bounds`` by
    ``histogram_quantile``'s linear interpolation; the two estimates' errors against the exact
    value (%), and the bucket the exact value is in."""
    x = np.asarray(latencies, dtype=float)
    exact = exact_percentiles(x, percentiles)
    hdr = HdrRecorder.of(x, significant_figures=significant_figures).percentiles(percentiles)
    counts = bucket_counts(x, bounds)
    prom = np.array([bucket_quantile(p / 100, counts, bounds) for p in percentiles])
    index = np.searchsorted(np.asarray(bounds), exact, side="left")
    where = [f"{'0' if i == 0 else f'{bounds[i - 1]:g}'} to {bounds[i]:g} s" for i in index]
    return pd.DataFrame({
        "exact (ms)": _ms(exact),
        "HDR (ms)": _ms(hdr),
        "HDR error (%)": np.round(100 * (hdr - exact) / exact, 2),
        "buckets (ms)": _ms(prom),
        "buckets error (%)": np.round(100 * (prom - exact) / exact, 1),
        "exact value's bucket": where,
    }, index=pd.Index([percentile_label(p) for p in percentiles], name="percentile"))


def _nines(share: Any) -> Any:
    """A share of requests as "nines": 0.9 -> 1, 0.99 -> 2, 0.999 -> 3."""
    return -np.log10(1.0 - np.asarray(share, dtype=float))


def plot_recording(latencies: Any, table: pd.DataFrame,
                   bounds: tuple[float, ...] = PROMETHEUS_DEFAULT_BUCKETS) -> Any:
    """Left: the share of requests at or below each latency on a "nines" scale (p90, p99,
    p99.9 evenly spaced), exact and as the buckets' linear interpolation has it, with the
    bucket bounds. Right: each estimate's error per percentile (``table``: a
    ``recording_table``). Drawn by ``RecordingFigure``, which the recording panel updates in
    place."""
    return RecordingFigure(pyplot=True).draw(
        {"latencies": latencies, "table": table, "bounds": bounds})


_LEVELS = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"))


class RecordingFigure(InPlaceFigure):
    """``plot_recording``'s figure. Results: ``{"latencies": seconds, "table":
    recording_table(...), "bounds": bucket upper bounds}``."""

    def shape(self, results: dict[str, Any]) -> Hashable:
        return tuple(map(str, results["table"].index))

    def build(self, results: dict[str, Any]) -> Any:
        figure, (left, right) = self.subplots(1, 2, figsize=(11, 3.6))
        self.left, self.right = left, right
        (self.exact,) = left.plot([], [], color="#37474f", label="exact (every latency)")
        (self.interpolated,) = left.plot([], [], "--", color="#ef6c00",
                                         label="buckets, linear inside each")
        self.bounds: list[Any] = []
        left.set_yticks([float(_nines(q)) for q, _ in _LEVELS], [name for _, name in _LEVELS])
        left.set_ylim(0, float(_nines(0.9995)))
        left.set_xscale("log")
        plain_log_ticks(left.xaxis)
        left.set_xlabel("response time (s); bucket bounds in orange")
        left.set_ylabel("share at or below")
        left.grid(alpha=0.3, axis="y")
        left.legend(loc="upper left", fontsize="small")
        left.set_title("The tail, as recorded and as interpolated", fontsize="medium")
        table = results["table"]
        positions = np.arange(len(table))
        zeros = np.zeros(len(table))
        self.hdr = right.bar(positions - 0.2, zeros, 0.4, label="HDR histogram",
                             color="#1565c0")
        self.buckets = right.bar(positions + 0.2, zeros, 0.4, label="Prometheus buckets",
                                 color="#ef6c00")
        right.axhline(0, color="0.3", lw=0.8)
        right.set_xticks(positions, list(table.index))
        right.set_ylabel("error against exact (%)")
        right.set_title("Error of each recording, per percentile", fontsize="medium")
        self.legend_label: str | None = None
        return figure

    def update(self, results: dict[str, Any]) -> None:
        bounds, table = results["bounds"], results["table"]
        left, right = self.left, self.right
        x = np.sort(np.asarray(results["latencies"], dtype=float))
        n = x.size
        shares = np.arange(1, n + 1) / (n + 1)  # below 1, so the last point has finite nines
        keep = np.unique(np.concatenate([np.linspace(0, n - 1, 1500).astype(int),
                                         np.arange(max(0, n - 500), n)]))  # the tail in full
        self.exact.set_data(np.maximum(x[keep], 1e-4), _nines(shares[keep]))
        counts = bucket_counts(x, bounds)
        finite = np.array([b for b in bounds if np.isfinite(b)])
        grid = np.geomspace(max(float(x[0]), 1e-4), finite[-1], 400)
        interpolated = np.interp(grid, np.concatenate([[0.0], finite]),
                                 np.concatenate([[0.0], counts[:-1] / n]))
        inside = interpolated < 1.0
        self.interpolated.set_data(grid[inside], _nines(interpolated[inside]))
        while len(self.bounds) > len(finite):
            self.bounds.pop().remove()
        while len(self.bounds) < len(finite):
            self.bounds.append(left.axvline(1.0, color="#ef6c00", lw=0.5, alpha=0.5))
        for line, b in zip(self.bounds, finite, strict=True):
            line.set_xdata([b, b])
        left.set_xlim(max(float(x[0]), 1e-4), max(float(x[-1]), float(finite[0])) * 1.3)

        for bars, column in ((self.hdr, "HDR error (%)"), (self.buckets, "buckets error (%)")):
            for bar, value in zip(bars, table[column].to_numpy(dtype=float), strict=True):
                bar.set_height(value)
        worst = float(table["HDR error (%)"].abs().max())
        label = f"HDR histogram (at most {worst:.2g}%)"
        if label != self.legend_label:
            self.hdr.set_label(label)
            right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
            self.legend_label = label
        autoscale(right)


def _lognormal_sample(mean_ms: float, shape: float, size: int, seed: int) -> np.ndarray:
    return Distribution(mean=mean_ms / 1000.0, kind="lognormal", shape=shape).sample(
        rng_streams(seed)["service"], size)


def recording_panel(*, seed: int = 0, size: int = 20_000) -> Panel:
    """Sliders: the latency sample's mean (ms) and tail (lognormal shape), the HDR histogram's
    significant figures, and the bucket set. ``size`` lognormal latencies per setting."""
    size = check_int("size", size, low=100, high=1_000_000)

    def run(mean_ms: float, shape: float, significant_figures: int, buckets: str) \
            -> dict[str, Any]:
        x = _lognormal_sample(mean_ms, shape, size, seed)
        bounds = BUCKET_SETS[buckets]
        return {"latencies": x, "bounds": bounds,
                "table": recording_table(x, significant_figures=significant_figures,
                                         bounds=bounds)}

    return Panel(
        run,
        [Control.slider("mean_ms", 5.0, 1000.0, 50.0, step=5.0, label="mean latency (ms)"),
         Control.slider("shape", 0.25, 2.0, 1.0, step=0.05, label="tail (lognormal shape)"),
         Control.slider("significant_figures", 1, 5, 3, label="HDR significant figures"),
         Control.dropdown("buckets", list(BUCKET_SETS), "prometheus_client default",
                          label="buckets")],
        RecordingFigure(), table=lambda results: results["table"],
        title="Recording latency: exact, HDR histogram, Prometheus buckets",
    )
