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

Both are delays the machine added, in seconds, and ``measurement_health`` compares them with
the **scale** of the measurement: the smallest time its verdict depends on (a live sweep of
``/api/work``: the mean service time S, since it reports W/S; hedging: the hedge delay, since
a call that the loop wakes late by the delay is hedged although it was fast). Every limit is a
share of that scale:

``send lag mean <= 10% of scale``
    the mean send lag enters the mean latency whole: 10% of S is an error of 0.1 in W/S,
    inside the sampling error of a run of a few seconds (a 1.5 s point of an M/M/2 sweep
    carries +-20% and more), and ten times an idle machine's lag (a few tenths of a ms);
``send lag p99 <= 50% of scale``
    one request in a hundred held back by half the scale means bursts of requests leaving
    together: the arrivals are no longer the Poisson process the theory (and the simulated
    twin) assumes, and the run's own tail (its p99) is then the generator's delay;
``work overshoot <= 10% of scale`` (when the work asked for is known)
    the mean time a request held its slot beyond the work drawn for it: a loop late by a tenth
    of the scale on average is late by much more in its tail, so every timer of the service
    (work, dependency calls, hedges) runs slow.

A run over any limit is **spoiled**: its numbers describe the machine's load as much as the
service, and a verdict drawn from them (theory agrees, hedging pays) is not to be trusted;
run it again on a quieter machine. The limits are deliberately loose: a healthy run on an idle
laptop is far inside them (a send lag p99 of 1-2 ms), and a run they flag is one whose error
from the host is of the order of what it measures. They are not a proof of health either: a
host that stalls only between two sends is seen by neither figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..results import RunResult
from ..validation import check_real

__all__ = ["LIMITS", "Health", "health_table", "measurement_health"]

#: The default limits, each a share of the measurement's scale (see the module docstring).
LIMITS: dict[str, float] = {"send lag mean": 0.1, "send lag p99": 0.5, "work overshoot": 0.1}


@dataclass(frozen=True)
class Health:
    """``measurement_health``'s verdict on one live run.

    ``spoiled``: some figure is over its limit; ``reasons``: one sentence per figure over its
    limit (empty when healthy); ``figures`` and ``limits``: each figure measured and its limit,
    in seconds, by name (``"send lag mean"``, ``"send lag p99"``, ``"work overshoot"``; a
    figure the run could not give is absent); ``scale``: the measurement's scale in seconds.
    """

    spoiled: bool
    reasons: tuple[str, ...]
    figures: Mapping[str, float] = field(default_factory=dict)
    limits: Mapping[str, float] = field(default_factory=dict)
    scale: float = math.nan

    @property
    def verdict(self) -> str:
        """``"spoiled by the host's load"`` or ``"healthy"``."""
        return "spoiled by the host's load" if self.spoiled else "healthy"

    @property
    def note(self) -> str:
        """One line to print beside the numbers: the verdict and why."""
        if self.spoiled:
            return (f"WARNING: measurement spoiled by the host's load ({'; '.join(self.reasons)}):"
                    " these numbers describe the machine as much as the service; run again on "
                    "a quieter machine before drawing a conclusion")
        within = ", ".join(f"{name} {_ms(self.figures[name])} <= {_ms(self.limits[name])}"
                           for name in self.figures)
        return f"measurement healthy ({within or 'no figure the host could spoil'})"

    def __str__(self) -> str:
        return self.note


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"


def measurement_health(run: RunResult, *, scale: float, expected_work: float | None = None,
                       limits: Mapping[str, float] | None = None) -> Health:
    """Was the live ``run`` spoiled by the load of its host? (The module docstring gives the
    figures, the limits and why.)

    Args:
        run: a live ``RunResult`` (``meta["send_lag"]``: seconds per request, NaN for one
            never sent; a closed loop sends when it decides to, so its lag says nothing and
            is not judged). A run with neither figure (a simulated one) has nothing a host
            could spoil, and is healthy.
        scale: the smallest time (seconds, > 0) the measurement's verdict depends on; every
            limit is a share of it.
        expected_work: the mean work (seconds, >= 0) the service was asked to do per attempt
            (for ``/api/work``, the mean of the service times drawn for the run); then the
            mean of ``meta["server_work"]`` beyond it is judged as the work overshoot.
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
    figures: dict[str, float] = {}
    if run.meta.get("loop", "open") == "open":
        lag = np.asarray(run.meta.get("send_lag", ()), dtype=float)
        lag = lag[~np.isnan(lag)]
        if lag.size:
            figures["send lag mean"] = float(lag.mean())
            figures["send lag p99"] = float(np.percentile(lag, 99))
    if expected_work is not None:
        expected_work = check_real("expected_work", expected_work, low=0)
        work = np.asarray(run.meta.get("server_work", ()), dtype=float)
        work = work[~np.isnan(work)]
        if work.size:
            figures["work overshoot"] = float(work.mean()) - expected_work
    bounds = {name: shares[name] * scale for name in figures}
    reasons = tuple(
        f"{name} {_ms(figures[name])} > {_ms(bounds[name])} ({shares[name]:.0%} of "
        f"{_ms(scale)})" for name in figures if figures[name] > bounds[name])
    return Health(spoiled=bool(reasons), reasons=reasons, figures=figures, limits=bounds,
                  scale=scale)


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
