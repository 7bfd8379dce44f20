"""Measurement health: was a live run spoiled by the load of the machine it ran on?

A live measurement times a real service on a real machine, and the machine is part of what it
measures. When the host is busy (other processes on the same cores, a garbage collection, the
notebook's own kernel) two things happen before the service is even reached:

* the **load generator falls behind its schedule**. An open-loop generator counts each
  request's latency from the time it was *scheduled* (no coordinated omission), so every
  millisecond a request waited to be sent is added to its latency whole, and requests held
  back leave together, in a burst the schedule never had. ``RunResult.meta`` records this
  send lag (``send_lag``: sent minus scheduled, per request);
* the **service's event loop wakes late**. Its work, its dependency calls and its hedge timers
  are ``asyncio.sleep``s, and a sleep that should end after 20 ms ends when the loop next gets
  the processor. The service reports the time each request actually held its work slot
  (``Server-Timing: work``, ``meta["server_work"]``); beyond the work it was asked to do, that
  is the loop's lateness. On an idle machine it is about half a millisecond (the lateness
  ``experiments.live.Calibration`` measures as ``work_overhead``).

* the **client holds requests back**. Before a request leaves the client it may also wait
  for a free connection (the client's own ``max_connections``, e.g. 1 against a slow route)
  and for connecting; ``meta["client_wait"]`` (per attempt: from its start, the scheduled
  time for a first attempt, to its first byte written) counts all of it, the send lag
  included, and ``meta["pool_wait"]`` the part spent waiting for a connection. It too is in
  every latency timed from the schedule, and it is the client's, not the service's.

``client_waits`` extracts these figures once, for this verdict and for
``experiments.live.generator_note`` (which words the same verdict as "did the generator keep
its schedule"), so the two cannot disagree about one run.

All are delays the machine (or the client) added, in seconds, and ``measurement_health``
compares them with the **scale** of the measurement: the smallest time its verdict depends on
(a live sweep of ``/api/work``: the mean service time S, since it reports W/S; hedging: the
hedge delay, since a call that the loop wakes late by the delay is hedged although it was
fast). Every limit is a share of that scale:

``send lag mean <= 10% of scale``
    the mean send lag enters the mean latency whole: 10% of S is an error of 0.1 in W/S,
    inside the sampling error of a run of a few seconds (a 1.5 s point of an M/M/2 sweep
    carries +-20% and more), and ten times an idle machine's lag (a few tenths of a ms);
``send lag p99 <= 50% of scale``
    one request in a hundred held back by half the scale means bursts of requests leaving
    together: the arrivals are no longer the Poisson process the theory (and the simulated
    twin) assumes, and the run's own tail (its p99) is then the generator's delay;
``client wait p99 <= 50% of scale``
    the same bound for every wait inside the client (send lag, connection, connecting), over
    all attempts: a p99 over it means the latencies' tail is the client's queue, not the
    service's;
``work overshoot <= 10% of scale`` (when the service says what it was asked to do)
    the mean time the service's timers ran beyond what was drawn for them: for ``/api/work``
    the mean slot time (``Server-Timing: work``) beyond the mean work drawn; for
    ``/api/fanout`` the mean overrun of its dependency calls beyond their drawn latency
    (``Server-Timing: overrun``, ``meta["server_overrun"]``). A loop late by a tenth of the
    scale on average is late by much more in its tail, so every timer of the service (work,
    dependency calls, hedges) runs slow.

A run over any limit is **spoiled**: its numbers describe the machine's load as much as the
service, and a verdict drawn from them (theory agrees, hedging pays) is not to be trusted;
run it again on a quieter machine. When a client figure is over its limit, ``Health.waited``
says where requests waited (written once here): the send lag (the generator started them
late), else the wait for a connection when the pool wait's p99 is itself over the client
wait's limit, else after they started (connecting, or a busy event loop). The limits are
deliberately loose: a healthy run on an idle laptop is far inside them (a send lag p99 of 1-2
ms), and a run they flag is one whose error from the host is of the order of what it
measures. They are not a proof of health either: a host that stalls only between two sends
is seen by no figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..results import RunResult
from ..validation import check_real

__all__ = ["CLIENT_FIGURES", "LIMITS", "Health", "client_waits", "health_table",
           "measurement_health", "work_overshoot"]

#: The default limits, each a share of the measurement's scale (see the module docstring).
LIMITS: dict[str, float] = {"send lag mean": 0.1, "send lag p99": 0.5, "client wait p99": 0.5,
                            "work overshoot": 0.1}
#: The figures that say whether the client kept its schedule (the rest are the service's).
CLIENT_FIGURES = ("send lag mean", "send lag p99", "client wait p99")

#: Where requests waited, when the client fell behind: the sentence for each place.
_WHERE = {
    "send lag": ("the generator started requests late, and the latencies above include time "
                 "spent waiting to be sent"),
    "connection": ("requests waited at the client for a connection{limit}, and the latencies "
                   "above include that wait"),
    "after start": ("requests waited at the client after they started (connecting, or a busy "
                    "event loop), and the latencies above include that wait"),
}


@dataclass(frozen=True)
class Health:
    """``measurement_health``'s verdict on one live run.

    ``spoiled``: some figure is over its limit; ``reasons``: one sentence per figure over its
    limit (empty when healthy); ``figures`` and ``limits``: each figure measured and its limit,
    in seconds, by name (``"send lag mean"``, ``"send lag p99"``, ``"client wait p99"``,
    ``"work overshoot"``; a figure the run could not give is absent); ``scale``: the
    measurement's scale in seconds; ``waited``: where requests waited when a client figure
    (``CLIENT_FIGURES``) is over its limit, as a clause ("the generator started requests late,
    ..."), empty when the client kept its schedule.
    """

    spoiled: bool
    reasons: tuple[str, ...]
    figures: Mapping[str, float] = field(default_factory=dict)
    limits: Mapping[str, float] = field(default_factory=dict)
    scale: float = math.nan
    waited: str = ""

    @property
    def behind_schedule(self) -> bool:
        """Some client figure is over its limit: the client, not the service, held requests."""
        return bool(self.waited)

    @property
    def verdict(self) -> str:
        """``"spoiled by the host's load"`` or ``"healthy"``."""
        return "spoiled by the host's load" if self.spoiled else "healthy"

    @property
    def note(self) -> str:
        """One line to print beside the numbers: the verdict and why."""
        if self.spoiled:
            where = f": {self.waited}" if self.waited else ""
            return (f"WARNING: measurement spoiled by the host's load ({'; '.join(self.reasons)}"
                    f"{where}): these numbers describe the machine as much as the service; run "
                    "again on a quieter machine before drawing a conclusion")
        within = ", ".join(f"{name} {_ms(self.figures[name])} <= {_ms(self.limits[name])}"
                           for name in self.figures)
        return f"measurement healthy ({within or 'no figure the host could spoil'})"

    def __str__(self) -> str:
        return self.note


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"


def _recorded(meta: Mapping[str, object], key: str) -> np.ndarray | None:
    """``meta[key]`` as floats without its NaNs, or None if the run did not record it."""
    if key not in meta or meta[key] is None:
        return None
    values = np.asarray(meta[key], dtype=float).ravel()
    return values[~np.isnan(values)]


def client_waits(run: RunResult) -> dict[str, np.ndarray]:
    """The waits a live run's client recorded (``run_load``'s ``meta``), in seconds, NaN left
    out: ``"send lag"`` per request (``meta["send_lag"]``), ``"client wait"`` and ``"pool
    wait"`` per attempt (``meta["client_wait"]``, ``meta["pool_wait"]``; the client wait
    counts the send lag, the pool wait and connecting). A key is absent when the run did not
    record it (a simulated run records none). The one extraction that both
    ``measurement_health`` and ``experiments.live.generator_note`` read."""
    waits = {}
    for name, key in (("send lag", "send_lag"), ("client wait", "client_wait"),
                      ("pool wait", "pool_wait")):
        values = _recorded(run.meta, key)
        if values is not None:
            waits[name] = values
    return waits


def work_overshoot(run: RunResult, expected_work: float | None = None) -> float | None:
    """The mean time (seconds) the service's timers ran beyond what was drawn for them, or None
    if the run cannot say.

    With ``expected_work`` (seconds >= 0: the mean work asked per attempt that did work, for
    ``/api/work`` the mean of the service times drawn for them): the mean of
    ``meta["server_work"]`` (the slot time each attempt reported, ``Server-Timing: work``)
    minus it. Without: the mean of ``meta["server_overrun"]`` (what the service measured
    itself, per attempt: for ``/api/fanout``, its dependency calls' mean time beyond their
    drawn latency, ``Server-Timing: overrun``). Attempts that reported nothing (NaN: shed,
    failed before any work) are left out. Raises ValueError for an ``expected_work`` < 0."""
    if expected_work is not None:
        expected_work = check_real("expected_work", expected_work, low=0)
        work = _recorded(run.meta, "server_work")
        return float(work.mean()) - expected_work if work is not None and work.size else None
    overrun = _recorded(run.meta, "server_overrun")
    return float(overrun.mean()) if overrun is not None and overrun.size else None


def measurement_health(run: RunResult, *, scale: float, expected_work: float | None = None,
                       limits: Mapping[str, float] | None = None) -> Health:
    """Was the live ``run`` spoiled by the load of its host? (The module docstring gives the
    figures, the limits and why.)

    Args:
        run: a live ``RunResult`` (``client_waits``: the send lag, NaN for a request never
            sent; a closed loop sends when it decides to, so its send lag says nothing and is
            not judged, its client wait is). A run with no figure (a simulated one) has
            nothing a host could spoil, and is healthy.
        scale: the smallest time (seconds, > 0) the measurement's verdict depends on; every
            limit is a share of it.
        expected_work: the mean work (seconds, >= 0) the service was asked to do per attempt
            (``work_overshoot``); without it, the overrun the service reported itself is
            judged, if the run has one.
        limits: shares of ``scale`` by figure name, replacing those of ``LIMITS``.

    Returns a ``Health``. Raises ValueError for a ``run`` that is not a ``RunResult``, a
    ``scale`` that is not > 0, an ``expected_work`` < 0, or a limit that is unknown or not > 0.
    """
    if not isinstance(run, RunResult):
        raise ValueError(f"run must be a RunResult, got {run!r}")
    scale = check_real("scale", scale, low=0, low_open=True)
    shares = dict(LIMITS)
    for name, share in (limits or {}).items():
        if name not in LIMITS:
            raise ValueError(f"limits may name {sorted(LIMITS)}, got {name!r}")
        shares[name] = check_real(f"limits[{name!r}]", share, low=0, low_open=True)
    waits = client_waits(run)
    figures: dict[str, float] = {}
    lag = waits.get("send lag")
    if run.meta.get("loop", "open") == "open" and lag is not None and lag.size:
        figures["send lag mean"] = float(lag.mean())
        figures["send lag p99"] = float(np.percentile(lag, 99))
    wait = waits.get("client wait")
    if wait is not None and wait.size:
        figures["client wait p99"] = float(np.percentile(wait, 99))
    overshoot = work_overshoot(run, expected_work)
    if overshoot is not None:
        figures["work overshoot"] = overshoot
    bounds = {name: shares[name] * scale for name in figures}
    over = [name for name in figures if figures[name] > bounds[name]]
    reasons = tuple(f"{name} {_ms(figures[name])} > {_ms(bounds[name])} ({shares[name]:.0%} of "
                    f"{_ms(scale)})" for name in over)
    waited = ""
    if "send lag mean" in over or "send lag p99" in over:
        waited = _WHERE["send lag"]
    elif "client wait p99" in over:
        pool = waits.get("pool wait")
        if pool is not None and pool.size and float(np.percentile(pool, 99)) > bounds[
                "client wait p99"]:
            connections = run.meta.get("max_connections")
            waited = _WHERE["connection"].format(
                limit=f" (max_connections={connections})" if connections is not None else "")
        else:
            waited = _WHERE["after start"]
    return Health(spoiled=bool(reasons), reasons=reasons, figures=figures, limits=bounds,
                  scale=scale, waited=waited)


def health_table(healths: Mapping[str, Health]) -> pd.DataFrame:
    """Several runs' ``Health`` side by side, one row per run: each figure and its limit (ms),
    the verdict, and the reasons."""
    rows = {}
    for name, health in healths.items():
        row: dict[str, object] = {}
        for figure in LIMITS:
            if figure in health.figures:
                row[f"{figure} (ms)"] = round(1e3 * health.figures[figure], 2)
                row[f"{figure} limit (ms)"] = round(1e3 * health.limits[figure], 2)
        row["measurement"] = health.verdict
        row["why"] = "; ".join(health.reasons) or "every figure within its limit"
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("run")
