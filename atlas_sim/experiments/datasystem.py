"""The data system behind the service: pool exhaustion, simulated and live, summarised the
same way; a crash mid-load; a consumer group's lag (notebook 03b).

``pool_exhaustion_sim`` runs the simulated ``/api/orders`` (``sim.pool``: the work, then one
transaction on a ``ConnectionPool`` driven on SimPy's clock); ``pool_exhaustion_live`` runs the
same ``ServerConfig`` live (the service in this process, ``run_load`` on the same seeded
arrivals, the same query-time draws), first measuring what a live transaction holds its
connection beyond its drawn query time (``HoldCalibration``), so that its calibrated twin
(``pool_exhaustion_twin``) models the same hold. ``pool_summary`` reads any ``RunResult`` of
that route, simulated or live, into one dict, ``pool_intervals`` gives its sampling error and
``pool_table`` puts simulated (with its interval), live and the closed form
(``analysis.pool.pool_theory``) side by side, so the issue's test "pool of 2, a slow query
holding connections: wait times and acquire timeouts agree with the simulated pool within
sampling error" (``tests/experiments/test_pool_live.py``) compares like with like.

What each world can measure:

==========================  ===================================  ===================================
quantity                    simulated (``source="sim"``)         live (``source="live"``)
==========================  ===================================  ===================================
503 share (timed out or     the statuses                         the statuses
refused at the pool)
timed out vs refused        ``meta["pool"]``'s ``outcome``       the pool's own counts during the
                                                                 run (``meta["pool_counts"]`` of
                                                                 ``pool_exhaustion_live``); else
                                                                 the 503's latency: a timeout
                                                                 waited ``pool.timeout``, a refusal
                                                                 none (``pool=`` given: latency >=
                                                                 half the timeout is a timeout)
acquire waits (p50, p90,    ``meta["pool"]``'s ``wait`` of the   ``meta["pool_waits"]``: the store's
p99, mean, share > 0)       granted (0 for a connection idle     pool's ``take_wait_times()`` (the
                            at once), in the order asked         queued ones, in grant order),
                                                                 padded with a 0 for each acquire
                                                                 granted at once; or ``waits=``;
                                                                 else NaN. ``/metrics`` has them
                                                                 in buckets only (and each scrape
                                                                 drains ``take_wait_times()``), so
                                                                 it is not scraped during the run
latency of the 200s         the request table                    the request table
==========================  ===================================  ===================================

A simulated run's dict also has the live-style figures (the latency split of its 503s), so a
test may check the estimator that the live side relies on against the truth of ``meta["pool"]``.

``crash_run`` / ``crash_table`` / ``crash_demo``: the service in a child process killed with
SIGKILL mid-load (orders with ``Idempotency-Key`` from concurrent clients) and restarted on the
same store; every key retried (``tests/service/test_crash.py`` runs it). ``consumer_lag_demo``:
the ``"receipts"`` consumer group slowed (``slow_handler``) falls behind orders, drains, and
after its consumers are killed and restarted resumes from its committed offset, its lag read
from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd

from ..analysis.pool import PoolModel
from ..analysis.stats import binom_ppf, proportion_interval
from ..config import Settings
from ..policies import ClientPolicy, PoolConfig, Status
from ..results import RunResult
from ..server_config import EventLogConfig, ServerConfig, StoreConfig
from ..service import LiveServer, ServiceProcess, create_app, run_load
from ..service.eventlog import RECEIPTS, EventConsumers, Handler, order_receipts
from ..service.store import open_store
from ..sim import Scenario, simulate
from ..validation import check_int, check_real
from ..workload import Distribution, Load, rng_streams

__all__ = ["CALIBRATION_PROBES", "CRASH_RETRIED", "POOL_PERCENTILES", "CrashRun",
           "HoldCalibration", "consumer_lag_demo", "crash_demo", "crash_run", "crash_table",
           "pool_exhaustion_live", "pool_exhaustion_scenario", "pool_exhaustion_sim",
           "pool_exhaustion_twin", "pool_intervals", "pool_summary", "pool_table",
           "slow_handler"]

#: The wait percentiles ``pool_summary`` reports, as ``wait_p50`` ... keys.
POOL_PERCENTILES = (50, 90, 99)

_OK = int(Status.OK)
_UNAVAILABLE = int(Status.SERVICE_UNAVAILABLE)


def pool_exhaustion_scenario(*, rate: float, requests: int, pool: PoolConfig,
                             query_time: Distribution, seed: int = 0,
                             server: ServerConfig | None = None) -> Scenario:
    """The simulated ``/api/orders`` run: ``requests`` Poisson arrivals at ``rate`` per
    second, each holding a connection of ``pool`` for a ``query_time`` draw. ``server`` (None:
    no work, 1000 workers, no server timeout, so the pool sees the arrival stream itself)
    gives the rest of the instance, its ``store.query_time`` and ``pool`` replaced by these.
    The client makes one attempt, with no timeout (``ClientPolicy(timeout=None)``)."""
    check_real("rate", rate, low=0, low_open=True)
    check_int("requests", requests, low=1, high=10_000_000)
    if not isinstance(pool, PoolConfig):
        raise ValueError(f"pool must be a PoolConfig, got {pool!r}")
    if not isinstance(query_time, Distribution):
        raise ValueError(f"query_time must be a Distribution, got {query_time!r}")
    if server is None:
        server = ServerConfig(workers=1000, service_time=Distribution(mean=0.0,
                                                                       kind="constant"))
    elif not isinstance(server, ServerConfig):
        raise ValueError(f"server must be a ServerConfig or None, got {server!r}")
    store = server.store if server.store is not None else StoreConfig()
    config = dataclasses.replace(server, store=dataclasses.replace(store, query_time=query_time),
                                 pool=pool)
    return Scenario(load=Load(rate=rate, requests=requests),
                    server=config, path="/api/orders", client=ClientPolicy(timeout=None),
                    seed=seed)


def pool_exhaustion_sim(*, rate: float, requests: int, pool: PoolConfig,
                        query_time: Distribution, seed: int,
                        server: ServerConfig | None = None,
                        calibration: HoldCalibration | None = None) -> dict[str, Any]:
    """``pool_summary`` of the simulated run of ``pool_exhaustion_scenario`` (same
    arguments): acquire-wait percentiles ``wait_p50``, ``wait_p90``, ``wait_p99`` and
    ``wait_mean`` (seconds, of the granted), ``timed_out`` and ``refused`` (shares of the
    requests), and the rest of ``pool_summary``'s keys. ``calibration`` (a live run's
    ``meta["calibration"]``): the calibrated twin (``pool_exhaustion_twin``). Raises
    ``ValueError`` naming a bad argument."""
    scenario = pool_exhaustion_twin(rate=rate, requests=requests, pool=pool,
                                    query_time=query_time, seed=seed, server=server,
                                    calibration=calibration)
    return pool_summary(simulate(scenario), pool=pool)


# -- live ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HoldCalibration:
    """What a live ``/api/orders`` costs beyond the model, measured on the service itself
    before its run (``pool_exhaustion_live``): ``round_trip`` (seconds), the median latency
    of ``GET /health`` one request at a time (client, HTTP, middleware, back); and
    ``hold_overhead`` (seconds, >= 0), how much longer than its drawn ``query_time`` an
    order takes one at a time, less the round trip: the real query's own time (the insert,
    the commit; ``pg_sleep``'s or the sleeping function's overshoot, asyncio's late timer)
    plus the handler's few steps outside the transaction, so a slight overestimate of the
    time a connection is held. ``experiments.live.Calibration``'s idea (``round_trip``,
    ``work_overhead``) applied to the connection's hold rather than to the work."""

    round_trip: float
    hold_overhead: float

    def __repr__(self) -> str:
        return (f"HoldCalibration(round trip {1e3 * self.round_trip:.2f} ms, hold overhead "
                f"{1e3 * self.hold_overhead:.2f} ms)")

    def hold(self, query_time: Distribution) -> Distribution:
        """The simulated hold: ``query_time`` with ``hold_overhead`` added to its mean (for a
        constant, exactly the live hold; for another kind, the whole distribution scaled to
        that mean, an approximation good while the overhead is small beside the mean)."""
        return dataclasses.replace(query_time, mean=query_time.mean + self.hold_overhead)


def pool_exhaustion_twin(*, rate: float, requests: int, pool: PoolConfig,
                         query_time: Distribution, seed: int,
                         server: ServerConfig | None = None,
                         calibration: HoldCalibration | None = None) -> Scenario:
    """``pool_exhaustion_scenario`` (same arguments), calibrated when ``calibration`` is given:
    each transaction holds its connection ``calibration.hold(query_time)`` and every request
    pays ``calibration.round_trip`` on the wire (half each way)."""
    if calibration is not None and not isinstance(calibration, HoldCalibration):
        raise ValueError(f"calibration must be a HoldCalibration or None, got {calibration!r}")
    hold = calibration.hold(query_time) if calibration is not None else query_time
    scenario = pool_exhaustion_scenario(rate=rate, requests=requests, pool=pool,
                                        query_time=hold, seed=seed, server=server)
    if calibration is not None:
        scenario = scenario.replace(round_trip=calibration.round_trip)
    return scenario


#: Requests of each probe of ``pool_exhaustion_live``'s calibration, one at a time.
CALIBRATION_PROBES = 15


def _calibrate(http: httpx.Client, query_time: Distribution, seed: int) -> HoldCalibration:
    """Probe the freshly started service one request at a time (see ``HoldCalibration``)."""
    trips = []
    for _ in range(CALIBRATION_PROBES):
        start = time.perf_counter()
        http.get("/health").raise_for_status()
        trips.append(time.perf_counter() - start)
    round_trip = float(np.median(trips))
    draw = query_time.sampler(rng_streams(seed, instance=0)["store"])  # the service's draws
    extra = []
    for _ in range(CALIBRATION_PROBES):
        start = time.perf_counter()
        http.post("/api/orders").raise_for_status()
        extra.append(time.perf_counter() - start - draw())
    return HoldCalibration(round_trip=round_trip,
                           hold_overhead=max(0.0, float(np.median(extra)) - round_trip))


def pool_exhaustion_live(*, rate: float, requests: int, pool: PoolConfig,
                         query_time: Distribution, seed: int, store_url: str | None = None,
                         calibrate: bool = True, progress: bool = False) -> RunResult:
    """The live twin of ``pool_exhaustion_scenario``: the service in this process
    (``LiveServer``, on 127.0.0.1, stopped on return) built from the scenario's very
    ``ServerConfig`` (no work, 1000 work slots, no server timeout, ``pool``, and
    ``StoreConfig(url=store_url, query_time=query_time)``: ``"memory://..."``,
    ``"sqlite:///..."``, ``"postgresql://..."``, or None: a temporary SQLite), offered the
    scenario's load by ``run_load`` (``POST /api/orders``, open loop, the same seeded
    arrivals; one attempt, no client timeout) with the service seeded ``seed``, so its query
    times are the simulation's draws too.

    Before the run (``calibrate``), ``CALIBRATION_PROBES`` health checks and orders one at a
    time measure a ``HoldCalibration``; then ``/admin/reset`` empties the store and rewinds the
    random streams. The acquire waits are read from the store's pool itself (never from
    ``/metrics``, which is not scraped meanwhile: a scrape drains ``take_wait_times()`` into its
    histogram, in buckets).

    Returns the live ``RunResult``, whose ``meta`` adds ``pool_waits`` (every granted acquire's
    wait, seconds: the queued ones in grant order, then a 0 for each granted at once),
    ``pool_counts`` (the pool's ``acquisitions``, ``timeouts``, ``refusals`` and
    ``cancelled`` during the run), ``calibration`` (a ``HoldCalibration`` or None) and
    ``store`` (its kind). ``pool_summary`` reads them. Raises ``ValueError`` naming a bad
    argument; a store that cannot be opened raises what the store raised.
    """
    config = ServerConfig(workers=1000, service_time=Distribution(mean=0.0, kind="constant"),
                          store=StoreConfig(url=store_url))
    scenario = pool_exhaustion_scenario(rate=rate, requests=requests, pool=pool,
                                        query_time=query_time, seed=seed, server=config)
    assert isinstance(scenario.server, ServerConfig)  # one instance
    app = create_app(Settings(), server=scenario.server, seed=seed)
    with LiveServer(app, name="atlas-pool-live") as server, \
            httpx.Client(base_url=server.url, trust_env=False, timeout=30.0) as http:
        state = server.app.state.atlas
        calibration = _calibrate(http, query_time, seed) if calibrate else None
        http.post("/admin/reset").raise_for_status()
        policy = state.store.pool.policy
        policy.take_wait_times()  # the probes' (none: one at a time)
        before = {name: getattr(policy, name)
                  for name in ("acquisitions", "timeouts", "refusals", "cancelled")}
        result = run_load(server.url, load=scenario.load, client=scenario.client, seed=seed,
                          path="/api/orders", method="POST", progress=progress,
                          server_events=False)
        counts = {name: getattr(policy, name) - value for name, value in before.items()}
        queued = np.asarray(policy.take_wait_times(), dtype=float)
        kind = state.store.kind
    zeros = np.zeros(max(0, counts["acquisitions"] - queued.size))
    result.meta.update(pool_waits=np.concatenate([queued, zeros]), pool_counts=counts,
                       calibration=calibration, store=kind)
    return result


def pool_summary(result: RunResult, *, pool: PoolConfig | None = None,
                 waits: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """One dict from a ``/api/orders`` run of either world (see the module docstring for what
    each can measure), its shares over the run's requests (one attempt each):

    * ``source``, ``requests``; ``ok``, ``unavailable`` (503: timed out or refused at the
      pool), ``server_timeout`` (504): shares;
    * ``timed_out``, ``refused``: shares, from ``meta["pool"]`` when the run has it, else
      estimated from the 503s' latencies when ``pool`` is given (``>= pool.timeout / 2``: a
      timeout), else NaN; ``timed_out_by_latency``, ``refused_by_latency``: that estimate
      whenever ``pool`` is given (NaN otherwise), in both worlds;
    * ``wait_p50``, ``wait_p90``, ``wait_p99``, ``wait_mean`` (seconds), ``waited`` (share
      > 0), ``granted`` (count): the acquire waits of the granted, from ``waits`` if given,
      else ``meta["pool"]``, else NaN (0 for ``granted``);
    * ``latency_p50``, ``latency_p99``, ``latency_mean`` of the 200s (seconds);
    * ``unavailable_ci``: the 95% Wilson interval ``(low, high)`` of the 503 share (its
      binomial sampling error, ``analysis.stats.proportion_interval``; NaNs for no requests).

    Raises ``ValueError`` for a ``result`` that is not a ``RunResult``, a ``pool`` that is
    not a ``PoolConfig``, or negative ``waits``.
    """
    if not isinstance(result, RunResult):
        raise ValueError(f"result must be a RunResult, got {result!r}")
    if pool is not None and not isinstance(pool, PoolConfig):
        raise ValueError(f"pool must be a PoolConfig or None, got {pool!r}")
    nan = math.nan
    requests = result.requests
    n = len(requests)
    status = requests["status"].to_numpy()
    latency = requests["latency"].to_numpy(dtype=float)
    share = (lambda count: count / n) if n else (lambda count: nan)
    out: dict[str, Any] = {
        "source": result.source, "requests": n,
        "ok": share(int((status == _OK).sum())),
        "unavailable": share(int((status == _UNAVAILABLE).sum())),
        "server_timeout": share(int((status == int(Status.GATEWAY_TIMEOUT)).sum())),
    }
    unavailable = int((status == _UNAVAILABLE).sum())
    out["unavailable_ci"] = proportion_interval(unavailable, n) if n else (nan, nan)
    if pool is not None:
        slow = latency[status == _UNAVAILABLE] >= pool.timeout / 2
        out["timed_out_by_latency"] = share(int(slow.sum()))
        out["refused_by_latency"] = share(int((~slow).sum()))
    else:
        out["timed_out_by_latency"] = out["refused_by_latency"] = nan
    table = result.meta.get("pool")
    counts = result.meta.get("pool_counts")
    if table is not None:
        outcome = table["outcome"].to_numpy()
        out["timed_out"] = share(int((outcome == "timeout").sum()))
        out["refused"] = share(int((outcome == "refused").sum()))
    elif counts is not None:  # a live run's pool counts (pool_exhaustion_live)
        out["timed_out"] = share(int(counts["timeouts"]))
        out["refused"] = share(int(counts["refusals"]))
    else:
        out["timed_out"] = out["timed_out_by_latency"]
        out["refused"] = out["refused_by_latency"]
    if waits is None and "pool_waits" in result.meta:
        waits = result.meta["pool_waits"]
    if waits is not None:
        granted = np.asarray(waits, dtype=float)
        if granted.size and granted.min() < 0:
            raise ValueError("waits must be >= 0 seconds")
    elif table is not None:
        granted = table.loc[table["outcome"] == "granted", "wait"].to_numpy(dtype=float)
    else:
        granted = np.empty(0)
    out["granted"] = int(granted.size)
    if granted.size:
        for p, value in zip(POOL_PERCENTILES, np.percentile(granted, POOL_PERCENTILES),
                            strict=True):
            out[f"wait_p{p}"] = float(value)
        out["wait_mean"] = float(granted.mean())
        out["waited"] = float((granted > 0).mean())
    else:
        for p in POOL_PERCENTILES:
            out[f"wait_p{p}"] = nan
        out["wait_mean"] = out["waited"] = nan
    ok = latency[status == _OK]
    out["latency_p50"], out["latency_p99"] = ((float(np.percentile(ok, 50)),
                                               float(np.percentile(ok, 99)))
                                              if ok.size else (nan, nan))
    out["latency_mean"] = float(ok.mean()) if ok.size else nan
    return out


#: ``pool_intervals``'s quantities: the shares (Wilson) and the wait statistics (bootstrap).
_SHARES = ("unavailable", "timed_out", "refused")
_WAITS = (*(f"wait_p{p}" for p in POOL_PERCENTILES), "wait_mean")


def _ordered_waits(result: RunResult) -> np.ndarray:
    """The granted acquires' waits, in the order they were asked where the run knows it (a
    simulated run's ``meta["pool"]``), else as ``meta["pool_waits"]`` holds them."""
    table = result.meta.get("pool")
    if table is not None:
        granted = table[table["outcome"] == "granted"].sort_values("time", kind="stable")
        return granted["wait"].to_numpy(dtype=float)
    return np.asarray(result.meta.get("pool_waits", ()), dtype=float)


def pool_intervals(result: RunResult, *, pool: PoolConfig | None = None,
                   confidence: float = 0.95, batches: int = 20, resamples: int = 2000,
                   seed: int = 0) -> dict[str, tuple[float, float]]:
    """The sampling error of ``pool_summary(result)``'s figures, as ``(low, high)`` intervals
    at ``confidence`` (0.5..0.999):

    * ``unavailable``, ``timed_out``, ``refused``: Wilson score intervals of the counts over
      the run's requests (``analysis.stats.proportion_interval``): each request is one trial;
    * ``wait_p50``, ``wait_p90``, ``wait_p99``, ``wait_mean``: a block bootstrap of the granted
      waits in the order they were asked (a simulated run's ``meta["pool"]``): ``batches``
      (2..1000) consecutive blocks, drawn with replacement ``resamples`` (100..100000) times
      from a generator seeded ``seed``, the percentile interval of each statistic. Blocks,
      not single waits, because consecutive waits are correlated (a queue drains slowly), as
      batch means do for a mean (``analysis.stats.batch_means``). A quantile's interval is
      widened to at least the distribution-free one of the order statistics (the ranks
      between the binomial(n, p)'s tail quantiles: D. Hahn and W. Meeker, "Statistical
      Intervals", 1991, chapter 5): a bootstrapped p99 never exceeds the sample's largest
      wait, so alone it is too narrow at the tail. A live run's waits have no
      order (the pool hands them over in grant order, the waits of those granted at once as a
      count), so its blocks are of an arbitrary order: narrower than the truth; compare with
      the simulated run's intervals.

    NaNs where there is nothing to count. Raises ``ValueError`` naming a bad argument.
    """
    if not isinstance(result, RunResult):
        raise ValueError(f"result must be a RunResult, got {result!r}")
    confidence = check_real("confidence", confidence, low=0.5, high=0.999)
    check_int("batches", batches, low=2, high=1000)
    check_int("resamples", resamples, low=100, high=100_000)
    summary = pool_summary(result, pool=pool)
    n = int(summary["requests"])
    out: dict[str, tuple[float, float]] = {}
    for name in _SHARES:
        value = summary[name]
        out[name] = (proportion_interval(round(value * n), n, confidence)
                     if n and not math.isnan(value) else (math.nan, math.nan))
    waits = _ordered_waits(result)
    if waits.size < batches:
        out.update({name: (math.nan, math.nan) for name in _WAITS})
        return out
    blocks = np.array_split(waits, batches)
    rng = np.random.default_rng(seed)
    stats = np.empty((resamples, len(_WAITS)))
    for i in range(resamples):
        sample = np.concatenate([blocks[j] for j in rng.integers(0, batches, size=batches)])
        stats[i, :-1] = np.percentile(sample, POOL_PERCENTILES)
        stats[i, -1] = sample.mean()
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail], axis=0)
    ordered = np.sort(waits)
    n_waits = ordered.size
    for k, p in enumerate(POOL_PERCENTILES):  # widened to the order statistics' interval
        first = binom_ppf((1 - confidence) / 2, n_waits, p / 100)
        last = binom_ppf(1 - (1 - confidence) / 2, n_waits, p / 100)
        low[k] = min(low[k], ordered[max(first - 1, 0)])
        high[k] = max(high[k], ordered[min(last, n_waits - 1)])
    out.update({name: (float(lo), float(hi)) for name, lo, hi in zip(_WAITS, low, high,
                                                                     strict=True)})
    return out


_ROWS = {"unavailable": "503 share (%)", "timed_out": "timed out (%)", "refused": "refused (%)",
         "wait_p50": "granted: wait p50 (ms)", "wait_p90": "granted: wait p90 (ms)",
         "wait_p99": "granted: wait p99 (ms)", "wait_mean": "granted: mean wait (ms)"}


def _theory_row(theory: PoolModel) -> dict[str, float]:
    return {"unavailable": theory.P_timeout + theory.P_refused, "timed_out": theory.P_timeout,
            "refused": theory.P_refused,
            **{f"wait_p{p}": theory.wait_quantile(p / 100) for p in POOL_PERCENTILES},
            "wait_mean": theory.mean_wait_granted}


def pool_table(sim: RunResult, live: RunResult, theory: PoolModel | None = None, *,
               pool: PoolConfig | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Simulated, live and the closed form side by side, one row per quantity: the 503 share,
    timed out and refused (percent of the requests), the granted acquires' wait p50, p90, p99
    and mean (milliseconds). Columns ``simulated``, ``simulated low`` and ``simulated high``
    (``pool_intervals`` of the simulated run at ``confidence``: a run of this length's
    sampling error), ``live``, ``live inside`` (True when the live figure lies in that
    interval, a wait's widened on each side by the live run's measured hold overhead,
    ``meta["calibration"].hold_overhead``: a live hold varies by about that much around the
    calibration's median, so each wait may too) and ``theory`` (``analysis.pool.pool_theory``'s
    model, or NaN when ``theory`` is None: it holds for exponential query times only, so a
    constant one has no column of its own). ``sim`` is
    ``simulate(pool_exhaustion_twin(...))`` (its ``meta["pool"]``), ``live``
    ``pool_exhaustion_live(...)``'s. Raises ``ValueError`` for runs that are not
    ``RunResult``."""
    if not isinstance(sim, RunResult) or not isinstance(live, RunResult):
        raise ValueError("sim and live must be RunResults (simulate(...), "
                         "pool_exhaustion_live(...))")
    simulated, measured = pool_summary(sim, pool=pool), pool_summary(live, pool=pool)
    intervals = pool_intervals(sim, pool=pool, confidence=confidence)
    expected = _theory_row(theory) if theory is not None else {}
    calibration = live.meta.get("calibration")
    slack = calibration.hold_overhead if isinstance(calibration, HoldCalibration) else 0.0
    rows: dict[str, Mapping[str, Any]] = {}
    for key, label in _ROWS.items():
        scale = 100.0 if key in _SHARES else 1e3
        low, high = intervals[key]
        pad = 0.0 if key in _SHARES else slack
        value = measured[key]
        rows[label] = {"simulated": scale * simulated[key], "simulated low": scale * low,
                       "simulated high": scale * high, "live": scale * value,
                       "live inside": bool(low - pad <= value <= high + pad),
                       "theory": scale * expected.get(key, math.nan)}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("quantity")
    table.attrs.update(requests=(simulated["requests"], measured["requests"]),
                       calibration=live.meta.get("calibration"), store=live.meta.get("store"))
    return table


# -- a crash mid-load --------------------------------------------------------------------------

#: Statuses a crash run's clients retry: in progress (the key's hold), no connection or key
#: store full, timed out.
CRASH_RETRIED = (409, 503, 504)


@dataclass
class CrashRun:
    """What ``crash_run`` saw. ``acked``: key -> (status, body) of each order acknowledged
    with a 2xx before the kill; ``cut``: keys whose attempt died with the service (in flight
    at the kill: unknown to their client); ``answers``: key -> (status, body, replayed) of
    every key's 2xx after the restart (``replayed``: its ``Idempotent-Replayed: true``);
    ``stored``: key -> how many stored orders carry it (read from the store after the run);
    ``orders``: the store's order count; ``keys``: every key, in the order sent."""

    keys: list[str]
    acked: dict[str, tuple[int, bytes]]
    cut: set[str]
    answers: dict[str, tuple[int, bytes, bool]]
    stored: dict[str, int]
    orders: int


def _crash_config(url: str, lease: float) -> ServerConfig:
    """Each order: 5 ms of work, then a transaction holding its connection 5 ms more (a slow
    query), so that a crash finds transactions open; the key's lease is the server's timeout."""
    return ServerConfig(workers=4, service_time=Distribution(mean=0.005, kind="constant"),
                        timeout=lease, store=StoreConfig(
                            url=url, key_lease=lease,
                            query_time=Distribution(mean=0.005, kind="constant")))


async def _first_round(url: str, service: ServiceProcess, keys: list[str], clients: int,
                       kill_after: int) -> tuple[dict[str, tuple[int, bytes]], set[str]]:
    """Send every key once (retrying ``CRASH_RETRIED`` while the service lives) from
    ``clients`` concurrent clients; SIGKILL the service once ``kill_after`` orders are
    acknowledged."""
    acked: dict[str, tuple[int, bytes]] = {}
    cut: set[str] = set()
    killed = asyncio.Event()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)

    async def client(http: httpx.AsyncClient) -> None:
        while not killed.is_set() and not queue.empty():
            key = queue.get_nowait()
            for _ in range(50):
                try:
                    r = await http.post("/api/orders", json={"key": key},
                                        headers={"Idempotency-Key": f'"{key}"'})
                except httpx.TransportError:
                    cut.add(key)  # the service died with this order at work: unknown
                    break
                if 200 <= r.status_code < 300:
                    acked[key] = (r.status_code, r.content)
                    if len(acked) >= kill_after and not killed.is_set():
                        killed.set()
                        await asyncio.to_thread(service.kill)  # a crash, orders in flight
                    break
                if r.status_code not in CRASH_RETRIED:
                    raise RuntimeError(f"{key}: unexpected {r.status_code}: {r.text}")
                await asyncio.sleep(0.01)

    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return acked, cut


async def _second_round(url: str, keys: list[str], clients: int, lease: float
                        ) -> dict[str, tuple[int, bytes, bool]]:
    """Retry every key on the restarted service until it answers 2xx: 409 (its hold from
    before the crash, until the lease runs out), 503 and 504 are retried for at most three
    leases (then ``RuntimeError``: a key stuck beyond its lease)."""
    answers: dict[str, tuple[int, bytes, bool]] = {}

    async def retry(http: httpx.AsyncClient, key: str) -> None:
        give_up = time.monotonic() + 3 * lease + 2.0
        while True:
            r = await http.post("/api/orders", json={"key": key},
                                headers={"Idempotency-Key": f'"{key}"'})
            if 200 <= r.status_code < 300:
                answers[key] = (r.status_code, r.content,
                                r.headers.get("Idempotent-Replayed") == "true")
                return
            if r.status_code not in CRASH_RETRIED:
                raise RuntimeError(f"{key}: unexpected {r.status_code}: {r.text}")
            if time.monotonic() > give_up:
                raise RuntimeError(f"{key} stuck beyond its lease: {r.text}")
            await asyncio.sleep(0.05)

    semaphore = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0,
                                 limits=httpx.Limits(max_connections=clients)) as http:

        async def bounded(key: str) -> None:
            async with semaphore:
                await retry(http, key)
        await asyncio.gather(*(bounded(key) for key in keys))
    return answers


async def _read_stored(url: str, lease: float) -> tuple[int, dict[str, int]]:
    """The store's order count and, per key, how many stored orders carry it."""
    store = open_store(StoreConfig(url=url), pool=None, lease=lease)
    await store.open()
    try:
        count = await store.orders()
        stored: dict[str, int] = {}
        for n in range(1, count + 1):
            order = await store.get_order(n)
            if order is not None and order.get("key"):
                stored[order["key"]] = stored.get(order["key"], 0) + 1
        return count, stored
    finally:
        await store.close()


def crash_run(*, orders: int = 60, kill_after: int = 15, store_url: str | None = None,
              seed: int = 0, clients: int = 6, lease: float = 2.0) -> CrashRun:
    """A crash mid-load (issue 22, "Done when"): the service in a child process
    (``ServiceProcess``, seeded ``seed``) on the store ``store_url`` (``"sqlite:///..."`` or
    ``"postgresql://..."``; None: a SQLite database in a temporary directory, removed on
    return) takes ``orders`` orders (1..10000), each with its own ``Idempotency-Key``, from
    ``clients`` (1..64) concurrent clients that retry 409, 503 and 504; it is killed with
    SIGKILL once ``kill_after`` (1..orders) are acknowledged, with orders at work; it is
    started again on the same store, and every key is retried until it answers 2xx (a key
    held in flight by the dead process waits for its ``lease``, seconds, > 0, which is also
    the server's timeout). Then the store is read back. No process, port or file is left
    behind. About ``lease`` + 2 s.

    Raises ``ValueError`` naming a bad argument (a memory store is refused: it dies with its
    process), ``RuntimeError`` for an answer other than 2xx, 409, 503, 504 or a key stuck
    beyond three leases."""
    check_int("orders", orders, low=1, high=10_000)
    check_int("kill_after", kill_after, low=1, high=orders)
    check_int("clients", clients, low=1, high=64)
    check_int("seed", seed, low=0)
    lease = check_real("lease", lease, low=0, low_open=True, high=60)
    if store_url is not None and not store_url.startswith(("sqlite://", "postgresql://")):
        raise ValueError(f"store_url must be None, sqlite:///... or postgresql://... (a store "
                         f"that outlives the process), got {store_url!r}")
    keys = [f"key-{i:05d}" for i in range(orders)]
    with tempfile.TemporaryDirectory(prefix="atlas-crash-") as directory:
        url = store_url or f"sqlite:///{directory}/crash.sqlite3"
        config = _crash_config(url, lease)
        service = ServiceProcess(server=config, seed=seed, name="atlas-crash-demo").start()
        try:
            acked, cut = asyncio.run(_first_round(service.url, service, keys, clients,
                                                  kill_after))
        finally:
            service.kill()
        restarted = ServiceProcess(server=config, seed=seed, name="atlas-crash-demo").start()
        try:
            answers = asyncio.run(_second_round(restarted.url, keys, clients, lease))
        finally:
            restarted.stop()
        count, stored = asyncio.run(_read_stored(url, lease))
    return CrashRun(keys=keys, acked=acked, cut=cut, answers=answers, stored=stored,
                    orders=count)


def crash_table(run: CrashRun) -> pd.DataFrame:
    """``crash_run``'s outcome, one row each (column ``keys``): sent (orders), acknowledged
    before the kill, in flight at the kill, not yet sent at the kill, replayed after the
    restart (answered from the store: ``Idempotent-Replayed``), of which acknowledged and
    replayed with the very same body, applied after the restart (a new order), stored once,
    lost (no order stored) and duplicates (stored orders beyond one per key; 0)."""
    replayed = {k for k, (_, _, again) in run.answers.items() if again}
    same = sum(1 for k, (_, body) in run.acked.items()
               if k in replayed and run.answers[k][1] == body)
    rows = {
        "sent": len(run.keys),
        "acknowledged before the kill": len(run.acked),
        "in flight at the kill": len(run.cut),
        "not yet sent at the kill": len(run.keys) - len(run.acked) - len(run.cut),
        "replayed after the restart": len(replayed),
        "acknowledged, replayed identically": same,
        "applied after the restart": len(run.answers) - len(replayed),
        "stored once": sum(1 for k in run.keys if run.stored.get(k) == 1),
        "lost": sum(1 for k in run.keys if not run.stored.get(k)),
        "duplicates": sum(max(0, n - 1) for n in run.stored.values())
                      + (run.orders - sum(run.stored.values())),
    }
    return pd.DataFrame({"keys": rows}).rename_axis("orders")


def crash_demo(*, orders: int = 60, kill_after: int = 15, store_url: str | None = None,
               seed: int = 0) -> pd.DataFrame:
    """``crash_table(crash_run(...))``: the service killed mid-load and restarted on the same
    store (see ``crash_run``), in one table: every acknowledged order stored once and
    replayed, the ones in flight at the kill replayed or applied once, no duplicates."""
    return crash_table(crash_run(orders=orders, kill_after=kill_after, store_url=store_url,
                                 seed=seed))


# -- consumer lag ------------------------------------------------------------------------------

def slow_handler(handler: Handler, handler_time: float) -> Handler:
    """``handler`` made slow: before it handles a batch it spends ``handler_time`` seconds
    (>= 0) per event (an ``asyncio.sleep``: a consumer whose work for each event takes that
    long, a remote call, say). A demonstration's handler, never the service's default; the
    effect stays ``handler``'s (idempotent if it is)."""
    handler_time = check_real("handler_time", handler_time, low=0, high=10)

    async def slowed(batch: list[tuple[int, str]]) -> None:
        await asyncio.sleep(handler_time * len(batch))
        await handler(batch)

    return slowed


_LAG = re.compile(r'^atlas_api_event_consumer_lag\{group="receipts",topic="orders"\} '
                  r'([0-9.e+]+)$', re.MULTILINE)


def _scrape_lag(http: httpx.Client) -> int | None:
    match = _LAG.search(http.get("/metrics").text)
    return None if match is None else int(float(match.group(1)))


def consumer_lag_demo(*, orders: int = 100, consumers: int = 1, handler_time: float = 0.01,
                      seed: int = 0, rate: float = 250.0, store_url: str | None = None,
                      timeout: float = 20.0) -> pd.DataFrame:
    """A consumer group falling behind and catching up, then killed and restarted: the
    ``"receipts"`` group (``eventlog.order_receipts`` on topic ``"orders"``, the outbox every
    order is appended to), its handler slowed to ``handler_time`` seconds per event
    (``slow_handler``, 0..10; so it drains at most 1 / ``handler_time`` events a second), on
    the service in this process (``LiveServer``; ``EventLogConfig(consumers=consumers,
    batch=5, poll_interval=0.02)``, ``consumers`` 1..8 tasks of which one holds the group's
    lease; the store ``store_url``, None: a temporary SQLite).

    Two rounds of ``orders`` (1..5000) orders at ``rate`` per second (``run_load``, Poisson,
    seeded ``seed``): after the first, the lag drains to 0; in the second, once the orders are
    placed, the consumers are killed (their tasks cancelled mid-batch: the batch is not
    committed) and new ones started on the same store, which resume from the group's
    committed offset. Meanwhile ``/metrics`` is scraped every 50 ms for
    ``atlas_api_event_consumer_lag{group="receipts",topic="orders"}``.

    Returns the samples, one row each: ``time`` (seconds since the first round began),
    ``lag`` (events), ``phase`` (``"first round"``, ``"second round"``, ``"after the
    restart"``). ``attrs``: ``orders`` (placed in all), ``killed_at`` (seconds),
    ``committed_at_kill`` (the offset the new consumers resumed from), ``lag_at_restart``,
    ``processed_after_restart`` (events the new consumers committed: the lag at the restart,
    nothing before the committed offset again) and ``receipted`` (orders the service recorded
    a receipt for, 1..``orders``, all of them). Raises ``ValueError`` naming a bad argument,
    ``TimeoutError`` when the lag has not drained within ``timeout`` seconds.
    """
    check_int("orders", orders, low=1, high=5000)
    check_int("consumers", consumers, low=1, high=8)
    handler_time = check_real("handler_time", handler_time, low=0, high=10)
    check_int("seed", seed, low=0)
    rate = check_real("rate", rate, low=0, low_open=True, high=2000)
    timeout = check_real("timeout", timeout, low=0, low_open=True)
    events = EventLogConfig(consumers=consumers, batch=5, poll_interval=0.02)
    config = ServerConfig(workers=64, service_time=Distribution(mean=0.0, kind="constant"),
                          store=StoreConfig(url=store_url), pool=PoolConfig(size=8),
                          events=events)
    samples: list[tuple[float, int, str]] = []
    phase = ["first round"]
    stop = threading.Event()
    with LiveServer(create_app(Settings(), server=config, seed=seed),
                    name="atlas-consumer-lag") as server, \
            httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as http:
        state = server.app.state.atlas
        loop = state.events.tasks[0].get_loop()  # the server's event loop

        def on_loop(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=30)

        async def restart() -> tuple[int, EventConsumers]:
            """Kill the consumers (cancelled, mid-batch or not) and start new ones."""
            await state.events.stop()
            committed = await state.store.committed(*RECEIPTS)
            fresh = EventConsumers(state.store, events,
                                   {RECEIPTS: slow_handler(order_receipts(state), handler_time)})
            fresh.start()
            state.events = fresh
            return committed, fresh

        on_loop(restart())  # the service's own consumers, slowed: the demo's handler
        http.post("/admin/reset").raise_for_status()
        start = time.monotonic()

        def sample() -> None:
            with httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as scraper:
                while not stop.is_set():
                    lag = _scrape_lag(scraper)
                    if lag is not None:
                        samples.append((time.monotonic() - start, lag, phase[0]))
                    stop.wait(0.05)

        def drained() -> None:
            deadline = time.monotonic() + timeout
            while (_scrape_lag(http) or 0) > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the receipts group's lag did not drain within "
                                       f"{timeout:g} s")
                time.sleep(0.05)
            time.sleep(0.1)  # a few samples at 0

        sampler = threading.Thread(target=sample, name="atlas-lag-sampler", daemon=True)
        sampler.start()
        try:
            load = Load(rate=rate, requests=orders)
            run_load(server.url, load=load, seed=seed, path="/api/orders", method="POST",
                     progress=False, server_events=False)
            drained()
            phase[0] = "second round"
            run_load(server.url, load=load, seed=seed + 1, path="/api/orders", method="POST",
                     progress=False, server_events=False)
            killed_at = time.monotonic() - start
            committed, fresh = on_loop(restart())
            lag_at_restart = _scrape_lag(http)
            phase[0] = "after the restart"
            drained()
        finally:
            stop.set()
            sampler.join(timeout=5)
        placed = int(http.get("/admin/orders").json()["applied"])
        processed = int(fresh.processed["receipts"])
        receipted = len(state.receipted)
    frame = pd.DataFrame(samples, columns=["time", "lag", "phase"])
    frame.attrs.update(orders=placed, killed_at=killed_at, committed_at_kill=committed,
                       lag_at_restart=lag_at_restart, processed_after_restart=processed,
                       receipted=receipted)
    return frame
