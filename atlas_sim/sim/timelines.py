"""DDIA's home timelines (chapter 1, "Describing Load"), simulated: the twin of the live
``/api/posts`` and ``/api/timeline/{user}`` (``service.timelines``) on SimPy's clock.

The same ``SocialGraph`` (``atlas_sim.social``), the same seeded schedule
(``timeline_schedule``: a phase of posts, Poisson at ``post_rate``, authors uniform, one of them,
the middle one, by ``graph.celebrity``; then a phase of open-loop reads, Poisson at ``rate``
(``Load(rate=, requests=).schedule(seed)``, the load generator's send times), users uniform),
``history`` older posts per account already in the store and fanned out,
the same ``ServerConfig`` (its ``timelines``, ``pool`` and ``events``) and a cost model
(``TimelineCostModel``) fitted to the live service's own measurements
(``calibrate_timelines``).

What one request costs, as the live service spends it:

* every request spends ``round_trip`` seconds as a pure delay, off the service's loop (the
  client, the network, the HTTP server's parsing: the latency the client sees beyond the
  handler's own time, ``Server-Timing: work``), as ``experiments.live.Calibration.round_trip``
  does for ``/api/work``;
* then it takes the service's **event loop** for ``overhead`` seconds (routing, the handler's
  Python, JSON: one asyncio loop, so one at a time, FIFO). The timeline routes take no work
  slot (``ServerConfig.workers`` bounds ``/api/work`` only), so the loop, not ``workers``, is
  what queues them;
* a database statement holds one pooled connection (``sim.pool.SimPool``, the one
  ``policies.pool.ConnectionPool`` of ``ServerConfig.pool or PoolConfig()``) for its time, and,
  for a database in the service's own process (SQLite, memory), the event loop too for that
  time (the driver's thread and the loop share one interpreter, so the live service does one
  statement's Python work at a time); a PostgreSQL statement runs in the server's process,
  beside the loop;
* ``"read"``: one query, ``query_base + per_row * scanned`` where ``scanned`` is the number of
  posts, committed before the read, of the accounts the user follows (the rows the join walks);
* ``"write"``: one materialised-timeline read, ``cache_read`` (on a pooled connection when the
  timelines live in the store's ``home_timelines`` table; without one when they live in the
  cache, ``cache=True``: warm with ``warm_cache`` (every user's timeline materialised before
  the run, as the live comparison loads its history), else each user's first read a cold
  miss rebuilt by approach 1's query over the followees' posts);
* ``"hybrid"``: the materialised read plus one query over the followees with more than
  ``threshold`` followers (``scanned`` counts their posts only);
* a post: one transaction of ``post_insert``; under ``"write"``/``"hybrid"`` its event goes to
  the ``"posts"`` topic at commit (the outbox);
* the fan-out: ``EventLogConfig.consumers`` consumers (``ServerConfig.events``, else
  ``EventLogConfig()`` as live), each polling every ``poll_interval`` seconds when there is
  nothing new, taking up to ``batch`` events at once; per post (``"hybrid"``: after a follower
  count of ``cache_read``; an author above ``threshold`` is skipped) one statement of
  ``fanout_base + per_insert * followers`` on a pooled connection. A post's delivery lag is when
  that statement ends minus the post's commit (0 under ``"read"`` and for the hybrid's
  celebrities: read at read time).

Database work is counted as the live store counts it (``service.store.base.DbWork``): per
operation, statements (``queries``), rows returned (``rows_read``) and rows inserted
(``rows_written``); ``rows_scanned`` (the cost model's rows) besides.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import simpy

from ..policies.pool import Granted, PoolConfig
from ..results import RunResult
from ..server_config import EventLogConfig, ServerConfig, TimelineConfig
from ..social import SocialGraph
from ..validation import check_int, check_real
from ..workload import Load
from .pool import SimPool

__all__ = ["TimelineCostModel", "TimelineSchedule", "TimelineSimRun", "calibrate_timelines",
           "rows_scanned", "simulate_timelines", "timeline_schedule"]

OPERATIONS = ("timeline_read", "post", "fanout", "rebuild")
#: The key after the schedule's seed of the reads' round-trip draws (``TimelineCostModel``).
ROUND_TRIP_STREAM = 7
#: The key after the schedule's seed of the reads' stretch draws.
STRETCH_STREAM = 8
#: How many quantiles of the live round trip ``calibrate_timelines`` keeps.
ROUND_TRIP_QUANTILES = 201


@dataclass(frozen=True, kw_only=True)
class TimelineCostModel:
    """Seconds each step of a timeline request costs (see the module docstring).

    Args:
        round_trip: per request, a pure delay off the service's loop (client, network, HTTP
            parsing): the client's latency minus the handler's own time.
        overhead: per request, on the service's event loop (the handler's own time beyond
            its statements).
        query_base: per approach-1 query (the join of follows and posts), its fixed part.
        per_row: per post a query walks (``rows_scanned``).
        cache_read: per materialised-timeline read (a Redis ``ZREVRANGE`` or a
            ``home_timelines`` SELECT), and per follower count of the hybrid's fan-out.
        post_insert: per post's transaction (the row, and its outbox event).
        fanout_base: per post fanned out, the statement's fixed part.
        per_insert: per follower's timeline insert.
        round_trip_quantiles: the distribution of the round trip, as quantiles at evenly
            spaced probabilities from 0 to 1 (at least 2, non-decreasing): when given, each
            read draws its own round trip from it (inverse transform, seeded by the
            schedule's seed), so that the twin's tail carries the client's and network's
            variation the live run measured, not only their median; ``()`` (the default):
            every request pays ``round_trip``.
        stretch_quantiles: the distribution of how much longer than the model a read's
            handler took, as a share of the model's time (the host's pauses: a thread waiting
            for the interpreter, a process for a core, a statement for the database's
            scheduler; they grow with the work a read does), as quantiles like
            ``round_trip_quantiles``: when given, each read draws one share ``s`` and, after
            its work ``w`` (its ``overhead``, statements and cache reads), waits ``s * w``
            more as a pure delay (off the loop and the pool); ``()``: none.

    All >= 0 and finite; ValueError naming the field otherwise.
    """

    overhead: float = 0.001
    round_trip: float = 0.0
    query_base: float = 0.0005
    per_row: float = 1e-5
    cache_read: float = 0.0003
    post_insert: float = 0.002
    fanout_base: float = 0.001
    per_insert: float = 1e-5
    round_trip_quantiles: tuple[float, ...] = ()
    stretch_quantiles: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("overhead", "round_trip", "query_base", "per_row", "cache_read", "post_insert",
                     "fanout_base", "per_insert"):
            object.__setattr__(self, name, check_real(name, getattr(self, name), low=0))
        for name in ("round_trip_quantiles", "stretch_quantiles"):
            quantiles = getattr(self, name)
            if not isinstance(quantiles, tuple | list | np.ndarray):
                raise ValueError(f"{name} must be a sequence of seconds, got {quantiles!r}")
            quantiles = tuple(check_real(name, q, low=0) for q in quantiles)
            if len(quantiles) == 1 or any(b < a for a, b in itertools.pairwise(quantiles)):
                raise ValueError(f"{name} must be empty or at least 2 non-decreasing values, "
                                 f"got {quantiles!r}")
            object.__setattr__(self, name, quantiles)

    def round_trips(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` round trips (seconds, shape (n,)): drawn from ``round_trip_quantiles`` by
        inverse transform (linear between the quantiles), else ``round_trip`` each."""
        return _draw(self.round_trip_quantiles, n, rng, self.round_trip)

    def stretches(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` stretches (shares, shape (n,)) from ``stretch_quantiles``, else 0."""
        return _draw(self.stretch_quantiles, n, rng, 0.0)


def _draw(quantiles: tuple[float, ...], n: int, rng: np.random.Generator,
          default: float) -> np.ndarray:
    """``n`` draws from a distribution given by its quantiles at evenly spaced probabilities
    (inverse transform sampling, linear between them); ``default`` each when there are none."""
    if not quantiles:
        return np.full(n, default)
    return np.interp(rng.random(n), np.linspace(0.0, 1.0, len(quantiles)), quantiles)


@dataclass(frozen=True, eq=False)
class TimelineSchedule:
    """What both worlds send: ``post_times`` (seconds from the start of the posts phase,
    shape (posts,)), ``post_authors`` (account ids), ``celebrity_post`` (the index of the post by
    ``graph.celebrity``: post id ``celebrity_post + 1``), ``read_times`` (seconds from the start
    of the reads phase, shape (reads,)) and ``read_users``; ``seed``."""

    post_times: np.ndarray
    post_authors: np.ndarray
    celebrity_post: int
    read_times: np.ndarray
    read_users: np.ndarray
    seed: int
    rate: float
    reads: int
    history: int = 0

    @property
    def load(self) -> Load:
        """The reads' open-loop ``Load`` (``run_load(load=..., seed=seed)`` sends them at
        ``read_times``)."""
        return Load(rate=self.rate, requests=self.reads)


def timeline_schedule(graph: SocialGraph, *, posts: int, post_rate: float, reads: int,
                      rate: float, seed: int, history: int = 0) -> TimelineSchedule:
    """The seeded schedule (see ``TimelineSchedule``): posts Poisson at ``post_rate`` per
    second, authors uniform, the middle one (``posts // 2``) by ``graph.celebrity``; reads at
    ``Load(rate=rate, requests=reads).schedule(seed)``, users uniform; ``history`` older posts
    per account already in the store (and fanned out) before the posts phase. ValueError naming
    a bad argument (``posts`` >= 1, ``reads`` >= 1, rates > 0, ``seed``, ``history`` >= 0)."""
    if not isinstance(graph, SocialGraph):
        raise ValueError(f"graph must be a SocialGraph, got {graph!r}")
    posts = check_int("posts", posts, low=1, high=1_000_000)
    reads = check_int("reads", reads, low=1, high=100_000)
    post_rate = check_real("post_rate", post_rate, low=0, low_open=True)
    rate = check_real("rate", rate, low=0, low_open=True)
    seed = check_int("seed", seed, low=0)
    history = check_int("history", history, low=0, high=1000)
    rng = np.random.default_rng([seed, 22, 3])
    post_times = np.cumsum(rng.exponential(1.0 / post_rate, size=posts))
    authors = rng.integers(0, graph.accounts, size=posts)
    celebrity_post = posts // 2
    authors[celebrity_post] = graph.celebrity
    read_times, _ = Load(rate=rate, requests=reads).schedule(seed)
    users = rng.integers(0, graph.accounts, size=reads)
    return TimelineSchedule(post_times=post_times, post_authors=authors,
                            celebrity_post=celebrity_post, read_times=np.asarray(read_times),
                            read_users=users, seed=seed, rate=rate, reads=reads,
                            history=history)


def rows_scanned(graph: SocialGraph, posts_by_author: np.ndarray, user: int, *,
                 above: int | None = None, at_most: int | None = None) -> int:
    """The posts of the accounts ``user`` follows (``posts_by_author``: posts per account,
    shape (accounts,)), only of those with more than ``above`` / at most ``at_most``
    followers when given: the rows approach 1's join walks."""
    followees = graph.followees_of(user)
    if above is not None:
        followees = followees[graph.follower_counts[followees] > above]
    if at_most is not None:
        followees = followees[graph.follower_counts[followees] <= at_most]
    return int(posts_by_author[followees].sum())


@dataclass(eq=False)
class TimelineSimRun:
    """One simulated approach: ``result`` (the reads, a ``RunResult``, times from the start of
    the reads phase), ``deliveries`` (per post: ``post, author, followers, posted_at,
    delivered_at, lag``, seconds of simulated time), ``work`` (per operation: ``queries,
    rows_read, rows_written``), ``rows_scanned`` (per read, in order), ``approach``."""

    approach: str
    result: RunResult
    deliveries: pd.DataFrame
    work: dict[str, dict[str, int]]
    rows_scanned: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def celebrity_lag(self) -> float:
        """The delivery lag of the celebrity's post, seconds (NaN if never delivered)."""
        row = self.deliveries.iloc[self.meta["celebrity_post"]]
        return float(row["lag"])


class _Twin:
    """One run's state (see ``simulate_timelines``)."""

    def __init__(self, graph: SocialGraph, schedule: TimelineSchedule, server: ServerConfig,
                 cost: TimelineCostModel, cache: bool, warm_cache: bool) -> None:
        self.graph, self.schedule, self.cost, self.cache = graph, schedule, cost, cache
        self.config: TimelineConfig = server.timelines or TimelineConfig()
        self.events_config: EventLogConfig = server.events or EventLogConfig()
        self.env = simpy.Environment()
        self.loop = simpy.Resource(self.env, capacity=1)
        self.pool = SimPool(self.env, server.pool or PoolConfig())
        # the history: posts already there, already fanned out
        self.posts_by_author = np.full(graph.accounts, schedule.history, dtype=np.int64)
        pushed = graph.follower_counts <= (self.config.threshold
                                           if self.config.approach == "hybrid" else np.inf)
        self.home = (np.bincount(graph.edges[:, 0], weights=pushed[graph.edges[:, 1]],
                                 minlength=graph.accounts).astype(np.int64) * schedule.history
                     if self.config.approach != "read" else np.zeros(graph.accounts, np.int64))
        # warm: every timeline materialised in the cache before the run (as the live
        # comparison fills the history's); cold: each user's first read is a miss
        self.cached: set[int] = set(range(graph.accounts)) if cache and warm_cache else set()
        # a database in another process (PostgreSQL) works beside the loop, not on it
        store_url = server.store.url if server.store is not None else None
        self.db_on_loop = not (store_url or "").startswith(("postgresql://", "postgres://"))
        self.log: list[int] = []  # the "posts" topic: post indices in commit order
        self.committed = 0  # the "fanout" group's offset
        self.work = {op: {"queries": 0, "rows_read": 0, "rows_written": 0} for op in OPERATIONS}
        n = len(schedule.post_times)
        self.posted_at = np.full(n, np.nan)
        self.delivered_at = np.full(n, np.nan)
        self.reads: list[tuple[int, float, float, int]] = []  # id, start, end, scanned
        # each read's round trip; its own stream, so the schedule's draws stay as they were
        self.read_round_trips = cost.round_trips(
            len(schedule.read_times), np.random.default_rng([schedule.seed, ROUND_TRIP_STREAM]))
        # each read's stretch, by request id
        self.read_stretches = cost.stretches(
            len(schedule.read_times), np.random.default_rng([schedule.seed, STRETCH_STREAM]))
        self.read_phase = 0.0

    def count(self, op: str, queries: int = 1, read: int = 0, written: int = 0) -> None:
        cell = self.work[op]
        cell["queries"] += queries
        cell["rows_read"] += read
        cell["rows_written"] += written

    def statement(self, seconds: float) -> Generator[Any, Any, None]:
        """Hold one pooled connection for ``seconds`` (no pool timeout in the twin's loads:
        a request that times out at the pool is waited for again)."""
        while True:
            decision = yield self.pool.acquire()
            if isinstance(decision, Granted):
                break
        if self.db_on_loop:
            with self.loop.request() as slot:  # the statement's work shares the interpreter
                yield slot
                yield self.env.timeout(seconds)
        else:
            yield self.env.timeout(seconds)
        self.pool.release()

    def on_loop(self, round_trip: float | None = None) -> Generator[Any, Any, None]:
        round_trip = self.cost.round_trip if round_trip is None else round_trip
        if round_trip > 0:
            yield self.env.timeout(round_trip)
        with self.loop.request() as slot:
            yield slot
            yield self.env.timeout(self.cost.overhead)

    # -- the post path ---------------------------------------------------------------------
    def post(self, index: int, at: float) -> Generator[Any, Any, None]:
        yield self.env.timeout(max(0.0, at - self.env.now))
        yield from self.on_loop()
        yield from self.statement(self.cost.post_insert)
        author = int(self.schedule.post_authors[index])
        self.posts_by_author[author] += 1
        now = self.env.now
        self.posted_at[index] = now
        fans_out = self.config.approach != "read"
        self.count("post", queries=3 if fans_out else 1, read=1 if fans_out else 0,
                   written=2 if fans_out else 1)
        followers = int(self.graph.follower_counts[author])
        if not fans_out or (self.config.approach == "hybrid"
                            and followers > self.config.threshold):
            self.delivered_at[index] = now
        if fans_out:
            self.log.append(index)

    def consumer(self) -> Generator[Any, Any, None]:
        cost, config = self.cost, self.config
        while True:
            if self.committed >= len(self.log):
                yield self.env.timeout(self.events_config.poll_interval)
                continue
            batch = self.log[self.committed:self.committed + self.events_config.batch]
            self.committed += len(batch)
            for index in batch:
                author = int(self.schedule.post_authors[index])
                followers = self.graph.followers_of(author)
                if config.approach == "hybrid":
                    yield from self.statement(cost.cache_read)
                    self.count("fanout", read=1)
                    if len(followers) > config.threshold:
                        continue
                yield from self.statement(cost.fanout_base + cost.per_insert * len(followers))
                if self.cache:  # the followers read, then inserted into the cache's sets
                    self.count("fanout", read=len(followers))
                else:  # one INSERT ... SELECT into home_timelines
                    self.count("fanout", written=len(followers))
                self.home[followers] += 1
                self.delivered_at[index] = self.env.now

    # -- the read path ---------------------------------------------------------------------
    def read(self, request_id: int, at: float) -> Generator[Any, Any, None]:
        yield self.env.timeout(max(0.0, self.read_phase + at - self.env.now))
        start = self.env.now
        user = int(self.schedule.read_users[request_id])
        config, cost, length = self.config, self.cost, self.config.length
        yield from self.on_loop(float(self.read_round_trips[request_id]))
        scanned = 0
        work = cost.overhead  # the handler's own time, which the stretch lengthens
        if config.approach == "read":
            scanned = rows_scanned(self.graph, self.posts_by_author, user)
            work += cost.query_base + cost.per_row * scanned
            yield from self.statement(cost.query_base + cost.per_row * scanned)
            self.count("timeline_read", read=min(length, scanned))
        else:
            at_most = config.threshold if config.approach == "hybrid" else None
            if self.cache:
                if user in self.cached:
                    work += cost.cache_read
                    yield self.env.timeout(cost.cache_read)
                else:  # a cold timeline, rebuilt cache-aside by approach 1's query
                    rebuilt = rows_scanned(self.graph, self.posts_by_author, user,
                                           at_most=at_most)
                    scanned += rebuilt
                    work += cost.query_base + cost.per_row * rebuilt
                    yield from self.statement(cost.query_base + cost.per_row * rebuilt)
                    self.count("rebuild", read=min(length, rebuilt))
                    self.cached.add(user)
            else:
                work += cost.cache_read
                yield from self.statement(cost.cache_read)
                self.count("timeline_read", read=min(length, int(self.home[user])))
        if config.approach == "hybrid":
            above = rows_scanned(self.graph, self.posts_by_author, user, above=config.threshold)
            scanned += above
            work += cost.query_base + cost.per_row * above
            yield from self.statement(cost.query_base + cost.per_row * above)
            self.count("timeline_read", read=min(length, above))
        stretch = float(self.read_stretches[request_id]) * work
        if stretch > 0:  # the host's pauses, a pure delay
            yield self.env.timeout(stretch)
        self.reads.append((request_id, start - self.read_phase, self.env.now - self.read_phase,
                           scanned))

    def run(self) -> None:
        env, schedule = self.env, self.schedule
        if self.config.approach != "read":
            for _ in range(self.events_config.consumers):
                env.process(self.consumer())
        posts = [env.process(self.post(i, float(t)))
                 for i, t in enumerate(schedule.post_times)]
        env.run(simpy.AllOf(env, posts))
        # The live run waits until the fan-out has caught up before it reads; so does the twin.
        while self.config.approach != "read" and self.events_config.consumers and (
                self.committed < len(self.log) or np.isnan(self.delivered_at).any()):
            env.run(until=env.now + self.events_config.poll_interval)
        self.read_phase = env.now
        reads = [env.process(self.read(i, float(t))) for i, t in enumerate(schedule.read_times)]
        env.run(simpy.AllOf(env, reads))


def simulate_timelines(graph: SocialGraph, schedule: TimelineSchedule, *,
                       server: ServerConfig, cost: TimelineCostModel,
                       cache: bool = False, warm_cache: bool = False) -> TimelineSimRun:
    """Simulate ``schedule`` on ``graph`` under ``server`` (its ``timelines``: approach,
    threshold, length; ``pool``; ``events``) with ``cost`` (see the module docstring).
    ``cache``: the materialised timelines live in a cache (no pooled connection per read, a
    cold first read per user, unless ``warm_cache``: every user's timeline materialised before
    the run) instead of the store's table. Deterministic: the schedule's draws, and the round
    trips' and stretches' (``cost.round_trip_quantiles``, ``cost.stretch_quantiles``) from the
    schedule's seed. Returns a
    ``TimelineSimRun``; ValueError for a bad argument."""
    if not isinstance(graph, SocialGraph):
        raise ValueError(f"graph must be a SocialGraph, got {graph!r}")
    if not isinstance(schedule, TimelineSchedule):
        raise ValueError(f"schedule must be a TimelineSchedule, got {schedule!r}")
    if not isinstance(server, ServerConfig):
        raise ValueError(f"server must be a ServerConfig, got {server!r}")
    if not isinstance(cost, TimelineCostModel):
        raise ValueError(f"cost must be a TimelineCostModel, got {cost!r}")
    if int(schedule.post_authors.max()) >= graph.accounts or \
            int(schedule.read_users.max()) >= graph.accounts:
        raise ValueError("schedule must name accounts of graph (made by timeline_schedule "
                         "for this graph)")
    for name, value in (("cache", cache), ("warm_cache", warm_cache)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    twin = _Twin(graph, schedule, server, cost, cache, warm_cache)
    twin.run()
    rows = sorted(twin.reads)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    t_start = np.array([r[1] for r in rows])
    t_end = np.array([r[2] for r in rows])
    latency = t_end - t_start
    n = len(ids)
    ok = np.full(n, 200, dtype=np.int64)
    duration = float(max(schedule.read_times[-1], t_end.max() if n else 0.0, 1e-9))
    approach = twin.config.approach
    result = RunResult.from_columns(
        requests={"request_id": ids, "t_start": t_start, "t_end": t_end, "latency": latency,
                  "status": ok, "attempts": np.ones(n, dtype=np.int64), "ok": np.ones(n, bool)},
        attempts={"request_id": ids, "attempt": np.ones(n, dtype=np.int64), "t_start": t_start,
                  "t_end": t_end, "latency": latency, "status": ok,
                  "queue_wait": np.full(n, np.nan), "instance": np.zeros(n, dtype=np.int64)},
        duration=duration, source="sim",
        meta={"path": "/api/timeline/{user}", "approach": approach, "seed": schedule.seed,
              "cost": cost, "cache": bool(cache)})
    authors = schedule.post_authors
    deliveries = pd.DataFrame({
        "post": np.arange(1, len(authors) + 1), "author": authors,
        "followers": graph.follower_counts[authors], "posted_at": twin.posted_at,
        "delivered_at": twin.delivered_at, "lag": twin.delivered_at - twin.posted_at})
    return TimelineSimRun(approach=approach, result=result, deliveries=deliveries,
                          work=twin.work, rows_scanned=np.array([r[3] for r in rows]),
                          meta={"celebrity_post": schedule.celebrity_post,
                                "read_phase": twin.read_phase})


def calibrate_timelines(live_samples: pd.DataFrame, *,
                        keep: float = 0.5) -> TimelineCostModel:
    """Fit a ``TimelineCostModel`` to live measurements.

    ``live_samples``: one row per measurement, columns ``kind`` (``"read"``, ``"post"`` or
    ``"fanout"``), ``approach`` (``"read"``, ``"write"``, ``"hybrid"``), ``seconds`` (a read's
    or a post's latency; one post's fan-out time, from when the consumer could start it to its
    last insert) and ``rows`` (a read: the posts its queries walk, ``rows_scanned``; a fan-out:
    the followers inserted; a post: 0) and optionally ``server`` (a read's or a post's time
    in the service's handler, its ``Server-Timing: work``; NaN where unknown).

    * reads: a bounded linear least-squares fit (``scipy.optimize.lsq_linear``, every
      coefficient >= 0) of ``server = overhead + query_base * Q + cache_read * C + per_row *
      rows`` (the service's own time, which its loop and pool spend), and ``round_trip`` =
      the median of ``seconds - server`` (the rest of the client's latency, a pure delay),
      ``round_trip_quantiles`` its ``ROUND_TRIP_QUANTILES`` quantiles, pooled over the
      approaches (the client and the network do not depend on the approach), and
      ``stretch_quantiles`` those of each read's ``server`` over its fitted time, less 1,
      clipped at 0 (with
      no ``server`` column the fit is of ``seconds`` and ``round_trip`` is 0), with ``Q`` = 1
      for an approach that queries (``"read"``, ``"hybrid"``) and ``C`` =
      1 for one that reads a materialised timeline (``"write"``, ``"hybrid"``). Only the
      fastest ``keep`` share of each approach's reads enters the fit (the rest waited in a
      queue, which the simulation adds itself). Needs reads of at least two approaches, one of
      them ``"hybrid"`` or both others, to tell ``overhead``, ``query_base`` and ``cache_read``
      apart;
    * posts: ``post_insert`` = the median post ``server`` time (else latency minus
      ``round_trip``) minus ``overhead``;
    * fan-outs (``rows`` > 0): ``seconds = fanout_base + per_insert * rows``, the same bounded
      fit.

    A kind with no rows keeps ``TimelineCostModel``'s default. ValueError for a frame without
    those columns.
    """
    from scipy.optimize import lsq_linear

    if not isinstance(live_samples, pd.DataFrame) or not {"kind", "approach", "seconds",
                                                           "rows"} <= set(live_samples):
        raise ValueError("live_samples must be a DataFrame with columns kind, approach, "
                         "seconds, rows")
    keep = check_real("keep", keep, low=0, low_open=True, high=1)
    defaults = TimelineCostModel()
    fitted: dict[str, Any] = {}
    reads = live_samples[live_samples["kind"] == "read"]
    server_side = "server" in live_samples and bool(
        np.isfinite(reads["server"].to_numpy(dtype=float)).all()) and len(reads) > 0
    if len(reads) and server_side:
        trips = np.maximum(0.0, reads["seconds"].to_numpy(dtype=float)
                           - reads["server"].to_numpy(dtype=float))
        fitted["round_trip"] = float(np.median(trips))
        quantiles = np.quantile(trips, np.linspace(0.0, 1.0, ROUND_TRIP_QUANTILES))
        fitted["round_trip_quantiles"] = tuple(float(q) for q in quantiles)
        reads = reads.assign(seconds=reads["server"].to_numpy(dtype=float))
    if len(reads):
        trimmed = pd.concat([group[group["seconds"] <= group["seconds"].quantile(keep)]
                             for _, group in reads.groupby("approach")])
        approach = trimmed["approach"].to_numpy()
        design = np.column_stack([
            np.ones(len(trimmed)), np.isin(approach, ("read", "hybrid")).astype(float),
            np.isin(approach, ("write", "hybrid")).astype(float),
            trimmed["rows"].to_numpy(dtype=float)])
        fit = lsq_linear(design, trimmed["seconds"].to_numpy(dtype=float), bounds=(0, np.inf))
        fitted.update(zip(("overhead", "query_base", "cache_read", "per_row"),
                          (float(x) for x in fit.x), strict=True))
        if server_side:
            # how much longer than the fit each read's handler took, as a share of the fit
            approach = reads["approach"].to_numpy()
            fitted_seconds = (fit.x[0] + fit.x[1] * np.isin(approach, ("read", "hybrid"))
                              + fit.x[2] * np.isin(approach, ("write", "hybrid"))
                              + fit.x[3] * reads["rows"].to_numpy(dtype=float))
            shares = np.maximum(0.0, reads["seconds"].to_numpy(dtype=float)
                                / np.maximum(fitted_seconds, 1e-9) - 1.0)
            fitted["stretch_quantiles"] = tuple(float(q) for q in np.quantile(
                shares, np.linspace(0.0, 1.0, ROUND_TRIP_QUANTILES)))
    overhead = fitted.get("overhead", defaults.overhead)
    posts = live_samples[live_samples["kind"] == "post"]
    if len(posts):
        if "server" in posts and np.isfinite(posts["server"].to_numpy(dtype=float)).all():
            post_seconds = float(posts["server"].median())
        else:
            post_seconds = float(posts["seconds"].median()) - fitted.get("round_trip", 0.0)
        fitted["post_insert"] = max(0.0, post_seconds - overhead)
    fanouts = live_samples[(live_samples["kind"] == "fanout") & (live_samples["rows"] > 0)]
    if len(fanouts) >= 2:
        design = np.column_stack([np.ones(len(fanouts)), fanouts["rows"].to_numpy(dtype=float)])
        fit = lsq_linear(design, fanouts["seconds"].to_numpy(dtype=float), bounds=(0, np.inf))
        fitted["fanout_base"], fitted["per_insert"] = float(fit.x[0]), float(fit.x[1])
    return TimelineCostModel(**fitted)
