"""Notebook 03b's panel: the simulated connection pool against its closed form.

``pool_panel`` puts sliders (pool size, acquire timeout, order rate, the slow query's mean)
over a pure simulated run of ``/api/orders`` (``experiments.datasystem.pool_exhaustion_scenario``
on SimPy's clock: Poisson orders, each holding one pooled connection for an exponential time)
and sets it beside the M/M/c+D queue of ``analysis.pool.pool_theory`` (Baccelli and Hebuterne,
"On queues with impatient customers"; Boots and Tijms, "A multiserver queueing system with
impatient customers"): the share of orders that wait, the share that time out (a 503 after
``timeout`` seconds, psycopg_pool's ``PoolTimeout``), and the acquire waits of those granted a
connection. The live run of the same pool is a separate cell of the notebook
(``experiments.datasystem``); the panel never touches the service.

``start_parts`` starts the notebook's real parts where they are installed: a PostgreSQL
(``service.programs.PostgresServer``, Debian's ``postgresql``) and a Redis
(``RedisServer``, Debian's ``redis-server``), each on 127.0.0.1, a free port and a temporary
directory; where one is missing the notebook runs on SQLite (nothing to install) or without a
cache, and ``DataParts.table()`` says which ran and what installing the missing one gives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..analysis.figures import InPlaceFigure
from ..analysis.pool import pool_theory
from ..policies import PoolConfig
from ..service import leftovers as service_leftovers
from ..service.programs import PostgresServer, ProgramMissing, RedisServer, running_programs
from ..sim import simulate
from ..validation import check_int
from ..widgets import Control, Panel
from ..workload import Distribution
from .datasystem import pool_exhaustion_scenario, pool_summary

__all__ = [
    "POOL_PANEL_REQUESTS",
    "DataParts",
    "PoolWaitsFigure",
    "cold_cache_or_why_not",
    "consumer_lag_summary",
    "crash_demo",
    "leftovers",
    "plot_consumer_lag",
    "plot_pool_waits",
    "pool_panel",
    "pool_panel_run",
    "pool_panel_table",
    "start_parts",
]

#: Orders per simulated run of the panel (about 0.1 s of simulation each).
POOL_PANEL_REQUESTS = 2000


def pool_panel_run(*, size: int, timeout: float, rate: float, query_ms: float,
                   requests: int = POOL_PANEL_REQUESTS, seed: int = 0) -> dict[str, Any]:
    """One simulated run of ``requests`` orders at ``rate`` per second on a pool of ``size``
    connections with an acquire ``timeout`` (seconds), each order's transaction holding its
    connection an exponential time of mean ``query_ms`` milliseconds, and the closed form of the
    same pool. Returns ``{"pool", "summary"`` (``pool_summary``'s dict), ``"waits"`` (the
    granted orders' acquire waits, seconds, shape (granted,)), ``"theory"`` (an
    ``analysis.pool`` model)``}``. Raises ``ValueError`` naming a bad argument."""
    pool = PoolConfig(size=size, max_waiting=0, timeout=timeout)
    hold = Distribution(mean=query_ms / 1000.0, kind="exponential")
    result = simulate(pool_exhaustion_scenario(rate=rate, requests=requests, pool=pool,
                                               query_time=hold, seed=seed))
    table = result.meta["pool"]
    waits = table.loc[table["outcome"] == "granted", "wait"].to_numpy(dtype=float)
    return {"pool": pool, "summary": pool_summary(result, pool=pool), "waits": waits,
            "theory": pool_theory(rate=rate, pool=pool, hold=hold)}


def pool_panel_table(results: dict[str, Any]) -> pd.DataFrame:
    """Rows "simulated" and "theory (M/M/c+D)"; columns: waited (%), timed out (%) (of all
    orders), mean wait (ms) and p99 wait (ms) of the orders granted a connection."""
    s, theory = results["summary"], results["theory"]
    rows = {
        "simulated": [100 * s["waited"] * (1 - s["timed_out"]) + 100 * s["timed_out"],
                      100 * s["timed_out"], 1000 * s["wait_mean"], 1000 * s["wait_p99"]],
        "theory (M/M/c+D)": [100 * theory.P_wait, 100 * theory.P_timeout,
                             1000 * theory.mean_wait_granted,
                             1000 * theory.wait_quantile(0.99)],
    }
    table = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=["waited (%)", "timed out (%)", "mean wait (ms)",
                                            "p99 wait (ms)"])
    return table.astype(float).round(1)


def plot_pool_waits(results: dict[str, Any]) -> Figure:
    """The acquire waits of the granted orders: the simulated share waiting longer than t
    (steps) beside the closed form's (line), t up to the timeout. Drawn by
    ``PoolWaitsFigure``, which the pool panel updates in place."""
    return PoolWaitsFigure().draw(results)


class PoolWaitsFigure(InPlaceFigure):
    """``plot_pool_waits``'s figure, outside pyplot. Results: ``pool_panel_run``'s dict."""

    def build(self, results: dict[str, Any]) -> Figure:
        figure, ax = self.subplots(figsize=(6.4, 3.4))
        self.ax = ax
        (self.simulated,) = ax.step([], [], where="post", label="simulated")
        (self.theory,) = ax.plot([], [], "--", label="theory (M/M/c+D)")
        ax.set_xlabel("acquire wait t (ms)")
        ax.set_ylabel("granted orders waiting > t (%)")
        ax.set_ylim(0, 100)
        self.legend_labels: tuple[str, ...] | None = None
        return figure

    def update(self, results: dict[str, Any]) -> None:
        pool: PoolConfig = results["pool"]
        waits = np.sort(results["waits"])
        theory = results["theory"]
        ax = self.ax
        t = np.linspace(0.0, pool.timeout, 200)
        tail = [1.0 - theory.wait_cdf(x) for x in t]  # of the granted, as the simulated
        if waits.size:
            shown = 1.0 - np.searchsorted(waits, t, side="right") / waits.size
            self.simulated.set_data(1000 * t, 100 * shown)
        else:  # no order granted: no simulated curve, and none in the legend
            self.simulated.set_data([], [])
        self.simulated.set_visible(bool(waits.size))
        self.theory.set_data(1000 * t, 100 * np.asarray(tail))
        ax.set_xlim(0, 1000 * pool.timeout)
        ax.set_title(f"Pool of {pool.size}, timeout {1000 * pool.timeout:.0f} ms")
        handles = [line for line in (self.simulated, self.theory) if line.get_visible()]
        labels = tuple(str(line.get_label()) for line in handles)
        if labels != self.legend_labels:
            self.legend_labels = labels
            ax.legend(handles=handles, loc="upper right")


def pool_panel(*, requests: int = POOL_PANEL_REQUESTS, seed: int = 0) -> Panel:
    """Sliders over the simulated pool: its size (1-8), its acquire timeout (0.1-2 s), the
    order rate (5-60 per second) and the slow query's mean (20-200 ms); the figure and the
    table set the simulated run beside ``pool_theory``'s M/M/c+D."""
    requests = check_int("requests", requests, low=100, high=100_000)

    def run(size: int, timeout: float, rate: float, query_ms: float) -> dict[str, Any]:
        return pool_panel_run(size=size, timeout=timeout, rate=rate, query_ms=query_ms,
                              requests=requests, seed=seed)

    return Panel(
        run,
        [Control.slider("size", 1, 8, 2, step=1, label="pool size (connections)"),
         Control.slider("timeout", 0.1, 2.0, 0.5, step=0.1, label="acquire timeout (s)"),
         Control.slider("rate", 5.0, 60.0, 30.0, step=1.0, label="orders per second"),
         Control.slider("query_ms", 20.0, 200.0, 80.0, step=10.0,
                        label="slow query, mean (ms)")],
        PoolWaitsFigure(), table=pool_panel_table,
        title="A connection pool: simulated against M/M/c+D",
    )



@dataclass
class DataParts:
    """The notebook's database, cache and event log: ``postgres`` and ``redis`` (the running
    servers, or None where the program is missing), ``missing`` (program -> Debian package).
    ``store_url`` is the PostgreSQL database's URL, or None (each experiment then makes a
    temporary SQLite file); ``cache_url`` the Redis URL, or None (no cache)."""

    postgres: PostgresServer | None
    redis: RedisServer | None
    missing: dict[str, str]

    @property
    def store_url(self) -> str | None:
        return self.postgres.url if self.postgres is not None else None

    @property
    def cache_url(self) -> str | None:
        return self.redis.url if self.redis is not None else None

    def store(self, name: str) -> str | None:
        """A fresh, empty PostgreSQL database ``name`` (a-z, 0-9, _) for one experiment, its URL
        (dropped and made again when it exists, so a cell run twice starts clean); None without
        PostgreSQL (the experiment then makes its own temporary SQLite file). Raises
        ``ValueError`` for another name."""
        if self.postgres is None:
            return None
        self.postgres.drop_database(name)
        return self.postgres.create_database(name)

    def table(self) -> pd.DataFrame:
        """One row per part (database, cache, event log): what runs it here, and its address
        or what installing the missing program gives."""
        pg, rd = self.postgres, self.redis
        rows = {
            "database": ("PostgreSQL (its own server)" if pg else "SQLite (a file, WAL mode)",
                         pg.url if pg else "apt install postgresql: the same experiments on "
                         "PostgreSQL, row locks and pg_sleep instead of one writer at a time"),
            "cache": ("Redis (its own server)" if rd else "none: reads go to the database",
                      rd.url if rd else "apt install redis-server: timelines cached in Redis, "
                      "a cache that can go cold"),
            "event log": ("a table with consumer offsets in the database (Kafka's model)",
                          "Kafka is not installable here"),
        }
        return pd.DataFrame.from_dict(rows, orient="index", columns=["runs on", "address / note"])

    def stop(self) -> None:
        """Stop the servers started (safe to call twice)."""
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()

    def __repr__(self) -> str:
        running = [s.kind for s in (self.postgres, self.redis) if s is not None and s.running]
        return f"DataParts(running: {', '.join(running) or 'nothing'})"


def start_parts(*, postgres: bool = True, redis: bool = True) -> DataParts:
    """Start a PostgreSQL and a Redis of Atlas's own where installed (``postgres`` / ``redis``
    False: don't), named "atlas-03b-postgres" and "atlas-03b-redis", so that running the cell
    again restarts them rather than adding more. A missing program is recorded in ``missing``
    (never raised); a program that is installed but fails to start raises ``ProgramFailed``."""
    missing: dict[str, str] = {}
    started: dict[str, Any] = {"postgres": None, "redis": None}
    for key, wanted, make in (("postgres", postgres,
                               lambda: PostgresServer(name="atlas-03b-postgres")),
                              ("redis", redis, lambda: RedisServer(name="atlas-03b-redis"))):
        if not wanted:
            continue
        try:
            started[key] = make().start()
        except ProgramMissing as err:
            missing[err.program] = err.package
    return DataParts(postgres=started["postgres"], redis=started["redis"], missing=missing)


def leftovers() -> list[str]:
    """What Atlas still runs from this kernel: ``service.leftovers()`` (in-process servers and
    ``atlas-*`` threads) and every external program still registered (PostgreSQL, Redis, a
    service child process), as ``"PostgreSQL 'atlas-03b-postgres' (pid N)"``. Empty once the
    notebook has stopped everything."""
    found = service_leftovers()
    found += [f"{program.kind} {name!r} (pid {program.pid})"
              for name, program in running_programs().items() if program.running]
    return found


def plot_consumer_lag(samples: pd.DataFrame) -> Figure:
    """The consumer lag (events) against time (seconds) of
    ``experiments.datasystem.consumer_lag_demo``'s samples (columns ``time``, ``lag``,
    ``phase``), one line per phase, and the kill (``attrs["killed_at"]``) as a dotted line.
    Raises ``ValueError`` for a table without those columns."""
    missing = {"time", "lag", "phase"} - set(getattr(samples, "columns", ()))
    if missing:
        raise ValueError(f"samples must have the columns time, lag and phase; missing "
                         f"{sorted(missing)}")
    figure, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    for phase, rows in samples.groupby("phase", sort=False):
        ax.plot(rows["time"], rows["lag"], drawstyle="steps-post", label=str(phase))
    killed = samples.attrs.get("killed_at")
    if killed is not None:
        ax.axvline(float(killed), color="black", linestyle=":", label="consumers killed")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("consumer lag (events)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best")
    ax.set_title('Group "receipts" on topic "orders": end offset − committed offset')
    return figure


#: ``consumer_lag_demo``'s ``attrs``, as ``consumer_lag_summary`` labels them.
_LAG_ROWS = {"orders": "orders placed (both bursts)",
             "killed_at": "consumers killed at (s)",
             "committed_at_kill": "committed offset at the kill",
             "lag_at_restart": "lag at the restart (events)",
             "processed_after_restart": "events handled after the restart",
             "receipted": "orders with a receipt"}


def consumer_lag_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """``consumer_lag_demo``'s ``attrs`` as one readable column ("value"): counts as whole
    numbers, the kill's time to 0.01 s, plus the largest lag seen in each phase."""
    attrs = samples.attrs
    rows: dict[str, str] = {}
    for key, label in _LAG_ROWS.items():
        if key in attrs:
            value = attrs[key]
            rows[label] = f"{value:.2f}" if key == "killed_at" else f"{int(value)}"
    if {"phase", "lag"} <= set(samples.columns):
        for phase, peak in samples.groupby("phase", sort=False)["lag"].max().items():
            rows[f"largest lag, {phase} (events)"] = f"{int(peak)}"
    return pd.DataFrame({"value": rows})


def cold_cache_or_why_not(parts: DataParts, *, seed: int = 0, **options: Any) -> pd.DataFrame:
    """``experiments.timelines.cold_cache`` on ``parts``' Redis and database (``options``
    passed on), or, without a Redis, a one-row table saying so and what would run it (``apt
    install redis-server``): a cache that can go cold needs a cache. Numbers to one
    decimal."""
    if parts.cache_url is None:
        return pd.DataFrame({"needs": ["a Redis cache: apt install redis-server, then run the "
                                       "notebook again"]}, index=["cold cache"])
    from .timelines import cold_cache  # notebook 03b's timelines section

    table: pd.DataFrame = cold_cache(cache_url=parts.cache_url, store_url=parts.store("cold"),
                                     seed=seed, **options)
    return table.round(1)


def crash_demo(**options: Any) -> pd.DataFrame:
    """``experiments.datasystem.crash_demo(**options)`` from a notebook cell: that function
    drives its clients with ``asyncio.run``, which a Jupyter cell's thread (already running an
    event loop) refuses, so it runs here in a short-lived thread of its own, and the call waits
    for it and returns its table (or raises what it raised)."""
    from .datasystem import crash_demo as demo

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["table"] = demo(**options)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="atlas-03b-crash-demo")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    table: pd.DataFrame = outcome["table"]
    return table
