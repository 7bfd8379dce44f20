"""The experiments of notebook 02 (circuit breakers, timeouts, overload, retry storms), and their
panels. See ``retries.py`` for the pattern."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.figures import InPlaceFigure, TimeseriesFigure, VerticalBands, autoscale
from ..analysis.plots import plot_in_flight
from ..analysis.tables import summary_table
from ..policies import BreakerConfig, BreakerMode, ClientPolicy, FixedLimit, Status
from ..results import RunResult, transition_times
from ..server_config import ServerConfig
from ..sim import Scenario, simulate
from ..sim.scenarios import (
    RETRY_STORM_FIXES,
    RetryStormFix,
    dependency_outage,
    overload_spike,
    retry_storm,
)
from ..validation import check_real
from ..widgets import Control, Panel
from ..workload import Distribution, Fault, Load

__all__ = [
    "breaker_panel",
    "false_timeout_rate",
    "outage_comparison",
    "outage_table",
    "overload_panel",
    "plot_outage_pile_up",
    "status_breakdown",
    "storm_comparison",
    "storm_panel",
    "timeout_panel",
    "timeout_table",
    "timeouts",
]


# -- the breaker under load -------------------------------------------------------------------

#: What counts as answered well here: the default SLO tier's p95 target (reference card).
WELL = 0.2


def _answered_well(run: RunResult) -> pd.Series:
    return (run.requests["latency"] <= WELL) & run.requests["ok"]


def outage_table(results: dict[str, RunResult]) -> pd.DataFrame:
    """Per run, with units: latency (s), errors (%), goodput (successful requests per second,
    however late), and the requests answered well (a success within 200 ms), as a share (%)
    and per second."""
    table = summary_table(results, digits=3, units=True,
                          columns=["requests", "p50", "p99", "error_rate", "goodput"])
    table["ok within 200 ms (%)"] = [round(100 * float(_answered_well(r).mean()), 1)
                                     for r in results.values()]
    table["goodput within 200 ms (/s)"] = [
        round(float(_answered_well(r).sum()) / r.duration, 1) for r in results.values()]
    return table


def breaker_panel(*, seed: int = 0) -> Panel:
    """A hanging dependency, with the breaker's settings on sliders (mode, threshold,
    recovery timeout, half-open probes, successes to close, failure-rate window)."""

    def run(breaker: bool, mode: BreakerMode, failure_threshold: int, recovery_timeout: float,
            half_open_max_calls: int, success_threshold: int, window_size: int,
            outage: float) -> dict[str, RunResult]:
        scenario = dependency_outage(breaker, outage=(10.0, 10.0 + outage), seed=seed)
        if breaker:
            config = BreakerConfig(
                mode=mode, failure_threshold=failure_threshold,
                recovery_timeout=recovery_timeout, half_open_max_calls=half_open_max_calls,
                success_threshold=success_threshold, window_size=window_size,
                minimum_calls=min(10, window_size))
            scenario = scenario.replace({"server.dependency.client.breaker": config})
        return {"breaker" if breaker else "no breaker": simulate(scenario)}

    def table(results: dict[str, RunResult]) -> pd.DataFrame:
        # the requests sent while the dependency hung, and how the breaker behaved: how often
        # it opened, and when it closed again afterwards. Not the error rate or the goodput:
        # every call during the outage fails whatever the breaker does, so those two do not
        # move with its settings (the notebook says why); how fast and how well the rest is
        # answered does.
        (name, result), = results.items()
        end = float(result.events.loc[result.events["detail"] == "end", "time"].iloc[0])
        out = outage_table({f"{name}, during the outage": result.window(10.0, end)})
        out = out[["requests", "p50 (s)", "p99 (s)", "ok within 200 ms (%)",
                   "goodput within 200 ms (/s)"]]
        closes = transition_times(result.events, "closed")
        out["times opened"] = len(transition_times(result.events, "open"))
        out["closed again at (s)"] = round(float(closes[-1]), 2) if len(closes) else "never"
        return out

    return Panel(
        run,
        [Control.checkbox("breaker", True, label="circuit breaker"),
         Control.dropdown("mode", ["consecutive", "failure_rate"], "consecutive"),
         Control.slider("failure_threshold", 1, 50, 5),
         Control.slider("recovery_timeout", 0.5, 10.0, 2.0, step=0.5,
                        label="recovery timeout (s)"),
         Control.slider("half_open_max_calls", 1, 10, 1, label="half-open probes"),
         Control.slider("success_threshold", 1, 10, 1, label="successes to close"),
         Control.slider("window_size", 5, 100, 20, step=5,
                        label="window (rate mode)"),
         Control.slider("outage", 2.0, 25.0, 15.0, step=1.0, label="outage (s)")],
        TimeseriesFigure(0.5, breaker="dependency",
                         title="Dependency hangs from t = 10 s ({name})"),
        table=table, title="Circuit breaker: fail fast during an outage",
    )


def outage_comparison(*, seed: int = 0) -> dict[str, RunResult]:
    """The dependency outage without and with a breaker."""
    return {name: simulate(dependency_outage(flag, seed=seed))
            for name, flag in (("no breaker", False), ("breaker", True))}


def plot_outage_pile_up(results: dict[str, RunResult]) -> Any:
    """Attempts in flight (queued or holding a worker) over time, per run."""
    ax = plot_in_flight(results)
    ax.axvspan(10, 25, color="#9e9e9e", alpha=0.2, lw=0, label="dependency hangs")
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title("Requests inside the server: the pile-up", fontsize="medium")
    return ax.figure


# -- choosing a timeout ----------------------------------------------------------------------

def false_timeout_rate(timeout: float, latency: Distribution) -> float:
    """The share of healthy requests a timeout would cut off: ``P(latency > timeout)``."""
    check_real("timeout", timeout, low=0, low_open=True)
    return 1.0 - latency.cdf(timeout)


def timeouts(timeout: float, *, shape: float = 1.0, mean: float = 0.05,
             seed: int = 0) -> RunResult:
    """A lightly loaded server (30% utilisation) with lognormal work; clients give up after
    ``timeout`` and do not retry: every 599 is a false timeout of a healthy request."""
    work = Distribution(mean=mean, kind="lognormal", shape=shape)
    return simulate(Scenario(load=Load(rate=0.3 * 8 / mean, duration=60.0),
                             server=ServerConfig(workers=8, service_time=work), seed=seed,
                             client=ClientPolicy(timeout=timeout)))


def timeout_table(percentiles: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999), *,
                  shape: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """A timeout set at each percentile of the work's latency distribution, the false-timeout
    rate (%) the distribution predicts, and the rate measured on a lightly loaded server."""
    latency = Distribution(mean=0.05, kind="lognormal", shape=shape)
    rows = {}
    for q in percentiles:
        timeout = latency.quantile(q)
        run = timeouts(timeout, shape=shape, seed=seed)
        rows[f"p{100 * q:g}"] = {
            "timeout (s)": round(timeout, 4),
            "false timeouts predicted (%)": round(100 * false_timeout_rate(timeout, latency),
                                                  2),
            "measured (%)": round(
                100 * float((run.requests["status"] == Status.CLIENT_TIMEOUT).mean()), 2),
        }
    return pd.DataFrame(rows).T.rename_axis("timeout at")


def timeout_panel(*, seed: int = 0) -> Panel:
    """Set a timeout against a latency distribution and see how many healthy requests it
    cuts off, measured and predicted.

    One simulation per tail shape, none per timeout: a client that gives up (and does not
    retry) leaves the server's work as it was, so under common random numbers the run with a
    timeout times out exactly the requests whose latency without one exceeds it (a test
    compares the two, request by request). Moving the timeout reads the untimed run again.
    """

    untimed = functools.lru_cache(maxsize=16)(
        lambda shape: timeouts(60.0, shape=shape, seed=seed))  # depends on the shape only

    def run(timeout: float, shape: float) -> dict[str, Any]:
        return {"untimed": untimed(shape), "timeout": timeout, "shape": shape}

    def table(results: dict[str, Any]) -> pd.DataFrame:
        latency = results["untimed"].requests["latency"].to_numpy()
        measured = float((latency > results["timeout"]).mean())  # as timeouts() would say
        return pd.DataFrame(index=pd.Index(["this timeout"], name="setting"), data={
            "timeout (s)": [results["timeout"]],
            "percentile it sits at": [round(float((latency <= results["timeout"]).mean()) * 100,
                                            2)],
            "false timeouts, measured (%)": [round(100 * measured, 2)],
            "false timeouts, service time alone (%)": [round(100 * false_timeout_rate(
                results["timeout"], Distribution(mean=0.05, kind="lognormal",
                                                 shape=results["shape"])), 2)],
        })

    return Panel(
        run,
        [Control.slider("timeout", 0.02, 2.0, 0.3, step=0.01, label="timeout (s)"),
         Control.slider("shape", 0.2, 2.0, 1.0, step=0.1, label="tail (lognormal sigma)")],
        _TimeoutFigure(), table=table, title="Choosing a timeout",
    )


class _TimeoutFigure(InPlaceFigure):
    """Where the timeout falls in the latency distribution (without a timeout): a histogram
    on a log scale, its p50, p99 and p99.9, and the timeout in red."""

    PERCENTILES = ((50, ":"), (99, "-."), (99.9, "--"))

    def build(self, results: dict[str, Any]) -> Any:
        figure, ax = self.subplots(figsize=(9, 3.4))
        self.ax = ax
        self.histogram = ax.stairs([0.0], [1e-3, 1.0], fill=True, color="#90a4ae")
        ax.set_xscale("log")
        self.marks = [ax.axvline(1.0, color="#37474f", ls=style, label=f"p{q:g}")
                      for q, style in self.PERCENTILES]
        self.timeout = ax.axvline(1.0, color="#c62828", lw=2, label="timeout")
        ax.set_xlabel("latency without a timeout (s)")
        ax.set_ylabel("requests")
        ax.legend(fontsize="small")
        ax.set_title("Where the timeout falls in the latency distribution", fontsize="medium")
        self.shown: Any = None
        return figure

    def update(self, results: dict[str, Any]) -> None:
        if results["untimed"] is not self.shown:  # a new tail: a new histogram
            latency = results["untimed"].requests["latency"].to_numpy()
            edges = np.geomspace(max(latency.min(), 1e-4), latency.max() * 1.01, 70)
            counts, edges = np.histogram(latency, bins=edges)
            self.histogram.set_data(counts, edges)
            for mark, (q, _) in zip(self.marks, self.PERCENTILES, strict=True):
                x = float(np.percentile(latency, q))
                mark.set_xdata([x, x])
            self.shown = results["untimed"]
        self.timeout.set_xdata([results["timeout"]] * 2)
        autoscale(self.ax)


# -- 429, 503, 504 -------------------------------------------------------------------------

def status_breakdown(run: RunResult) -> pd.DataFrame:
    """How attempts and requests ended, by status, with each code's name."""
    def counts(table: pd.DataFrame) -> pd.Series:
        return table["status"].value_counts()

    out = pd.DataFrame({"attempts": counts(run.attempts), "requests": counts(run.requests)})
    out = out.fillna(0).astype(int).sort_index()
    out.index = [Status(code).label if code in Status._value2member_map_ else str(code)
                 for code in out.index]
    out.index.name = "status"
    return out


def overload_panel(*, seed: int = 0) -> Panel:
    """An overload spike with the concurrency limit (load shedding) on a slider; 0 means no
    limit."""

    def run(max_concurrent: int, spike: float) -> dict[str, RunResult]:
        scenario = overload_spike(max_concurrent > 0, spike=spike, seed=seed)
        if max_concurrent > 0:
            scenario = scenario.replace(
                {"server.admission": FixedLimit(max_concurrent=max_concurrent)})
        name = f"limit {max_concurrent}" if max_concurrent else "no limit"
        return {name: simulate(scenario)}

    def table(results: dict[str, RunResult]) -> pd.DataFrame:
        return summary_table(results, digits=3, units=True)

    return Panel(
        run,
        [Control.slider("max_concurrent", 0, 200, 20, step=4, label="concurrency limit"),
         Control.slider("spike", 1.0, 4.0, 2.0, step=0.25, label="spike (x capacity)")],
        _OverloadFigure(1.0, title="Overload spike from 10 s to 20 s, shaded ({name})"),
        table=table, title="Load shedding under an overload spike",
    )


class _OverloadFigure(TimeseriesFigure):
    """The run over time with the spike (between the load's two steps) shaded in orange."""

    def build(self, results: Any) -> Any:
        figure = super().build(results)
        self.spikes = [VerticalBands(ax, facecolors="#ffcc80", alpha=0.3, zorder=0)
                       for ax in self.axes]
        return figure

    def update(self, results: Any) -> None:
        super().update(results)
        (_, run), = results.items()
        steps = run.events.loc[run.events["kind"] == "load", "time"].tolist()
        for spike in self.spikes:
            spike.set([(steps[0], steps[1])] if len(steps) >= 2 else [])


# -- the retry storm -----------------------------------------------------------------------

#: Seconds after the capacity drop ends by which a system that can recover has recovered.
RECOVERY_TIME = 15.0
#: The canonical storm's drop ends at 25 s, so recovery is judged on requests sent from 40 s.
RECOVERED_BY = 25.0 + RECOVERY_TIME

def _drop_end(run: RunResult) -> float:
    faults = run.events[(run.events["kind"] == "fault") & (run.events["detail"] == "end")]
    return float(faults["time"].max())


def _recovery(run: RunResult, after: float) -> float:
    late = run.requests[run.requests["t_start"] >= after]
    return float(late["ok"].mean()) if len(late) else float("nan")


def storm_comparison(*, seed: int = 0) -> pd.DataFrame:
    """Every fix of the retry storm: amplification (attempts per request; below 1 when a
    client breaker refuses requests without sending them), and the share of requests served,
    and their p99 (s), once the system had 15 s to recover (sent at t >= 40 s, the drop ending
    at 25 s)."""
    rows = {}
    for fix in RETRY_STORM_FIXES:
        run = simulate(retry_storm(fix, seed=seed))
        s = run.summary()
        rows[fix] = {"attempts per request": round(s["amplification"], 2),
                     "ok 15 s after the drop (%)": round(100 * _recovery(run, RECOVERED_BY), 1),
                     "p99 15 s after the drop (s)": round(float(np.percentile(
                         run.requests.loc[run.requests["t_start"] >= RECOVERED_BY, "latency"],
                         99)), 3)}
    return pd.DataFrame(rows).T.rename_axis("fix")


def storm_panel(*, seed: int = 0) -> Panel:
    """The retry storm with a fix on a dropdown and the capacity drop's depth and length on
    sliders."""

    def run(fix: RetryStormFix, drop_to: float, drop_for: float) -> dict[str, RunResult]:
        scenario = retry_storm(fix, seed=seed)
        fault = scenario.faults[0]
        end = fault.start + drop_for
        scenario = scenario.replace(
            {"load.duration": max(scenario.load.duration or 0.0, end + 2 * RECOVERY_TIME)},
            faults=(Fault(start=fault.start, end=end, capacity=drop_to, name=fault.name),))
        return {f"fix={fix}": simulate(scenario)}

    def table(results: dict[str, RunResult]) -> pd.DataFrame:
        # recovery judged 15 s after the drop ends, wherever the sliders put its end
        out = summary_table(results, digits=3, units=True,
                            columns=["requests", "p99", "error_rate", "amplification"])
        out["ok 15 s after the drop (%)"] = [
            round(100 * _recovery(r, _drop_end(r) + RECOVERY_TIME), 1) for r in results.values()]
        return out

    return Panel(
        run,
        [Control.dropdown("fix", RETRY_STORM_FIXES, "none"),
         Control.slider("drop_to", 0.0, 1.0, 0.3, step=0.05, label="capacity during drop"),
         Control.slider("drop_for", 1.0, 30.0, 10.0, step=1.0, label="drop length (s)")],
        TimeseriesFigure(1.0, title="Retry storm ({name})"), table=table,
        title="Retry storm: a metastable failure",
    )
