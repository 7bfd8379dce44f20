"""DDIA's home timelines in the live service (chapter 1, "Describing Load"): the three read
paths, the post path, and the fan-out consumer group, over a social graph
(``atlas_sim.social.SocialGraph``) loaded into the store's follows.

* ``"read"`` (approach 1): a post is one row; a read is one query joining follows and posts
  (``Store.timeline_query``). Delivery is immediate at commit.
* ``"write"`` (approach 2): a post is one row and an event on topic ``"posts"`` (in the same
  transaction when ``TimelineConfig.outbox``: the transactional outbox; else appended in a second
  step, a dual write that the ``lose_events`` fault cuts as a crash between the two would). The
  consumer group ``"fanout"`` (``FANOUT``, ``fanout_handler``) inserts each post into its
  author's followers' timelines: the cache's sorted sets (``Cache.timeline_insert``, one round
  trip) when the service has a cache, else the store's ``home_timelines`` table (one
  ``INSERT ... SELECT``). Both are idempotent by post id, so a batch handed out again (at least
  once delivery, ``eventlog``) changes nothing. A read is one cache read (a missing timeline is
  rebuilt cache-aside by approach 1's query, counted as operation ``"rebuild"``) or one table
  read.
* ``"hybrid"``: as ``"write"``, but an author with more than ``threshold`` followers is not fanned
  out; a read merges the materialised timeline with one query for the posts of the accounts
  above the threshold that the user follows.

The application keeps the cache and the log in step with the database (DDIA, "Thinking About
Data Systems"): with ``outbox=False`` and ``lose_events`` > 0 a post commits and its event is
never appended, so its followers' timelines miss it for good (``lost_events`` counts them);
with the outbox, the post and its event commit together or not at all.

Delivery records (``Delivery``, per post, in this instance's memory, the newest
``MAX_DELIVERIES``): when the post committed and when the last insert of its fan-out landed,
on ``time.monotonic``.

Who runs the fan-out consumers (only when the approach is ``"write"`` or ``"hybrid"``): with
``ServerConfig.timelines`` and ``ServerConfig.events`` both set, the app's ``EventConsumers``
handle ``FANOUT`` beside ``RECEIPTS`` (the lifespan adds it). Otherwise the timelines run
consumers of their own (``start_fanout``), with ``server.events`` or, when that is None, a
default ``EventLogConfig()``: started by the lifespan when ``ServerConfig.timelines`` is set,
else (``timelines=None``: the default ``TimelineConfig()``) when a graph is first loaded
(``POST /admin/timelines``), so a service that never uses timelines runs no extra task. An app
used without its lifespan starts none (nobody would stop them): its posts are not fanned out
and the lag grows. The lifespan stops them before the store closes.
Loading a graph stops the fan-out consumers, forgets the timelines' data, and starts them again,
so no batch of the old graph lands in the new one.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..server_config import EventLogConfig, TimelineConfig
from .eventlog import EventConsumers, Handler
from .store.base import POSTS

__all__ = ["FANOUT", "MAX_DELIVERIES", "Delivery", "Timelines", "fanout_handler",
           "start_fanout", "stop_fanout"]

#: The fan-out consumer group on topic ``"posts"``.
FANOUT = ("fanout", POSTS)
#: Delivery records kept per instance (the oldest are forgotten first).
MAX_DELIVERIES = 100_000


@dataclass(eq=False)
class Delivery:
    """One post's delivery: ``followers`` of its ``author`` (None when this instance has no
    graph), ``posted_at`` (its commit, ``time.monotonic`` seconds; None when it was posted
    through another instance), ``delivered`` (followers whose timeline holds it, or will on its
    next read: a missing cached timeline is rebuilt from the database) and ``delivered_at``
    (when the last insert landed; None before)."""

    post: int
    author: int
    followers: int | None
    posted_at: float | None
    delivered: int = 0
    delivered_at: float | None = None

    def view(self) -> dict[str, Any]:
        return {"post": self.post, "author": self.author, "followers": self.followers,
                "posted_at": self.posted_at, "delivered": self.delivered,
                "delivered_at": self.delivered_at}


class Timelines:
    """One app's home timelines: its config, the loaded graph, the ``lose_events`` fault,
    delivery records and counts. The store and the cache are the app's (passed to each call).

    Args:
        config: the ``TimelineConfig``.
        seed, instance: seed the ``lose_events`` draws (their own stream, so nothing else in
            the service draws differently).
        clock: seconds for delivery times (``time.monotonic``).
    """

    def __init__(self, config: TimelineConfig, *, seed: int = 0, instance: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(config, TimelineConfig):
            raise ValueError(f"config must be a TimelineConfig, got {config!r}")
        self.config = config
        self.clock = clock
        self._seed = (seed, instance)
        self.lose_events = 0.0
        self.graph: Any = None  # the SocialGraph loaded by this instance, or None
        self.graph_view: dict[str, Any] | None = None
        self.deliveries: OrderedDict[int, Delivery] = OrderedDict()
        self.own_consumers: EventConsumers | None = None  # with ServerConfig.events=None
        self.reset()  # the counts, and the lose_events draws from the seed

    @property
    def fans_out(self) -> bool:
        """Whether posts are fanned out on write (``"write"`` or ``"hybrid"``)."""
        return self.config.approach != "read"

    def reset(self) -> None:
        """Forget deliveries and counts; the ``lose_events`` draws start again from the seed."""
        self.deliveries.clear()
        self.fanout_inserts = 0
        self.lost_events = 0
        self.rng: np.random.Generator = np.random.default_rng([*self._seed, 22])

    def _followers(self, author: int) -> int | None:
        graph = self.graph
        if graph is None or not 0 <= author < graph.accounts:
            return None
        return int(graph.follower_counts[author])

    def _celebrity(self, followers: int | None) -> bool:
        return (self.config.approach == "hybrid" and followers is not None
                and followers > self.config.threshold)

    def _record(self, delivery: Delivery) -> None:
        self.deliveries[delivery.post] = delivery
        while len(self.deliveries) > MAX_DELIVERIES:
            self.deliveries.popitem(last=False)

    # -- the graph ---------------------------------------------------------------------------
    async def load(self, store: Any, cache: Any, graph: Any) -> dict[str, Any]:
        """Forget the timelines' data (store and cache) and load ``graph``'s follows (call
        with the fan-out consumers stopped: ``stop_fanout``). Returns the graph's view."""
        await store.clear_timelines()
        if cache is not None:
            await cache.clear_timelines()
        follows = await store.load_follows(graph.edges)
        store.work.reset()
        self.reset()
        self.graph = graph
        counts = np.asarray(graph.follower_counts)
        celebrity = int(graph.celebrity)
        self.graph_view = {
            "accounts": int(graph.accounts), "follows": int(follows),
            "celebrity": celebrity, "celebrity_followers": int(counts[celebrity]),
            "above_threshold": int(np.sum(counts > self.config.threshold)),
        }
        return dict(self.graph_view)

    # -- the post path -----------------------------------------------------------------------
    async def post(self, store: Any, author: int, text: str) -> int:
        """Store a post by ``author`` (see the module docstring); its id."""
        approach, outbox = self.config.approach, self.config.outbox
        followers = self._followers(author)
        event = self.fans_out and outbox
        post = await store.add_post(author, text, event=event)
        now = self.clock()
        delivery = Delivery(post, author, followers, now)
        if not self.fans_out or self._celebrity(followers):
            delivery.delivered, delivery.delivered_at = (followers or 0), now
        self._record(delivery)
        if approach != "read" and not outbox:
            # the dual write's second step; a crash between the two steps skips it
            if self.lose_events > 0 and self.rng.random() < self.lose_events:
                self.lost_events += 1
            else:
                await store.append(POSTS, json.dumps({"post": post, "author": author}))
                store.work.add("post", queries=2, read=1, written=1)
        return post

    # -- the read paths ----------------------------------------------------------------------
    async def read(self, store: Any, cache: Any, user: int) -> list[int]:
        """``user``'s home timeline, newest first, at most ``length`` post ids."""
        length, approach = self.config.length, self.config.approach
        if approach == "read":
            return list(await store.timeline_query(user, length))
        at_most = self.config.threshold if approach == "hybrid" else None

        async def rebuild() -> list[int]:
            return list(await store.timeline_query(user, length, at_most=at_most,
                                                   operation="rebuild"))

        if cache is not None:
            materialised = await cache.timeline_or_rebuild(user, length, rebuild)
        else:
            materialised = await store.home_timeline(user, length)
        if approach == "write":
            return list(materialised)
        above = await store.timeline_query(user, length, above=self.config.threshold)
        return sorted(set(materialised) | set(above), reverse=True)[:length]

    # -- the fan-out -------------------------------------------------------------------------
    async def fan_out(self, store: Any, cache: Any, batch: list[tuple[int, str]]) -> None:
        """Deliver each post of ``batch`` (events of topic ``"posts"``) into its author's
        followers' timelines; idempotent by post id. A payload that is not a post raises
        ValueError (the batch is not committed)."""
        for offset, payload in batch:
            try:
                record = json.loads(payload)
                post, author = int(record["post"]), int(record["author"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"event {offset} on {POSTS!r} is not a post: "
                                 f"{payload[:80]!r}") from None
            delivery = self.deliveries.get(post)
            if delivery is None or delivery.author != author:
                delivery = Delivery(post, author, self._followers(author), None)
                self._record(delivery)
            if self.config.approach == "hybrid":
                count = await store.follower_count(author, operation="fanout")
                if count > self.config.threshold:
                    continue  # read at read time
            if cache is not None:
                users = await store.followers(author, operation="fanout")
                # the inserts really made: only materialised timelines take one; a missing
                # timeline gets the post when it is rebuilt from the database, so the post is
                # delivered (visible at the next read) to every follower either way
                self.fanout_inserts += await cache.timeline_insert(users, post,
                                                                   self.config.length)
                delivery.delivered = len(users)
            else:
                inserted = await store.fan_out(post, author)
                self.fanout_inserts += inserted
                delivery.delivered += inserted
            delivery.delivered_at = self.clock()

    def delivery(self, post: int) -> Delivery | None:
        """Post ``post``'s delivery record, or None when this instance has none."""
        return self.deliveries.get(post)

    async def view(self, state: Any) -> dict[str, Any]:
        """What ``GET /admin/timelines`` answers (see ``routes.timelines``)."""
        store = state.store
        counts = await store.timeline_counts()
        lag = None
        consumers = fanout_consumers(state)
        if consumers is not None:
            lag = (await consumers.lag()).get(FANOUT)
        else:
            end = await store.end_offset(POSTS)
            lag = max(0, end - await store.committed(*FANOUT)) if self.fans_out else None
        return {
            "approach": self.config.approach, "threshold": self.config.threshold,
            "length": self.config.length, "outbox": self.config.outbox,
            "lose_events": self.lose_events, "graph": self.graph_view,
            "timelines_in": ("cache" if state.cache is not None else "store")
            if self.fans_out else None,
            "posts": counts["posts"], "follows": counts["follows"],
            "home_timeline_rows": counts["home_timeline_rows"],
            "fanout_inserts": self.fanout_inserts, "lost_events": self.lost_events,
            "fanout_lag": lag, "fanout_running": consumers is not None,
            "database_work": store.work.snapshot(),
        }


def fanout_handler(state: Any) -> Handler:
    """The ``"fanout"`` group's handler for ``state`` (a ``ServiceState``): each batch goes to
    ``state.timelines.fan_out`` with the app's store and cache as they are at that moment."""

    async def fanout(batch: list[tuple[int, str]]) -> None:
        await state.timelines.fan_out(state.store, state.cache, batch)

    return fanout


def fanout_consumers(state: Any) -> EventConsumers | None:
    """The running consumers that handle ``FANOUT`` for ``state``, or None."""
    events: EventConsumers | None = state.events
    if events is not None and FANOUT in events.handlers and events.running:
        return events
    own = state.timelines.own_consumers
    return own if own is not None and own.running else None


async def stop_fanout(state: Any) -> Callable[[], None]:
    """Stop the consumers that handle ``FANOUT`` (waiting for them); returns what starts them
    again."""
    consumers = fanout_consumers(state)
    if consumers is None:
        return lambda: None
    await consumers.stop()
    return consumers.start


def start_fanout(state: Any) -> None:
    """Start the timelines' own fan-out consumers (``server.events`` or ``EventLogConfig()``)
    when posts are fanned out, the app's consumers do not handle ``FANOUT`` and they are not
    running yet (call it on the loop that serves the app, from its lifespan or a route of an
    app served with one)."""
    timelines: Timelines = state.timelines
    events = state.events
    if not timelines.fans_out or (events is not None and FANOUT in events.handlers):
        return
    own = timelines.own_consumers
    if own is None:
        own = timelines.own_consumers = EventConsumers(
            state.store, state.server.events or EventLogConfig(),
            {FANOUT: fanout_handler(state)})
    if not own.running:
        own.start()


def check_lose_events(value: Any) -> float:
    """``lose_events`` checked: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"lose_events must be a number from 0 to 1, got {value!r}")
    return float(value)
