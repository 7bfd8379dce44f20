"""Notebook 03, section 3: coordinated omission. One stall of the server, measured by a
closed-loop generator (each connection sends its next request only when the last one has been
answered, as ``wrk`` does) and by an open-loop one (requests leave on a schedule and are timed
from it, as ``wrk2`` does), simulated and live, beside the closed forms of
``analysis.omission``.

The simulator runs one load per scenario, so the simulated generators measure the same stall in
two runs of the same seed; live, both run at once against the one service, on one clock
(``run_load_async(start_at=...)``), and the open-loop run switches the stall on and off for
both. At the default settings the service is lightly loaded (about a tenth of its capacity), so
each generator's requests barely wait for the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import math
import time
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.figures import InPlaceFigure
from ..analysis.omission import (
    closed_loop_percentile,
    closed_loop_stalled,
    open_loop_percentile,
    open_loop_stalled,
)
from ..analysis.percentiles import QUANTILE_METHOD, exact_percentiles
from ..results import RunResult
from ..server_config import WORKERS_RENAMED, ServerConfig
from ..service import LiveServer
from ..service.loadgen import blocking, run_load_async
from ..sim import Scenario, simulate
from ..validation import check_int, check_real, refuse_renamed
from ..widgets import Control, Panel
from ..workload import Distribution, Fault, Load
from .live import interruptible, reset

__all__ = [
    "DEFAULTS",
    "GENERATORS",
    "PERCENTILES",
    "SpectraFigure",
    "base_latency",
    "live_omission",
    "omission_loads",
    "omission_panel",
    "omission_table",
    "open_loop_spectrum",
    "plot_spectra",
    "simulate_omission",
    "stall_fault",
    "stall_window",
    "stalled_samples",
]

#: The two ways of measuring, in the order shown.
GENERATORS = ("open loop", "closed loop")

#: The percentiles of the table: (column, quantile).
PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))

#: The section's setting, in both worlds: 50 requests/s on a schedule (wrk2's constant rate),
#: 4 closed-loop connections that think 20 ms between requests, for 4 s; the server (2 workers,
#: 1 ms of work a request) stalls for 1 s from t = 1.5 s.
DEFAULTS: dict[str, Any] = {"rate": 50.0, "clients": 4, "think_time": 0.02, "duration": 4.0,
                            "stall": 1.0, "stall_start": 1.5, "workers": 2,
                            "service_time": 0.001}

#: What the functions here say to a caller who still writes ``servers=``.


def stall_fault(stall: float = DEFAULTS["stall"],
                stall_start: float = DEFAULTS["stall_start"]) -> Fault:
    """The stall: the server answers nothing from ``stall_start`` for ``stall`` seconds."""
    stall = check_real("stall", stall, low=0, low_open=True)
    stall_start = check_real("stall_start", stall_start, low=0)
    return Fault(start=stall_start, end=stall_start + stall, stall=True, name="stall")


def omission_loads(*, rate: float = DEFAULTS["rate"], clients: int = DEFAULTS["clients"],
                   think_time: float = DEFAULTS["think_time"],
                   duration: float = DEFAULTS["duration"]) -> dict[str, Load]:
    """The two generators' loads: ``rate`` requests per second evenly spaced (open loop), and
    ``clients`` connections thinking ``think_time`` s on average between requests (closed
    loop), both for ``duration`` seconds."""
    return {"open loop": Load(rate=rate, duration=duration, process="constant"),
            "closed loop": Load(clients=clients, think_time=think_time, duration=duration)}


def _check_window(stall: float, stall_start: float, duration: float) -> None:
    if stall_start + stall >= duration:
        raise ValueError(f"stall_start + stall must end before duration ({duration:g} s), got "
                         f"{stall_start:g} + {stall:g} s")


def simulate_omission(*, rate: float = DEFAULTS["rate"], clients: int = DEFAULTS["clients"],
                      think_time: float = DEFAULTS["think_time"],
                      duration: float = DEFAULTS["duration"], stall: float = DEFAULTS["stall"],
                      stall_start: float = DEFAULTS["stall_start"],
                      workers: int = DEFAULTS["workers"],
                      service_time: float = DEFAULTS["service_time"],
                      seed: int = 0, **renamed: object) -> dict[str, RunResult]:
    """The stall measured by both generators in the simulator: ``{"open loop": run,
    "closed loop": run}``, one run each (same seed, same stall; ``workers`` workers, constant
    ``service_time`` seconds of work per request). ``servers=`` raises ValueError (now
    ``workers=``)."""
    refuse_renamed("simulate_omission", renamed, WORKERS_RENAMED)
    _check_window(stall, stall_start, duration)
    fault = stall_fault(stall, stall_start)
    server = ServerConfig(workers=workers,
                          service_time=Distribution(mean=service_time, kind="constant"))
    return {name: simulate(Scenario(load=load, server=server, faults=(fault,), seed=seed))
            for name, load in omission_loads(rate=rate, clients=clients, think_time=think_time,
                                             duration=duration).items()}


@interruptible
def live_omission(server: LiveServer, *, rate: float = DEFAULTS["rate"],
                  clients: int = DEFAULTS["clients"],
                  think_time: float = DEFAULTS["think_time"],
                  duration: float = DEFAULTS["duration"], stall: float = DEFAULTS["stall"],
                  stall_start: float = DEFAULTS["stall_start"],
                  service_time: float = DEFAULTS["service_time"],
                  seed: int = 0) -> dict[str, RunResult]:
    """Both generators at once against the live ``server`` (``/api/work`` with a fixed
    ``service_time``), through one stall: ``{"open loop": run, "closed loop": run}``.

    The service is reset first (faults off, streams rewound). The two runs share time 0
    (``start_at``), and the open-loop run plays the stall on ``/admin/faults`` for both; its
    fault events are copied into the closed-loop run's, on the same clock. The garbage
    collector's old objects are set aside meanwhile (``gc.freeze``), so that a full collection
    of the kernel's objects cannot pause the service and both generators mid-run. About
    ``duration`` + 0.5 s.
    """
    _check_window(stall, stall_start, duration)
    check_real("service_time", service_time, low=0, high=60)
    fault = stall_fault(stall, stall_start)
    loads = omission_loads(rate=rate, clients=clients, think_time=think_time,
                           duration=duration)
    path = f"/api/work?service_time={service_time:g}"
    reset(server)

    async def both() -> list[RunResult]:
        start_at = time.monotonic() + 0.4  # time for both to warm up
        return list(await asyncio.gather(
            run_load_async(server.url, load=loads["open loop"], faults=[fault], seed=seed,
                           path=path, progress=False, start_at=start_at),
            run_load_async(server.url, load=loads["closed loop"], seed=seed, path=path,
                           progress=False, server_events=False, start_at=start_at)))

    with _collector_frozen():
        opened, closed = blocking(both)()
    played = opened.events[opened.events["kind"] == "fault"]
    closed = dataclasses.replace(closed, events=pd.concat(
        [closed.events, played], ignore_index=True).sort_values("time", kind="stable",
                                                               ignore_index=True),
        meta={**closed.meta, "faults": (fault,), "faults_played_by": "open loop"})
    return {"open loop": opened, "closed loop": closed}


@contextlib.contextmanager
def _collector_frozen() -> Iterator[None]:
    """Python's garbage collector with every object made so far set aside (``gc.freeze``):
    its full collections then scan only what the run makes. In a kernel with pandas and
    matplotlib loaded a full collection took about 100 ms (measured), a stall of the service
    and both generators in this process that would show up in both spectra."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def stalled_samples(run: RunResult, start: float, end: float) -> int:
    """The requests that waited for a stall from ``start`` to ``end`` (seconds of the run):
    sent before it ended and answered after it began."""
    req = run.requests
    return int(((req["t_start"] < end) & (req["t_end"] > start)).sum())


def stall_window(run: RunResult) -> tuple[float, float]:
    """When ``run``'s stall held requests (seconds of the run): from when the service said it
    had begun (the fault's ``start`` event; live, a few milliseconds after the planned start,
    and a request answered in between did not wait) to its planned end (live, it ends a
    little later, so a request sent in between waited a few milliseconds at most)."""
    fault = _stall_of(run)
    events = run.events
    began = events.loc[(events["kind"] == "fault") & (events["name"] == fault.name)
                       & (events["detail"] == "start"), "time"]
    start = max([fault.start, *began.to_numpy(dtype=float)[:1]])
    return start, fault.end


def base_latency(run: RunResult, *, fallback: float = DEFAULTS["service_time"]) -> float:
    """The latency a request of ``run`` sees without the stall, seconds: the median of the
    requests that did not wait for it (``stall_window``), ``fallback`` if every one did. Not
    the run's own median: when half its samples or more waited for the stall (an open loop
    through a stall of half the run), that median is itself a stalled sample."""
    req = run.requests
    start, end = stall_window(run)
    clear = req.loc[~((req["t_start"] < end) & (req["t_end"] > start)), "latency"]
    return float(np.median(clear.to_numpy())) if len(clear) else float(fallback)


def _stall_of(run: RunResult) -> Fault:
    for fault in run.meta.get("faults") or run.meta["scenario"].faults:
        if fault.stall:
            return fault
    raise ValueError("the run has no stall among its faults")


def _load_of(run: RunResult) -> Load:
    return run.meta["load"] if "load" in run.meta else run.meta["scenario"].load


def _utilisation(runs: Mapping[str, RunResult], generator: str, service_time: float,
                 workers: int) -> float:
    """The share of the workers' capacity used while ``generator``'s backlog drains: its own
    requests in a simulation (one generator a run), both generators' live (one service)."""
    run = runs[generator]
    together = runs.values() if run.source == "live" else [run]
    rate = sum(len(r.requests) / r.duration for r in together)
    return min(0.95, rate * service_time / workers)


def omission_table(worlds: Mapping[str, Mapping[str, RunResult]], *,
                   workers: int = DEFAULTS["workers"],
                   service_time: float = DEFAULTS["service_time"],
                   **renamed: object) -> pd.DataFrame:
    """Per world (e.g. ``{"simulated": ..., "live": ...}``, each ``{"open loop": run,
    "closed loop": run}``) and generator: the samples recorded, those that waited for the stall,
    p50, p90, p99, p99.9 and max latency (ms), each followed by theory's row
    (``analysis.omission``) for the same rate, stall, connections and sample count.

    Theory reads each percentile at the rank the measured one uses (``exact_percentiles``).
    Its base latency is ``base_latency``: the median of the requests that did not wait for
    the stall (what a request sees without it; ``service_time`` if there are none); its
    open-loop drain uses the run's share of the ``workers``' capacity (each request
    ``service_time`` s of work); its closed loop's stalled samples start the connections'
    mean think time early (``closed_loop_percentile``). ``servers=`` raises ValueError (now
    ``workers=``).
    """
    refuse_renamed("omission_table", renamed, WORKERS_RENAMED)
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for world, runs in worlds.items():
        for generator in GENERATORS:
            if generator not in runs:
                continue
            run = runs[generator]
            fault, load = _stall_of(run), _load_of(run)
            latency = run.requests["latency"].to_numpy()
            n = int(latency.size)
            base = base_latency(run, fallback=service_time)
            measured: dict[str, float] = {
                "samples": n, "saw the stall": stalled_samples(run, *stall_window(run))}
            values = exact_percentiles(latency, [100 * q for _, q in PERCENTILES])
            measured.update({name: 1e3 * float(v)
                             for (name, _), v in zip(PERCENTILES, values, strict=True)})
            measured["max"] = 1e3 * float(latency.max())
            rows[(world, generator)] = measured
            stall = fault.end - fault.start
            if generator == "open loop":
                assert load.rate is not None
                rate, rho = load.rate, _utilisation(runs, generator, service_time, workers)
                stalled: float = open_loop_stalled(rate, stall)
                quantiles = {name: open_loop_percentile(q, rate=rate, stall=stall, samples=n,
                                                        base=base, utilisation=rho)
                             for name, q in (*PERCENTILES, ("max", 1.0))}
            else:
                assert load.clients is not None
                stalled = closed_loop_stalled(load.clients)
                quantiles = {name: closed_loop_percentile(q, clients=load.clients,
                                                          stall=stall, samples=n, base=base,
                                                          think_time=load.think_time)
                             for name, q in (*PERCENTILES, ("max", 1.0))}
            theory: dict[str, float] = {
                "samples": n, "saw the stall": stalled,
                **{name: 1e3 * value for name, value in quantiles.items()}}
            rows[(world, f"{generator}, theory")] = theory
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["world", "generator"])
    table = table.rename(columns={name: f"{name} (ms)" for name, _ in PERCENTILES}
                         | {"max": "max (ms)"})
    table["samples"] = table["samples"].astype("int64")
    table["saw the stall"] = table["saw the stall"].round(0).astype("int64")
    return table.round(1)


def _spectrum(latency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HdrHistogram's percentile distribution: the i-th of N sorted latencies at the
    percentile i / N, placed on the "nines" axis -log10(1 - i / N) (0 is p0, 1 is p90, 2 p99,
    3 p99.9)."""
    ordered = np.sort(latency)
    share = np.arange(ordered.size) / ordered.size
    return -np.log10(1.0 - share), ordered


_STYLES = {"open loop": {"color": "C0"}, "closed loop": {"color": "C3"}}


def plot_spectra(worlds: Mapping[str, Mapping[str, RunResult]], *,
                 workers: int = DEFAULTS["workers"],
                 service_time: float = DEFAULTS["service_time"],
                 figsize: tuple[float, float] | None = None, **renamed: object) -> Any:
    """One panel per world, side by side: each generator's latency by percentile (ms) on a
    log "nines" axis, as HdrHistogram plots them, with the open loop's theory dashed and the
    stall's length dotted; each title counts the samples of each generator. Returns the
    figure, open in pyplot for the cell that shows it (``plt.show()``). Drawn by
    ``SpectraFigure``, which the omission panel updates in place. ``servers=`` raises
    ValueError (now ``workers=``)."""
    refuse_renamed("plot_spectra", renamed, WORKERS_RENAMED)
    return SpectraFigure(workers=workers, service_time=service_time, figsize=figsize,
                         pyplot=True).draw(worlds)


class SpectraFigure(InPlaceFigure):
    """``plot_spectra``'s figure. Results: ``{world: {generator: RunResult}}``; a new figure
    when the worlds or their generators change."""

    def __init__(self, *, workers: int = DEFAULTS["workers"],
                 service_time: float = DEFAULTS["service_time"],
                 figsize: tuple[float, float] | None = None, **options: Any) -> None:
        refuse_renamed("SpectraFigure", {k: v for k, v in options.items() if k in WORKERS_RENAMED},
                       WORKERS_RENAMED)
        super().__init__(**options)
        self.workers, self.service_time, self.figsize = workers, service_time, figsize

    def shape(self, worlds: Mapping[str, Mapping[str, RunResult]]) -> Hashable:
        return tuple((world, tuple(g for g in GENERATORS if g in runs))
                     for world, runs in worlds.items())

    def build(self, worlds: Mapping[str, Mapping[str, RunResult]]) -> Any:
        figure, axes = self.subplots(1, len(worlds),
                                     figsize=self.figsize or (4.6 * len(worlds) + 1.6, 3.4),
                                     sharey=True, squeeze=False)
        self.axes = list(axes[0])
        self.panels: list[tuple[Any, dict[str, Any], Any, Any]] = []
        for ax, runs in zip(self.axes, worlds.values(), strict=True):
            steps, theory = {}, None
            for generator in GENERATORS:
                if generator not in runs:
                    continue
                (steps[generator],) = ax.step([], [], where="post", label=generator,
                                              **_STYLES[generator])
                if generator == "open loop":
                    (theory,) = ax.plot([], [], "--", color="0.35", lw=1,
                                        label="open loop, theory")
            stall = (ax.axhline(1.0, color="0.6", lw=0.8, ls=":", label="the stall's length")
                     if steps else None)
            ax.set_xlabel("percentile")
            ax.grid(alpha=0.3)
            self.panels.append((ax, steps, theory, stall))
        self.axes[0].set_ylabel("latency (ms)")
        self.axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        return figure

    def update(self, worlds: Mapping[str, Mapping[str, RunResult]]) -> None:
        top = 1.0
        for (ax, steps, theory, stall_line), (world, runs) in zip(
                self.panels, worlds.items(), strict=True):
            stall, counts = None, []
            for generator, line in steps.items():
                run = runs[generator]
                latency = run.requests["latency"].to_numpy()
                x, y = _spectrum(latency)
                top = max(top, float(x[-1]) if x.size else top)
                line.set_data(x, 1e3 * y)
                counts.append(f"{latency.size} {generator.split()[0]}")
                fault = _stall_of(run)
                stall = fault.end - fault.start
                if generator == "open loop":
                    load = _load_of(run)
                    assert load.rate is not None and theory is not None
                    rho = _utilisation(runs, generator, self.service_time, self.workers)
                    # theory at each sample's own rank i + 1 (of N), where the spectrum
                    # draws the i-th sorted latency
                    n, base = latency.size, base_latency(run, fallback=self.service_time)
                    values = open_loop_spectrum(n, rate=load.rate, stall=stall, base=base,
                                                utilisation=rho)
                    theory.set_data(x, 1e3 * values)
            if stall is not None and stall_line is not None:
                stall_line.set_ydata([1e3 * stall, 1e3 * stall])
            ax.set_title(f"{world}: {', '.join(counts)}-loop samples", fontsize="medium")
        nines = math.ceil(top)
        for ax in self.axes:
            ax.set_xlim(0, nines)
            ax.set_xticks(range(nines + 1))
            ax.set_xticklabels([_nines_label(k) for k in range(nines + 1)])
        for ax in self.axes:  # shared y: every axes' data first, then the limits
            ax.relim()
        for ax in self.axes:
            ax.autoscale_view(scalex=False)


def open_loop_spectrum(samples: int, *, rate: float, stall: float, base: float = 0.0,
                       utilisation: float = 0.0) -> np.ndarray:
    """``analysis.omission.open_loop_percentile`` at every sample's own rank, q = (i + 1) / N
    for i = 0 .. N − 1 (N = ``samples``), in one pass: shape ``(N,)``, seconds, equal to the
    per-sample calls value for value. The ranks are read as ``samples_above`` reads them (one
    vectorised ``np.percentile`` over all q, the ``QUANTILE_METHOD`` rule), so the value is
    ``base`` + max(0, T − (1 − ρ) a_i / λ) with a_i = N − 1 − i. The spectrum's slider moves
    call it once per redraw: per sample it was ~75 µs, 60 ms per move at rate 200. Raises
    ValueError as ``open_loop_percentile`` does."""
    samples = check_int("samples", samples, low=1)
    # the checks of every argument, once (q = 1 is valid for any N)
    open_loop_percentile(1.0, rate=rate, stall=stall, samples=samples, base=base,
                         utilisation=utilisation)
    q = np.arange(1, samples + 1) / samples
    index = np.percentile(np.arange(samples), 100 * q, method=QUANTILE_METHOD).astype(int)
    above = samples - 1 - index
    return base + np.maximum(0.0, stall - (1 - utilisation) * above / rate)


def _nines_label(k: int) -> str:
    """The percentile at k nines: 0%, 90%, 99%, 99.9%, ..."""
    return "0%" if k == 0 else f"{100 * (1 - 10.0 ** -k):.{max(0, k - 2)}f}%"


def omission_panel(*, seed: int = 0) -> Panel:
    """Sliders for the stall's length, the closed loop's connections and the open loop's rate,
    over the simulation (the other settings are ``DEFAULTS``)."""

    def run(stall: float, clients: int, rate: float) -> dict[str, dict[str, RunResult]]:
        check_int("clients", clients, low=1)
        return {"simulated": simulate_omission(stall=stall, clients=clients, rate=rate,
                                               seed=seed)}

    def table(worlds: dict[str, dict[str, RunResult]]) -> pd.DataFrame:
        return omission_table(worlds).droplevel("world")

    return Panel(
        run,
        [Control.slider("stall", 0.1, 2.0, DEFAULTS["stall"], step=0.1,
                        label="stall (s)"),
         Control.slider("clients", 1, 32, DEFAULTS["clients"], label="closed-loop connections"),
         Control.slider("rate", 10.0, 200.0, DEFAULTS["rate"], step=10.0,
                        label="open-loop rate (/s)")],
        SpectraFigure(figsize=(7.2, 3.4)), table=table,
        title="One stall, two generators (simulated)",
    )
