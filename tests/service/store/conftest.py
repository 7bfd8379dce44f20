"""The contract suite's stores: one fixture, three backends (memory, SQLite on ``tmp_path``,
PostgreSQL on the ``postgres_url`` fixture's empty database, a live test: it needs a socket)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from atlas_sim.service.store import MemoryStore, Store

KINDS = [pytest.param("memory"), pytest.param("sqlite"),
         pytest.param("postgresql", marks=pytest.mark.live)]


def store_maker(kind: str, request: pytest.FixtureRequest) -> Callable[..., Store]:
    """A function making stores of ``kind`` that share one database (not opened)."""
    if kind == "memory":
        import uuid

        name = "test-" + uuid.uuid4().hex

        def memory(**kw: Any) -> Store:
            return MemoryStore(name, **kw)
        return memory
    if kind == "sqlite":
        from atlas_sim.service.store.sqlite import SqliteStore

        path = str(request.getfixturevalue("tmp_path") / "atlas.sqlite3")

        def sqlite(**kw: Any) -> Store:
            return SqliteStore(path, **kw)
        return sqlite
    from atlas_sim.service.store.postgres import PostgresStore

    url = request.getfixturevalue("postgres_url")

    def postgresql(**kw: Any) -> Store:
        return PostgresStore(url, **kw)
    return postgresql


@pytest.fixture(params=KINDS)
def make_store(request: pytest.FixtureRequest) -> Callable[..., Store]:
    """``make_store(**kwargs)``: a new store (not opened) on this test's one database."""
    return store_maker(request.param, request)


