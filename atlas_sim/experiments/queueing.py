"""Notebook 03's queueing section: the hockey stick of response time against utilisation
(simulated, Erlang C theory and live), Little's law and the request counts checked on the live
service's own ``/metrics``, and head-of-line blocking behind one slow request.

Every simulated figure is in units of the mean service time S, so one plot holds any service
speed: ``W / S`` is the mean response time in service times, 1 for an idle server.

The live part runs against the in-kernel service (``live.start_service``). A real request costs
more than the model's work, in two ways (see ``live.Calibration``): a round trip outside the
queue (client, HTTP, middleware), and a little extra time holding its work slot (the event loop
wakes a sleeping request late). Both are measured in the same run, from the service's own
``Server-Timing`` header (queue wait and work of each request), instead of a separate
calibration: the round trip is each request's latency minus its queue wait and its work (the
table gives the median), and the slot time actually held is the effective service time S. The
live points are then placed at the utilisation the service really had, ``lambda S / c``, and
their response time is the latency less the round trip, in units of S: the quantities Erlang C
speaks of.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from prometheus_client.parser import text_string_to_metric_families

from ..analysis.figures import InPlaceFigure, clip_to_view
from ..analysis.health import Health, measurement_health
from ..analysis.percentiles import exact_percentiles
from ..analysis.queueing import MGc, MMc, squared_cv
from ..analysis.stats import Interval, batch_means
from ..policies import ClientPolicy
from ..progress import Progress
from ..results import RunResult
from ..server_config import WORKERS_RENAMED, ServerConfig
from ..service import LiveServer, run_load
from ..sim import Fault, Scenario, simulate
from ..validation import check_choice, check_int, check_real, refuse_renamed
from ..widgets import Control, Panel
from ..workload import Distribution, Load, rng_streams
from .live import Calibration, interruptible, reset

__all__ = [
    "MEAN_BATCHES",
    "SERVICE_SHAPES",
    "SHORT_RUN",
    "SHORT_RUN_NOTE",
    "LivePoint",
    "LiveSweep",
    "count_table",
    "head_of_line",
    "head_of_line_table",
    "hockey_stick",
    "littles_law_table",
    "live_sweep",
    "live_table",
    "mean_interval",
    "plot_head_of_line",
    "plot_hockey_stick",
    "queueing_panel",
    "run_length",
    "scrape",
]

#: Utilisations of the simulated hockey stick.
UTILISATIONS = (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Batches of a simulated mean's interval: a few long ones (see ``mean_interval``).
MEAN_BATCHES = 5
#: A run shorter than this many relaxation times is flagged: its interval is too narrow.
SHORT_RUN = 100.0
#: The flag, as the table and the figure show it.
SHORT_RUN_NOTE = f"run < {SHORT_RUN:g} relaxation times: interval too narrow"
#: The service-time shapes of the panel, all of mean 1: the M, the D and a long tail.
SERVICE_SHAPES = {
    "exponential": Distribution(mean=1.0),
    "constant": Distribution(mean=1.0, kind="constant"),
    "lognormal": Distribution(mean=1.0, kind="lognormal", shape=1.0),
}
_COLORS = {1: "tab:red", 2: "tab:blue", 4: "tab:purple", 8: "tab:green"}
_WORK: Final = "/api/work"
#: What the functions here say to a caller who still writes ``servers=``.


def _color(workers: int) -> str:
    return _COLORS.get(workers, "tab:gray")


# -- simulated and theory ------------------------------------------------------------------


def _simulate_queue(workers: int, utilisation: float, customers: int, seed: int,
                    service: Distribution = SERVICE_SHAPES["exponential"]) -> RunResult:
    """An M/G/c queue (c = ``workers``) of mean service 1 at ``utilisation``, about
    ``customers`` arrivals."""
    rate = utilisation * workers / service.mean
    return simulate(Scenario(load=Load(rate=rate, duration=customers / rate),
                             server=ServerConfig(workers=workers, service_time=service),
                             seed=seed))


def _steady(run: RunResult, warmup: float) -> np.ndarray:
    """Latencies of the requests sent after the first ``warmup`` share of the run (the queue
    starts empty, which biases the first requests low)."""
    requests = run.requests
    keep = requests["t_start"].to_numpy() >= warmup * run.duration
    return requests["latency"].to_numpy()[keep]


def mean_interval(latency: np.ndarray, confidence: float = 0.95) -> Interval:
    """The 95% interval of a simulated queue's mean response time, from its ``latency``
    series (seconds or service times, in arrival order, warm-up already dropped): batch means
    over ``MEAN_BATCHES`` = 5 long batches, on the log scale (``analysis.stats.batch_means``).

    Measured over 1000 seeds of M/M/c runs of 10 000 customers (c = 1, 2, 8), the share of
    intervals that hold Erlang C's mean was 95% at ρ = 0.5, 94% at 0.7, 93% at 0.8 and 91% at
    0.9 (20 batches on the linear scale, used before: 95%, 93%, 91-92% and 83-84%, missing
    low). Near saturation no interval from one short run reaches 95%: a run must last many
    relaxation times (``run_length``), and the table flags the ones that do not.
    """
    return batch_means(latency, batches=MEAN_BATCHES, confidence=confidence, scale="log")


def run_length(run: RunResult, warmup: float, queue: MMc, *, scv: float = 1.0) -> float:
    """The part of ``run`` kept after its ``warmup`` share, in relaxation times of ``queue``
    (``MMc.relaxation_time``, in the run's time unit). For a service-time shape of squared
    coefficient of variation ``scv`` other than exponential's 1, the relaxation time is
    scaled by (1 + scv) / 2, as in the heavy-traffic (diffusion) approximation of a queue,
    whose variability is (c_a² + c_s²) / 2 (Whitt, "Planning queueing simulations", 1989).

    Raises ValueError for a ``warmup`` outside [0, 1) (the share of the run discarded) or an
    ``scv`` that is not a finite number >= 0."""
    warmup = check_real("warmup", warmup, low=0, high=1, high_open=True)
    scv = check_real("scv", scv, low=0)
    relaxation = queue.relaxation_time * (1.0 + scv) / 2.0
    return (1.0 - warmup) * run.duration / relaxation


def hockey_stick(*, workers: Sequence[int] = (1, 2, 8),
                 utilisations: Sequence[float] = UTILISATIONS, customers: int = 10_000,
                 seed: int = 0, warmup: float = 0.05, **renamed: object) -> pd.DataFrame:
    """Mean and p99 response time against utilisation, simulated M/M/c beside Erlang C.

    One simulated run of about ``customers`` Poisson arrivals per (workers c, utilisation)
    point,
    exponential service of mean 1, the first ``warmup`` share of each run discarded (the
    queue starts empty, which biases the first requests low; 5% of 10 000 arrivals is 1.5
    relaxation times at ρ = 0.9 and 7 at 0.8, and leaves a bias of about 1% of the mean,
    measured). One row per point, in units of the mean service time: ``W/S`` simulated with
    its 95% interval (``mean_interval``: 5 long batches, on the log scale; consecutive
    requests in a queue are correlated, see ``analysis.stats``), ``p99/S`` simulated, Erlang
    C's mean and p99 (``MMc``), ``requests`` kept, ``relaxation times`` (the kept run's
    length in M/M/c relaxation times, ``run_length``) and ``note``: ``SHORT_RUN_NOTE`` when
    that is below ``SHORT_RUN`` = 100, else empty. Point ``k`` (in table order) runs with
    seed ``seed + k``: independent points, so their errors scatter around the curve rather
    than all leaning one way.

    Near saturation a run must be long to settle (with one worker the queue's relaxation time
    grows like 1 / (1 - sqrt(rho))**2 service times: 380 at ρ = 0.9, so 10 000 arrivals are
    29 of them), so the default grid stops at 0.9, where 10 000 arrivals give the one-worker
    mean to about 30% (its interval says how well, and is flagged as too narrow: over many
    seeds it holds the true mean about 91% of the time, not 95%) and the p99 only roughly.

    Raises ValueError for a worker count outside 1..64, a utilisation outside (0, 1), fewer
    than 1000 customers, or ``servers=`` (now ``workers=``).
    """
    refuse_renamed("hockey_stick", renamed, WORKERS_RENAMED)
    customers = check_int("customers", customers, low=1000)
    check_real("warmup", warmup, low=0, high=0.5)
    rows: list[dict[str, float | str]] = []
    for c in workers:
        c = check_int("workers", c, low=1, high=64)
        for rho in utilisations:
            rho = check_real("utilisation", rho, low=0, high=1, low_open=True, high_open=True)
            run = _simulate_queue(c, rho, customers, seed + len(rows))
            latency = _steady(run, warmup)
            ci = mean_interval(latency)
            theory = MMc(arrival_rate=rho * c, service_rate=1.0, workers=c)
            length = run_length(run, warmup, theory)
            rows.append({"workers": c, "utilisation": rho, "W/S simulated": ci.mean,
                         "W/S low": ci.low, "W/S high": ci.high,
                         "W/S Erlang C": theory.W,
                         "p99/S simulated": float(exact_percentiles(latency, [99])[0]),
                         "p99/S Erlang C": theory.quantile(0.99),
                         "requests": int(latency.size),
                         "relaxation times": round(length),
                         "note": SHORT_RUN_NOTE if length < SHORT_RUN else ""})
    return pd.DataFrame(rows)


def _theory_curves(workers: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, p99 = [], []
    for rho in grid:
        q = MMc(arrival_rate=rho * workers, service_rate=1.0, workers=workers)
        mean.append(q.W)
        p99.append(q.quantile(0.99))
    return np.array(mean), np.array(p99)


def plot_hockey_stick(table: pd.DataFrame, live: pd.DataFrame | None = None) -> Any:
    """Two axes: mean and p99 response time (in service times) against utilisation; lines are
    Erlang C, markers the simulation (with its 95% interval; hollow where the run was too
    short for an honest interval, the table's ``note``), diamonds the live points
    (``live_table``; mean only: a few seconds per point hold too few requests for a p99).
    No live point leaves the plot unseen: one the host's load spoiled is a hollow diamond and
    counted in the title, one saturated (measured utilisation >= 1) or above the axis is drawn
    at the edge as a triangle with its value written beside it (see ``_draw_live_points``)."""
    fig, (mean_ax, p99_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    grid = np.linspace(0.02, 0.96, 48)
    for c in sorted({int(x) for x in table["workers"]}):
        rows = table[table["workers"] == c]
        color = _color(c)
        mean, p99 = _theory_curves(c, grid)
        mean_ax.plot(grid, mean, color=color, lw=1.5, label=f"c = {c}, Erlang C")
        p99_ax.plot(grid, p99, color=color, lw=1.5, label=f"c = {c}, Erlang C")
        short = (rows["note"] != "").to_numpy() if "note" in rows else np.zeros(len(rows), bool)
        for part, face, label in ((~short, color, f"c = {c}, simulated"), (short, "white", None)):
            if not part.any():
                continue
            some = rows[part]
            err = np.vstack([some["W/S simulated"] - some["W/S low"],
                             some["W/S high"] - some["W/S simulated"]])
            mean_ax.errorbar(some["utilisation"], some["W/S simulated"], yerr=err, fmt="o",
                             color=color, markerfacecolor=face, ms=4, capsize=2, label=label)
            p99_ax.plot(some["utilisation"], some["p99/S simulated"], "o", color=color,
                        markerfacecolor=face, ms=4, label=label)
    if "note" in table and (table["note"] != "").any():
        p99_ax.plot([], [], "o", color="0.3", markerfacecolor="white", ms=4,
                    label=f"hollow: {SHORT_RUN_NOTE}")
    mean_ax.set_ylim(0, 16)
    mean_ax.set_ylabel("mean response time / service time")
    mean_ax.set_title("Mean")
    p99_ax.set_ylim(0, 50)
    p99_ax.set_ylabel("p99 response time / service time")
    p99_ax.set_title("99th percentile")
    for ax in (mean_ax, p99_ax):
        ax.set_xlim(0, 1)
        ax.set_xlabel("utilisation ρ")
        ax.grid(alpha=0.3)
    live_marks = _draw_live_points(mean_ax, live) if live is not None and len(live) else []
    p99_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if live_marks:
        mean_ax.legend(live_marks, [m.get_label() for m in live_marks], loc="upper left",
                       fontsize="small")
    return fig


# -- live --------------------------------------------------------------------------------


#: What a live row's "steady state" column says when the measured utilisation is 1 or more.
SATURATED = "no: saturated (measured ρ ≥ 1), no steady state; Erlang C's mean is infinite"


def _draw_live_points(ax: Axes, live: pd.DataFrame) -> list[Line2D]:
    """The live points of ``live_table`` on the mean axes ``ax`` (limits already set); returns
    the legend's handles.

    Healthy points are filled diamonds, points the host's load spoiled (``measurement`` not
    ``"healthy"``) hollow ones, and the title counts them. A point outside the view is never
    dropped: a saturated one (measured utilisation >= 1, where the queue has no steady state
    and Erlang C no finite mean) sits on the right edge as a right-pointing triangle, one
    above the axis on its top edge as an up-pointing triangle, each with its values written
    beside it.
    """
    c = int(live["workers"].iloc[0])
    color = _color(c)
    x_high, (y_low, y_high) = ax.get_xlim()[1], ax.get_ylim()
    rho = live["utilisation (measured)"].to_numpy(dtype=float)
    ws = live["W/S live"].to_numpy(dtype=float)
    spoiled = ((live["measurement"] != "healthy").to_numpy() if "measurement" in live
               else np.zeros(len(live), dtype=bool))
    off_right = rho >= 1.0  # saturated: no steady state, drawn on the right edge
    off_top = (ws > y_high) & ~off_right
    inside = ~off_right & ~off_top
    x, y = np.minimum(rho, x_high), np.clip(ws, y_low, y_high)
    seconds = f"{live['seconds'].iloc[0]:g} s per point"
    handles: list[Line2D] = []
    groups = (
        (inside & ~spoiled, "D", color, f"c = {c}, live ({seconds})"),
        (inside & spoiled, "D", "none", f"c = {c}, live, spoiled by the host's load"),
        (off_right, ">", color, "live, saturated: at the right edge"),
        (off_top, "^", color, "live, above the axis: at its top"),
    )
    for keep, marker, face, label in groups:
        if not keep.any():
            continue
        handles += ax.plot(x[keep], y[keep], marker, ls="none", ms=7, color=color,
                           markerfacecolor=face, markeredgecolor="black", clip_on=False,
                           label=label)
    for i in np.flatnonzero(~inside):
        text = (f"ρ = {rho[i]:.2f} ≥ 1: saturated,\nno steady state, W/S = {ws[i]:.1f}"
                if off_right[i] else f"W/S = {ws[i]:.1f}")
        if spoiled[i]:
            text += "\n(spoiled by the host's load)"
        ax.annotate(text, (x[i], y[i]), xytext=(-8, -4), textcoords="offset points",
                    ha="right", va="top", fontsize="x-small", color="black",
                    annotation_clip=False)
    if spoiled.any():
        ax.set_title(f"Mean\nlive: {int(spoiled.sum())} of {len(live)} points spoiled by the "
                     "host's load (see the table)", fontsize="medium", color="#b71c1c")
    return handles


def scrape(client: httpx.Client, *, endpoint: str = _WORK,
           method: str = "GET") -> tuple[dict[int, int], int]:
    """One read of the service's ``/metrics``: ``atlas_api_http_requests_total`` by status
    for ``method`` and ``endpoint`` (a route template), and its in-progress gauge."""
    response = client.get("/metrics")
    response.raise_for_status()
    counts: dict[int, int] = {}
    in_progress = 0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("endpoint") != endpoint or labels.get("method") != method:
                continue
            if sample.name == "atlas_api_http_requests_total":
                counts[int(labels["status"])] = round(float(sample.value))
            elif sample.name == "atlas_api_http_requests_in_progress":
                in_progress = round(float(sample.value))
    return counts, in_progress


_GAUGE = re.compile(r"^atlas_api_http_requests_in_progress\{([^}]*)\} (\S+)$", re.MULTILINE)


class _GaugePoller:
    """Reads the in-progress gauge of ``GET /api/work`` every ``interval`` seconds in a thread
    of its own while a run goes on: (time.monotonic at the middle of the scrape, value)."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="atlas-gauge-poller",
                                        daemon=True)

    def _poll(self) -> None:
        wanted = {'method="GET"', f'endpoint="{_WORK}"'}
        with httpx.Client(base_url=self.url, trust_env=False, timeout=5.0) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    text = client.get("/metrics").text
                except httpx.HTTPError as exc:  # the service went away: the run will say so
                    self.error = exc
                    return
                value = 0.0
                for labels, number in _GAUGE.findall(text):
                    if wanted <= set(labels.split(",")):
                        value = float(number)
                self.samples.append(((sent + time.monotonic()) / 2, value))
                self._stop.wait(self.interval)

    def __enter__(self) -> _GaugePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class LivePoint:
    """One load level of a live sweep: the generator's run, the in-progress gauge sampled
    during it (``gauge``: rows of (seconds on the run's clock, requests in progress)), and the
    service's request counter by status before and after (``GET /api/work`` only)."""

    utilisation: float
    run: RunResult
    gauge: np.ndarray
    before: dict[int, int]
    after: dict[int, int]


@dataclass(frozen=True, kw_only=True)
class LiveSweep:
    """A live sweep of offered load (``live_sweep``): the ``ServerConfig`` the service was
    built with (``server``: its ``workers`` and ``service_time`` are what the sweep offers load
    against, and its simulated twin runs the very same object), the ``seed`` of its streams
    and of the load, ``seconds`` per point."""

    server: ServerConfig
    seed: int
    seconds: float
    points: tuple[LivePoint, ...]

    @property
    def workers(self) -> int:
        """The service's workers: the c of M/M/c."""
        return self.server.workers

    @property
    def service_time(self) -> Distribution:
        """The service's work per request (``/api/work`` without a ``service_time``)."""
        return self.server.service_time


@interruptible
def live_sweep(server: LiveServer, *, utilisations: Sequence[float] = (0.3, 0.5, 0.7, 0.85),
               seconds: float = 1.5, poll_interval: float = 0.02,
               progress: bool = True) -> LiveSweep:
    """Offer ``server`` (from ``live.start_service``) open-loop Poisson load on ``/api/work``
    at each offered utilisation, ``seconds`` per point, and watch its ``/metrics`` meanwhile.

    Per point: ``POST /admin/reset`` (random streams rewound to the service's seed, so each
    point draws the service times a simulation with that seed draws), a scrape of the request
    counter, a run of ``rate = utilisation * workers / mean service time`` with the service's
    seed (the same arrivals as the simulated twin) and a patient client (10 s timeout, no
    retry), the gauge ``atlas_api_http_requests_in_progress`` read every ``poll_interval``
    seconds by a poller thread, then a last scrape once the gauge is back to 0 (the service
    counts a request before it lets the gauge go, so every answer is in the counter by then).

    Bounded: ``len(utilisations) * seconds`` of load (at most 60 s), on 127.0.0.1. Raises
    ValueError for a utilisation outside (0, 1.5], ``seconds`` outside (0, 15] or a
    ``poll_interval`` outside [0.005, 1].
    """
    state = server.app.state.atlas
    config: ServerConfig = state.server
    workers, service_time, seed = config.workers, config.service_time, state.seed
    if service_time.mean <= 0:
        raise ValueError(f"the service's service_time must have a mean > 0 for a sweep of "
                         f"utilisation, got {service_time!r}")
    seconds = check_real("seconds", seconds, low=0, high=15, low_open=True)
    check_real("poll_interval", poll_interval, low=0.005, high=1.0)
    levels = [check_real("utilisation", u, low=0, high=1.5, low_open=True)
              for u in utilisations]
    if len(levels) * seconds > 60:
        raise ValueError(f"utilisations x seconds must be at most 60 s of load, got "
                         f"{len(levels)} x {seconds} s")
    points = []
    # a context manager, so that the line ends "failed" (or "interrupted") when the sweep
    # raises, not "done"
    with (Progress(len(levels), desc="live sweep", unit="points", enabled=progress) as bar,
          httpx.Client(base_url=server.url, trust_env=False, timeout=5.0) as client):
        for level in levels:
            reset(server)
            before, _ = scrape(client)
            load = Load(rate=level * workers / service_time.mean, duration=seconds)
            with _GaugePoller(server.url, poll_interval) as poller:
                run = run_load(server.url, load=load, client=ClientPolicy(timeout=10.0),
                               seed=seed, path=_WORK, progress=False,
                               server_events=False)
            after = _settled_counts(client)
            if poller.error is not None:
                raise RuntimeError(f"reading /metrics failed during the run: "
                                   f"{poller.error!r}")
            origin = run.meta["origin_monotonic"]
            gauge = np.array([(t - origin, v) for t, v in poller.samples]).reshape(-1, 2)
            points.append(LivePoint(utilisation=level, run=run, gauge=gauge,
                                    before=before, after=after))
            bar.update()
    return LiveSweep(server=config, seed=seed, seconds=seconds, points=tuple(points))


def _settled_counts(client: httpx.Client, within: float = 5.0) -> dict[int, int]:
    """The request counter once no ``/api/work`` request is in progress."""
    deadline = time.monotonic() + within
    while True:
        counts, in_progress = scrape(client)
        if in_progress == 0:
            return counts
        if time.monotonic() > deadline:
            raise RuntimeError(f"{in_progress} request(s) still in progress after {within} s")
        time.sleep(0.01)


def _point_figures(point: LivePoint, sweep: LiveSweep) -> dict[str, float]:
    """What one live point measured, in seconds: arrival rate, mean latency, the median round
    trip, the mean time inside the service and the mean slot time (effective service)."""
    run = point.run
    latency = run.requests["latency"].to_numpy()
    queue = run.attempts["queue_wait"].to_numpy()
    work = np.asarray(run.meta["server_work"], dtype=float)
    return {"rate": len(latency) / sweep.seconds, "W": float(latency.mean()),
            "round trip": float(np.nanmedian(latency - queue - work)),
            "W inside": float(np.nanmean(queue + work)), "S": float(np.nanmean(work))}


def _health(point: LivePoint, sweep: LiveSweep) -> Health:
    """``measurement_health`` of one live point: the scale is the mean service time, the work
    asked for the mean of the service times drawn for the attempts that did work (the service
    draws them in order of slot acquisition; a shed request draws none). Its ``"work
    overshoot"`` figure (``analysis.health.work_overshoot``) is also the twin's
    ``Calibration.work_overhead`` in ``live_table``: one computation, one count."""
    worked = int(np.count_nonzero(~np.isnan(np.asarray(point.run.meta["server_work"],
                                                       dtype=float))))
    expected = (float(sweep.service_time.sample(rng_streams(sweep.seed)["service"],
                                                worked).mean()) if worked else None)
    return measurement_health(point.run, scale=sweep.service_time.mean, expected_work=expected)


def live_table(sweep: LiveSweep) -> pd.DataFrame:
    """The live points of the hockey stick, one row per offered utilisation.

    Columns: requests; utilisation (measured) ``lambda S / c`` with S the mean slot time the
    service reported (its work plus the event loop's lateness); the mean latency W and the
    median round trip (ms); ``W/S live`` = (W - round trip) / S; Erlang C at the measured
    utilisation; the simulated twin (``Scenario(server=sweep.server, path="/api/work")``, the
    service's own ``ServerConfig``, with the measured round trip and work overhead, the same
    arrivals and service times), as (W - round trip) / S too; the
    generator's p99 send lag (a few ms is the machine's noise; much more means the latencies
    include the generator's own delay, see ``live.generator_note``); ``steady state``:
    ``"yes"``, or for a measured utilisation of 1 or more ``SATURATED`` (the row is kept, its
    Erlang C is ``inf``); and ``measurement``: ``"healthy"`` or ``"spoiled by the host's
    load: ..."`` with the reasons, from ``analysis.health.measurement_health`` with the
    service's mean service time as the scale and the drawn service times as the work asked
    for (the send lag and the event loop's lateness, each against its limit).
    """
    rows = []
    c = sweep.workers
    for point in sweep.points:
        f = _point_figures(point, sweep)
        n = len(point.run.requests)
        rho = f["rate"] * f["S"] / c
        health = _health(point, sweep)
        calibration = Calibration(round_trip=f["round trip"], work_overhead=max(
            0.0, health.figures.get("work overshoot", 0.0)))
        twin = simulate(calibration.apply(Scenario(load=point.run.meta["load"],
                                                   server=sweep.server, path=_WORK,
                                                   seed=sweep.seed)))
        rows.append({
            "workers": c, "seconds": sweep.seconds, "utilisation (offered)": point.utilisation,
            "requests": n, "utilisation (measured)": rho,
            "W (ms)": 1e3 * f["W"], "round trip (ms)": 1e3 * f["round trip"],
            "S (ms)": 1e3 * f["S"],
            "W/S live": (f["W"] - f["round trip"]) / f["S"],
            "W/S Erlang C": (MMc(arrival_rate=rho * c, service_rate=1.0, workers=c).W
                             if rho < 1 else math.inf),
            "W/S twin": (float(twin.requests["latency"].mean()) - f["round trip"]) / f["S"],
            "send lag p99 (ms)": 1e3 * float(point.run.meta["send_lag_p99"]),
            "steady state": "yes" if rho < 1 else SATURATED,
            "measurement": (f"{health.verdict}: {'; '.join(health.reasons)}" if health.spoiled
                            else health.verdict),
        })
    return pd.DataFrame(rows)


def littles_law_table(sweep: LiveSweep) -> pd.DataFrame:
    """Little's law on the live service, one row per point: L, the time average of the
    in-progress gauge sampled over the sending window, beside lambda W.

    lambda is the requests sent per second of the window. Two W: the generator's mean latency
    (from the scheduled send to the last byte) and the mean time inside the service (queue
    wait plus work, from ``Server-Timing``). The gauge counts a request from the service's
    Metrics layer to its end, which leaves out the round trip, so it should agree with the
    second; the first is larger by lambda times the round trip. The differences are relative
    to lambda W, in per cent. Over the window, lambda W is the exact time average of the
    number in the service (Little's law as an identity, up to requests that straddle the
    window's end); the gauge's mean is that average read at ``seconds / poll_interval``
    instants. ``L ± (95%)`` is the error of such a reading: 1.96 standard deviations of the
    readings over the square root of their number, as if they were independent (close to
    true when readings are farther apart than a request's stay; when they are closer,
    consecutive readings see the same path and the error is smaller). At light load, where
    the gauge reads mostly 0 or 1, a difference of 20% is within it.
    """
    rows = []
    for point in sweep.points:
        f = _point_figures(point, sweep)
        t, value = point.gauge[:, 0], point.gauge[:, 1]
        window = (t >= 0) & (t <= sweep.seconds)
        readings = value[window]
        L = float(readings.mean()) if readings.size else math.nan
        spread = (1.96 * float(readings.std(ddof=1)) / math.sqrt(readings.size)
                  if readings.size >= 2 else math.nan)
        rows.append({
            "utilisation (offered)": point.utilisation, "gauge readings": int(readings.size),
            "L (gauge)": L, "L ± (95%)": spread, "λ (1/s)": f["rate"],
            "W generator (ms)": 1e3 * f["W"], "λ·W generator": f["rate"] * f["W"],
            "difference generator (%)": 100 * (L / (f["rate"] * f["W"]) - 1),
            "W in service (ms)": 1e3 * f["W inside"],
            "λ·W in service": f["rate"] * f["W inside"],
            "difference in service (%)": 100 * (L / (f["rate"] * f["W inside"]) - 1),
        })
    return pd.DataFrame(rows).set_index("utilisation (offered)")


def count_table(sweep: LiveSweep) -> pd.DataFrame:
    """The service's own count of ``GET /api/work`` requests (``/metrics``, after minus
    before) beside the generator's count of attempts, by status, one row per point and status.

    They agree exactly when every attempt reached the service and got its answer: statuses
    of the client's own making (``Status``: 599 for a client timeout, 598 a refused
    connection) are counted by the service as what they came to there (499 for a client that
    went away, or the answer it sent too late).
    """
    rows = []
    for point in sweep.points:
        seen, times = np.unique(point.run.attempts["status"].to_numpy(), return_counts=True)
        mine = {int(status): int(n) for status, n in zip(seen, times, strict=True)}
        statuses = sorted(set(mine) | set(point.after) | set(point.before))
        for status in statuses:
            served = point.after.get(status, 0) - point.before.get(status, 0)
            if served == 0 and status not in mine:
                continue
            generated = int(mine.get(status, 0))
            rows.append({"utilisation (offered)": point.utilisation, "status": status,
                         "generator": generated, "service /metrics": served,
                         "difference": served - generated})
    return pd.DataFrame(rows).set_index(["utilisation (offered)", "status"])


# -- head-of-line blocking -------------------------------------------------------------------


def head_of_line(*, workers: Sequence[int] = (1, 2, 8), utilisation: float = 0.8,
                 service_time: float = 0.02, slow: float = 1.0, at: float = 2.0,
                 duration: float = 8.0, **renamed: object) -> dict[str, RunResult]:
    """One slow request in a FIFO queue, simulated: everything else constant, so that what
    you see is the slow request alone.

    Requests arrive evenly spaced at ``utilisation * c / service_time`` per second and each
    needs exactly ``service_time`` seconds, so with ``c`` workers none waits; except one, the
    first sent at or after ``at`` seconds, whose handling takes ``slow`` seconds more (a
    ``Fault`` window of ``added_latency`` that only its service start falls in). One run per
    worker count, labelled ``"c = 1"``...; the per-worker utilisation is the same in each.

    Raises ValueError for a utilisation outside (0, 1), a non-positive ``service_time`` or
    ``slow``, ``at`` not in (0, duration / 2], or ``servers=`` (now ``workers=``).
    """
    refuse_renamed("head_of_line", renamed, WORKERS_RENAMED)
    check_real("utilisation", utilisation, low=0, high=1, low_open=True, high_open=True)
    check_real("service_time", service_time, low=0, low_open=True)
    check_real("slow", slow, low=0, low_open=True)
    check_real("duration", duration, low=0, low_open=True)
    check_real("at", at, low=0, high=duration / 2, low_open=True)
    runs = {}
    for c in workers:
        c = check_int("workers", c, low=1, high=64)
        rate = utilisation * c / service_time
        t_slow = math.ceil(at * rate - 1e-9) / rate  # the first evenly spaced send >= at
        margin = 0.25 / rate
        fault = Fault(start=max(0.0, t_slow - margin), end=t_slow + margin, added_latency=slow,
                      name="one slow request")
        runs[f"c = {c}"] = simulate(Scenario(
            load=Load(rate=rate, duration=duration, process="constant"),
            server=ServerConfig(workers=c, service_time=Distribution(mean=service_time,
                                                                     kind="constant")),
            faults=(fault,)))
    return runs


def head_of_line_table(runs: dict[str, RunResult]) -> pd.DataFrame:
    """Per run of ``head_of_line``: the slow request's latency, how many other requests it
    delayed and the worst of them, how long until requests were served at once again, and
    the fluid estimate of that time: a job of x = service + slow seconds on one of c workers
    at utilisation rho leaves a backlog that lasts x / (c (1 - rho)) (for c = 1, the busy
    period x / (1 - rho)), when c rho > c - 1; else the other workers absorb the load and
    nothing waits."""
    rows = {}
    for name, run in runs.items():
        scenario: Scenario = run.meta["scenario"]
        fault = scenario.faults[0]
        (config,) = scenario.configs  # one instance
        service, c = config.service_time.mean, config.workers
        rate = scenario.load.rate
        assert rate is not None
        rho = rate * service / c
        req = run.requests
        latency = req["latency"].to_numpy()
        sent = req["t_start"].to_numpy()
        is_slow = (sent >= fault.start) & (sent < fault.end)
        delayed = (~is_slow) & (latency > service + 1e-9)
        x = service + fault.added_latency
        estimate = x / (c * (1 - rho)) if c * rho > c - 1 else 0.0
        rows[name] = {
            "slow request (s)": float(latency[is_slow].max()),
            "requests delayed": int(delayed.sum()),
            "worst delayed (s)": float(latency[delayed].max()) if delayed.any() else 0.0,
            "disturbed for (s)": (float(req["t_end"].to_numpy()[delayed].max()
                                        - sent[is_slow].min()) if delayed.any() else 0.0),
            "fluid estimate (s)": estimate,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("workers")


def plot_head_of_line(runs: dict[str, RunResult]) -> Any:
    """Each request's latency against its send time, one line per run, the slow request
    itself drawn apart (a star: it takes as long in every run)."""
    fig, ax = plt.subplots(figsize=(9, 3.5), layout="constrained")
    slow_at = slow_latency = math.nan
    for name, run in runs.items():
        scenario: Scenario = run.meta["scenario"]
        fault = scenario.faults[0]
        req = run.requests
        sent, latency = req["t_start"].to_numpy(), req["latency"].to_numpy()
        is_slow = (sent >= fault.start) & (sent < fault.end)
        ax.plot(sent[~is_slow], latency[~is_slow], lw=1.2,
                color=_color(scenario.configs[0].workers),
                label=f"{name}: the other requests")
        slow_at, slow_latency = float(sent[is_slow][0]), float(latency[is_slow][0])
    ax.plot([slow_at], [slow_latency], "*", color="black", ms=12,
            label=f"the slow request ({slow_latency:.2f} s)")
    ax.axvspan(slow_at, slow_at + slow_latency, color="0.88", zorder=0,
               label="while it holds its worker")
    ax.set_xlabel("send time (s)")
    ax.set_ylabel("latency (s)")
    ax.set_title("One slow request in a FIFO queue (everything else constant)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


# -- the panel -------------------------------------------------------------------------------


def _panel_run(workers: int, utilisation: float, service: str, *, customers: int,
               seed: int) -> dict[str, Any]:
    shape = SERVICE_SHAPES[check_choice("service", service, tuple(SERVICE_SHAPES))]
    run = _simulate_queue(workers, utilisation, customers, seed, shape)
    latency = _steady(run, 0.05)
    scv = squared_cv(shape)
    length = run_length(run, 0.05, MMc(arrival_rate=utilisation * workers, service_rate=1.0,
                                       workers=workers), scv=scv)
    return {"workers": workers, "utilisation": utilisation, "service": service,
            "latency": latency, "ci": mean_interval(latency), "scv": scv,
            "relaxation times": length}


def _panel_table(result: dict[str, Any]) -> pd.DataFrame:
    c, rho, latency = result["workers"], result["utilisation"], result["latency"]
    mmc = MMc(arrival_rate=rho * c, service_rate=1.0, workers=c)
    mgc = MGc(arrival_rate=rho * c, service_rate=1.0, workers=c, scv=result["scv"])
    approx = "Pollaczek-Khinchine (exact)" if c == 1 else "Allen-Cunneen (approx.)"
    ci = result["ci"]
    length = result["relaxation times"]
    note = SHORT_RUN_NOTE if length < SHORT_RUN else ""
    rows = {
        f"simulated ({result['service']})": {
            "W/S": f"{ci.mean:.2f} [{ci.low:.2f}, {ci.high:.2f}]",
            "p50/S": f"{exact_percentiles(latency, [50])[0]:.2f}",
            "p99/S": f"{exact_percentiles(latency, [99])[0]:.2f}",
            "relaxation times": f"{length:.0f}", "note": note},
        f"M/G/{c}, {approx}": {"W/S": f"{mgc.W:.2f}", "p50/S": "", "p99/S": "",
                               "relaxation times": "", "note": ""},
        f"M/M/{c}, Erlang C (exponential)": {
            "W/S": f"{mmc.W:.2f}", "p50/S": f"{mmc.quantile(0.5):.2f}",
            "p99/S": f"{mmc.quantile(0.99):.2f}", "relaxation times": "", "note": ""},
    }
    return pd.DataFrame(rows).T


class _QueueingFigure(InPlaceFigure):
    """The panel's figure, updated in place. Left: the simulated mean (with its 95% interval)
    on the theory curves of mean response time against utilisation, M/M/c (Erlang C) and
    M/G/c for the chosen service shape. Right: the simulated response-time tail beside
    M/M/c's, on a log scale. Results: ``_panel_run``'s dict."""

    def build(self, result: dict[str, Any]) -> Figure:
        figure, (curve_ax, tail_ax) = self.subplots(1, 2, figsize=(10, 3.6))
        self.curve_ax, self.tail_ax = curve_ax, tail_ax
        (self.mmc_curve,) = curve_ax.plot([], [])
        (self.mgc_curve,) = curve_ax.plot([], [], color="black", ls="--")
        self.point = curve_ax.errorbar([0.0], [0.0], yerr=[[0.0], [0.0]], fmt="o",
                                       color="black", capsize=3,
                                       label="simulated (95% interval)")
        curve_ax.set_xlim(0, 1)
        curve_ax.set_xlabel("utilisation ρ")
        curve_ax.set_ylabel("mean response time / service time")
        curve_ax.grid(alpha=0.3)
        tail_ax.set_yscale("log")
        (self.simulated_tail,) = tail_ax.plot([], [], color="black")
        (self.mmc_tail,) = tail_ax.plot([], [], ls=":")
        tail_ax.set_xlabel("response time / service time")
        tail_ax.set_ylabel("P(response time > t)")
        tail_ax.grid(alpha=0.3)
        self.legend_labels: tuple[str, ...] | None = None
        return figure

    def update(self, result: dict[str, Any]) -> None:
        c, rho, latency = result["workers"], result["utilisation"], result["latency"]
        service, ci = result["service"], result["ci"]
        grid = np.linspace(0.02, 0.96, 40)
        mmc_curve = [MMc(arrival_rate=r * c, service_rate=1.0, workers=c).W for r in grid]
        mgc_curve = [MGc(arrival_rate=r * c, service_rate=1.0, workers=c, scv=result["scv"]).W
                     for r in grid]
        top = max(12.0, 1.2 * ci.high)
        self.mmc_curve.set_data(*clip_to_view(grid, mmc_curve, 0.0, top))
        self.mmc_curve.set_color(_color(c))
        self.mmc_curve.set_label(f"M/M/{c} (Erlang C)")
        self.mgc_curve.set_data(*clip_to_view(grid, mgc_curve, 0.0, top))
        self.mgc_curve.set_label(f"M/G/{c}, {service}")
        mark, (low_cap, high_cap), (bar,) = self.point.lines
        mark.set_data([rho], [ci.mean])
        short = result["relaxation times"] < SHORT_RUN
        mark.set_markerfacecolor("white" if short else "black")
        self.point.set_label(f"simulated (95% interval; {SHORT_RUN_NOTE})" if short
                             else "simulated (95% interval)")
        low_cap.set_data([rho], [ci.low])
        high_cap.set_data([rho], [ci.high])
        bar.set_segments([[(rho, ci.low), (rho, ci.high)]])
        self.curve_ax.set_ylim(0, top)

        ordered = np.sort(latency)
        share = 1.0 - np.arange(ordered.size) / ordered.size
        step = max(1, ordered.size // 400)  # a few hundred points draw the same curve
        bottom = max(1.0 / ordered.size, 1e-4)
        self.simulated_tail.set_data(*clip_to_view(ordered[::step], share[::step], bottom, 1.0,
                                                   log=True))
        self.simulated_tail.set_label(f"simulated ({service})")
        mmc = MMc(arrival_rate=rho * c, service_rate=1.0, workers=c)
        end = max(float(ordered[-1]), 1e-9)
        t = np.linspace(0.0, end, 60)
        self.mmc_tail.set_data(*clip_to_view(t, [mmc.tail(x) for x in t], bottom, 1.0,
                                             log=True))
        self.mmc_tail.set_color(_color(c))
        self.mmc_tail.set_label(f"M/M/{c} (Erlang C)")
        # x as autoscaling sets it for the whole curves (from 0 to the slowest response),
        # not for the parts left in view
        margin = plt.rcParams["axes.xmargin"] * end
        self.tail_ax.set_xlim(-margin, end + margin)
        self.tail_ax.set_ylim(bottom, 1.0)

        labels = (self.mmc_curve.get_label(), self.mgc_curve.get_label(),
                  self.point.get_label(), self.simulated_tail.get_label(),
                  self.mmc_tail.get_label())
        if labels != self.legend_labels:  # a legend copies its handles' styles: remade
            self.legend_labels = labels
            self.curve_ax.legend(loc="upper left", fontsize="small")
            self.tail_ax.legend(loc="upper right", fontsize="small")
        self.set_suptitle(f"c = {c}, ρ = {rho:.2f}, {service} service times")


def queueing_panel(*, customers: int = 6000, seed: int = 0) -> Panel:
    """Sliders over the simulated queue: workers c (1, 2 or 8), utilisation, and the shape of
    the service time (exponential, constant, lognormal with sigma 1), about ``customers``
    arrivals per run. The figure puts the simulated mean on the theory curves (Erlang C for
    exponential service; Pollaczek-Khinchine, exact, or Allen-Cunneen, approximate, for the
    chosen shape) and the simulated response-time tail beside M/M/c's."""
    customers = check_int("customers", customers, low=1000)

    def run(workers: int, utilisation: float, service: str) -> dict[str, Any]:
        return _panel_run(workers, utilisation, service, customers=customers, seed=seed)

    return Panel(
        run,
        [Control.dropdown("workers", (1, 2, 8), 1, label="workers c"),
         Control.slider("utilisation", 0.05, 0.95, 0.8, step=0.05, label="utilisation ρ"),
         Control.dropdown("service", tuple(SERVICE_SHAPES), "exponential",
                          label="service time")],
        _QueueingFigure(), table=_panel_table, title="Response time against utilisation",
    )
