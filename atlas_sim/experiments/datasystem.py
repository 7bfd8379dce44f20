"""The data system behind the service: pool exhaustion, simulated, summarised the same way as
a live run.

``pool_exhaustion_sim`` runs the simulated ``/api/orders`` (``sim.pool``: the work, then one
transaction on a ``ConnectionPool`` driven on SimPy's clock) and ``pool_summary`` reads any
``RunResult`` of that route, simulated or live, into one dict, so the issue's test "pool of 2,
a slow query holding connections: wait times and acquire timeouts agree with the simulated pool
within sampling error" compares like with like.

What each world can measure:

==========================  ===================================  ===================================
quantity                    simulated (``source="sim"``)         live (``source="live"``)
==========================  ===================================  ===================================
503 share (timed out or     the statuses                         the statuses
refused at the pool)
timed out vs refused        ``meta["pool"]``'s ``outcome``       the 503's latency: a timeout waited
                                                                 ``pool.timeout``, a refusal none
                                                                 (``pool=`` given: latency >= half
                                                                 the timeout is a timeout)
acquire waits (p50, p90,    ``meta["pool"]``'s ``wait`` of the   not in the table: pass ``waits=``
p99, mean, share > 0)       granted (0 for a connection idle     (every granted acquire's wait, the
                                                                 zeros of those granted at once
                            at once)                             included: ``AsyncPool
                                                                 .take_wait_times()`` gives the
                                                                 queued ones only, so pad it with
                                                                 ``acquisitions - len(waits)``
                                                                 zeros), else NaN; ``/metrics``
                                                                 gives their sum and count
latency of the 200s         the request table                    the request table
==========================  ===================================  ===================================

A simulated run's dict also has the live-style figures (the latency split of its 503s), so a
test may check the estimator that the live side relies on against the truth of ``meta["pool"]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..analysis.stats import proportion_interval
from ..policies import ClientPolicy, PoolConfig, Status
from ..results import RunResult
from ..server_config import ServerConfig, StoreConfig
from ..sim import Scenario, simulate
from ..validation import check_int, check_real
from ..workload import Distribution, Load

__all__ = ["POOL_PERCENTILES", "pool_exhaustion_scenario", "pool_exhaustion_sim",
           "pool_summary"]

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
                        server: ServerConfig | None = None) -> dict[str, Any]:
    """``pool_summary`` of the simulated run of ``pool_exhaustion_scenario`` (same
    arguments): acquire-wait percentiles ``wait_p50``, ``wait_p90``, ``wait_p99`` and
    ``wait_mean`` (seconds, of the granted), ``timed_out`` and ``refused`` (shares of the
    requests), and the rest of ``pool_summary``'s keys. Raises ``ValueError`` naming a bad
    argument."""
    scenario = pool_exhaustion_scenario(rate=rate, requests=requests, pool=pool,
                                        query_time=query_time, seed=seed, server=server)
    return pool_summary(simulate(scenario), pool=pool)


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
    if table is not None:
        outcome = table["outcome"].to_numpy()
        out["timed_out"] = share(int((outcome == "timeout").sum()))
        out["refused"] = share(int((outcome == "refused").sum()))
    else:
        out["timed_out"] = out["timed_out_by_latency"]
        out["refused"] = out["refused_by_latency"]
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
