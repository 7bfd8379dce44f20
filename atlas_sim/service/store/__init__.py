"""Where the service keeps its state: idempotency keys, orders and an event log, in memory, in
SQLite (aiosqlite) or in PostgreSQL (psycopg 3), behind one ``Store`` interface and one pool
policy (``AsyncPool`` driving ``policies.pool.ConnectionPool``).

``open_store(config, pool=..., lease=...)`` builds the store a ``StoreConfig`` names (not yet
opened: ``await store.open()``).
"""

from __future__ import annotations

import os

from ...policies.pool import PoolConfig
from ...server_config import StoreConfig
from .base import AsyncPool, KeyLost, PoolRefused, PoolTimeout, Store
from .memory import MemoryStore

__all__ = ["AsyncPool", "KeyLost", "MemoryStore", "PoolRefused", "PoolTimeout", "Store",
           "open_store", "sqlite_path"]


def open_store(config: StoreConfig | None, *, pool: PoolConfig | None, lease: float,
               directory: str | None = None) -> Store:
    """The store ``config`` names, not yet opened.

    Args:
        config: ``StoreConfig`` (its ``url``, ``key_retention``, ``key_capacity``,
            ``key_lease``), or None: a private ``MemoryStore`` with the default key limits.
        pool: the pool's settings (None: ``PoolConfig()``).
        lease: seconds a key is held in flight when ``config.key_lease`` is None (the server's
            request timeout), > 0.
        directory: where ``url=None``'s SQLite database lives (``<directory>/atlas.sqlite3``);
            None: a new temporary directory, removed when the store closes.

    Raises ``ValueError`` for a bad argument.
    """
    if config is not None and not isinstance(config, StoreConfig):
        raise ValueError(f"config must be a StoreConfig or None, got {config!r}")
    if pool is not None and not isinstance(pool, PoolConfig):
        raise ValueError(f"pool must be a PoolConfig or None, got {pool!r}")
    if config is None:
        return MemoryStore(pool=pool, lease=lease)
    retention, capacity = config.key_retention, config.key_capacity
    lease = lease if config.key_lease is None else config.key_lease
    if config.scheme == "memory":
        assert config.url is not None
        return MemoryStore(config.url.split("://", 1)[1], pool=pool, retention=retention,
                           capacity=capacity, lease=lease)
    if config.scheme == "sqlite":
        from .sqlite import SqliteStore

        if config.url is None:
            return SqliteStore(None if directory is None
                               else os.path.join(directory, "atlas.sqlite3"), pool=pool,
                               retention=retention, capacity=capacity, lease=lease)
        return SqliteStore(sqlite_path(config.url), pool=pool, retention=retention,
                           capacity=capacity, lease=lease)
    from .postgres import PostgresStore

    assert config.url is not None
    return PostgresStore(config.url, pool=pool, retention=retention, capacity=capacity,
                         lease=lease)


def sqlite_path(url: str) -> str:
    """The file a ``sqlite://`` url names, as ``SqliteStore`` opens it: the text after
    ``sqlite://`` (``sqlite:///tmp/x.db``: ``/tmp/x.db``; ``sqlite:///x.db``: ``/x.db``),
    relative to the working directory of the process that opens it when it does not start
    with ``/``. ValueError naming ``url`` for another scheme."""
    if not isinstance(url, str) or not url.startswith("sqlite://"):
        raise ValueError(f"url must start with sqlite://, got {url!r}")
    return url[len("sqlite://"):]
