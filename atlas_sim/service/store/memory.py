"""The store in this process's memory: ``memory://name`` (shared by every store that names it in
this process) or a private one (no name). Nothing survives the process.

It behaves as the database stores do where a test can see it: the keys' rules (those of
``idempotency.MemoryIdempotencyStore``, extended here with the lease), orders numbered 1, 2, ...
across the stores sharing the data, the event log, and a pool: every call takes one of
``pool.size`` pooled "connections", and ``place_order``'s ``hold`` keeps it (``asyncio.sleep``),
so a pool of 2 with slow queries runs dry as a database's does. It needs no ``open()``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...policies.pool import PoolConfig
from ...validation import check_real
from ..idempotency import Begun, MemoryIdempotencyStore, Stored, Verdict, _Entry
from .base import (
    POSTS,
    AsyncPool,
    Clock,
    KeyLost,
    Store,
    check_edges,
    check_hold,
    check_offset,
    check_read,
)

__all__ = ["MemoryStore"]



class LeasedKeys(MemoryIdempotencyStore):
    """``MemoryIdempotencyStore`` plus the lease: a key in flight ``lease`` seconds or more is
    forgotten when the store next looks (``begin``, ``len``), so anyone may begin it again with a
    new token, and its old hold is lost (``holds`` is False)."""

    def __init__(self, *, lease: float, retention: float = 300.0, capacity: int = 10_000,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(retention=retention, capacity=capacity, clock=clock)
        self.lease = check_real("lease", lease, low=0, low_open=True)
        self._began: OrderedDict[str, tuple[int, float]] = OrderedDict()  # oldest first

    def begin_now(self, key: str, fingerprint: str) -> Verdict:
        verdict = super().begin_now(key, fingerprint)
        if isinstance(verdict, Begun):
            self._began[key] = (verdict.token, self._clock())
            self._began.move_to_end(key)
        return verdict

    def holds(self, begun: Begun) -> bool:
        """Whether ``begun``'s token still holds its key in flight (a hold past its lease still
        does until someone begins the key again, or ``begin``/``len`` forgets it)."""
        entry = self._in_flight.get(begun.key)
        return entry is not None and entry.token == begun.token

    def _release(self, begun: Begun) -> _Entry | None:
        entry = super()._release(begun)
        if entry is not None:
            self._began.pop(begun.key, None)
        return entry

    async def clear(self) -> None:
        await super().clear()
        self._began.clear()

    def _expire(self) -> None:
        super()._expire()
        cutoff = self._clock() - self.lease
        began = self._began
        while began:
            key, (token, at) = next(iter(began.items()))
            if at > cutoff:
                break
            del began[key]
            entry = self._in_flight.get(key)
            if entry is not None and entry.token == token:
                del self._in_flight[key]


@dataclass(eq=False)
class _Data:
    """What the stores sharing one name share; ``lock`` guards all of it (stores in several
    threads' event loops may share it: the instances of a ``Cluster``)."""

    keys: LeasedKeys
    lock: threading.Lock = field(default_factory=threading.Lock)
    orders: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, list[str]] = field(default_factory=dict)
    offsets: dict[tuple[str, str], int] = field(default_factory=dict)
    followees: dict[int, list[int]] = field(default_factory=dict)  # follower -> followees
    followers: dict[int, list[int]] = field(default_factory=dict)  # followee -> followers
    posts: list[int] = field(default_factory=list)  # post id - 1 -> author
    by_author: dict[int, list[int]] = field(default_factory=dict)  # author -> post ids, rising
    home: dict[int, set[int]] = field(default_factory=dict)  # user -> post ids

    def clear_timelines(self) -> None:
        self.followees.clear()
        self.followers.clear()
        self.posts.clear()
        self.by_author.clear()
        self.home.clear()
        self.events.pop(POSTS, None)
        for key in [k for k in self.offsets if k[1] == POSTS]:
            del self.offsets[key]

    def append(self, topic: str, payload: str) -> int:
        log = self.events.setdefault(topic, [])
        log.append(payload)
        return len(log)


_SHARED: weakref.WeakValueDictionary[str, _Data] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class MemoryConnection:
    """A pooled "connection" of a ``MemoryStore``: a slot number, nothing more."""

    slot: int


class MemoryStore(Store):
    """State in memory, behind a pool (see the module docstring).

    Args:
        name: stores in this process with the same name share their data (``memory://name``);
            None: private data. The first store of a name sets its key limits and clock.
        pool: the pool's settings (``PoolConfig``; None: ``PoolConfig()``).
        retention: seconds a 2xx answer is kept under its key, > 0.
        capacity: keys held at most, >= 1.
        lease: seconds a key in flight is held before anyone may begin it again, > 0.
        clock: seconds for the keys' retention and lease (``time.monotonic``).
        pool_clock: seconds for the pool's waits (``time.monotonic``).

    Raises ``ValueError`` naming a bad argument.
    """

    kind = "memory"

    def __init__(self, name: str | None = None, *, pool: PoolConfig | None = None,
                 retention: float = 300.0, capacity: int = 10_000, lease: float = 30.0,
                 clock: Clock = time.monotonic, pool_clock: Clock = time.monotonic) -> None:
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a string or None, got {name!r}")
        config = PoolConfig() if pool is None else pool
        keys = LeasedKeys(lease=lease, retention=retention, capacity=capacity, clock=clock)
        if name is None:
            self._data = _Data(keys)
        else:
            with _SHARED_LOCK:
                data = _SHARED.get(name)
                if data is None:
                    data = _SHARED[name] = _Data(keys)
                self._data = data
        self.name = name
        self.capacity = self._data.keys.capacity
        self.retention = self._data.keys.retention
        self.lease = self._data.keys.lease
        self.pool = AsyncPool(config, [MemoryConnection(i) for i in range(config.size)],
                              clock=pool_clock)

    @property
    def keys(self) -> LeasedKeys:
        """The key store itself (synchronous calls, for tests and the simulator's twin)."""
        return self._data.keys

    # -- keys ------------------------------------------------------------------------------
    async def begin(self, key: str, fingerprint: str) -> Verdict:
        async with self.pool.connection():
            with self._data.lock:
                return self._data.keys.begin_now(key, fingerprint)

    async def complete(self, begun: Begun, response: Stored) -> None:
        async with self.pool.connection():
            with self._data.lock:
                self._data.keys.complete_now(begun, response)

    async def abandon(self, begun: Begun) -> None:
        async with self.pool.connection():
            with self._data.lock:
                self._data.keys.abandon_now(begun)

    async def count(self) -> int:
        async with self.pool.connection():
            with self._data.lock:
                return len(self._data.keys)

    async def clear(self) -> None:
        async with self.pool.connection():
            with self._data.lock:
                await self._data.keys.clear()  # never awaits anything: the lock is not held long
                self._data.orders.clear()
                self._data.events.clear()
                self._data.offsets.clear()
                self._data.clear_timelines()

    # -- orders ------------------------------------------------------------------------------
    async def place_order(self, *, request_id: str | None, begun: Begun | None,
                          answer: Callable[[int], Stored], hold: float = 0.0) -> Stored:
        hold = check_hold(hold)
        async with self.pool.connection():
            if hold > 0:
                await asyncio.sleep(hold)
            data = self._data
            with data.lock:  # the whole "transaction": nothing is written until all is known
                n = len(data.orders) + 1
                stored = answer(n)
                if begun is not None and not data.keys.holds(begun):
                    raise KeyLost(begun)
                data.orders.append({"order": n, "request_id": request_id,
                                    "key": None if begun is None else begun.key})
                if begun is not None and 200 <= stored.status < 300:
                    data.keys.complete_now(begun, stored)
                data.append("orders", json.dumps({"order": n, "request_id": request_id}))
                return stored

    async def orders(self) -> int:
        async with self.pool.connection():
            with self._data.lock:
                return len(self._data.orders)

    async def get_order(self, n: int) -> dict[str, Any] | None:
        async with self.pool.connection():
            with self._data.lock:
                orders = self._data.orders
                return dict(orders[n - 1]) if 1 <= n <= len(orders) else None

    # -- the event log -----------------------------------------------------------------------
    async def append(self, topic: str, payload: str) -> int:
        async with self.pool.connection():
            with self._data.lock:
                return self._data.append(topic, payload)

    async def read(self, topic: str, *, after: int, limit: int) -> list[tuple[int, str]]:
        check_read(after, limit)
        async with self.pool.connection():
            with self._data.lock:
                log = self._data.events.get(topic, [])
                return [(after + 1 + i, p) for i, p in enumerate(log[after:after + limit])]

    async def end_offset(self, topic: str) -> int:
        async with self.pool.connection():
            with self._data.lock:
                return len(self._data.events.get(topic, ()))

    async def committed(self, group: str, topic: str) -> int:
        async with self.pool.connection():
            with self._data.lock:
                return self._data.offsets.get((group, topic), 0)

    async def commit(self, group: str, topic: str, offset: int) -> None:
        check_offset(offset)
        async with self.pool.connection():
            with self._data.lock:
                key = (group, topic)
                self._data.offsets[key] = max(offset, self._data.offsets.get(key, 0))

    # -- home timelines ----------------------------------------------------------------------
    # Each method counts the statements a SQL store would run, and the rows they read/write.
    async def clear_timelines(self) -> None:
        async with self.pool.connection():
            with self._data.lock:
                self._data.clear_timelines()

    async def load_follows(self, edges: Sequence[tuple[int, int]]) -> int:
        pairs = check_edges(edges)
        async with self.pool.connection():
            with self._data.lock:
                data = self._data
                data.followees.clear()
                data.followers.clear()
                for follower, followee in sorted(set(pairs)):
                    data.followees.setdefault(follower, []).append(followee)
                    data.followers.setdefault(followee, []).append(follower)
                return sum(len(v) for v in data.followees.values())

    async def add_post(self, author: int, text: str, *, event: bool) -> int:
        async with self.pool.connection():
            with self._data.lock:
                data = self._data
                data.posts.append(author)
                post = len(data.posts)
                data.by_author.setdefault(author, []).append(post)
                self.work.add("post", written=1)
                if event:
                    data.append(POSTS, json.dumps({"post": post, "author": author}))
                    self.work.add("post", queries=2, read=1, written=1)  # as SQL's offset+insert
                return post

    async def follower_count(self, author: int, *, operation: str) -> int:
        async with self.pool.connection():
            with self._data.lock:
                self.work.add(operation, read=1)
                return len(self._data.followers.get(author, ()))

    async def followers(self, author: int, *, operation: str = "fanout") -> list[int]:
        async with self.pool.connection():
            with self._data.lock:
                found = list(self._data.followers.get(author, ()))
                self.work.add(operation, read=len(found))
                return found

    async def fan_out(self, post: int, author: int) -> int:
        async with self.pool.connection():
            with self._data.lock:
                home = self._data.home
                inserted = 0
                for user in self._data.followers.get(author, ()):
                    timeline = home.setdefault(user, set())
                    if post not in timeline:
                        timeline.add(post)
                        inserted += 1
                self.work.add("fanout", written=inserted)
                return inserted

    async def timeline_query(self, user: int, length: int, *, above: int | None = None,
                             at_most: int | None = None,
                             operation: str = "timeline_read") -> list[int]:
        async with self.pool.connection():
            with self._data.lock:
                data = self._data
                ids: list[int] = []
                for followee in data.followees.get(user, ()):
                    count = len(data.followers.get(followee, ()))
                    if (above is not None and count <= above) or \
                            (at_most is not None and count > at_most):
                        continue
                    ids.extend(data.by_author.get(followee, ())[-length:])
                newest = sorted(ids, reverse=True)[:length]
                self.work.add(operation, read=len(newest))
                return newest

    async def home_timeline(self, user: int, length: int) -> list[int]:
        async with self.pool.connection():
            with self._data.lock:
                newest = sorted(self._data.home.get(user, ()), reverse=True)[:length]
                self.work.add("timeline_read", read=len(newest))
                return newest

    async def timeline_counts(self) -> dict[str, int]:
        async with self.pool.connection():
            with self._data.lock:
                data = self._data
                return {"posts": len(data.posts),
                        "follows": sum(len(v) for v in data.followees.values()),
                        "home_timeline_rows": sum(len(v) for v in data.home.values())}

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r})"
