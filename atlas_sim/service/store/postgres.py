"""The store in a PostgreSQL database through psycopg 3: one ``psycopg.AsyncConnection`` per
pool slot, handed out by Atlas's own pool policy (``AsyncPool``), not by psycopg_pool.

Schema creation runs under a session advisory lock (``pg_advisory_lock``: PostgreSQL's
documentation, "Advisory Locks"), since concurrent ``CREATE TABLE IF NOT EXISTS`` can still
collide on the catalog's unique index when several instances open one database at once. Key
decisions (``begin``) and the appends to one topic are serialised by transaction-scoped advisory
locks (``pg_advisory_xact_lock``), released at commit, so offsets become visible in order. The
slow query is ``pg_sleep``. Order numbers are ``MAX(id) + 1`` under an advisory lock taken after
the slow query: unique across every instance and without the gaps a sequence leaves when a
transaction rolls back.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import psycopg

from .sql import Row, SqlStore

__all__ = ["APPLICATION_NAME", "PostgresStore"]

#: ``application_name`` of the store's connections (``pg_stat_activity`` shows them by it).
APPLICATION_NAME = "atlas-store"
_SCHEMA_LOCK = 0x41746C73  # "Atls": the advisory lock key held while the schema is created

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS atlas_keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
    "token BIGINT NOT NULL, began DOUBLE PRECISION NOT NULL, status INTEGER, body BYTEA, "
    "media_type TEXT, expires DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS atlas_orders (id BIGINT PRIMARY KEY, request_id TEXT, key TEXT)",
    "CREATE TABLE IF NOT EXISTS atlas_events (topic TEXT NOT NULL, n BIGINT NOT NULL, "
    "payload TEXT NOT NULL, PRIMARY KEY (topic, n))",
    "CREATE TABLE IF NOT EXISTS atlas_offsets (grp TEXT NOT NULL, topic TEXT NOT NULL, "
    "n BIGINT NOT NULL, PRIMARY KEY (grp, topic))",
)


class PostgresStore(SqlStore):
    """The store in the PostgreSQL database at ``url`` (``postgresql://user@host:port/db``); its
    tables are created if missing.

    Args:
        url: a libpq connection string or URI (psycopg's ``conninfo``).
        connect_timeout: seconds each connection attempt may take, >= 1 (libpq's
            ``connect_timeout``).
        **limits: ``SqlStore``'s ``pool``, ``retention``, ``capacity``, ``lease``, ``clock``,
            ``pool_clock``.
    """

    kind = "postgresql"
    schema = _SCHEMA
    clear_statements = ("TRUNCATE atlas_keys, atlas_orders, atlas_events, atlas_offsets",)
    sleep_sql = "SELECT pg_sleep(?)"

    def __init__(self, url: str, *, connect_timeout: int = 10, **limits: Any) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"url must start with postgresql://, got {url!r}")
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int) \
                or not 1 <= connect_timeout <= 3600:
            raise ValueError(f"connect_timeout must be an integer 1..3600, got {connect_timeout!r}")
        super().__init__(**limits)
        self.url = url
        self.connect_timeout = connect_timeout

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=APPLICATION_NAME,
            connect_timeout=self.connect_timeout)

    async def _disconnect(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.close()

    async def _execute(self, conn: psycopg.AsyncConnection[Any], sql: str,
                       params: Sequence[Any] = ()) -> list[Row]:
        cursor = await conn.execute(sql.replace("?", "%s"), tuple(params))
        return [tuple(row) for row in await cursor.fetchall()] if cursor.description else []

    async def _create_schema(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await self._execute(conn, "SELECT pg_advisory_lock(?)", (_SCHEMA_LOCK,))
        try:
            for statement in self.schema:
                await self._execute(conn, statement)
        finally:
            await self._execute(conn, "SELECT pg_advisory_unlock(?)", (_SCHEMA_LOCK,))

    async def _lock(self, conn: psycopg.AsyncConnection[Any], name: str) -> None:
        # two int4 keys: the schema lock's namespace and a CRC of the name
        await self._execute(conn, "SELECT pg_advisory_xact_lock(?, ?)",
                            (_SCHEMA_LOCK, _signed32(zlib.crc32(name.encode()))))

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"


def _signed32(n: int) -> int:
    return n - (1 << 32) if n >= 1 << 31 else n
