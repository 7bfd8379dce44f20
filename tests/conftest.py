"""Fixtures for tests that need a real PostgreSQL or Redis (issue 22, "The data system behind the
service"): one server of each per test session, started by Atlas itself
(``atlas_sim.service.PostgresServer`` / ``RedisServer``: 127.0.0.1, a free port, a temporary
directory, stopped at the session's end), and a clean database per test.

Without the Debian package a fixture fails the test under ``CI=true`` and skips it elsewhere,
naming the package (``tests/programs.py``'s ``require_program``). The servers start only when a
test asks for them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.programs import require_program

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A ``PostgresServer`` for the whole session (``postgresql``: initdb, postgres, pg_isready
    and psql)."""
    for program in ("postgres", "initdb", "pg_isready", "psql"):
        require_program(program, "postgresql")
    from atlas_sim.service import PostgresServer

    with PostgresServer(name="tests-postgres") as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/<name>``: an empty database of this test's own on
    the session's server, dropped after it (its connections closed first)."""
    name = f"test_{os.getpid()}_{next(_databases)}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[object]:
    """A ``RedisServer`` for the whole session (``redis-server``)."""
    require_program("redis-server", "redis-server")
    from atlas_sim.service import RedisServer

    with RedisServer(name="tests-redis") as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """``redis://127.0.0.1:PORT/0`` on the session's server, emptied (``FLUSHALL``) first."""
    redis_server.flushall()
    return redis_server.url
