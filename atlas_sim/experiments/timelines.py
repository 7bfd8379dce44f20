"""DDIA's home timelines (chapter 1, "Describing Load") measured on the live service and
simulated by its twin, approach by approach: what notebook 03b calls.

``compare_approaches`` starts, for each approach (``"read"``, ``"write"``, ``"hybrid"``), the
live service in a child process of its own (``programs.ServiceProcess``) with
``ServerConfig(timelines=TimelineConfig(approach=a), store=..., cache=...,
events=EventLogConfig(...))``: it loads the graph (``POST /admin/timelines``), writes the
history straight into the store (and the cache), sends the seeded posts (``POST /api/posts``,
open loop at their scheduled times, one at a time), waits until the fan-out has caught up
(``GET /admin/timelines``: ``fanout_lag`` 0) and reads each post's delivery
(``/admin/timelines/delivery/{post}``). Then the reads, in ``ROUNDS`` rounds: in each, every
approach's service gets the same block of the seeded reads (the same users at the same
times, one open-loop run of the repository's load generator, ``service.loadgen.run_load``),
one approach after another, the order rotated from round to round, so that a busy spell of
the machine falls on every approach alike; the database work per operation is read before
and after. Then it fits the cost model to those live measurements
(``sim.timelines.calibrate_timelines``) and runs the simulated twin
(``sim.timelines.simulate_timelines``) with the same graph, configs and reads, the blocks one
after another ``ROUND_GAP`` apart.

How a read reaches its user with one load generator: ``run_load`` sends request ``j`` to
``(url, *instances)[j % m]`` with the client's default router (``NextInstance``), so each
request's "instance" is a base URL naming its user (``.../api/timeline/{user}?via=`` and the
path ``"/"``, a query the route ignores); the generator's warm-up is off (each service is
warmed by reads of its own first, not measured).

Each approach has a database of its own, since their services are up at once: by default a
SQLite file in a temporary directory; with ``store_url``, files beside the SQLite file it
names, or databases created on the PostgreSQL server it names, dropped after. The
materialised timelines live in the store's ``home_timelines`` table unless ``cache_url`` is
given, and then in Redis, a database number per approach (the table's caption says which).
Every server is stopped and every temporary directory, file and database removed before a
function returns, on error too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd

from ..policies.pool import PoolConfig
from ..results import RunResult
from ..server_config import (
    CacheConfig,
    EventLogConfig,
    ServerConfig,
    StoreConfig,
    TimelineConfig,
)
from ..sim.timelines import (
    TimelineCostModel,
    TimelineSchedule,
    TimelineSimRun,
    calibrate_timelines,
    rows_scanned,
    simulate_timelines,
    timeline_schedule,
)
from ..social import SocialGraph
from ..validation import check_choice, check_int, check_real
from ..workload import Load

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["APPROACHES", "LiveTimelineRun", "TimelineRun", "cold_cache", "compare_approaches",
           "consistency_demo", "plot_approaches"]

#: The approaches, in the order tables and figures show them.
APPROACHES = ("read", "write", "hybrid")
#: Reads sent one at a time before the measured reads (their database work is not counted):
#: the store's pages, cold after the history was written, are read once here.
WARM_UP_READS = 50
#: What the table's "approach" column says.
APPROACH_NAMES = {"read": "1: fan-out on read", "write": "2: fan-out on write",
                  "hybrid": "hybrid"}


@dataclass(eq=False)
class LiveTimelineRun:
    """One live approach: ``result`` (the reads' ``RunResult``; ``meta["server_work"]``: each
    read's handler time, ``Server-Timing: work``), ``users`` (each read's user, by request
    id), ``rows_scanned`` (per read), ``post_latency`` (seconds, per post; ``post_server``:
    their handler times),
    ``deliveries`` (``post, author, followers, posted_at, delivered_at, lag``, seconds on the
    service's ``time.monotonic``), ``work`` (the reads' database work: per operation
    ``queries, rows_read, rows_written``, the difference across the reads phase),
    ``post_work`` (the posts phase's, fan-out included), ``reads_served`` (reads the service
    answered in the reads phase), ``view`` (``GET /admin/timelines`` at the end)."""

    approach: str
    result: Any
    users: np.ndarray
    rows_scanned: np.ndarray
    post_latency: np.ndarray
    deliveries: pd.DataFrame
    work: dict[str, dict[str, int]]
    post_work: dict[str, dict[str, int]]
    reads_served: int
    view: dict[str, Any]
    post_server: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def celebrity_lag(self) -> float:
        row = self.deliveries.loc[self.deliveries["celebrity"]]
        return float(row["lag"].iloc[0]) if len(row) else math.nan


@dataclass(eq=False)
class TimelineRun:
    """What ``compare_approaches`` measured and simulated: ``graph``, ``schedule``,
    ``server`` (per approach, the ``ServerConfig`` both worlds ran), ``live`` and ``sim`` (per
    approach: ``LiveTimelineRun``, ``TimelineSimRun``), ``cost`` (the fitted
    ``TimelineCostModel``), ``timelines_in`` (``"cache"`` or ``"store"``: where the
    materialised timelines lived), ``wall_seconds`` (the whole comparison)."""

    graph: SocialGraph
    schedule: TimelineSchedule
    server: dict[str, ServerConfig]
    live: dict[str, LiveTimelineRun]
    sim: dict[str, TimelineSimRun]
    cost: TimelineCostModel
    timelines_in: str
    wall_seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per approach and world (``"live"``, ``"sim"``): ``read_p50_ms``,
        ``read_p99_ms``, ``queries_per_read`` and ``rows_per_read`` (database statements and
        rows returned, timeline reads and cold rebuilds), ``fanout_inserts_per_post``
        (timeline inserts per post fanned out or not), ``celebrity_lag_s`` (the delivery lag
        of the celebrity's post, seconds). ``attrs["caption"]`` says where the timelines lived
        and what ran."""
        rows = []
        posts = len(self.schedule.post_times)
        for approach in APPROACHES:
            for world, runs in (("live", self.live), ("sim", self.sim)):
                run = runs.get(approach)
                if run is None:
                    continue
                if isinstance(run, LiveTimelineRun):
                    served, work, inserts = run.reads_served, run.work, \
                        run.post_work["fanout"]["rows_written"] + (
                            run.post_work["fanout"]["rows_read"]
                            if self.timelines_in == "cache" else 0)
                    inserts = int(run.view.get("fanout_inserts", inserts))
                else:
                    served, work = len(run.result.requests), run.work
                    inserts = int(run.deliveries.loc[run.deliveries["lag"] > 0,
                                                     "followers"].sum())
                    if approach == "read":
                        inserts = 0
                latency = run.result.requests["latency"].to_numpy(dtype=float)
                reads = work["timeline_read"], work["rebuild"]
                rows.append({
                    "approach": APPROACH_NAMES[approach], "world": world,
                    "read_p50_ms": float(np.percentile(latency, 50)) * 1e3,
                    "read_p99_ms": float(np.percentile(latency, 99)) * 1e3,
                    "queries_per_read": sum(r["queries"] for r in reads) / max(served, 1),
                    "rows_per_read": sum(r["rows_read"] for r in reads) / max(served, 1),
                    "fanout_inserts_per_post": inserts / posts,
                    "celebrity_lag_s": run.celebrity_lag,
                })
        table = pd.DataFrame(rows)
        where = ("a Redis cache (sorted sets)" if self.timelines_in == "cache" else
                 "the store's home_timelines table (no cache_url given)")
        table.attrs["caption"] = (
            f"{self.graph.accounts} accounts, {self.graph.follows} follows (celebrity "
            f"{self.graph.celebrity}: {int(self.graph.follower_counts[self.graph.celebrity])} "
            f"followers); {posts} posts, then {self.schedule.reads} reads at "
            f"{self.schedule.rate:g}/s (in {ROUNDS} rounds, every approach the same reads, "
            f"the order rotated); materialised timelines in {where}; store "
            f"{self.meta.get('store', '?')}"
            + ("; sim calibrated from the live run" if self.sim and self.live else
               "; live only" if self.live else "; simulated only"))
        return table

    def p99_order(self, world: str) -> list[str]:
        """The approaches ordered by read p99 in ``world``, fastest first."""
        runs = self.live if world == "live" else self.sim
        return sorted(runs, key=lambda a: float(np.percentile(
            runs[a].result.requests["latency"].to_numpy(dtype=float), 99)))

    def p99_pairs(self, *, confidence: float = 0.95, margin: float = 0.1,
                  resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Each pair of approaches ordered by read p99 in both worlds, one row per pair ``a``,
        ``b`` (in ``APPROACHES`` order). For each world (``sim``, ``live``): ``<world>_a_ms``
        and ``<world>_b_ms`` (the p99s), ``<world>_low_ms`` and ``<world>_high_ms`` (the
        ``confidence`` bootstrap interval of p99(a) - p99(b): ``resamples`` resamples of the
        reads, seeded by ``seed``, the same reads of both approaches in each, since read ``i``
        is the same user at the same time in every approach; the twin's reads are a sample too,
        of its draws)
        and ``<world>`` (``"<"`` when the interval lies below 0 and p99(b) exceeds p99(a) by
        more than ``margin``, a share, ``">"`` the other way, else ``"tie"``: that world cannot
        tell them apart, or the difference is too small to matter; the twin's approaches share
        their random draws, so without the margin it would call a tenth of a millisecond an
        order). ``agree``: the verdicts are the same;
        ``contradicts``: one world says ``"<"`` and the other ``">"``.

        Needs the live and the simulated runs (``compare_approaches(live=True,
        twin=True)``); ValueError otherwise, or for a bad argument."""
        confidence = check_real("confidence", confidence, low=0, low_open=True, high=1,
                                high_open=True)
        resamples = check_int("resamples", resamples, low=10, high=100_000)
        seed = check_int("seed", seed, low=0)
        margin = check_real("margin", margin, low=0)
        both = [a for a in APPROACHES if a in self.live and a in self.sim]
        if len(both) < 2:
            raise ValueError("p99_pairs needs a live and a simulated run of at least two "
                             "approaches (compare_approaches(live=True, twin=True))")
        rng = np.random.default_rng(seed)
        tail = (1.0 - confidence) / 2
        p99: dict[tuple[str, str], float] = {}
        boot: dict[tuple[str, str], np.ndarray] = {}
        for world, runs in (("sim", self.sim), ("live", self.live)):
            # the approaches' reads are matched (read i: the same user at the same time in
            # every approach), so each resample picks the same reads of all of them
            columns = {a: runs[a].result.requests.sort_values("request_id")[
                "latency"].to_numpy(dtype=float) for a in both}
            size = min(len(x) for x in columns.values())
            picks = rng.integers(0, size, size=(resamples, size))
            for a, x in columns.items():
                p99[world, a] = float(np.percentile(x, 99))
                # each resample's p99, a block of resamples at a time: the same numbers
                # without a (resamples, reads) copy of the latencies (issue 23)
                boot[world, a] = np.concatenate([
                    np.percentile(x[:size][picks[i:i + 100]], 99, axis=1)
                    for i in range(0, resamples, 100)])
        rows = []
        for i, a in enumerate(both):
            for b in both[i + 1:]:
                row: dict[str, Any] = {"a": a, "b": b}
                for world in ("sim", "live"):
                    low, high = np.quantile(boot[world, a] - boot[world, b],
                                            [tail, 1.0 - tail])
                    row |= {f"{world}_a_ms": 1e3 * p99[world, a],
                            f"{world}_b_ms": 1e3 * p99[world, b],
                            f"{world}_low_ms": 1e3 * float(low),
                            f"{world}_high_ms": 1e3 * float(high),
                            world: _verdict(p99[world, a], p99[world, b], low, high,
                                            margin)}
                row["agree"] = row["sim"] == row["live"]
                row["contradicts"] = {row["sim"], row["live"]} == {"<", ">"}
                rows.append(row)
        return pd.DataFrame(rows)


def _verdict(a: float, b: float, low: float, high: float, margin: float) -> str:
    """``"<"``, ``">"`` or ``"tie"`` for p99s ``a`` and ``b`` whose difference ``a - b`` has
    the interval ``[low, high]`` (see ``TimelineRun.p99_pairs``)."""
    if high < 0 and b > (1 + margin) * a:
        return "<"
    if low > 0 and a > (1 + margin) * b:
        return ">"
    return "tie"


# -- the live side -----------------------------------------------------------------------------
@contextlib.contextmanager
def _service(config: ServerConfig, *, seed: int, name: str) -> Iterator[tuple[Any, httpx.Client]]:
    """A live service built from ``config`` in this process, and an HTTP client to it; both
    closed after."""
    from ..config import Settings
    from ..service import LiveServer, create_app

    server = LiveServer(create_app(Settings(), server=config, seed=seed), name=name,
                        stop_timeout=2.0)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            yield server, http
    finally:
        server.stop()


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path} answered "
                           f"{response.status_code}: {response.text[:300]}")
    return response.json()


def _wait_for_fanout(http: httpx.Client, *, within: float = 20.0) -> dict[str, Any]:
    """Poll ``GET /admin/timelines`` until the fan-out lag is 0 (or ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        view = _ok(http.get("/admin/timelines"))
        if not view["fanout_lag"] or time.monotonic() > deadline:
            return view
        time.sleep(0.02)


def _difference(after: dict[str, dict[str, int]],
                before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {op: {k: int(v) - int(before.get(op, {}).get(k, 0)) for k, v in cells.items()}
            for op, cells in after.items()}


def _load_graph(http: httpx.Client, graph_args: dict[str, Any]) -> dict[str, Any]:
    return _ok(http.post("/admin/timelines", json=graph_args))


def _newest_per_user(graph: SocialGraph, ids: np.ndarray, authors: np.ndarray, *,
                     length: int, pushed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's materialised home timeline after the history, computed from the graph
    instead of joined in the database: the newest ``length`` of the posts (``ids``, by
    ``authors``) of the accounts it follows whose ``pushed`` is True (shape (accounts,)).
    Returns ``(users, posts)``, two int arrays of the rows to insert."""
    order = np.lexsort((ids, authors))
    ids, authors = ids[order], authors[order]
    starts = np.searchsorted(authors, np.arange(graph.accounts + 1))
    users_out: list[np.ndarray] = []
    posts_out: list[np.ndarray] = []
    for user in range(graph.accounts):
        followees = graph.followees_of(user)
        followees = followees[pushed[followees]]
        if not len(followees):
            continue
        # each followee's newest ``length`` posts hold the user's newest ``length``
        picks = [ids[max(starts[a], starts[a + 1] - length):starts[a + 1]] for a in followees]
        candidates = np.concatenate(picks)
        if len(candidates) > length:
            candidates = np.partition(candidates, len(candidates) - length)[-length:]
        users_out.append(np.full(len(candidates), user, dtype=np.int64))
        posts_out.append(candidates.astype(np.int64))
    if not users_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(users_out), np.concatenate(posts_out)


def _insert_history(store_url: str, *, graph: SocialGraph, history: int, approach: str,
                    threshold: int, length: int, cache: CacheConfig | None = None) -> None:
    """``history`` older posts per account, written straight into the store's tables (as if
    posted and fanned out before the run: ``atlas_posts``, and under ``"write"``/``"hybrid"``
    the materialised timelines: each user's newest ``length`` posts of the accounts it
    follows, the hybrid's above-threshold authors excepted, computed from the graph in numpy,
    so the load writes ``accounts * length`` entries at most, not ``follows * history``), in
    one transaction, then ANALYZE; SQLite through ``sqlite3``, PostgreSQL through psycopg. The
    timelines go where the service reads them: with ``cache``, into the cache
    (``Cache.timeline_fill``: every user's timeline materialised, the cache warm), else into
    the store's ``atlas_home_timelines``."""
    if history == 0:
        return
    accounts = graph.accounts
    posts = [(a, "history") for _ in range(history) for a in range(accounts)]
    pushed = np.ones(accounts, dtype=bool)
    if approach == "hybrid":
        pushed = np.asarray(graph.follower_counts) <= threshold
    into_table = approach != "read" and cache is None

    def timelines(rows: list[tuple[int, int]]) -> list[tuple[int, int]]:
        table = np.array(rows, dtype=np.int64).reshape(-1, 2)
        users, post_ids = _newest_per_user(graph, table[:, 0], table[:, 1], length=length,
                                           pushed=pushed)
        return list(zip(users.tolist(), post_ids.tolist(), strict=True))

    rows: list[tuple[int, int]] = []
    if store_url.startswith("sqlite://"):
        import sqlite3

        from ..service.store import sqlite_path

        connection = sqlite3.connect(sqlite_path(store_url), timeout=30.0)
        try:
            with connection:
                connection.executemany("INSERT INTO atlas_posts (author, text) VALUES (?, ?)",
                                       posts)
                if approach != "read":
                    rows = connection.execute("SELECT id, author FROM atlas_posts").fetchall()
                if into_table:
                    connection.executemany("INSERT OR IGNORE INTO atlas_home_timelines "
                                           "(user_id, post) VALUES (?, ?)", timelines(rows))
                connection.execute("ANALYZE")  # the planner's statistics after a bulk load
            # fold the WAL back now, not in the service's first reads
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    elif store_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store_url) as pg, pg.cursor() as pg_cursor:
            with pg_cursor.copy("COPY atlas_posts (author, text) FROM STDIN") as copy:
                for row in posts:
                    copy.write_row(row)
            if approach != "read":
                pg_cursor.execute("SELECT id, author FROM atlas_posts")
                rows = pg_cursor.fetchall()
            if into_table:
                with pg_cursor.copy("COPY atlas_home_timelines (user_id, post) FROM STDIN") \
                        as copy:
                    for pair in timelines(rows):
                        copy.write_row(pair)
            pg_cursor.execute("ANALYZE atlas_posts, atlas_home_timelines, atlas_follows, "
                              "atlas_accounts")  # the planner's statistics after a bulk load
    else:
        raise ValueError(f"history needs a SQLite or PostgreSQL store_url, got {store_url!r}")
    if approach != "read" and cache is not None:
        _fill_cache(cache, timelines(rows), accounts=accounts, length=length)


def _fill_cache(cache: CacheConfig, pairs: list[tuple[int, int]], *, accounts: int,
                length: int) -> None:
    """Every user's materialised timeline (``pairs``: ``(user, post)``; a user without one
    gets an empty timeline) into the cache at ``cache.url``."""
    timelines: dict[int, list[int]] = {u: [] for u in range(accounts)}
    for user, post in pairs:
        timelines[user].append(post)
    _on_cache(cache, lambda redis: redis.timeline_fill(timelines, length))


def _on_cache(config: CacheConfig, action: Callable[[Any], Awaitable[Any]]) -> None:
    """``action(cache)`` on a ``Cache`` of ``config`` opened for it and closed after, from
    ordinary code or a notebook cell (whose thread already runs an event loop: ``blocking``)."""
    from ..service.cache import Cache
    from ..service.loadgen.run import blocking

    async def run() -> None:
        cache = Cache(config, client_name="atlas-history")
        try:
            await action(cache)
        finally:
            await cache.close()

    blocking(run)()


def _send_posts(http: httpx.Client, schedule: TimelineSchedule,
                server: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """The posts at their scheduled times (one at a time; late ones leave at once); each
    post's handler time (``Server-Timing: work``, seconds) into ``server`` when given."""
    from ..service import parse_server_timing

    latency = np.empty(len(schedule.post_times))
    ids = []
    start = time.monotonic()
    for i, (at, author) in enumerate(zip(schedule.post_times, schedule.post_authors,
                                         strict=True)):
        delay = start + float(at) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = time.monotonic()
        response = http.post("/api/posts", json={"author": int(author), "text": f"post {i}"})
        latency[i] = time.monotonic() - t
        ids.append(int(_ok(response)["post"]))
        if server is not None:
            server[i] = parse_server_timing(response.headers.get("server-timing"), "work")
    return latency, ids


@dataclass(eq=False)
class _Prepared:
    """One approach's live service after its posts phase, running until the reads are done."""

    approach: str
    threshold: int
    server: Any
    http: httpx.Client
    post_latency: np.ndarray
    post_server: np.ndarray
    deliveries: pd.DataFrame
    post_work: dict[str, dict[str, int]]


def _start_services(stack: contextlib.ExitStack, configs: dict[str, ServerConfig], *,
                    seed: int) -> dict[str, Any]:
    """Each approach's service in a child process of its own (``programs.ServiceProcess``:
    read one after another, services and load generator in one process would share one
    interpreter lock and each other's pauses), started at once (each start is mostly a wait
    for its interpreter), stopped when ``stack`` closes."""
    from concurrent.futures import ThreadPoolExecutor

    from ..service.programs import ServiceProcess

    servers = {a: ServiceProcess(c, seed=seed, name=f"atlas-timelines-{a}", stop_timeout=2.0)
               for a, c in configs.items()}
    for server in servers.values():
        stack.callback(server.stop)
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        for started in [pool.submit(server.start) for server in servers.values()]:
            started.result()
    return servers


def _prepare_approach(stack: contextlib.ExitStack, graph: SocialGraph,
                      schedule: TimelineSchedule, config: ServerConfig, server: Any, *,
                      graph_args: dict[str, Any]) -> _Prepared:
    """On ``config``'s running service, load the graph and the history, send the posts, wait
    for the fan-out and read every post's delivery."""
    timeline = config.timelines or TimelineConfig()
    approach, threshold = timeline.approach, timeline.threshold
    http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30.0))
    _load_graph(http, graph_args)
    assert config.store is not None and config.store.url is not None
    _insert_history(config.store.url, graph=graph, history=schedule.history,
                    approach=approach, threshold=threshold, length=timeline.length,
                    cache=config.cache)
    post_server = np.full(len(schedule.post_times), np.nan)
    post_latency, ids = _send_posts(http, schedule, post_server)
    view = _wait_for_fanout(http)
    wanted = range(len(ids)) if approach != "read" else [schedule.celebrity_post]
    rows = []
    for i in wanted:
        d = _ok(http.get(f"/admin/timelines/delivery/{ids[i]}"))
        lag = (d["delivered_at"] - d["posted_at"]) if d["delivered_at"] is not None \
            else math.nan
        rows.append({"post": ids[i], "author": d["author"], "followers": d["followers"],
                     "posted_at": d["posted_at"], "delivered_at": d["delivered_at"],
                     "lag": lag, "delivered": d["delivered"],
                     "celebrity": i == schedule.celebrity_post})
    return _Prepared(approach=approach, threshold=threshold, server=server, http=http,
                     post_latency=post_latency, post_server=post_server,
                     deliveries=pd.DataFrame(rows), post_work=view["database_work"])


def _approach_stores(stack: contextlib.ExitStack, store_url: str | None,
                     approaches: Sequence[str]) -> dict[str, str]:
    """One database per approach, their services being up at once: None, a SQLite file each
    in a temporary directory; a SQLite url, files beside it named ``<stem>-<approach>``; a
    PostgreSQL url, databases ``<name>_tl_<approach>`` on that server, created afresh. All
    removed when ``stack`` closes."""
    if store_url is None:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="atlas-tl-"))
        return {a: f"sqlite:///{directory}/timelines-{a}.db" for a in approaches}
    if store_url.startswith("sqlite://"):
        import pathlib

        from ..service.store import sqlite_path

        # absolute: the services run in child processes with working directories of their own
        path = pathlib.Path(sqlite_path(store_url)).absolute()
        files = {a: path.with_name(f"{path.stem}-{a}{path.suffix}") for a in approaches}

        def remove() -> None:
            for file in files.values():
                for extra in ("", "-wal", "-shm"):
                    pathlib.Path(f"{file}{extra}").unlink(missing_ok=True)

        remove()
        stack.callback(remove)
        return {a: f"sqlite:///{f}" for a, f in files.items()}
    if store_url.startswith(("postgresql://", "postgres://")):
        import psycopg
        from psycopg import sql

        url = httpx.URL(store_url)
        base = url.path.strip("/") or "postgres"
        names = {a: f"{base}_tl_{a}" for a in approaches}

        def run(*statements: str) -> None:  # each statement for every name, one connection
            with psycopg.connect(store_url, autocommit=True) as pg:
                for name in names.values():
                    for statement in statements:
                        pg.execute(sql.SQL(statement).format(sql.Identifier(name)))

        drop = "DROP DATABASE IF EXISTS {} WITH (FORCE)"
        run(drop, "CREATE DATABASE {}")
        stack.callback(run, drop)
        return {a: str(url.copy_with(path=f"/{n}")) for a, n in names.items()}
    raise ValueError(f"store_url must be a sqlite:// or postgresql:// url or None, got "
                     f"{store_url!r}")


def _approach_caches(stack: contextlib.ExitStack, cache_url: str | None,
                     approaches: Sequence[str]) -> Mapping[str, str | None]:
    """One Redis database per approach on ``cache_url``'s server: the url's database number
    plus 1, 2, 3 (Redis has databases 0-15 unless configured otherwise; ValueError naming
    ``cache_url`` when they would run past 15), each approach's timelines (``timeline:*``)
    cleared when ``stack`` closes."""
    if cache_url is None:
        return {a: None for a in approaches}
    url = httpx.URL(cache_url)
    number = url.path.strip("/") or "0"
    if not number.isdigit() or int(number) + len(approaches) > 15:
        raise ValueError(f"cache_url must name a Redis database 0..{15 - len(approaches)} "
                         f"(the approaches take the next {len(approaches)}), got {cache_url!r}")
    urls = {a: str(url.copy_with(path=f"/{int(number) + 1 + k}"))
            for k, a in enumerate(approaches)}
    for each in urls.values():  # the approaches' timelines deleted after
        stack.callback(_on_cache, CacheConfig(url=each), lambda cache: cache.clear_timelines())
    return dict(urls)


#: The reads go out in this many rounds; in each, every approach gets the same block of reads.
ROUNDS = 3
#: Seconds between two rounds in the twin's schedule (live, the other approaches' blocks run
#: then; either way the service is idle, its queues empty, when the next block starts).
ROUND_GAP = 1.0


def _rounds(schedule: TimelineSchedule) -> list[tuple[range, np.ndarray, int]]:
    """The reads split into ``ROUNDS`` blocks (fewer when there are fewer reads): each
    block's read indices, its send times (seconds from the block's start, ``Load(rate=rate,
    requests=len(block)).schedule(seed)``: the same for every approach) and that seed
    (the schedule's plus the block's number)."""
    bounds = np.linspace(0, schedule.reads, ROUNDS + 1).round().astype(int)
    blocks: list[tuple[range, np.ndarray, int]] = []
    for r in range(ROUNDS):
        indices = range(int(bounds[r]), int(bounds[r + 1]))
        if len(indices):
            seed = schedule.seed + len(blocks)
            times, _ = Load(rate=schedule.rate, requests=len(indices)).schedule(seed)
            blocks.append((indices, np.asarray(times), seed))
    return blocks


def _round_offsets(blocks: list[tuple[range, np.ndarray, int]]) -> list[float]:
    """Where each block starts on one approach's timeline: the previous block's last send
    plus ``ROUND_GAP``."""
    offsets, at = [], 0.0
    for _, times, _ in blocks:
        offsets.append(at)
        at += float(times[-1]) + ROUND_GAP
    return offsets


def _read_times(schedule: TimelineSchedule) -> np.ndarray:
    """Each read's send time on its approach's timeline, shape (reads,): the blocks of
    ``_rounds`` one after another, ``_round_offsets`` apart (the twin's schedule)."""
    blocks = _rounds(schedule)
    return np.concatenate([times + offset for (_, times, _), offset in
                           zip(blocks, _round_offsets(blocks), strict=True)])


def _read_phase(prepared: list[_Prepared], graph: SocialGraph, schedule: TimelineSchedule
                ) -> dict[str, LiveTimelineRun]:
    """The reads of every approach in ``ROUNDS`` rounds: in each round every approach's
    service gets the same block of reads (the same users at the same times), one approach
    after another, the order rotated from round to round, so that a busy spell of the machine
    falls on every approach alike rather than on whichever ran then. Each block is one
    open-loop run of the load generator; an approach's blocks are joined into one
    ``RunResult`` on the timeline of ``_read_times``."""
    from ..service import run_load

    n = len(prepared)
    blocks = _rounds(schedule)
    offsets = _round_offsets(blocks)
    before = {}
    for p in prepared:
        for u in range(0, graph.accounts, max(1, graph.accounts // WARM_UP_READS)):
            _ok(p.http.get(f"/api/timeline/{u}"))  # warm the database's pages, not measured
        before[p.approach] = _ok(p.http.get("/admin/timelines"))["database_work"]
    parts: dict[str, list[RunResult]] = {p.approach: [] for p in prepared}
    # the garbage of what ran before collected now and the survivors set aside, so that no
    # full collection pauses the generator in the middle of a block for a hundred milliseconds
    gc.collect()
    gc.freeze()
    try:
        for r, (indices, _, block_seed) in enumerate(blocks):
            for k in range(n):
                p = prepared[(r + k) % n]
                users = schedule.read_users[indices.start:indices.stop]
                bases = [f"{p.server.url}/api/timeline/{int(u)}?via=" for u in users]
                parts[p.approach].append(run_load(
                    bases[0], instances=bases[1:], path="/",
                    load=Load(rate=schedule.rate, requests=len(indices)),
                    seed=block_seed, server_events=False, progress=False,
                    max_connections=64, warm_up=False))
    finally:
        gc.unfreeze()
    posts_by_author = np.bincount(schedule.post_authors, minlength=graph.accounts) + \
        schedule.history
    runs = {}
    for p in prepared:
        view = _ok(p.http.get("/admin/timelines"))
        result = _join_blocks(parts[p.approach], blocks, offsets)
        instance = result.attempts.sort_values("request_id")["instance"].to_numpy()
        read_users = schedule.read_users[instance]
        above = p.threshold if p.approach == "hybrid" else None
        scanned = np.array([0 if p.approach == "write" else
                            rows_scanned(graph, posts_by_author, int(u), above=above)
                            for u in read_users])
        runs[p.approach] = LiveTimelineRun(
            approach=p.approach, result=result, users=read_users, rows_scanned=scanned,
            post_latency=p.post_latency, post_server=p.post_server, deliveries=p.deliveries,
            work=_difference(view["database_work"], before[p.approach]),
            post_work=p.post_work, reads_served=int(result.requests["ok"].sum()), view=view)
    return runs


def _join_blocks(results: list[RunResult], blocks: list[tuple[range, np.ndarray, int]],
                 offsets: list[float]) -> RunResult:
    """One approach's blocks as one run: request ids and instances made the reads' indices,
    times moved by the block's offset, ``meta["server_work"]`` joined."""
    requests, attempts, work = [], [], []
    for result, (indices, _, _), offset in zip(results, blocks, offsets, strict=True):
        first = indices.start
        requests.append(result.requests.assign(
            request_id=result.requests["request_id"] + first,
            t_start=result.requests["t_start"] + offset,
            t_end=result.requests["t_end"] + offset))
        attempts.append(result.attempts.assign(
            request_id=result.attempts["request_id"] + first,
            instance=result.attempts["instance"] + first,
            t_start=result.attempts["t_start"] + offset,
            t_end=result.attempts["t_end"] + offset))
        work.append(np.asarray(result.meta.get("server_work",
                                               np.full(len(result.attempts), np.nan)), float))
    last = results[-1]
    return RunResult(requests=pd.concat(requests, ignore_index=True),
                     attempts=pd.concat(attempts, ignore_index=True),
                     events=last.events.iloc[:0], duration=offsets[-1] + last.duration,
                     source=last.source,
                     meta={**last.meta, "server_work": np.concatenate(work),
                           "rounds": len(results)})


def _fanout_times(deliveries: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each fanned-out post's fan-out time, from its delivery record: its last insert minus the
    later of its commit and the previous delivery (the consumer works one post at a time), for
    the posts that waited behind another (so no poll wait is counted); all posts when fewer
    than 5 waited. ``seconds`` and ``rows`` (followers inserted)."""
    d = deliveries[deliveries["lag"].notna() & (deliveries["lag"] > 0)
                   & (deliveries["delivered"] > 0)].sort_values("delivered_at")
    done = d["delivered_at"].to_numpy(float)
    posted = d["posted_at"].to_numpy(float)
    previous = np.concatenate(([-np.inf], done[:-1]))
    waited = previous > posted
    chosen = waited if waited.sum() >= 5 else np.ones(len(d), dtype=bool)
    seconds = done - np.maximum(previous, posted)
    return {"seconds": seconds[chosen], "rows": d["delivered"].to_numpy(float)[chosen]}


def _samples(live: dict[str, LiveTimelineRun]) -> pd.DataFrame:
    """``calibrate_timelines``' frame from the live runs."""
    frames = []
    for approach, run in live.items():
        latency = run.result.requests.sort_values("request_id")["latency"].to_numpy(float)
        ok = run.result.requests.sort_values("request_id")["ok"].to_numpy(bool)
        attempts = run.result.attempts
        server_work = np.asarray(run.result.meta.get("server_work", np.full(len(attempts),
                                                                            np.nan)), float)
        # one attempt per read (no retries): its handler time, in request order
        server = server_work[np.argsort(attempts["request_id"].to_numpy(), kind="stable")]
        if len(server) != len(latency):
            server = np.full(len(latency), np.nan)
        frames.append(pd.DataFrame({"kind": "read", "approach": approach,
                                    "seconds": latency[ok], "rows": run.rows_scanned[ok],
                                    "server": server[ok]}))
        post_server = run.post_server if len(run.post_server) == len(run.post_latency) \
            else np.full(len(run.post_latency), np.nan)
        frames.append(pd.DataFrame({"kind": "post", "approach": approach,
                                    "seconds": run.post_latency, "rows": 0,
                                    "server": post_server}))
        if approach != "read" and len(run.deliveries):
            frames.append(pd.DataFrame({"kind": "fanout", "approach": approach,
                                        **_fanout_times(run.deliveries)}))
    return pd.concat(frames, ignore_index=True)


def _configs(approaches: Sequence[str], *, threshold: int, store: StoreConfig | None,
             cache_url: str | None, events: EventLogConfig) -> dict[str, ServerConfig]:
    # the experiment's timelines must outlast its run: a TTL of an hour, not the default minute
    return {a: ServerConfig(timelines=TimelineConfig(approach=a, threshold=threshold),  # type: ignore[arg-type]
                            store=store,
                            cache=CacheConfig(url=cache_url, ttl=3600.0) if cache_url else None,
                            events=events)
            for a in approaches}


def compare_approaches(*, accounts: int = 2000, mean_followers: float = 20,
                       reads: int = 300, rate: float = 100.0, posts: int = 120,
                       post_rate: float = 100.0, history: int = 10, seed: int = 2024,
                       threshold: int = 100,
                       live: bool = True, store_url: str | None = None,
                       cache_url: str | None = None, tail_index: float = 1.3,
                       approaches: Sequence[str] = APPROACHES,
                       cost: TimelineCostModel | None = None,
                       events: EventLogConfig | None = None,
                       pool: PoolConfig | None = None, twin: bool = True) -> TimelineRun:
    """Measure the three approaches live and simulate their twin (see the module docstring).

    Args:
        accounts, mean_followers, tail_index: the graph (``SocialGraph.generate``, seed
            ``seed``), the same in both worlds.
        reads, rate: open-loop home-timeline reads (Poisson, per second), users uniform.
        posts, post_rate: the posts phase before the reads (Poisson, authors uniform, the
            middle post by the celebrity).
        history: older posts per account, in the store before the run (written straight
            into its tables, already fanned out: what approach 1's query walks grows with
            it; ``accounts * history`` posts). Both worlds start from it.
        seed: the graph's, the schedule's and the service's seed.
        threshold: the hybrid's follower threshold (``TimelineConfig.threshold``).
        live: False: simulation only, with ``cost`` (default ``TimelineCostModel()``).
        store_url: where each approach's database goes (see the module docstring): a
            ``sqlite://`` file's directory and name, a PostgreSQL server; None: SQLite in a
            temporary directory. With ``live`` False, the simulated store (a PostgreSQL
            url: statements beside the service's loop).
        cache_url: a Redis (``redis://.../N``, N at most 12): the approaches take databases
            N+1, N+2, N+3 for the materialised timelines; None: the store's
            ``home_timelines`` table.
        approaches: which of ``APPROACHES`` to run.
        cost: the cost model when ``live`` is False (ignored when live: fitted).
        events: the fan-out consumers (default ``EventLogConfig(poll_interval=0.02)``).
        pool: the store's connection pool (``ServerConfig.pool``; None: ``PoolConfig()``).
        twin: False: the live run only (``run.sim`` empty, the table's rows all live). The
            twin charges each request's handler time (``Server-Timing: work``) to the
            service's loop and the rest of the client's latency as a pure delay
            (``TimelineCostModel.round_trip``), each read drawing its round trip and its
            handler's slowdown (``stretch_quantiles``) from the live run's: its p50 and p99
            land within a few milliseconds of live's; its work counts are exact.

    Returns a ``TimelineRun``; ``TimelineRun.table()`` is the comparison. ValueError naming a
    bad argument; RuntimeError when the service answers an error.
    """
    started = time.perf_counter()
    accounts = check_int("accounts", accounts, low=2, high=100_000)
    threshold = check_int("threshold", threshold, low=0)
    if not isinstance(twin, bool):
        raise ValueError(f"twin must be True or False, got {twin!r}")
    if not twin and not live:
        raise ValueError("twin=False needs live=True: there would be nothing to run")
    approaches = tuple(check_choice("approaches", a, APPROACHES) for a in approaches)
    if not approaches:
        raise ValueError("approaches must name at least one of " + ", ".join(APPROACHES))
    tail_index = check_real("tail_index", tail_index, low=0.5, high=5.0)
    graph = SocialGraph.generate(accounts=accounts, mean_followers=mean_followers,
                                 tail_index=tail_index, seed=seed)
    schedule = timeline_schedule(graph, posts=posts, post_rate=post_rate, reads=reads,
                                 rate=rate, seed=seed, history=history)
    events = events or EventLogConfig(poll_interval=0.02)
    graph_args = {"accounts": accounts, "mean_followers": float(mean_followers),
                  "tail_index": tail_index, "seed": seed}
    live_runs: dict[str, LiveTimelineRun] = {}
    configs: dict[str, ServerConfig] = {}
    prepared: list[_Prepared] = []
    with contextlib.ExitStack() as stack:
        if live:
            stores = _approach_stores(stack, store_url, approaches)
            caches = _approach_caches(stack, cache_url, approaches)
        for approach in approaches:
            store = StoreConfig(url=stores[approach] if live else store_url)
            configs[approach] = dataclasses.replace(
                _configs([approach], threshold=threshold, store=store,
                         cache_url=caches[approach] if live else cache_url,
                         events=events)[approach], pool=pool)
        if live:
            servers = _start_services(stack, configs, seed=seed)
            prepared = [_prepare_approach(stack, graph, schedule, configs[a], servers[a],
                                          graph_args=graph_args) for a in approaches]
            live_runs = _read_phase(prepared, graph, schedule)
    if not twin:
        return TimelineRun(graph=graph, schedule=schedule, server=configs, live=live_runs,
                           sim={}, cost=cost or TimelineCostModel(),
                           timelines_in="cache" if cache_url else "store",
                           wall_seconds=time.perf_counter() - started,
                           meta={"store": store_url.split("://")[0] if store_url else "sqlite"})
    if live:
        cost = calibrate_timelines(_samples(live_runs))
    elif cost is None:
        cost = TimelineCostModel()
    elif not isinstance(cost, TimelineCostModel):
        raise ValueError(f"cost must be a TimelineCostModel or None, got {cost!r}")
    # the twin reads in the same blocks at the same times, one block after another
    blocked = dataclasses.replace(schedule, read_times=_read_times(schedule))
    sim_runs = {a: simulate_timelines(graph, blocked, server=configs[a], cost=cost,
                                      cache=cache_url is not None,
                                      warm_cache=cache_url is not None and history > 0)
                for a in approaches}
    return TimelineRun(graph=graph, schedule=schedule, server=configs, live=live_runs,
                       sim=sim_runs, cost=cost,
                       timelines_in="cache" if cache_url else "store",
                       wall_seconds=time.perf_counter() - started,
                       meta={"store": store_url.split("://")[0] if store_url else "sqlite"})


def plot_approaches(run: TimelineRun) -> Figure:
    """Read p50 and p99 (ms) per approach, live beside simulated, and the celebrity's
    delivery lag (s): two panels."""
    import matplotlib.pyplot as plt

    if not isinstance(run, TimelineRun):
        raise ValueError(f"run must be a TimelineRun, got {run!r}")
    table = run.table()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    names = [APPROACH_NAMES[a] for a in APPROACHES if a in run.sim or a in run.live]
    x = np.arange(len(names))
    width = 0.2
    for k, (world, metric) in enumerate([("live", "read_p50_ms"), ("sim", "read_p50_ms"),
                                         ("live", "read_p99_ms"), ("sim", "read_p99_ms")]):
        values = [table.loc[(table["approach"] == n) & (table["world"] == world),
                            metric].squeeze() if world in set(table["world"]) else np.nan
                  for n in names]
        left.bar(x + (k - 1.5) * width, np.asarray(values, dtype=float), width,
                 label=f"{world} {metric[5:8]}", hatch="" if world == "live" else "//")
    left.set_xticks(x, names)
    left.set_ylabel("home-timeline read latency (ms)")
    left.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    for k, world in enumerate(("live", "sim")):
        values = [table.loc[(table["approach"] == n) & (table["world"] == world),
                            "celebrity_lag_s"].squeeze() if world in set(table["world"])
                  else np.nan for n in names]
        right.bar(x + (k - 0.5) * 0.35, np.asarray(values, dtype=float), 0.35, label=world)
    right.set_xticks(x, names)
    right.set_ylabel("celebrity post's delivery lag (s)")
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.suptitle(table.attrs["caption"], fontsize="small", wrap=True)
    return figure


def cold_cache(*, cache_url: str, accounts: int = 2000, mean_followers: float = 20,
               reads: int = 300, rate: float = 100.0, posts: int = 100, seed: int = 2024,
               approach: str = "write", store_url: str | None = None) -> pd.DataFrame:
    """Database queries per second and read latency with a warm cache and right after it is
    flushed (Redis ``FLUSHDB`` of ``cache_url``: every materialised timeline gone, so each
    user's next read is rebuilt from the database by approach 1's query, cache-aside, and
    counted as operation ``"rebuild"``). The service runs ``approach`` with its timelines in
    the cache at ``cache_url``; the seeded reads run three times: once to fill the cache, once
    warm, once cold. Rows ``phase`` (``"warm"``, ``"cold"``), ``db_queries_per_s`` (every
    operation's statements per second of the reads), ``rebuilds``, ``read_p50_ms``,
    ``read_p99_ms``. ValueError naming a bad ``approach``."""
    import redis

    approach = check_choice("approach", approach, ("write", "hybrid"))
    graph = SocialGraph.generate(accounts=accounts, mean_followers=mean_followers, seed=seed)
    schedule = timeline_schedule(graph, posts=posts, post_rate=200.0, reads=reads, rate=rate,
                                 seed=seed)
    from ..service import run_load

    rows = []
    with contextlib.ExitStack() as stack:
        if store_url is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="atlas-tl-"))
            store_url = f"sqlite:///{directory}/timelines.db"
        config = _configs([approach], threshold=100, store=StoreConfig(url=store_url),
                          cache_url=cache_url, events=EventLogConfig(poll_interval=0.02))[
                              approach]
        server, http = stack.enter_context(_service(config, seed=seed,
                                                    name="atlas-timelines-cold"))
        _load_graph(http, {"accounts": accounts, "mean_followers": float(mean_followers),
                           "seed": seed})
        _send_posts(http, schedule)
        _wait_for_fanout(http)
        bases = [f"{server.url}/api/timeline/{int(u)}?via=" for u in schedule.read_users]
        # warm every user the reads name, then read warm; then flush and read cold
        run_load(bases[0], instances=bases[1:], path="/", load=schedule.load,
                 seed=schedule.seed, server_events=False, progress=False)
        client = redis.Redis.from_url(cache_url)
        try:
            for phase in ("warm", "cold"):
                if phase == "cold":
                    client.flushdb()
                before = _ok(http.get("/admin/timelines"))["database_work"]
                result = run_load(bases[0], instances=bases[1:], path="/",
                                  load=schedule.load, seed=schedule.seed, server_events=False,
                                  progress=False)
                work = _difference(_ok(http.get("/admin/timelines"))["database_work"],
                                   before)
                latency = result.requests["latency"].to_numpy(float)
                queries = sum(cell["queries"] for cell in work.values())
                rows.append({"phase": phase, "db_queries_per_s": queries / result.duration,
                             "rebuilds": work["rebuild"]["queries"],
                             "read_p50_ms": float(np.percentile(latency, 50)) * 1e3,
                             "read_p99_ms": float(np.percentile(latency, 99)) * 1e3})
        finally:
            client.close()
    return pd.DataFrame(rows)


def consistency_demo(*, lose_events: float = 0.3, accounts: int = 500,
                     mean_followers: float = 10, posts: int = 60, seed: int = 2024,
                     store_url: str | None = None, cache_url: str | None = None) -> pd.DataFrame:
    """The transactional outbox against a dual write under a crash between its two steps
    (``lose_events``: the share of posts whose event the crash loses). For ``outbox`` True
    and False, on ``"write"``: posts sent, ``lost_events`` (the service's count),
    ``undelivered`` (posts no follower's timeline ever got, from their delivery records,
    after the fan-out caught up). Rows ``outbox``, ``posts``, ``lost_events``,
    ``undelivered``."""
    lose_events = check_real("lose_events", lose_events, low=0, high=1)
    graph = SocialGraph.generate(accounts=accounts, mean_followers=mean_followers, seed=seed)
    schedule = timeline_schedule(graph, posts=posts, post_rate=1000.0, reads=1, rate=1.0,
                                 seed=seed)
    rows = []
    with contextlib.ExitStack() as stack:
        directory = None
        if store_url is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="atlas-tl-"))
        for outbox in (True, False):
            url = store_url or f"sqlite:///{directory}/timelines-{outbox}.db"
            config = ServerConfig(
                timelines=TimelineConfig(approach="write", outbox=outbox),
                store=StoreConfig(url=url),
                cache=CacheConfig(url=cache_url) if cache_url else None,
                events=EventLogConfig(poll_interval=0.02))
            with _service(config, seed=seed, name="atlas-timelines-outbox") as (_, http):
                _load_graph(http, {"accounts": accounts, "mean_followers": float(mean_followers),
                                   "seed": seed, "lose_events": lose_events})
                _, ids = _send_posts(http, schedule)
                view = _wait_for_fanout(http)
                undelivered = sum(
                    1 for p in ids
                    if _ok(http.get(f"/admin/timelines/delivery/{p}"))["delivered_at"] is None
                    and graph.follower_counts[schedule.post_authors[ids.index(p)]] > 0)
                rows.append({"outbox": outbox, "posts": len(ids),
                             "lost_events": int(view["lost_events"]),
                             "undelivered": undelivered})
    return pd.DataFrame(rows)


