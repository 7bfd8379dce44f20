"""The store's logic in SQL, written once for SQLite and PostgreSQL (``SqlStore``); each backend
supplies its connections, its schema, how a write transaction begins, its slow query and its
locks. Statements use ``?`` placeholders (PostgreSQL's backend rewrites them to ``%s``).

Tables: ``atlas_keys`` (key, fingerprint, token, ``began`` and ``expires`` as epoch seconds from
the store's clock, the kept answer), ``atlas_orders`` (``id`` is the order number),
``atlas_events`` (topic, offset ``n``, payload) and ``atlas_offsets`` (consumer group, topic,
committed offset: Kafka's committed consumer position, kept in a table).

The home timelines (DDIA chapter 1, "Describing Load"): ``atlas_follows`` (follower, followee;
its primary key is the index on follows(follower), a second index on (followee, follower) finds
an author's followers), ``atlas_accounts`` (id, follower count: the hybrid's threshold test),
``atlas_posts`` (id, author, text; index on (author, id): approach 1's read walks it per
followee) and ``atlas_home_timelines`` (user_id, post: the materialised timelines when the
service has no cache; not trimmed, a read takes the newest ``length``). Every statement of the
timeline methods is counted in ``Store.work`` under its operation.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ...policies.pool import PoolConfig
from ...validation import check_int, check_real
from ..idempotency import Begun, Stored, StoreFull, Verdict
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

__all__ = ["SqlStore"]

Row = tuple[Any, ...]
T = TypeVar("T")

_PURGE = ("DELETE FROM atlas_keys WHERE (expires IS NOT NULL AND expires <= ?) "
          "OR (expires IS NULL AND began <= ?)")


async def _uninterrupted(coro: Coroutine[Any, Any, T]) -> T:
    """``await coro`` to its end even if the caller is cancelled meanwhile; the cancellation is
    re-raised afterwards."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


class SqlStore(Store):
    """The ``Store`` rules in SQL; a backend subclasses it (``SqliteStore``, ``PostgresStore``).

    Args:
        pool: the pool's settings (None: ``PoolConfig()``): ``pool.size`` connections.
        retention: seconds a 2xx answer is kept under its key, > 0.
        capacity: keys held at most, 1..10000000.
        lease: seconds a key in flight is held before anyone may begin it again, > 0.
        clock: epoch seconds written to the database (``time.time``): stores in several
            processes on one database must read clocks that agree.
        pool_clock: seconds for the pool's waits (``time.monotonic``).
    """

    #: The schema, statements run in order by ``open`` (each ``IF NOT EXISTS``).
    schema: Sequence[str] = ()
    #: Forgets everything and restarts the numbering (``clear``).
    clear_statements: Sequence[str] = ()
    #: The slow query: holds the connection ``?`` seconds.
    sleep_sql = ""

    def __init__(self, *, pool: PoolConfig | None = None, retention: float = 300.0,
                 capacity: int = 10_000, lease: float = 30.0, clock: Clock = time.time,
                 pool_clock: Clock = time.monotonic) -> None:
        self.retention = check_real("retention", retention, low=0, low_open=True)
        self.capacity = check_int("capacity", capacity, low=1, high=10_000_000)
        self.lease = check_real("lease", lease, low=0, low_open=True)
        if pool is not None and not isinstance(pool, PoolConfig):
            raise ValueError(f"pool must be a PoolConfig or None, got {pool!r}")
        self.pool_config = PoolConfig() if pool is None else pool
        self._clock = clock
        self._pool_clock = pool_clock
        self._connections: list[Any] = []
        self._opened = False
        #: Broken pooled connections replaced by new ones (``_replace``).
        self.replaced = 0

    # -- what a backend supplies ---------------------------------------------------------------
    @abc.abstractmethod
    async def _connect(self) -> Any:
        """One new connection (autocommit: transactions are begun explicitly)."""

    @abc.abstractmethod
    async def _disconnect(self, conn: Any) -> None:
        """Close ``conn``."""

    @abc.abstractmethod
    async def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (empty for a statement that returns none)."""

    def _is_broken(self, conn: Any) -> bool:
        """Whether ``conn`` can no longer be used (its server closed it, its socket failed):
        returned to the pool, it is replaced by a new one. Never, unless a backend says so."""
        return False

    @abc.abstractmethod
    async def _create_schema(self, conn: Any) -> None:
        """Run ``schema`` so that several stores opening at once cannot collide."""

    async def _slow_query(self, conn: Any, seconds: float) -> None:
        """Hold ``conn`` ``seconds`` in a statement (``sleep_sql``); a cancelled caller stops
        it (psycopg cancels a statement whose coroutine is cancelled)."""
        await self._execute(conn, self.sleep_sql, (seconds,))

    async def _begin_write(self, conn: Any) -> None:
        await self._execute(conn, "BEGIN")

    async def _lock(self, conn: Any, name: str) -> None:
        """Serialise, until the transaction ends, the writers of ``name`` (a topic, "keys")."""

    #: Forgets the timelines' tables and restarts post ids (``clear_timelines``).
    clear_timeline_statements: Sequence[str] = ()

    @abc.abstractmethod
    async def _bulk_insert(self, conn: Any, table: str, columns: Sequence[str],
                           rows: Sequence[Row]) -> None:
        """Insert ``rows`` into ``table`` at once (executemany, or COPY)."""

    # -- the life of the store ---------------------------------------------------------------
    async def open(self) -> None:
        if self._opened:
            return
        try:
            for _ in range(self.pool_config.size):
                self._connections.append(await self._connect())
            await self._create_schema(self._connections[0])
        except BaseException:
            await self._close_all()
            raise
        self.pool = AsyncPool(self.pool_config, self._connections, clock=self._pool_clock)
        self._opened = True

    async def close(self) -> None:
        await self._close_all()
        self._opened = False

    async def _close_all(self) -> None:
        connections, self._connections = self._connections, []
        for conn in connections:
            await self._disconnect(conn)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Any]:
        """A pooled connection for reads (autocommit: each statement on its own)."""
        if not self._opened:
            raise RuntimeError(f"{self!r} is not open: await store.open() first")
        async with self.pool.connection() as conn:
            try:
                yield conn
            finally:
                if self._is_broken(conn):
                    await _uninterrupted(self._replace(conn))

    async def _replace(self, conn: Any) -> None:
        """A broken pooled connection swapped for a new one, as psycopg_pool does with a
        connection returned broken ("Connection pools": "Connection quality"), counted in
        ``replaced``. If no new connection can be made (the database is down), the broken one
        goes back and whoever takes it next fails and tries again."""
        try:
            new = await self._connect()
        except Exception:
            return
        self.pool.replace(conn, new)
        self._connections = [new if c is conn else c for c in self._connections]
        self.replaced += 1
        with contextlib.suppress(Exception):
            await self._disconnect(conn)

    #: Whether ``place_order``'s slow query runs inside its write transaction. SQLite has one
    #: writer at a time (``BEGIN IMMEDIATE`` takes the database's write lock), so a slow query
    #: inside the transaction would make every other write wait for the lock, not for a pooled
    #: connection; there it runs on the same pooled connection just before the transaction.
    slow_query_in_transaction = True

    @asynccontextmanager
    async def _write(self, hold: float = 0.0) -> AsyncIterator[Any]:
        """A pooled connection inside one write transaction, committed at the end of the block
        or rolled back if it raises (a cancellation included). The COMMIT or ROLLBACK runs to
        its end even if the caller is cancelled meanwhile, so the connection goes back to the
        pool outside any transaction. ``hold``: seconds of slow query on the connection first
        (inside the transaction or just before it: ``slow_query_in_transaction``)."""
        async with self._read() as conn:
            if hold > 0 and not self.slow_query_in_transaction:
                await self._slow_query(conn, hold)
            try:
                await _uninterrupted(self._begin_write(conn))
            except asyncio.CancelledError:
                # The BEGIN ran to its end first: a connection must not go back to the pool
                # inside a transaction (every later write on it would fail). A ROLLBACK with
                # no transaction open is refused (SQLite) or ignored (PostgreSQL).
                with contextlib.suppress(Exception):
                    await _uninterrupted(self._execute(conn, "ROLLBACK"))
                raise
            try:
                if hold > 0 and self.slow_query_in_transaction:
                    await self._slow_query(conn, hold)
                yield conn
            except BaseException:
                # the first error is the one to raise: a ROLLBACK refused (SQLite rolls back
                # by itself after some errors) must not hide it
                with contextlib.suppress(Exception):
                    await _uninterrupted(self._execute(conn, "ROLLBACK"))
                raise
            await _uninterrupted(self._execute(conn, "COMMIT"))

    async def _one(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._execute(conn, sql, params)
        return rows[0][0] if rows else None

    async def _purge(self, conn: Any) -> None:
        now = self._clock()
        await self._execute(conn, _PURGE, (now, now - self.lease))

    # -- keys ------------------------------------------------------------------------------
    async def begin(self, key: str, fingerprint: str) -> Verdict:
        async with self._write() as conn:
            await self._lock(conn, "keys")
            await self._purge(conn)
            rows = await self._execute(
                conn, "SELECT fingerprint, status, body, media_type FROM atlas_keys "
                "WHERE key = ?", (key,))
            if rows:
                kept_fingerprint, status, body, media_type = rows[0]
                if kept_fingerprint != fingerprint:
                    return "mismatch"
                if status is None:
                    return "in progress"
                return Stored(kept_fingerprint, status, bytes(body), media_type)
            if await self._one(conn, "SELECT COUNT(*) FROM atlas_keys") >= self.capacity:
                oldest = await self._one(conn, "SELECT MIN(expires) FROM atlas_keys")
                retry = None if oldest is None else max(0.0, oldest - self._clock())
                return StoreFull(self.capacity, retry)
            token = secrets.randbits(62)
            await self._execute(conn, "INSERT INTO atlas_keys (key, fingerprint, token, began) "
                                "VALUES (?, ?, ?, ?)", (key, fingerprint, token, self._clock()))
            return Begun(key, token)

    async def _keep(self, conn: Any, begun: Begun, response: Stored) -> bool:
        """Keep ``response`` under ``begun``'s key if 2xx, else forget the key; False if the
        hold is gone."""
        if 200 <= response.status < 300:
            sql = ("UPDATE atlas_keys SET status = ?, body = ?, media_type = ?, expires = ? "
                   "WHERE key = ? AND token = ? AND status IS NULL RETURNING token")
            params: tuple[Any, ...] = (response.status, response.body, response.media_type,
                                       self._clock() + self.retention, begun.key, begun.token)
        else:
            sql = ("DELETE FROM atlas_keys WHERE key = ? AND token = ? AND status IS NULL "
                   "RETURNING token")
            params = (begun.key, begun.token)
        return bool(await self._execute(conn, sql, params))

    async def complete(self, begun: Begun, response: Stored) -> None:
        async with self._write() as conn:
            await self._keep(conn, begun, response)

    async def abandon(self, begun: Begun) -> None:
        async with self._write() as conn:
            await self._execute(conn, "DELETE FROM atlas_keys WHERE key = ? AND token = ? "
                                "AND status IS NULL", (begun.key, begun.token))

    async def count(self) -> int:
        async with self._write() as conn:
            await self._purge(conn)
            return int(await self._one(conn, "SELECT COUNT(*) FROM atlas_keys"))

    async def clear(self) -> None:
        async with self._write() as conn:
            await self._lock(conn, "orders")  # after any order at work: no lock cycle with it
            for statement in self.clear_statements:
                await self._execute(conn, statement)

    # -- orders ------------------------------------------------------------------------------
    async def place_order(self, *, request_id: str | None, begun: Begun | None,
                          answer: Callable[[int], Stored], hold: float = 0.0) -> Stored:
        hold = check_hold(hold)
        async with self._write(hold) as conn:
            # the slow query first, then the order under the "orders" lock until commit: the
            # numbers stay 1, 2, ... without gaps (a rolled-back order frees its number) while
            # slow transactions still overlap
            await self._lock(conn, "orders")
            n = int(await self._one(conn, "SELECT COALESCE(MAX(id), 0) + 1 FROM atlas_orders"))
            await self._execute(conn, "INSERT INTO atlas_orders (id, request_id, key) "
                                "VALUES (?, ?, ?)",
                                (n, request_id, None if begun is None else begun.key))
            stored = answer(n)
            if begun is not None:
                if 200 <= stored.status < 300:
                    held = await self._keep(conn, begun, stored)
                else:
                    held = bool(await self._execute(
                        conn, "SELECT token FROM atlas_keys WHERE key = ? AND token = ? "
                        "AND status IS NULL", (begun.key, begun.token)))
                if not held:
                    raise KeyLost(begun)
            await self._append(conn, "orders", json.dumps({"order": n,
                                                           "request_id": request_id}))
            return stored

    async def orders(self) -> int:
        async with self._read() as conn:
            return int(await self._one(conn, "SELECT COUNT(*) FROM atlas_orders"))

    async def get_order(self, n: int) -> dict[str, Any] | None:
        async with self._read() as conn:
            rows = await self._execute(conn, "SELECT id, request_id, key FROM atlas_orders "
                                       "WHERE id = ?", (int(n),))
        if not rows:
            return None
        order, request_id, key = rows[0]
        return {"order": int(order), "request_id": request_id, "key": key}

    # -- the event log -----------------------------------------------------------------------
    async def _append(self, conn: Any, topic: str, payload: str) -> int:
        await self._lock(conn, "topic:" + topic)
        offset = int(await self._one(conn, "SELECT COALESCE(MAX(n), 0) + 1 FROM atlas_events "
                                     "WHERE topic = ?", (topic,)))
        await self._execute(conn, "INSERT INTO atlas_events (topic, n, payload) "
                            "VALUES (?, ?, ?)", (topic, offset, payload))
        return offset

    async def append(self, topic: str, payload: str) -> int:
        async with self._write() as conn:
            return await self._append(conn, topic, payload)

    async def read(self, topic: str, *, after: int, limit: int) -> list[tuple[int, str]]:
        check_read(after, limit)
        async with self._read() as conn:
            rows = await self._execute(conn, "SELECT n, payload FROM atlas_events "
                                       "WHERE topic = ? AND n > ? ORDER BY n LIMIT ?",
                                       (topic, after, limit))
        return [(int(n), payload) for n, payload in rows]

    async def end_offset(self, topic: str) -> int:
        async with self._read() as conn:
            return int(await self._one(conn, "SELECT COALESCE(MAX(n), 0) FROM atlas_events "
                                       "WHERE topic = ?", (topic,)))

    async def committed(self, group: str, topic: str) -> int:
        async with self._read() as conn:
            offset = await self._one(conn, "SELECT n FROM atlas_offsets WHERE grp = ? "
                                     "AND topic = ?", (group, topic))
        return 0 if offset is None else int(offset)

    async def commit(self, group: str, topic: str, offset: int) -> None:
        check_offset(offset)
        async with self._write() as conn:
            await self._execute(conn, "INSERT INTO atlas_offsets (grp, topic, n) VALUES (?, ?, ?) "
                                "ON CONFLICT (grp, topic) DO UPDATE SET n = excluded.n "
                                "WHERE atlas_offsets.n < excluded.n",
                                (group, topic, offset))

    # -- home timelines ----------------------------------------------------------------------
    async def clear_timelines(self) -> None:
        async with self._write() as conn:
            await self._lock(conn, "topic:" + POSTS)
            for statement in self.clear_timeline_statements:
                await self._execute(conn, statement)
            await self._execute(conn, "DELETE FROM atlas_events WHERE topic = ?", (POSTS,))
            await self._execute(conn, "DELETE FROM atlas_offsets WHERE topic = ?", (POSTS,))

    async def load_follows(self, edges: Sequence[tuple[int, int]]) -> int:
        pairs = sorted(set(check_edges(edges)))
        counts = Counter(b for _, b in pairs)
        # one transaction; the index on (followee, follower) is filled as the rows go in
        async with self._write() as conn:
            await self._execute(conn, "DELETE FROM atlas_follows")
            await self._execute(conn, "DELETE FROM atlas_accounts")
            await self._bulk_insert(conn, "atlas_follows", ("follower", "followee"), pairs)
            await self._bulk_insert(conn, "atlas_accounts", ("id", "followers"),
                                    sorted(counts.items()))
            # fresh statistics for the planner: after a bulk load PostgreSQL's are stale until
            # autovacuum runs, and a plan made for empty tables walked every post per read
            for table in ("atlas_follows", "atlas_accounts", "atlas_posts"):
                await self._execute(conn, f"ANALYZE {table}")
        return len(pairs)

    async def add_post(self, author: int, text: str, *, event: bool) -> int:
        async with self._write() as conn:
            post = int(await self._one(conn, "INSERT INTO atlas_posts (author, text) "
                                       "VALUES (?, ?) RETURNING id", (int(author), text)))
            self.work.add("post", written=1)
            if event:
                await self._append(conn, POSTS, json.dumps({"post": post, "author": author}))
                self.work.add("post", queries=2, read=1, written=1)
        return post

    async def follower_count(self, author: int, *, operation: str) -> int:
        async with self._read() as conn:
            count = await self._one(conn, "SELECT followers FROM atlas_accounts WHERE id = ?",
                                    (int(author),))
        self.work.add(operation, read=1 if count is not None else 0)
        return 0 if count is None else int(count)

    async def followers(self, author: int, *, operation: str = "fanout") -> list[int]:
        async with self._read() as conn:
            rows = await self._execute(conn, "SELECT follower FROM atlas_follows "
                                       "WHERE followee = ?", (int(author),))
        self.work.add(operation, read=len(rows))
        return [int(r[0]) for r in rows]

    async def fan_out(self, post: int, author: int) -> int:
        async with self._write() as conn:
            rows = await self._execute(
                conn, "INSERT INTO atlas_home_timelines (user_id, post) "
                "SELECT follower, CAST(? AS BIGINT) FROM atlas_follows WHERE followee = ? "
                "ON CONFLICT DO NOTHING RETURNING user_id", (int(post), int(author)))
        self.work.add("fanout", written=len(rows))
        return len(rows)

    async def timeline_query(self, user: int, length: int, *, above: int | None = None,
                             at_most: int | None = None,
                             operation: str = "timeline_read") -> list[int]:
        check_int("length", length, low=1, high=100_000)
        sql = "SELECT p.id FROM atlas_follows f JOIN atlas_posts p ON p.author = f.followee"
        params: list[Any] = []
        where = " WHERE f.follower = ?"
        if above is not None or at_most is not None:
            sql += " JOIN atlas_accounts a ON a.id = f.followee"
        params.append(int(user))
        if above is not None:
            where += " AND a.followers > ?"
            params.append(int(above))
        if at_most is not None:
            where += " AND a.followers <= ?"
            params.append(int(at_most))
        params.append(int(length))
        async with self._read() as conn:
            rows = await self._execute(conn, sql + where + " ORDER BY p.id DESC LIMIT ?", params)
        self.work.add(operation, read=len(rows))
        return [int(r[0]) for r in rows]

    async def home_timeline(self, user: int, length: int) -> list[int]:
        check_int("length", length, low=1, high=100_000)
        async with self._read() as conn:
            rows = await self._execute(conn, "SELECT post FROM atlas_home_timelines "
                                       "WHERE user_id = ? ORDER BY post DESC LIMIT ?",
                                       (int(user), int(length)))
        self.work.add("timeline_read", read=len(rows))
        return [int(r[0]) for r in rows]

    async def timeline_counts(self) -> dict[str, int]:
        async with self._read() as conn:
            posts = await self._one(conn, "SELECT COUNT(*) FROM atlas_posts")
            follows = await self._one(conn, "SELECT COUNT(*) FROM atlas_follows")
            rows = await self._one(conn, "SELECT COUNT(*) FROM atlas_home_timelines")
        return {"posts": int(posts), "follows": int(follows), "home_timeline_rows": int(rows)}
