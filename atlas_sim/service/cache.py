"""The service's cache: a real Redis (Debian's ``redis-server``), reached through
``redis.asyncio`` with a bounded connection pool and ``REDIS_TIMEOUT``, used cache-aside.

Cache-aside (Redis docs, "Redis cache-aside", redis.io/docs/latest/develop/use-cases/cache-aside;
also called lazy loading): the application reads the cache; on a miss it reads the database
and puts what it read into the cache with a TTL; a write goes to the database and then
invalidates (deletes) the cached key. The cache never talks to the database itself, so the
application is what keeps the two in step (DDIA chapter 1, "Thinking About Data Systems").

What this module promises:

* The cache is never needed for an answer. Any cache error (Redis down, refused, too slow: each
  call is bounded by ``CacheConfig.timeout``, the card's ``REDIS_TIMEOUT``) is counted in
  ``errors`` and the database (``load``) answers. A run of errors is logged once, when it
  starts, and once when the cache answers again.
* The pool is bounded: at most ``max_connections`` connections to Redis
  (``redis.asyncio.BlockingConnectionPool``); a read beyond that waits for a free one, at most
  ``timeout`` seconds, and then counts as an error and is answered by the database.
* Nothing is retried: the database is the fallback, so a failed cache call costs one
  ``timeout`` at most, never a retry's backoff.

The known race of cache-aside (Redis docs, as above): reader A misses and reads value v1 from
the database; a writer then stores v2 and invalidates the key; A, late, puts v1 into the cache.
The cache now serves v1, stale, until its TTL expires: the TTL is what bounds how long a stale
value can outlive an invalidation (``ttl`` seconds after the late fill). Nothing here closes the
race (leases, as in Facebook's memcache paper, or versioned values would); the orders this
service caches never change once written, so for them the race needs ``/admin/reset`` (which
flushes the cache) to fall between A's load and its fill.

Also not done, on purpose: ``None`` (nothing in the database) is not cached, so a read of a key
that does not exist yet always reaches the database; and concurrent misses of one key each
load it (no single-flight), so a cold cache sends every reader to the database at once, the
stampede a reader of the workbook is meant to see.

Home timelines (DDIA chapter 1, "Describing Load", approach 2): user ``u``'s timeline is the
sorted set ``timeline:{u}`` (Redis docs, "Sorted sets"), member and score the post id, holding
at most ``length`` posts plus a sentinel member ``"0"`` (score 0) that marks the timeline as
materialised even when it is empty. ``timeline_insert`` adds one post to many timelines in one
round trip (one ``EVAL``: Redis docs, "Scripting with Lua"), only to timelines that exist, each
trimmed to ``length`` (``ZREMRANGEBYRANK``); a timeline that is missing (never read, expired, or
flushed: a cold cache) is not created there, since it would hold only the new post: it is rebuilt
cache-aside by ``timeline_or_rebuild`` from the database (approach 1's query) on its next read,
with the cache's ``ttl``. The cache-aside race (above) applies: a post fanned out between a
rebuild's query and its fill is missing from that timeline until its TTL runs out.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..server_config import CacheConfig

__all__ = ["CACHE_CLIENT_NAME", "Cache", "open_cache", "timeline_key"]

logger = logging.getLogger("atlas.service")

#: The name each connection gives itself (``CLIENT SETNAME``): how ``CLIENT LIST`` tells the
#: service's connections from others.
CACHE_CLIENT_NAME = "atlas-cache"

#: What a failed cache call raises: Redis's own errors, the socket's, the call's timeout, and a
#: value that is not UTF-8 (written by someone else into the cache's database).
CACHE_ERRORS = (RedisError, OSError, TimeoutError, UnicodeDecodeError)

T = TypeVar("T")

#: Adds post ARGV[1] to every timeline in KEYS that exists, keeping the sentinel (rank 0) and the
#: newest ARGV[2] posts; returns how many timelines it was added to (0 for those that had it).
_TIMELINE_INSERT = """
local added = 0
local keep = -(tonumber(ARGV[2]) + 1)
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    added = added + redis.call('ZADD', key, ARGV[1], ARGV[1])
    redis.call('ZREMRANGEBYRANK', key, 1, keep)
  end
end
return added
"""
#: The member that marks a timeline as materialised (score 0, below every post id).
_SENTINEL = "0"


def timeline_key(user: int) -> str:
    """The cache key of ``user``'s home timeline: ``"timeline:<user>"``."""
    return f"timeline:{int(user)}"


class Cache:
    """A Redis cache read and filled cache-aside (see the module docstring).

    Args:
        config: the ``CacheConfig`` (``url`` redis://host:port/db, ``ttl`` seconds,
            ``timeout`` seconds per cache call, ``max_connections``).
        client_name: the name each connection gives itself in Redis (``CLIENT LIST``), a
            non-empty string without spaces.

    The cache owns the Redis database its url names (``/0`` by default): ``flush`` empties all
    of it. Construct it anywhere; use it from one event loop (its connections belong to the
    loop that opened them); ``close`` it there. ``hits``, ``misses`` and ``errors`` count
    ``get_or_load`` calls, exactly one each (``lookups`` is their sum); ``write_errors`` counts
    fills, invalidations and flushes that failed (each leaves at worst a stale entry, until its
    TTL).
    """

    def __init__(self, config: CacheConfig, *, client_name: str = CACHE_CLIENT_NAME) -> None:
        if not isinstance(config, CacheConfig):
            raise ValueError(f"config must be a CacheConfig, got {type(config).__name__}")
        if not isinstance(client_name, str) or not client_name or " " in client_name:
            raise ValueError(f"client_name must be a non-empty string without spaces, "
                             f"got {client_name!r}")
        self.config = config
        # redis-py: a BlockingConnectionPool waits up to `timeout` for a free connection
        # (ConnectionPool would raise at once); the socket timeouts bound connecting and each
        # reply; Retry(NoBackoff(), 0): no retry, the database is the fallback.
        self.pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            config.url, max_connections=config.max_connections, timeout=config.timeout,
            socket_timeout=config.timeout, socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0), client_name=client_name, decode_responses=True)
        self.redis: Redis = Redis(connection_pool=self.pool)
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.write_errors = 0
        self._failing = False
        self._closed = False

    def __repr__(self) -> str:
        return (f"Cache(url={self.config.url!r}, hits={self.hits}, misses={self.misses}, "
                f"errors={self.errors})")

    @property
    def lookups(self) -> int:
        """``get_or_load`` calls counted so far: ``hits + misses + errors``."""
        return self.hits + self.misses + self.errors

    @property
    def hit_ratio(self) -> float:
        """The share of lookups the cache answered, ``hits / lookups`` in [0, 1]; NaN before
        the first lookup (as ``/metrics``' ``atlas_api_cache_hit_ratio``)."""
        lookups = self.lookups
        return self.hits / lookups if lookups else math.nan

    def reset_counts(self) -> None:
        """``hits``, ``misses``, ``errors`` and ``write_errors`` back to 0 (``/admin/reset``)."""
        self.hits = self.misses = self.errors = self.write_errors = 0

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[str | None]],
                          ttl: float | None = None) -> str | None:
        """The value of ``key``: from the cache (a hit), else from ``load()`` (the database),
        then kept in the cache for ``ttl`` seconds (None: ``config.ttl``; Redis's own expiry,
        ``SET key value PX ms``). ``load()`` returning None is a miss that caches nothing. A
        cache error or timeout is counted in ``errors`` and answered by ``load()``; it never
        fails the call. What ``load()`` raises is raised (the database's errors are the
        caller's). Raises ``ValueError`` for a ``ttl`` that is not a number > 0."""
        ttl_ms = self._ttl_ms(ttl)
        if self._closed:  # a request still at work while the service stops
            self.errors += 1
            return await load()
        try:
            cached = await self._call(self.redis.get(key))
        except CACHE_ERRORS as exc:
            self.errors += 1
            self._failed("read", exc)
            return await load()
        self._answered()
        if cached is not None:
            self.hits += 1
            return str(cached)
        self.misses += 1
        value = await load()
        if value is not None:
            try:
                await self._call(self.redis.set(key, value, px=ttl_ms))
            except CACHE_ERRORS as exc:
                self.write_errors += 1
                self._failed("fill", exc)
        return value

    async def timeline_insert(self, users: Sequence[int], post: int, length: int) -> int:
        """Add ``post`` to the materialised timelines of ``users`` in one round trip (see the
        module docstring), each trimmed to its newest ``length`` posts; returns the timelines
        it was added to (a timeline that already held it, or is missing, counts 0). Idempotent
        by post id. Raises what the cache raised (``CACHE_ERRORS``: the caller, the fan-out
        consumer, hands the batch out again), ``ValueError`` for a ``length`` below 1."""
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if not users:
            return 0
        if self._closed:
            raise RuntimeError("the cache is closed")
        keys = [timeline_key(u) for u in users]
        added = await self._call(self.redis.eval(
            _TIMELINE_INSERT, len(keys), *keys, int(post), length))
        self._answered()
        return int(added)

    async def timeline_fill(self, timelines: Mapping[int, Sequence[int]], length: int, *,
                            batch: int = 500) -> int:
        """Materialise many home timelines at once, as ``timeline_or_rebuild`` would after a
        miss: each ``user``'s newest ``length`` post ids of ``timelines[user]`` (the sentinel
        included, so an empty timeline is materialised too), with ``config.ttl``; ``batch``
        users a round trip (a pipeline, not a transaction). A bulk load: the history an
        experiment starts from, already fanned out. Returns the timelines written. Raises what
        the cache raised (``CACHE_ERRORS``: a half-loaded cache is not a miss to hide),
        ``ValueError`` for a ``length`` or ``batch`` below 1."""
        for name, value in (("length", length), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self._closed:
            raise RuntimeError("the cache is closed")
        users = list(timelines)
        ttl_ms = self._ttl_ms(None)
        for start in range(0, len(users), batch):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user in users[start:start + batch]:
                    posts = sorted((int(p) for p in timelines[user]), reverse=True)[:length]
                    key = timeline_key(user)
                    pipe.delete(key)
                    pipe.zadd(key, {_SENTINEL: 0, **{str(p): p for p in posts}})
                    pipe.pexpire(key, ttl_ms)
                await self._call(pipe.execute())
        self._answered()
        return len(users)

    async def timeline_or_rebuild(self, user: int, length: int,
                                  load: Callable[[], Awaitable[list[int]]]) -> list[int]:
        """``user``'s home timeline, newest first (at most ``length`` post ids): from the cache
        (a hit, ``ZRANGE ... REV``), else (a miss: the timeline is missing) from ``load()`` (the
        database), then materialised in the cache for ``config.ttl`` seconds in one
        ``MULTI``/``EXEC`` (cache-aside), and loaded once more so that a post fanned out while
        the key was missing is not lost (``load`` runs twice on a miss). A cache error or
        timeout is counted in ``errors`` and answered by ``load()``. Counted in
        ``hits``/``misses``/``errors`` as ``get_or_load``."""
        key = timeline_key(user)
        if self._closed:
            self.errors += 1
            return await load()
        try:
            members = await self._call(self.redis.zrange(key, 0, length, desc=True))
        except CACHE_ERRORS as exc:
            self.errors += 1
            self._failed("read", exc)
            return await load()
        self._answered()
        if members:
            self.hits += 1
            return [int(str(m)) for m in members if m != _SENTINEL][:length]
        self.misses += 1
        posts = await load()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.zadd(key, {_SENTINEL: 0, **{str(p): p for p in posts}})
                pipe.pexpire(key, self._ttl_ms(None))
                await self._call(pipe.execute())
            # A post committed after the load began was fanned out, if at all, while the key
            # was still missing, and skipped (fan-out only touches materialised timelines): it
            # would be missing until the TTL. Every fan-out from now on finds the key, and any
            # post it skipped was committed before this second load, which adds it (ZADD is
            # idempotent; trimmed as the fan-out trims). A rebuild is two queries.
            again = await load()
            if again != posts:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zadd(key, {str(p): p for p in again})
                    pipe.zremrangebyrank(key, 1, -(length + 1))
                    await self._call(pipe.execute())
                members = await self._call(self.redis.zrange(key, 0, length, desc=True))
                posts = [int(str(m)) for m in members if m != _SENTINEL][:length]
        except CACHE_ERRORS as exc:
            self.write_errors += 1
            self._failed("fill", exc)
        return posts

    async def clear_timelines(self) -> bool:
        """Delete every ``timeline:*`` key (``SCAN`` + ``UNLINK`` in batches of 1000): the home
        timelines forgotten when a new graph is loaded. True when Redis did; False when it
        failed (counted in ``write_errors``)."""

        async def unlink_all() -> None:
            batch: list[str] = []
            async for key in self.redis.scan_iter(match="timeline:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await self.redis.unlink(*batch)
                    batch = []
            if batch:
                await self.redis.unlink(*batch)

        return await self._write("clear timelines", unlink_all)

    async def invalidate(self, *keys: str) -> bool:
        """Delete ``keys`` from the cache (after a write to the database, cache-aside's write
        path): True when Redis did; False when it failed (counted in ``write_errors``; the
        entries stay until their TTL)."""
        if not keys:
            return True
        return await self._write("invalidate", lambda: self.redis.delete(*keys))

    async def flush(self) -> bool:
        """Empty the cache's Redis database (``FLUSHDB``): what ``/admin/reset`` does, and what
        "the cache going cold" is. True when Redis did; False when it failed (counted in
        ``write_errors``). The counts are kept (``reset_counts`` clears them)."""
        return await self._write("flush", self.redis.flushdb)

    async def ping(self) -> None:
        """One round trip to Redis, bounded by ``config.timeout``; raises what failed (a
        ``redis.exceptions.RedisError``, an ``OSError`` or ``TimeoutError``)."""
        await self._call(self.redis.ping())

    async def close(self) -> None:
        """Close every connection of the pool (nothing is left open in Redis's ``CLIENT
        LIST``). Idempotent. A closed cache opens no connection again: each later lookup
        counts as an error and is answered by ``load()``, each write fails (False)."""
        if self._closed:
            return
        self._closed = True
        await self.redis.aclose(close_connection_pool=True)

    # -- internals ------------------------------------------------------------------------

    def _ttl_ms(self, ttl: float | None) -> int:
        seconds = self.config.ttl if ttl is None else ttl
        if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                or not math.isfinite(seconds) or seconds <= 0):
            raise ValueError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        return max(1, round(seconds * 1000))

    async def _call(self, command: Awaitable[T]) -> T:
        # The socket timeouts bound each connect and reply; this bounds the whole call (a wait
        # for a pooled connection, connecting, the command) by one REDIS_TIMEOUT.
        async with asyncio.timeout(self.config.timeout):
            return await command

    async def _write(self, what: str, command: Callable[[], Awaitable[Any]]) -> bool:
        if self._closed:
            self.write_errors += 1
            return False
        try:
            await self._call(command())
        except CACHE_ERRORS as exc:
            self.write_errors += 1
            self._failed(what, exc)
            return False
        self._answered()
        return True

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            logger.warning("cache %s failed (%s: %s); answering from the database until "
                           "Redis at %s answers again", what, type(exc).__name__,
                           str(exc) or "timed out", self.config.url)

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("cache at %s answers again", self.config.url)


async def open_cache(config: CacheConfig | None, *,
                     client_name: str = CACHE_CLIENT_NAME) -> Cache | None:
    """The service's cache, opened and checked with one ``PING`` (bounded by
    ``config.timeout``); None when ``config`` is None. When Redis cannot be reached, None and
    one warning line (logger ``atlas.service``) saying that the service runs without a cache
    and how to get one. Call it on the event loop that will use the cache."""
    if config is None:
        return None
    cache = Cache(config, client_name=client_name)
    try:
        await cache.ping()
    except CACHE_ERRORS as exc:
        await cache.close()
        logger.warning(
            "no cache: Redis at %s cannot be reached (%s: %s); the service runs without a "
            "cache, every read from the database. To get one: apt install redis-server, then "
            "start atlas_sim.service.programs.RedisServer and give its url to "
            "CacheConfig(url=...)", config.url, type(exc).__name__, str(exc) or "timed out")
        return None
    return cache
