"""The experiments of notebook 03, section 5: tail-latency amplification and hedged requests.

A user request that fans out to ``N`` backend calls waits for the slowest; with one slow call in
100 the share of slow user requests is ``1 - 0.99**N`` (Dean and Barroso, "The Tail at Scale",
CACM 2013). Hedging each call (``HedgePolicy``: a second copy after a delay at a percentile of
the call's latency, the first answer wins, the loser is cancelled) cuts the tail for a few
percent more calls. Three views of the same model, side by side:

* theory: ``analysis.tail.TailModel`` (closed forms);
* simulation: ``sim.fanout`` with the hedging client policy, each call driven by ``GuardedCall``;
* live: ``/api/fanout`` on the in-kernel service, each backend call driven by the same
  ``GuardedCall`` inside ``ResilientCaller`` (``experiments.live.fanout_run``).

The backend: the service's dependency, 5 ms on average (exponential); a slow call takes 300 ms
(``Fault(dependency_slow_rate=..., dependency_slow_latency=...)`` live, ``slow_rate`` and
``slow_latency`` in the model).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from ..analysis.figures import InPlaceFigure, clip_to_view
from ..analysis.health import Health, health_table, measurement_health
from ..analysis.percentiles import exact_percentiles
from ..analysis.tail import TailModel, hedge_delay_at
from ..policies import ClientPolicy, HedgePolicy
from ..results import RunResult
from ..sim.fanout import fanout, fanout_latency
from ..validation import check_int, check_real
from ..widgets import Control, Panel
from ..workload import Distribution, Fault, Load
from . import live

if TYPE_CHECKING:  # experiments.live is the one module that imports the service
    from ..service import LiveServer

__all__ = [
    "FAST",
    "HEDGE_WIDTH",
    "PUBLISHED",
    "SLOW_LATENCY",
    "WIDTHS",
    "HedgedTailFigure",
    "hedge_table",
    "hedging_comparison",
    "hedging_requests",
    "live_health",
    "live_tail",
    "plot_tail",
    "published_table",
    "run_health",
    "slow_share_table",
    "tail_model",
    "tail_panel",
]

#: A fast backend call: the service's dependency, 5 ms on average, exponential.
FAST = Distribution(mean=0.005)
#: How long a slow call takes (seconds).
SLOW_LATENCY = 0.3
#: Fan-out widths of the amplification table.
WIDTHS = (1, 5, 10, 20, 50, 100)
#: The fan-out width of the hedging comparison.
HEDGE_WIDTH = 5
#: About how many backend calls a simulated hedging comparison draws (``hedging_requests``).
HEDGE_CALLS = 40_000

#: Dean and Barroso, "The Tail at Scale" (CACM 2013), as published: the share of user
#: requests slower than one second when each server is slow (one second) for a share of its
#: requests ("Component-Level Variability Amplified by Scale"), and the hedged-request
#: benchmark ("Hedged requests": a BigTable read of 1,000 keys over 100 servers, a hedge after
#: a 10 ms delay; separately, hedging after the p95 "limits the additional load to
#: approximately 5%").
PUBLISHED: dict[str, Any] = {
    "fan-out": [
        {"servers": 100, "slow share": 0.01, "published": "63%"},
        {"servers": 2000, "slow share": 1e-4, "published": "almost one in five"},
    ],
    "bigtable p99.9 without hedging (ms)": 1800,
    "bigtable p99.9 hedged after 10 ms (ms)": 74,
    "bigtable extra requests": 0.02,
    "extra load hedging after the p95": 0.05,
}


def tail_model(slow_rate: float = 0.01, *, fast: Distribution = FAST,
               slow_latency: float = SLOW_LATENCY) -> TailModel:
    """The backend call of this section in closed form."""
    return TailModel(fast=fast, slow_rate=slow_rate, slow_latency=slow_latency)


def published_table() -> pd.DataFrame:
    """Dean and Barroso's fan-out figures beside ``1 - (1 - p)**N``."""
    rows = {}
    for case in PUBLISHED["fan-out"]:
        servers, p = case["servers"], case["slow share"]
        rows[f"N = {servers:,}, 1 call in {round(1 / p):,} slow"] = {
            "published": case["published"],
            "1 - (1 - p)^N (%)": round(100 * tail_model(p).slow_share(servers), 1)}
    return pd.DataFrame(rows).T.rename_axis("user requests waiting for a slow call")


# -- amplification ---------------------------------------------------------------------------

def _slow_share(run: RunResult, slow_latency: float) -> float:
    return float((run.requests["latency"].to_numpy() >= slow_latency).mean())


def slow_share_table(widths: Sequence[int] = WIDTHS, *, slow_rate: float = 0.01,
                     requests: int = 4000, seed: int = 0,
                     live_runs: Mapping[str, RunResult] | None = None) -> pd.DataFrame:
    """The share of user requests (%) that wait for a slow call, by fan-out width ``N``:
    theory ``1 - (1 - p)**N``, simulated (``requests`` user requests per width), and live
    where ``live_runs`` (from ``live_tail``) has an unhedged run of that width, with its
    ``live measurement`` (``run_health``: ``"healthy"`` or why the host's load spoiled it)."""
    model = tail_model(slow_rate)
    rows: dict[int, dict[str, float]] = {}
    notes: dict[int, str] = {}
    for n in widths:
        n = check_int("width", n, low=1, high=1000)
        # the requests' latencies only: a width-100 run's table of 400,000 calls, built and
        # dropped, was this kernel's peak (issue 23)
        latency = fanout_latency(n, slow_rate, requests=requests, fast=FAST,
                                 slow_latency=SLOW_LATENCY, seed=seed)
        rows[n] = {"theory (%)": 100 * model.slow_share(n),
                   "simulated (%)": 100 * float((latency >= SLOW_LATENCY).mean())}
        if live_runs is not None:
            measured = [r for r in live_runs.values() if _is_live(r, n, hedged=False)]
            rows[n]["live (%)"] = (100 * _slow_share(measured[0], SLOW_LATENCY) if measured
                                   else np.nan)
            if measured:
                notes[n] = _health_cell(run_health(measured[0]))
    table = pd.DataFrame(rows).T.round(1).rename_axis("fan-out width N")
    if live_runs is not None:
        table["live measurement"] = [notes.get(n, "no live run") for n in table.index]
    return table


def _is_live(run: RunResult, width: int, *, hedged: bool) -> bool:
    return (run.meta.get("width") == width
            and (run.meta.get("hedge_delay") is not None) == hedged)


# -- hedging ---------------------------------------------------------------------------------

def hedging_requests(width: int) -> int:
    """How many user requests a hedging comparison of ``width`` calls simulates by default:
    ``HEDGE_CALLS // width`` (the cost grows with the calls drawn), at least 2,000 (so that
    the p99.9 is not the slowest request or two) and at most 8,000: 8,000 at the default
    width of 5, so that a slider move of the tail panel stays near 100 ms of simulation (each
    hedged call is driven through ``GuardedCall``, about 3 us a call here; 20,000 requests
    took 270 ms). The hedging table and the tail panel both call ``hedging_comparison`` with
    this rule, so one setting gives the same numbers in both.

    Raises ValueError for a width outside 1..1000.
    """
    width = check_int("width", width, low=1, high=1000)
    return min(8_000, max(2_000, HEDGE_CALLS // width))


def hedging_comparison(width: int = HEDGE_WIDTH, *, slow_rate: float = 0.01,
                       percentile: float = 95.0, requests: int | None = None,
                       seed: int = 0,
                       plain: RunResult | None = None) -> dict[str, RunResult]:
    """Simulated fan-out of ``width`` calls, without and with hedging after the
    ``percentile`` of one call's latency: ``{"no hedging": ..., "hedged": ...}``, each of
    ``requests`` user requests (default ``hedging_requests(width)``). Both see the same first
    copies (the same draws); ``meta`` records the model, the delay and ``requests``.

    ``plain``: the run without hedging of an earlier call with the same ``width``,
    ``slow_rate``, ``requests`` and ``seed`` (it does not depend on ``percentile``), reused
    instead of simulated again: the tail panel passes it when only the hedge delay moves. The
    result holds a copy of it with its own ``meta``."""
    if requests is None:
        requests = hedging_requests(width)
    model = tail_model(slow_rate)
    delay = hedge_delay_at(model, percentile)
    if plain is None:
        plain = fanout(width, slow_rate, requests=requests, fast=FAST,
                       slow_latency=SLOW_LATENCY, seed=seed)
    else:
        plain = dataclasses.replace(plain, meta=dict(plain.meta))
    hedged = fanout(width, slow_rate, requests=requests, fast=FAST, slow_latency=SLOW_LATENCY,
                    seed=seed, client=ClientPolicy(hedge=HedgePolicy(delay=delay)))
    for run, d in ((plain, None), (hedged, delay)):
        run.meta.update(width=width, hedge_delay=d, percentile=percentile, model=model,
                        requests=requests)
    return {"no hedging": plain, "hedged": hedged}


def _extra_calls(run: RunResult) -> float:
    """Copies sent beyond one per logical call, per call."""
    counts = run.meta.get("fanout")
    if counts is not None:  # live: the service's own counts
        return counts["hedges"] / counts["calls"] if counts["calls"] else np.nan
    return run.meta["hedges"] / run.meta["calls"]


def hedge_table(sim: Mapping[str, RunResult],
                live_runs: Mapping[str, RunResult] | None = None) -> pd.DataFrame:
    """p99 and p99.9 of the user request (ms) and the extra backend calls (%), without and
    with hedging: theory, simulated (``hedging_comparison``) and, given ``live_runs`` (from
    ``live_tail``), live, with ``("measurement", "live")``: ``"healthy"``, or ``"spoiled by
    the host's load: ..."`` and why (``run_health``: a busy host delays the service's timers,
    which turns fast calls into hedges). Columns are (quantity, source) pairs, e.g.
    ``("p99 (ms)", "theory")``."""
    plain, hedged = sim["no hedging"], sim["hedged"]
    model: TailModel = hedged.meta["model"]
    width, delay = hedged.meta["width"], hedged.meta["hedge_delay"]
    label = f"hedged at the p{hedged.meta['percentile']:g} ({1e3 * delay:.1f} ms)"
    rows: dict[str, dict[tuple[str, str], float]] = {}
    notes: dict[str, str] = {}
    for name, run, d in (("no hedging", plain, None), (label, hedged, delay)):
        latency = run.requests["latency"].to_numpy()
        measured = ([r for r in live_runs.values() if _is_live(r, width, hedged=d is not None)]
                    if live_runs is not None else None)
        row = {}
        for q, tag in ((0.99, "p99 (ms)"), (0.999, "p99.9 (ms)")):
            row[(tag, "theory")] = 1e3 * model.quantile(q, width=width, delay=d)
            row[(tag, "simulated")] = 1e3 * float(exact_percentiles(latency, [100 * q])[0])
            if measured is not None:
                row[(tag, "live")] = (
                    1e3 * float(exact_percentiles(measured[0].requests["latency"], [100 * q])[0])
                    if measured else np.nan)
        row[("extra calls (%)", "theory")] = 100 * model.extra_calls(d)
        row[("extra calls (%)", "simulated")] = 100 * _extra_calls(run)
        if measured is not None:
            row[("extra calls (%)", "live")] = (100 * _extra_calls(measured[0]) if measured
                                                else np.nan)
        rows[name] = row
        if measured:
            notes[name] = _health_cell(run_health(measured[0]))
    table = pd.DataFrame(rows).T
    table.columns = pd.MultiIndex.from_tuples([tuple(c) for c in table.columns])
    table = table.round(1)
    if live_runs is not None:
        table[("measurement", "live")] = [notes.get(name, "no live run") for name in rows]
    return table.rename_axis(f"fan-out to {width} calls")


# -- live ------------------------------------------------------------------------------------

@live.interruptible
def live_tail(server: LiveServer, *, widths: Sequence[int] = (HEDGE_WIDTH, 20),
              hedge_width: int = HEDGE_WIDTH, slow_rate: float = 0.01, percentile: float = 95.0,
              requests: int = 200, rate: float = 200.0, seed: int = 0, processes: int = 1,
              progress: bool = False) -> dict[str, RunResult]:
    """``/api/fanout`` on the live service: one unhedged run for each of ``widths`` and one
    run of ``hedge_width`` hedged after the ``percentile`` of one call's latency (the model's,
    with the service's own dependency latency). Each run: ``requests`` requests at ``rate``
    per second, ``slow_rate`` of the dependency calls slow (``SLOW_LATENCY``). Keys: ``"N = 5"``,
    ``"N = 5, hedged"``; ``meta`` says the width and the hedge delay.

    The load comes from ``processes`` child processes (``run_load``'s ``processes``; 0: this
    process). One child by default: the service answers 200 requests/s of 5 to 20 calls each
    in this process, and a generator sharing its interpreter was measured behind schedule
    (send lag p99 16-84 ms on an idle 2-core machine, against 2-5 ms from a child).

    About ``len(widths) + 1`` times ``requests / rate`` seconds, plus about a second per run
    to start the child. Judge each run with ``run_health`` (``live_health`` for all) before
    reading its numbers: the service and the generator share this host.
    """
    check_real("rate", rate, low=0, low_open=True)
    requests = check_int("requests", requests, low=1, high=100_000)
    model = tail_model(slow_rate, fast=live.dependency_latency(server))
    delay = hedge_delay_at(model, percentile)
    slow = [Fault(start=0.0, dependency_slow_rate=slow_rate, dependency_slow_latency=SLOW_LATENCY,
                  name=f"{slow_rate:.0%} of calls slow")]
    load = Load(rate=rate, requests=requests)
    plan: list[tuple[str, int, float | None]] = [(f"N = {n}", n, None) for n in widths]
    plan.append((f"N = {hedge_width}, hedged", hedge_width, delay))
    runs = {}
    for name, width, d in plan:
        run = live.fanout_run(server, width=width, load=load, hedge_delay=d, faults=slow,
                              seed=seed, processes=processes, progress=progress)
        run.meta.update(width=width, hedge_delay=d, percentile=percentile, model=model)
        runs[name] = run
    return runs


def run_health(run: RunResult) -> Health:
    """``analysis.health.measurement_health`` of one of ``live_tail``'s runs. The scale is the
    hedge delay at the run's percentile (``hedge_delay_at`` of the run's model, which has the
    service's own dependency latency): the time a fast call must stay under not to be hedged.
    A host that delays sends, or wakes the service's timers late, by a share of it turns fast
    calls into hedges and adds to the latencies the tail is read from. Judged: the client's
    waits (send lag, client wait) and, as the work overshoot, the service's own account of
    its timers' lateness: the mean overrun of the fan-out's calls beyond their drawn latency
    (``/api/fanout``'s ``Server-Timing: overrun``, ``meta["server_overrun"]``;
    ``analysis.health.work_overshoot``)."""
    scale = hedge_delay_at(run.meta["model"], run.meta["percentile"])
    return measurement_health(run, scale=scale)


def _health_cell(health: Health) -> str:
    return (f"{health.verdict}: {'; '.join(health.reasons)}" if health.spoiled
            else health.verdict)


def live_health(live_runs: Mapping[str, RunResult]) -> pd.DataFrame:
    """``run_health`` of each of ``live_tail``'s runs, one row per run
    (``analysis.health.health_table``): each delay the host added, its limit, the verdict and
    why. Read it before the live columns of ``hedge_table``."""
    return health_table({name: run_health(run) for name, run in live_runs.items()})


# -- plots -----------------------------------------------------------------------------------

_COLORS = {"no hedging": "#c62828", "hedged": "#1565c0"}


#: The lowest share the tail figure shows.
_FLOOR = 1e-4


class HedgedTailFigure(InPlaceFigure):
    """The user request's latency tail, ``P(request > t)`` on a log scale, without and with
    hedging: theory lines (``TailModel.request_survival``), the simulated runs as steps, and
    ``live_runs`` (from ``live_tail``, of the same width) as dots; the p99 and p99.9 levels and
    the hedge delay marked. Results: ``hedging_comparison``'s ``{"no hedging": ...,
    "hedged": ...}``. ``ax``: draw there instead of a new figure. The tail panel updates it in
    place; ``plot_tail`` draws its right-hand panel with it."""

    def __init__(self, *, live_runs: Sequence[RunResult] = (), ax: Axes | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        self.live_runs, self.given_ax = tuple(live_runs), ax

    def build(self, runs: Mapping[str, RunResult]) -> Figure:
        figure, ax = self.axes_or_new(self.given_ax, figsize=(9.5, 3.6))
        self.ax = ax
        self.curves: dict[str, tuple[Line2D, Line2D]] = {}
        for name in ("no hedging", "hedged"):
            color = _COLORS[name]
            (theory,) = ax.plot([], [], color=color, lw=1.2, label=f"{name}, theory")
            (simulated,) = ax.step([], [], where="post", color=color, lw=2.2, alpha=0.45,
                                   label=f"{name}, simulated")
            self.curves[name] = (theory, simulated)
        self.live_dots = []
        for run in self.live_runs:
            name = "hedged" if run.meta.get("hedge_delay") is not None else "no hedging"
            spoiled = ", spoiled by the host" if run_health(run).spoiled else ""
            self.live_dots.append(ax.plot([], [], "o", ms=2.5, color=_COLORS[name],
                                          label=f"{name}, live{spoiled}")[0])
        self.levels = []
        for q, style in ((0.99, ":"), (0.999, "--")):
            ax.axhline(1 - q, color="#555", ls=style, lw=0.8)
            self.levels.append((q, ax.annotate(f"p{100 * q:g}", (0.0, 1 - q),
                                               fontsize="small", ha="right", va="bottom",
                                               color="#555")))
        self.delay_line = ax.axvline(0.0, color=_COLORS["hedged"], ls="-.", lw=0.8)
        self.delay_note = ax.annotate(" hedge delay", (0.0, 1.2e-4), rotation=90,
                                      fontsize="small", va="bottom", ha="right",
                                      color=_COLORS["hedged"])
        # live requests slower than the view are counted here, never dropped unseen
        self.beyond = ax.annotate("", (0.99, 0.8), xycoords="axes fraction", ha="right",
                                  va="top", fontsize="x-small", color="#b71c1c",
                                  bbox={"facecolor": "white", "alpha": 0.85,
                                        "edgecolor": "none"})
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # unlabelled minor ticks cost half the drawing
        ax.set_ylim(_FLOOR, 1.2)
        ax.set_xlabel("user request latency t (ms)")
        ax.set_ylabel("share of requests slower than t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
        return figure

    def update(self, runs: Mapping[str, RunResult]) -> None:
        hedged = runs["hedged"]
        model: TailModel = hedged.meta["model"]
        width, delay = hedged.meta["width"], hedged.meta["hedge_delay"]
        top = 1.2 * model.slow_latency
        t = np.linspace(0.0, top, 400)
        for name, d in (("no hedging", None), ("hedged", delay)):
            theory, simulated = self.curves[name]
            survival = [model.request_survival(x, width, d) for x in t]
            theory.set_data(*clip_to_view(t * 1e3, survival, _FLOOR, 1.2, log=True))
            simulated.set_data(*_survival_steps(runs[name], steps=True))
        beyond = []
        for dots, run in zip(self.live_dots, self.live_runs, strict=True):
            dots.set_data(*_survival_steps(run, steps=False))
            latency = run.requests["latency"].to_numpy()
            slower = latency > top
            if slower.any():
                name = "hedged" if run.meta.get("hedge_delay") is not None else "no hedging"
                beyond.append(f"{name}: {int(slower.sum())} of {latency.size} "
                              f"(up to {1e3 * latency.max():.0f} ms)")
        self.beyond.set_text("live requests beyond the axis →\n" + "\n".join(beyond)
                             if beyond else "")
        for q, note in self.levels:
            note.xy = note.xyann = (top * 1e3, 1 - q)  # the text sits on the point
        self.delay_line.set_xdata([delay * 1e3, delay * 1e3])
        self.delay_note.xy = self.delay_note.xyann = (delay * 1e3, 1.2e-4)
        self.ax.set_xlim(0, top * 1e3)
        self.ax.set_title(f"Fan-out to {width} calls, {model.slow_rate:.1%} of calls slow",
                          fontsize="medium")


def _survival_steps(run: RunResult, *, steps: bool) -> tuple[np.ndarray, np.ndarray]:
    """A run's empirical ``P(latency > t)``, t in ms, above zero and cut to the figure's
    view."""
    latency = np.sort(run.requests["latency"].to_numpy())
    survival = 1.0 - np.arange(1, latency.size + 1) / latency.size
    keep = survival > 0
    if not steps:  # dots: those in view
        keep &= survival >= _FLOOR
        return latency[keep] * 1e3, survival[keep]
    return clip_to_view(latency[keep] * 1e3, survival[keep], _FLOOR, 1.2, log=True, steps=True)


def plot_tail(shares: pd.DataFrame, sim: Mapping[str, RunResult],
              live_runs: Mapping[str, RunResult] | None = None) -> Any:
    """Two panels: the share of slow user requests against the fan-out width (theory curve,
    simulated and live points), and the hedging comparison's latency tail (theory lines,
    simulated and live). Live runs the host's load spoiled (``run_health``) are named in a
    warning above both, and their dots labelled so."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained",
                                      width_ratios=(1, 1.5))
    hedged = sim["hedged"]
    model: TailModel = hedged.meta["model"]
    n = np.unique(np.geomspace(1, max(shares.index.max(), 100), 200).round().astype(int))
    left.plot(n, [100 * model.slow_share(int(k)) for k in n], color="#37474f",
              label="1 − (1 − p)^N")
    left.plot(shares.index, shares["simulated (%)"], "s", color="#90a4ae", label="simulated")
    if "live (%)" in shares:
        left.plot(shares.index, shares["live (%)"], "o", color="#c62828", label="live")
    left.set_xscale("log")
    left.set_xlabel("fan-out width N (calls per user request)")
    left.set_ylabel("user requests waiting for a slow call (%)")
    left.set_title(f"{model.slow_rate:.0%} of calls slow", fontsize="medium")
    left.set_ylim(0, 100)
    left.grid(alpha=0.3)
    left.legend(fontsize="small", loc="upper left")
    live_list = [r for r in (live_runs or {}).values()
                 if r.meta.get("width") == hedged.meta["width"]]
    HedgedTailFigure(live_runs=live_list, ax=right, pyplot=True).draw(sim)
    spoiled = [name for name, run in (live_runs or {}).items() if run_health(run).spoiled]
    if spoiled:
        fig.suptitle(f"WARNING: live runs spoiled by the host's load ({', '.join(spoiled)}): "
                     "their points describe the machine as much as the service",
                     color="#b71c1c", fontsize="medium")
    return fig


# -- panel -----------------------------------------------------------------------------------

def tail_panel(*, seed: int = 0, requests: int | None = None) -> Panel:
    """Sliders: fan-out width, slow-call probability, hedge delay percentile. The figure is the
    user request's latency tail without and with hedging (theory and simulated); the table
    gives the slow share, p99, p99.9 and extra calls, theory beside simulated. ``requests``
    per run: by default ``hedging_requests(width)``, the rule of ``hedging_comparison``, so
    that at any setting the panel shows what ``hedge_table(hedging_comparison(...,
    seed=seed))`` shows for it."""

    plain_runs: OrderedDict[tuple[int, float], RunResult] = OrderedDict()  # the last few

    def run(width: int, slow_rate: float, percentile: float) -> dict[str, RunResult]:
        # the run without hedging does not depend on the percentile: a move of the hedge
        # delay alone simulates only the hedged run
        key = (width, slow_rate)
        results = hedging_comparison(width, slow_rate=slow_rate, percentile=percentile,
                                     requests=requests, seed=seed, plain=plain_runs.get(key))
        plain_runs[key] = results["no hedging"]
        plain_runs.move_to_end(key)
        while len(plain_runs) > 4:
            plain_runs.popitem(last=False)
        return results

    def table(results: dict[str, RunResult]) -> pd.DataFrame:
        hedged, plain = results["hedged"], results["no hedging"]
        model: TailModel = hedged.meta["model"]
        width, delay = hedged.meta["width"], hedged.meta["hedge_delay"]
        out = hedge_table(results)
        out.insert(0, ("≥ 300 ms (%)", "simulated"),
                   [100 * _slow_share(r, SLOW_LATENCY) for r in (plain, hedged)])
        out.insert(0, ("≥ 300 ms (%)", "theory"),
                   [100 * model.request_survival(SLOW_LATENCY * (1 - 1e-9), width, d)
                    for d in (None, delay)])
        return out.round(1)

    return Panel(
        run,
        [Control.slider("width", 1, 100, HEDGE_WIDTH, label="fan-out width N"),
         Control.slider("slow_rate", 0.001, 0.05, 0.01, step=0.001, label="slow-call probability"),
         Control.slider("percentile", 50.0, 99.9, 95.0, step=0.1,
                        label="hedge delay percentile")],
        HedgedTailFigure(), table=table, title="Tail at scale: fan-out and hedged requests",
    )
