"""What only the database stores have: connections that must all be closed, a schema several
instances create at once, open_store's URLs, and AsyncPool cross-checked against psycopg_pool
on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg
import pytest

from atlas_sim.policies.pool import PoolConfig
from atlas_sim.server_config import StoreConfig
from atlas_sim.service.idempotency import Stored
from atlas_sim.service.store import PoolRefused, PoolTimeout, Store, open_store
from atlas_sim.service.store.postgres import APPLICATION_NAME, PostgresStore
from atlas_sim.service.store.sqlite import SqliteStore
from tests.service.store.support import store_maker


async def _open_use_close(stores: list[Store]) -> list[int]:
    await asyncio.gather(*(s.open() for s in stores))  # at once: the schema made once, safely
    try:
        return [await s.append("t", "x") for s in stores]
    finally:
        for s in stores:
            await s.close()


def test_three_sqlite_stores_open_one_new_file_at_once_and_close_every_thread(tmp_path):
    path = tmp_path / "db.sqlite3"
    before = set(threading.enumerate())
    for rounds in range(2):  # run twice: nothing accumulates
        stores: list[Store] = [SqliteStore(path, pool=PoolConfig(size=2)) for _ in range(3)]
        offsets = asyncio.run(_open_use_close(stores))
        assert offsets == [3 * rounds + 1, 3 * rounds + 2, 3 * rounds + 3]
        # aiosqlite: a thread per connection; none of them left (threads of earlier tests may
        # end meanwhile: only new ones count)
        deadline = time.monotonic() + 5  # a bound on the wait, not an assertion on time
        while not set(threading.enumerate()) <= before and time.monotonic() < deadline:
            time.sleep(0.01)  # a worker ends a moment after its connection closed
        assert set(threading.enumerate()) <= before
    assert sorted(os.listdir(tmp_path)) == ["db.sqlite3"]  # WAL files gone with the last close


def test_a_sqlite_store_without_a_path_lives_in_a_temporary_directory_it_removes():
    store = open_store(StoreConfig(), pool=PoolConfig(size=1), lease=30.0)
    assert isinstance(store, SqliteStore) and store.kind == "sqlite"

    async def use() -> str:
        await store.open()
        assert store.path is not None
        await store.append("t", "x")
        where = os.path.dirname(store.path)
        await store.close()
        await store.close()  # idempotent
        return where
    assert not os.path.exists(asyncio.run(use()))


def test_open_store_builds_sqlite_and_postgresql_stores_from_their_urls(tmp_path):
    sqlite = open_store(StoreConfig(url=f"sqlite://{tmp_path}/a.db", key_capacity=9),
                        pool=None, lease=5.0)
    assert isinstance(sqlite, SqliteStore) and sqlite.path == f"{tmp_path}/a.db"
    assert (sqlite.capacity, sqlite.lease, sqlite.pool_config) == (9, 5.0, PoolConfig())
    in_directory = open_store(StoreConfig(), pool=None, lease=5.0, directory=str(tmp_path))
    assert isinstance(in_directory, SqliteStore)
    assert in_directory.path == os.path.join(tmp_path, "atlas.sqlite3")
    pg = open_store(StoreConfig(url="postgresql://u@127.0.0.1:1/db", key_lease=2.0),
                    pool=PoolConfig(size=3), lease=5.0)
    assert isinstance(pg, PostgresStore) and pg.url == "postgresql://u@127.0.0.1:1/db"
    assert (pg.lease, pg.pool_config.size, pg.kind) == (2.0, 3, "postgresql")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: PostgresStore("mysql://x"), "url must start with postgresql://"),
    (lambda: PostgresStore("postgresql://x", connect_timeout=0), "connect_timeout"),
    (lambda: SqliteStore("x.db", busy_timeout=0), "busy_timeout"),
    (lambda: SqliteStore("x.db", lease=0), "lease"),
    (lambda: SqliteStore("x.db", pool=4), "pool must be a PoolConfig")])
def test_bad_database_settings_are_refused_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_store_not_opened_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="not open"):
        asyncio.run(SqliteStore(tmp_path / "x.db").orders())


def _backends(url: str) -> int:
    """The store's connections open on the database ``url`` (``pg_stat_activity``)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND application_name = %s",
                           (APPLICATION_NAME,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.live
def test_three_postgresql_stores_open_one_new_database_at_once_and_close_every_connection(
        request, postgres_url):
    make = store_maker("postgresql", request)

    async def main() -> list[int]:
        stores = [make(pool=PoolConfig(size=2)) for _ in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            assert await asyncio.to_thread(_backends, postgres_url) == 6
            return sorted(await asyncio.gather(*(s.append("t", "x") for s in stores)))
        finally:
            for s in stores:
                await s.close()
    for _ in range(2):
        assert asyncio.run(main())[-1] % 3 == 0
        # a backend leaves pg_stat_activity when its process has exited, shortly after the
        # client closed (on a busy host, a fresh-clone run saw one still there): wait for it
        assert _eventually_no_backends(postgres_url)


def _eventually_no_backends(url: str, patience: float = 10.0) -> bool:
    deadline = time.monotonic() + patience
    while _backends(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- AsyncPool against psycopg_pool -------------------------------------------------------------
U = 0.1  # seconds between scripted events: a busy host's timer lateness cannot reorder them
#: (client, arrives, holds, timeout), times in units of U; pool size 2, max_waiting 1
SCRIPT = [
    ("c1", 0, 5, 30.0),   # granted, releases at 5
    ("c2", 1, 8, 30.0),   # granted, releases at 9
    ("c3", 2, 5, 30.0),   # waits, granted at 5 (c1's connection), releases at 10
    ("c4", 3, 1, 30.0),   # refused: c3 already waits
    ("c5", 6, 1, 2 * U),  # waits, gives up at 8 (both busy until 9 and 10)
    ("c6", 7, 1, 30.0),   # refused: c5 still waits
    ("c7", 11, 1, 30.0),  # granted: everyone is gone
]
EXPECTED = {"c1": "granted", "c2": "granted", "c3": "granted after a wait", "c4": "refused",
            "c5": "timed out", "c6": "refused", "c7": "granted"}


async def _play(connection: Any, timed_out: type[Exception], refused: type[Exception],
                ) -> dict[str, str]:
    """``SCRIPT`` through ``connection(timeout)`` (an async context manager); each client's
    fate. A holder runs ``pg_sleep`` on its connection."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    fate: dict[str, str] = {}

    async def client(name: str, arrives: int, holds: int, timeout: float) -> None:
        await asyncio.sleep(max(0.0, start + arrives * U - loop.time()))
        asked = loop.time()
        try:
            async with connection(timeout) as conn:
                waited = loop.time() - asked > U / 2
                fate[name] = "granted after a wait" if waited else "granted"
                await conn.execute("SELECT pg_sleep(%s)", (holds * U,))
        except timed_out:
            fate[name] = "timed out"
        except refused:
            fate[name] = "refused"

    await asyncio.gather(*(client(*step) for step in SCRIPT))
    return fate


@pytest.mark.live
def test_async_pool_grants_refuses_and_times_out_as_psycopg_pool_does(postgres_url):
    import psycopg_pool

    async def ours() -> tuple[dict[str, str], tuple[int, ...]]:
        store = PostgresStore(postgres_url, pool=PoolConfig(size=2, max_waiting=1,
                                                           timeout=30.0))
        await store.open()
        try:
            fate = await _play(store.pool.connection, PoolTimeout, PoolRefused)
            p = store.pool.policy
            return fate, (p.requests, p.queued, p.timeouts + p.refusals)
        finally:
            await store.close()

    async def theirs() -> tuple[dict[str, str], tuple[int, ...]]:
        async with psycopg_pool.AsyncConnectionPool(
                postgres_url, min_size=2, max_size=2, max_waiting=1, timeout=30.0,
                kwargs={"autocommit": True}, open=False) as pool:
            await pool.wait()
            fate = await _play(pool.connection, psycopg_pool.PoolTimeout,
                               psycopg_pool.TooManyRequests)
            s = pool.get_stats()
            # psycopg_pool counts timeouts and refusals together, as requests_errors
            return fate, tuple(s.get(k, 0) for k in ("requests_num", "requests_queued",
                                                     "requests_errors"))

    our_fate, our_counts = asyncio.run(ours())
    their_fate, their_counts = asyncio.run(theirs())
    assert our_fate == their_fate == EXPECTED
    assert our_counts == their_counts == (7, 2, 3)


def test_key_times_are_kept_as_epoch_seconds_so_processes_agree(tmp_path):
    # time.monotonic's zero is per boot and per process on some systems; the database keeps
    # time.time, which every process on the host reads alike
    import sqlite3
    import time

    async def begin() -> None:
        store = SqliteStore(tmp_path / "t.db")
        await store.open()
        try:
            await store.begin("k", "f")
        finally:
            await store.close()
    before = time.time()
    asyncio.run(begin())
    with sqlite3.connect(tmp_path / "t.db") as conn:
        (began,) = conn.execute("SELECT began FROM atlas_keys").fetchone()
    conn.close()
    assert before <= began <= time.time()


async def _cancel_appends_at_every_step(store: Store, steps: int) -> list[int]:
    """Cancel an append after 0, 1, ... ``steps - 1`` turns of the event loop (the BEGIN, the
    inserts, the COMMIT each a turn or more), then append once more: every later write must
    work, whatever the cancelled one had reached."""
    await store.open()
    try:
        for turns in range(steps):
            task = asyncio.ensure_future(store.append("t", "cancelled"))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return [await store.append("t", "after") for _ in range(3)]
    finally:
        await store.close()


def test_a_write_cancelled_at_any_step_leaves_its_connection_outside_a_transaction(tmp_path):
    # A cancellation during BEGIN IMMEDIATE once gave the connection back inside the
    # transaction: every later write failed ("cannot start a transaction within a transaction").
    store = SqliteStore(tmp_path / "db.sqlite3", pool=PoolConfig(size=1))
    offsets = asyncio.run(_cancel_appends_at_every_step(store, steps=40))
    assert offsets[1] == offsets[0] + 1 and offsets[2] == offsets[0] + 2


async def _write_beside_a_slow_order(store: Store) -> tuple[bool, BaseException | None]:
    await store.open()
    try:
        slow = asyncio.ensure_future(store.place_order(
            request_id=None, begun=None, answer=lambda n: Stored("f", 200, b"{}", "x"), hold=30))
        while store.pool.policy.in_use < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the slow query under way
        write = asyncio.ensure_future(store.append("t", "x"))
        done, _ = await asyncio.wait({slow, write}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        return write in done, write.exception() if write.done() else None
    finally:
        await store.close()


def test_a_slow_order_on_sqlite_holds_its_connection_not_the_write_lock(tmp_path):
    # SQLite has one writer: a slow query inside BEGIN IMMEDIATE made every other write wait
    # for the lock (then fail with "database is locked"), so a pool of 2 served one at a time.
    store = SqliteStore(tmp_path / "db.sqlite3", pool=PoolConfig(size=2))
    finished_first, error = asyncio.run(_write_beside_a_slow_order(store))
    assert finished_first and error is None


@pytest.mark.live
def test_a_pooled_connection_its_server_closed_is_replaced_when_it_comes_back(
        request, postgres_url):
    # psycopg_pool's "connection quality": a connection returned broken is discarded and a
    # new one made; without that a pool of one would fail every call after the first error
    make = store_maker("postgresql", request)

    def terminate() -> int:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                "current_database() AND application_name = %s", (APPLICATION_NAME,)).fetchall()
        return len(rows)

    async def main() -> tuple[int, type, int, int, int]:
        store = make(pool=PoolConfig(size=1))
        await store.open()
        try:
            first = await store.orders()
            killed = await asyncio.to_thread(terminate)
            with pytest.raises(psycopg.OperationalError) as failed:
                await store.orders()  # the one call that meets the closed connection
            after = [await store.orders() for _ in range(3)]
            return killed, failed.type, store.replaced, first, sum(after)
        finally:
            await store.close()

    killed, error, replaced, first, after = asyncio.run(main())
    assert killed == 1 and error is not None
    assert replaced == 1 and first == after == 0
    assert _backends(postgres_url) == 0
