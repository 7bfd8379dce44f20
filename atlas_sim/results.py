"""``RunResult``: the one result schema that simulated and live runs share.

Three tidy tables:

``requests``  one row per logical request, what a user waited for:
    ``request_id, t_start, t_end, latency, status, attempts, ok``
``attempts``  one row per attempt on the wire (retries are rows with ``attempt > 1``; load
    shedding shows as status 429):
    ``request_id, attempt, t_start, t_end, latency, status, queue_wait, instance``
``events``    changes of state, each with its time: circuit-breaker transitions, fault windows,
    load steps: ``time, kind, name, detail, reason``

Times are seconds from the start of the run. ``status`` is an HTTP status or one of the
client-side codes of ``atlas_sim.policies.Status`` (596 budget exhausted, 597 breaker open,
598 connection error, 599 client timeout). A request's status is its last attempt's, or 596/597
when the budget or the breaker refused the attempt it needed. ``queue_wait`` is how long the
attempt waited for a worker inside the server (NaN when unknown: refused, or never reached one).
``instance`` is the index (0, 1, ...) of the server instance the attempt was sent to (0 when there
is one), in both worlds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ATTEMPT_COLUMNS", "EVENT_COLUMNS", "REQUEST_COLUMNS", "SUMMARY_KEYS", "RunResult",
           "transition_times"]

REQUEST_COLUMNS = ("request_id", "t_start", "t_end", "latency", "status", "attempts", "ok")
ATTEMPT_COLUMNS = ("request_id", "attempt", "t_start", "t_end", "latency", "status", "queue_wait",
                   "instance")
EVENT_COLUMNS = ("time", "kind", "name", "detail", "reason")


def transition_times(events: pd.DataFrame, new_state: str, *,
                     name: str | None = None) -> np.ndarray:
    """When a circuit breaker moved into ``new_state`` ("open", "half_open", "closed"), in
    order, from an events table (``RunResult.events`` or a scripted trace's); ``name``: only
    the breaker of that name."""
    chosen = (events["kind"] == "breaker") & (events["detail"] == new_state)
    if name is not None:
        chosen &= events["name"] == name
    return events.loc[chosen, "time"].to_numpy(dtype=float)


_REQUEST_DTYPES = {
    "request_id": "int64", "t_start": "float64", "t_end": "float64", "latency": "float64",
    "status": "int64", "attempts": "int64", "ok": "bool",
}
_ATTEMPT_DTYPES = {
    "request_id": "int64", "attempt": "int64", "t_start": "float64", "t_end": "float64",
    "latency": "float64", "status": "int64", "queue_wait": "float64", "instance": "int64",
}

#: The keys of ``RunResult.summary()``, in order.
SUMMARY_KEYS = (
    "requests", "attempts", "p50", "p95", "p99", "p999", "mean_latency",
    "error_rate", "throughput", "goodput", "amplification",
)
_QUANTILES = (50.0, 95.0, 99.0, 99.9)


def _table(
    columns: Mapping[str, Sequence[Any] | np.ndarray], dtypes: Mapping[str, str]
) -> pd.DataFrame:
    missing = [c for c in dtypes if c not in columns]
    if missing:
        raise ValueError(f"missing columns {missing}; a table needs {list(dtypes)}")
    return pd.DataFrame({c: np.asarray(columns[c], dtype=t) for c, t in dtypes.items()})


@dataclass(frozen=True, eq=False)
class RunResult:
    """The outcome of one run, simulated (``source="sim"``) or live (``source="live"``).

    ``duration`` is the length of the offered load in seconds: rates in ``summary()`` are per
    second of it. ``meta`` holds what produced the run (scenario, seed, load-generator lag, ...);
    a simulated run also has ``meta["server_log"]``, the work the server completed
    (``request_id, attempt, time, instance``), including work for clients that had already
    given up.
    """

    requests: pd.DataFrame
    attempts: pd.DataFrame
    events: pd.DataFrame
    duration: float
    source: str = "sim"
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_columns(
        cls,
        *,
        requests: Mapping[str, Sequence[Any] | np.ndarray],
        attempts: Mapping[str, Sequence[Any] | np.ndarray],
        events: Sequence[tuple[float, str, str, str, str]] = (),
        duration: float,
        source: str = "sim",
        meta: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Build the tables from columns (dicts of sequences) and event tuples."""
        if not duration > 0:
            raise ValueError(f"duration must be a number > 0, got {duration!r}")
        ev = pd.DataFrame(list(events), columns=list(EVENT_COLUMNS))
        ev = ev.astype({"time": "float64"}).sort_values("time", kind="stable", ignore_index=True)
        return cls(
            requests=_table(requests, _REQUEST_DTYPES),
            attempts=_table(attempts, _ATTEMPT_DTYPES),
            events=ev,
            duration=float(duration),
            source=source,
            meta=dict(meta or {}),
        )

    # -- one row of numbers ---------------------------------------------------------------

    def summary(self) -> dict[str, float]:
        """p50, p95, p99, p999 and mean of latency (all requests, failed ones included: what
        users waited for), error_rate (share of requests not ok), throughput and goodput
        (requests and successful requests per second of ``duration``) and amplification
        (attempts per request). Counts of requests and attempts come first."""
        latency = self.requests["latency"].to_numpy()
        n = latency.size
        if n:
            p50, p95, p99, p999 = np.percentile(latency, _QUANTILES)
            mean = float(latency.mean())
            n_ok = int(self.requests["ok"].to_numpy().sum())
            error_rate = 1.0 - n_ok / n
            amplification = len(self.attempts) / n
        else:
            p50 = p95 = p99 = p999 = mean = error_rate = amplification = float("nan")
            n_ok = 0
        return {
            "requests": float(n),
            "attempts": float(len(self.attempts)),
            "p50": float(p50),
            "p95": float(p95),
            "p99": float(p99),
            "p999": float(p999),
            "mean_latency": mean,
            "error_rate": float(error_rate),
            "throughput": n / self.duration,
            "goodput": n_ok / self.duration,
            "amplification": float(amplification),
        }

    # -- the run over time ---------------------------------------------------------------

    def window(self, start: float, end: float) -> RunResult:
        """The requests sent in ``[start, end)``, with their attempts, and the events of that
        span; rates in ``summary()`` are then per second of the window."""
        if not end > start:
            raise ValueError(f"end must be a number > start ({start:g}), got {end!r}")
        t = self.requests["t_start"]
        requests = self.requests[(t >= start) & (t < end)].reset_index(drop=True)
        keep = self.attempts["request_id"].isin(requests["request_id"])
        times = self.events["time"]
        return RunResult(
            requests=requests,
            attempts=self.attempts[keep].reset_index(drop=True),
            events=self.events[(times >= start) & (times < end)].reset_index(drop=True),
            duration=float(end - start),
            source=self.source,
            meta={**self.meta, "window": (float(start), float(end))},
        )

    def timeseries(self, window: float = 1.0) -> pd.DataFrame:
        """The run in windows of ``window`` seconds, as a dashboard would show it.

        Columns: ``t`` (window start), ``offered`` and ``attempts`` (per second, counted when
        sent), ``throughput`` and ``goodput`` (requests and successful requests finishing per
        second), ``error_rate``, ``p50`` and ``p99`` (of the requests finishing in the window,
        from their raw latencies), and one ``breaker_<name>`` column per circuit breaker with its
        state at the window's midpoint. Windows run from 0 to the last request's end.
        """
        if not window > 0:
            raise ValueError(f"window must be a number > 0, got {window!r}")
        req = self.requests
        n_bins = self._n_windows(window)
        t = np.arange(n_bins) * window

        def counts(times: np.ndarray) -> np.ndarray:
            idx = np.minimum((times / window).astype(np.int64), n_bins - 1)
            return np.bincount(idx, minlength=n_bins)[:n_bins]

        t_end = req["t_end"].to_numpy()
        done, good = self.finished_counts(window)
        out = pd.DataFrame(
            {
                "t": t,
                "offered": counts(req["t_start"].to_numpy()) / window,
                "attempts": counts(self.attempts["t_start"].to_numpy()) / window,
                "throughput": done / window,
                "goodput": good / window,
                "error_rate": np.divide(done - good, done, out=np.full(n_bins, np.nan),
                                        where=done > 0),
            }
        )
        bins = np.minimum((t_end / window).astype(np.int64), n_bins - 1)
        by_bin = req["latency"].groupby(bins)
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            out[name] = by_bin.quantile(q).reindex(range(n_bins)).to_numpy()
        for name, states in self.breaker_states(t + window / 2).items():
            out[f"breaker_{name}"] = states
        return out

    def _n_windows(self, window: float) -> int:
        req = self.requests
        end = max(self.duration, float(req["t_end"].max()) if len(req) else 0.0)
        return max(1, int(np.ceil(end / window - 1e-9)))

    def finished_counts(self, window: float) -> tuple[np.ndarray, np.ndarray]:
        """Requests finishing in each window of ``timeseries(window)``, and the successful
        ones among them, as integers: what ``throughput``, ``goodput`` and ``error_rate`` are
        computed from, for checks that must compare counts exactly."""
        if not window > 0:
            raise ValueError(f"window must be a number > 0, got {window!r}")
        n_bins = self._n_windows(window)
        t_end = self.requests["t_end"].to_numpy()
        idx = np.minimum((t_end / window).astype(np.int64), n_bins - 1)
        ok = self.requests["ok"].to_numpy().astype(np.int64)
        done = np.bincount(idx, minlength=n_bins)[:n_bins]
        good = np.bincount(idx, weights=ok, minlength=n_bins)[:n_bins].astype(np.int64)
        return done, good

    def breaker_states(self, times: np.ndarray) -> dict[str, np.ndarray]:
        """For each circuit breaker in ``events``, its state at each of ``times``."""
        ev = self.events[self.events["kind"] == "breaker"]
        result = {}
        for name, group in ev.groupby("name", sort=True):
            changes = group["time"].to_numpy()
            states = np.asarray(["closed", *group["detail"].tolist()], dtype=object)
            result[str(name)] = states[np.searchsorted(changes, times, side="right")]
        return result

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"RunResult(source={self.source!r}, duration={self.duration:g}s, "
            f"requests={int(s['requests'])}, attempts={int(s['attempts'])}, "
            f"p99={s['p99']:.4g}s, error_rate={s['error_rate']:.3g})"
        )
