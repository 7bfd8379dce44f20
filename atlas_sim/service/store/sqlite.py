"""The store in a SQLite file through aiosqlite: nothing to install, shared by every process
that opens the same file.

WAL mode (readers never block the writer: SQLite's documentation, "Write-Ahead Logging");
``synchronous = NORMAL`` (what SQLite advises with WAL: a commit survives the process being
killed, not a power cut); ``busy_timeout`` (a writer waits for the write lock instead of failing
at once); one aiosqlite connection (its own thread) per pool slot; ``BEGIN IMMEDIATE`` for every
write (the write lock is taken at the start, so two transactions never deadlock upgrading from
read to write); and the slow query a SQL function, ``atlas_sleep(seconds)``, created on each
connection, that sleeps in the connection's thread and stops when its caller is cancelled.
SQLite serialises writers: a transaction holding its connection for a slow query holds the
database's one write lock too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import aiosqlite

from ...validation import check_real
from .sql import Row, SqlStore

__all__ = ["SqliteStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS atlas_keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
    "token INTEGER NOT NULL, began REAL NOT NULL, status INTEGER, body BLOB, media_type TEXT, "
    "expires REAL)",
    "CREATE TABLE IF NOT EXISTS atlas_orders (id INTEGER PRIMARY KEY, request_id TEXT, key TEXT)",
    "CREATE TABLE IF NOT EXISTS atlas_events (topic TEXT NOT NULL, n INTEGER NOT NULL, "
    "payload TEXT NOT NULL, PRIMARY KEY (topic, n))",
    "CREATE TABLE IF NOT EXISTS atlas_offsets (grp TEXT NOT NULL, topic TEXT NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (grp, topic))",
    "CREATE TABLE IF NOT EXISTS atlas_follows (follower INTEGER NOT NULL, "
    "followee INTEGER NOT NULL, PRIMARY KEY (follower, followee))",
    "CREATE INDEX IF NOT EXISTS atlas_follows_followee ON atlas_follows (followee, follower)",
    "CREATE TABLE IF NOT EXISTS atlas_accounts (id INTEGER PRIMARY KEY, "
    "followers INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS atlas_posts (id INTEGER PRIMARY KEY, author INTEGER NOT NULL, "
    "text TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS atlas_posts_author ON atlas_posts (author, id)",
    "CREATE TABLE IF NOT EXISTS atlas_home_timelines (user_id INTEGER NOT NULL, "
    "post INTEGER NOT NULL, PRIMARY KEY (user_id, post))",
)


class _Sleep:
    """``atlas_sleep(seconds)`` of one connection: the slow query, in the connection's own
    thread, cut short by ``wake`` (set when its caller is cancelled, as PostgreSQL cancels a
    ``pg_sleep`` whose client gave up)."""

    def __init__(self) -> None:
        self.wake = threading.Event()

    def __call__(self, seconds: float) -> int:
        self.wake.wait(seconds)
        return 0


class SqliteStore(SqlStore):
    """The store in the SQLite file ``path`` (created if missing, with its tables).

    Args:
        path: the database file; None: ``atlas.sqlite3`` in a new temporary directory, removed
            (with the file) when the store closes.
        busy_timeout: seconds a writer waits for SQLite's write lock before failing
            (``sqlite3.OperationalError: database is locked``), > 0 and <= 3600.
        **limits: ``SqlStore``'s ``pool``, ``retention``, ``capacity``, ``lease``, ``clock``,
            ``pool_clock``.
    """

    kind = "sqlite"
    schema = _SCHEMA
    slow_query_in_transaction = False  # one writer at a time: see SqlStore
    clear_timeline_statements = tuple(f"DELETE FROM {t}" for t in (
        "atlas_follows", "atlas_accounts", "atlas_posts", "atlas_home_timelines"))
    clear_statements = tuple(f"DELETE FROM {t}" for t in
                             ("atlas_keys", "atlas_orders", "atlas_events", "atlas_offsets")
                             ) + clear_timeline_statements
    sleep_sql = "SELECT atlas_sleep(?)"

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 busy_timeout: float = 30.0, **limits: Any) -> None:
        super().__init__(**limits)
        self.busy_timeout = check_real("busy_timeout", busy_timeout, low=0, low_open=True,
                                       high=3600.0)
        self._own_directory: str | None = None
        self._sleeps: dict[int, _Sleep] = {}
        self.path = None if path is None else os.fspath(path)

    async def open(self) -> None:
        if self.path is None:
            self._own_directory = tempfile.mkdtemp(prefix="atlas-store-")
            self.path = os.path.join(self._own_directory, "atlas.sqlite3")
        await super().open()

    async def close(self) -> None:
        await super().close()
        if self._own_directory is not None:
            shutil.rmtree(self._own_directory, ignore_errors=True)
            self._own_directory = None
            self.path = None

    async def _connect(self) -> aiosqlite.Connection:
        assert self.path is not None
        conn = await aiosqlite.connect(self.path, timeout=self.busy_timeout,
                                       isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # WAL's recommended level: a commit survives the process being killed (the crash
            # test), not a power cut, and costs no fsync (SQLite's documentation, "PRAGMA
            # synchronous")
            await conn.execute("PRAGMA synchronous = NORMAL")
            sleep = _Sleep()
            await conn.create_function("atlas_sleep", 1, sleep)
            self._sleeps[id(conn)] = sleep
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _disconnect(self, conn: aiosqlite.Connection) -> None:
        self._sleeps.pop(id(conn), None)
        await conn.close()

    async def _slow_query(self, conn: aiosqlite.Connection, seconds: float) -> None:
        sleep = self._sleeps[id(conn)]
        sleep.wake.clear()  # this connection's thread runs one statement at a time
        try:
            await super()._slow_query(conn, seconds)
        except asyncio.CancelledError:
            sleep.wake.set()
            raise

    async def _execute(self, conn: aiosqlite.Connection, sql: str,
                       params: Sequence[Any] = ()) -> list[Row]:
        async with conn.execute(sql, tuple(params)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def _bulk_insert(self, conn: aiosqlite.Connection, table: str,
                           columns: Sequence[str], rows: Sequence[Row]) -> None:
        marks = ", ".join("?" * len(columns))
        await conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                               rows)

    async def _create_schema(self, conn: aiosqlite.Connection) -> None:
        # switching to WAL needs the database to itself: several stores opening one file at
        # once may find it busy beyond busy_timeout's retries; the mode is kept in the file,
        # so one that succeeds is enough
        for attempt in range(50):
            try:
                await self._execute(conn, "PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.02)
        await self._begin_write(conn)
        try:
            for statement in self.schema:
                await self._execute(conn, statement)
        except BaseException:
            await self._execute(conn, "ROLLBACK")
            raise
        await self._execute(conn, "COMMIT")

    async def _begin_write(self, conn: aiosqlite.Connection) -> None:
        await self._execute(conn, "BEGIN IMMEDIATE")

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
