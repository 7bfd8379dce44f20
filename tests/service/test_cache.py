"""The cache (``service.cache``): a real Redis read cache-aside, its fallback to the database on
every cache error, its bounded pool, and ``GET /api/orders/{n}`` on it.

Every test here talks to a real ``redis-server`` through the ``redis_url`` fixture (a flushed
database of its own), or to a port where none listens; none waits on the wall clock beyond a
bounded poll for Redis's own expiry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio

from atlas_sim.server_config import CacheConfig
from atlas_sim.service import create_app
from atlas_sim.service.cache import Cache, open_cache
from atlas_sim.service.routes.reads import order_key

pytestmark = pytest.mark.live


def run(coro: Awaitable[Any], bound: float = 20.0) -> Any:
    """Run ``coro`` on a fresh loop, failing (not hanging) if it takes beyond ``bound`` s."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, bound)
    return asyncio.run(bounded())


class Loads:
    """A database stand-in for ``load``: counts its calls, answers ``values[key]``."""

    def __init__(self, values: dict[str, str | None]) -> None:
        self.values = values
        self.calls: list[str] = []

    def __call__(self, key: str) -> Callable[[], Awaitable[str | None]]:
        async def load() -> str | None:
            self.calls.append(key)
            await asyncio.sleep(0)
            return self.values.get(key)
        return load


def unique_name() -> str:
    return f"atlas-test-{uuid.uuid4().hex[:12]}"


async def connections_named(url: str, name: str) -> int:
    """Connections to the Redis at ``url`` whose ``CLIENT SETNAME`` is ``name``."""
    admin = redis.asyncio.Redis.from_url(url)
    try:
        clients = await admin.client_list()
    finally:
        await admin.aclose()
    return sum(c.get("name") == name for c in clients)


async def until(check: Callable[[], Awaitable[bool]], what: str, bound: float = 3.0) -> None:
    deadline = time.monotonic() + bound
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound} s: {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def cache_at(url: str, **config: Any) -> AsyncIterator[Cache]:
    cache = Cache(CacheConfig(url=url, **config), client_name=unique_name())
    try:
        yield cache
    finally:
        await cache.close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- cache-aside: hit, miss, TTL ---------------------------------------------------------------

def test_a_miss_loads_and_fills_with_the_ttl_and_the_next_read_is_a_hit(redis_url):
    loads = Loads({"a": "A"})

    async def go() -> None:
        async with cache_at(redis_url, ttl=30.0) as cache:
            assert await cache.get_or_load("a", loads("a")) == "A"
            assert (cache.hits, cache.misses, cache.errors) == (0, 1, 0)
            assert await cache.get_or_load("a", loads("a")) == "A"
            assert (cache.hits, cache.misses, cache.errors) == (1, 1, 0)
            assert loads.calls == ["a"]  # the database was read once
            assert cache.hit_ratio == 0.5 and cache.lookups == 2
            # the fill went to Redis with the config's TTL, as Redis's own expiry
            assert await cache.redis.get("a") == "A"
            assert 0 < await cache.redis.pttl("a") <= 30_000
            # a ttl given per call wins over the config's
            await cache.get_or_load("b", loads("b"), ttl=5)
            assert await cache.redis.pttl("b") == -2  # "b" has no value: nothing was cached
            loads.values["c"] = "C"
            await cache.get_or_load("c", loads("c"), ttl=5)
            assert 0 < await cache.redis.pttl("c") <= 5_000

    run(go())


def test_an_entry_expires_by_redis_and_is_then_loaded_again(redis_url):
    loads = Loads({"k": "v1"})

    async def go() -> None:
        async with cache_at(redis_url) as cache:
            assert await cache.get_or_load("k", loads("k"), ttl=0.05) == "v1"
            assert 0 < await cache.redis.pttl("k") <= 50
            loads.values["k"] = "v2"  # the database changed, and nobody invalidated

            async def gone() -> bool:
                return not await cache.redis.exists("k")
            await until(gone, "Redis expired the entry")
            assert await cache.get_or_load("k", loads("k")) == "v2"
            assert (cache.hits, cache.misses) == (0, 2) and loads.calls == ["k", "k"]

    run(go())


def test_nothing_is_cached_for_a_missing_value_so_it_is_found_once_it_exists(redis_url):
    loads = Loads({})

    async def go() -> None:
        async with cache_at(redis_url) as cache:
            assert await cache.get_or_load("x", loads("x")) is None
            assert await cache.get_or_load("x", loads("x")) is None
            loads.values["x"] = "X"
            assert await cache.get_or_load("x", loads("x")) == "X"
            assert (cache.hits, cache.misses) == (0, 3) and len(loads.calls) == 3

    run(go())


def test_invalidate_and_flush_send_the_next_reads_to_the_database(redis_url):
    loads = Loads({"a": "A", "b": "B", "c": "C"})

    async def go() -> None:
        async with cache_at(redis_url) as cache:
            for key in "abc":
                await cache.get_or_load(key, loads(key))
            loads.values["a"] = "A2"
            assert await cache.invalidate("a") is True
            assert await cache.get_or_load("a", loads("a")) == "A2"  # loaded again
            assert await cache.get_or_load("b", loads("b")) == "B"  # still cached
            assert loads.calls == ["a", "b", "c", "a"]
            assert await cache.flush() is True  # the cache goes cold
            assert await cache.redis.dbsize() == 0
            assert await cache.get_or_load("b", loads("b")) == "B"
            assert loads.calls[-1] == "b"
            assert (cache.hits, cache.misses, cache.errors) == (1, 5, 0)
            cache.reset_counts()
            assert (cache.hits, cache.misses, cache.errors) == (0, 0, 0)
            assert math.isnan(cache.hit_ratio)

    run(go())


def test_bad_ttls_are_refused_naming_the_parameter(redis_url):
    async def go() -> None:
        async with cache_at(redis_url) as cache:
            for ttl in (0, -1, float("nan"), float("inf"), True, "5"):
                with pytest.raises(ValueError, match="ttl must be a number of seconds > 0"):
                    await cache.get_or_load("k", Loads({})("k"), ttl=ttl)

    run(go())
    with pytest.raises(ValueError, match="config must be a CacheConfig"):
        Cache(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="client_name must be"):
        Cache(CacheConfig(url=redis_url), client_name="two words")


# -- the cache is never needed for an answer ---------------------------------------------------

def test_a_cache_nobody_answers_on_counts_errors_and_the_database_answers_every_read(caplog):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    loads = Loads({f"k{i}": f"v{i}" for i in range(10)})

    async def go() -> None:
        async with cache_at(url, timeout=0.5) as cache:
            for i in range(10):
                assert await cache.get_or_load(f"k{i}", loads(f"k{i}")) == f"v{i}"
            assert (cache.hits, cache.misses, cache.errors) == (0, 0, 10)
            assert await cache.invalidate("k1") is False
            assert await cache.flush() is False
            assert cache.write_errors == 2

    with caplog.at_level(logging.INFO, logger="atlas.service"):
        run(go())
    assert len(loads.calls) == 10
    # one line when the run of errors starts, not one per read
    assert [r.getMessage()[:18] for r in caplog.records] == ["cache read failed "]


def test_a_value_that_is_not_utf8_is_an_error_answered_by_the_database(redis_url):
    loads = Loads({"bad": "from the database", "good": "G"})

    async def go() -> None:
        async with cache_at(redis_url) as cache:
            await cache.get_or_load("good", loads("good"))
            other = redis.asyncio.Redis.from_url(redis_url)  # someone else's bytes
            try:
                await other.set("bad", b"\xff\xfe")
            finally:
                await other.aclose()
            assert await cache.get_or_load("bad", loads("bad")) == "from the database"
            assert await cache.get_or_load("good", loads("good")) == "G"  # still usable
            assert (cache.hits, cache.misses, cache.errors) == (1, 1, 1)

    run(go())


def test_redis_timeout_bounds_a_cache_that_accepts_and_never_answers():
    """A peer that accepts connections and says nothing (a hung Redis): each read gives up
    after REDIS_TIMEOUT and the database answers; without the timeouts this test would wait
    forever (its own bound fails it)."""
    loads = Loads({"k": "v"})

    async def go() -> None:
        silent: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            silent.append(writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with cache_at(f"redis://127.0.0.1:{port}/0", timeout=0.2) as cache:
                answers = [await cache.get_or_load("k", loads("k")) for _ in range(3)]
                assert answers == ["v"] * 3
                assert (cache.hits, cache.misses, cache.errors) == (0, 0, 3)
        finally:
            for writer in silent:
                writer.close()
            server.close()
            await server.wait_closed()

    run(go(), bound=10.0)
    assert loads.calls == ["k"] * 3


def test_a_cache_whose_connections_were_cut_is_used_again(redis_url):
    """Redis closes the cache's connections (as a restart does): the next reads are answered,
    at most one by the database, and the cache serves hits again."""
    loads = Loads({"k": "v"})

    async def go() -> None:
        async with cache_at(redis_url, timeout=0.5) as cache:
            name = cache.pool.connection_kwargs["client_name"]
            await cache.get_or_load("k", loads("k"))
            admin = redis.asyncio.Redis.from_url(redis_url)
            try:
                for client in await admin.client_list():
                    if client.get("name") == name:
                        await admin.client_kill_filter(_id=client["id"])
            finally:
                await admin.aclose()
            assert await connections_named(redis_url, name) == 0
            assert await cache.get_or_load("k", loads("k")) == "v"
            hits = cache.hits
            assert await cache.get_or_load("k", loads("k")) == "v"
            assert cache.hits == hits + 1 and cache.errors <= 1

    run(go())


# -- the pool is bounded ------------------------------------------------------------------------

def test_a_pool_of_one_answers_every_concurrent_read_over_one_connection(redis_url):
    values = {f"k{i % 5}": f"v{i % 5}" for i in range(40)}
    loads = Loads(values)

    async def go() -> None:
        async with cache_at(redis_url, max_connections=1, timeout=5.0) as cache:
            name = cache.pool.connection_kwargs["client_name"]
            answers = await asyncio.gather(
                *(cache.get_or_load(f"k{i % 5}", loads(f"k{i % 5}")) for i in range(40)))
            assert answers == [f"v{i % 5}" for i in range(40)]
            assert cache.errors == 0 and cache.lookups == 40
            assert await connections_named(redis_url, name) == 1

    run(go())


# -- opening and closing -------------------------------------------------------------------------

def test_open_cache_without_a_config_is_none_and_with_one_is_a_working_cache(redis_url):
    async def go() -> None:
        assert await open_cache(None) is None
        cache = await open_cache(CacheConfig(url=redis_url))
        assert isinstance(cache, Cache)
        try:
            assert await cache.get_or_load("k", Loads({"k": "v"})("k")) == "v"
        finally:
            await cache.close()

    run(go())


def test_open_cache_on_an_unreachable_redis_is_none_and_says_so_in_one_line(caplog):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    with caplog.at_level(logging.INFO, logger="atlas.service"):
        assert run(open_cache(CacheConfig(url=url, timeout=0.5))) is None
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "\n" not in line and url in line
    assert "runs without a cache" in line
    assert "apt install redis-server" in line and "RedisServer" in line


def test_close_leaves_no_connection_in_redis(redis_url):
    async def go() -> None:
        cache = Cache(CacheConfig(url=redis_url, max_connections=4), client_name=unique_name())
        name = cache.pool.connection_kwargs["client_name"]
        before = await connections_named(redis_url, name)
        loads = Loads({f"k{i}": "v" for i in range(8)})
        await asyncio.gather(*(cache.get_or_load(f"k{i}", loads(f"k{i}")) for i in range(8)))
        assert await connections_named(redis_url, name) > before
        await cache.close()
        await cache.close()  # idempotent
        # a request still at work while the service stops: answered, and nothing reopened
        assert await cache.get_or_load("k0", loads("k0")) == "v"
        assert cache.errors == 1 and await cache.flush() is False

        async def back() -> bool:
            return await connections_named(redis_url, name) == before
        await until(back, "every connection of the cache closed")

    for _ in range(2):  # twice: nothing accumulates
        run(go())


# -- GET /api/orders/{n} -------------------------------------------------------------------------

def _read_orders(cache_url: str | None, paths: list[str]
                 ) -> tuple[list[httpx.Response], list[str], int, Cache | None]:
    """Three orders placed (``POST /api/orders``), then ``paths`` read in turn, from an app
    whose cache is at ``cache_url`` (or that has none); returns the reads' answers and then
    ``/metrics``', the orders' request IDs, and the store's work for the reads (each read of
    the store takes a pooled connection)."""
    app = create_app()
    state = app.state.atlas

    async def go() -> tuple[list[httpx.Response], list[str], int, Cache | None]:
        state.cache = (None if cache_url is None else
                       Cache(CacheConfig(url=cache_url), client_name=unique_name()))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1") as client:
                placed = [await client.post("/api/orders?service_time=0") for _ in range(3)]
                assert [p.json()["order"] for p in placed] == [1, 2, 3]
                store = await state.open_store()
                before = store.pool.policy.acquisitions
                answers = [await client.get(path) for path in paths]
                reads = store.pool.policy.acquisitions - before
                answers.append(await client.get("/metrics"))
            return answers, [p.json()["request_id"] for p in placed], reads, state.cache
        finally:
            if state.cache is not None:
                await state.cache.close()
            await state.close_store()

    return run(go())


def test_the_order_route_reads_the_store_once_and_then_the_cache(redis_url):
    answers, request_ids, reads, cache = _read_orders(redis_url, ["/api/orders/2"] * 3)
    metrics = answers.pop().text
    assert 'atlas_api_cache_requests_total{result="hit"} 2.0' in metrics
    assert 'atlas_api_cache_requests_total{result="miss"} 1.0' in metrics
    assert "atlas_api_cache_hit_ratio 0.6666" in metrics
    assert [a.status_code for a in answers] == [200, 200, 200]
    order = {"order": 2, "request_id": request_ids[1], "key": None}
    assert [a.json() for a in answers] == [order] * 3
    assert answers[0].content == answers[2].content  # the same bytes from store and cache
    assert reads == 1
    assert cache is not None and (cache.hits, cache.misses, cache.errors) == (2, 1, 0)
    assert order_key(2) == "order:2"


def test_the_order_route_without_a_cache_reads_the_store_every_time():
    answers, request_ids, reads, _ = _read_orders(None, ["/api/orders/1"] * 2)
    assert "atlas_api_cache" not in answers.pop().text  # no cache, no cache metrics
    assert [a.status_code for a in answers] == [200, 200] and reads == 2
    assert answers[0].json() == {"order": 1, "request_id": request_ids[0], "key": None}


@pytest.mark.parametrize("cached", [True, False])
def test_an_order_that_does_not_exist_is_a_404_with_the_json_error_body(redis_url, cached):
    answers, _, reads, cache = _read_orders(redis_url if cached else None,
                                         ["/api/orders/4", "/api/orders/4", "/api/orders/0"])
    answers.pop()  # /metrics
    missing, again, zero = answers
    assert missing.status_code == again.status_code == 404
    body = missing.json()
    assert body["error"] == "no order 4" and body["request_id"]
    assert body["request_id"] == missing.headers["X-Request-ID"]
    assert reads == 2  # a missing order is never cached
    assert zero.status_code == 422 and "request_id" in zero.json()
    if cache is not None:
        assert (cache.hits, cache.misses) == (0, 2)



# -- home timelines: a fan-out during a rebuild --------------------------------------------------

def test_a_post_fanned_out_while_a_timeline_is_rebuilt_is_not_lost(redis_url):
    # The rebuild's query runs while the key is missing; a post committed meanwhile is fanned
    # out to existing timelines only, so it skipped this one, and the fill wrote the older list:
    # the post was missing until the TTL. The second load puts it in.
    database = [7]

    async def go() -> tuple[list[int], list[int]]:
        async with cache_at(redis_url, ttl=30.0) as cache:
            async def load() -> list[int]:
                seen = list(reversed(database))
                if database == [7]:  # during the first query, post 8 commits and fans out
                    database.append(8)
                    await cache.timeline_insert([1], 8, 50)
                return seen

            first = await cache.timeline_or_rebuild(1, 50, load)
            again = await cache.timeline_or_rebuild(1, 50, load)
            return first, again

    first, again = asyncio.run(go())
    assert first == [8, 7] and again == [8, 7]


def test_a_bulk_fill_materialises_every_timeline_so_reads_hit_and_fanouts_land(redis_url):
    async def go() -> tuple[list[int], list[int], list[int], int, int, float]:
        async with cache_at(redis_url, ttl=30.0) as cache:
            written = await cache.timeline_fill({1: [3, 9, 5], 2: [], 3: list(range(1, 80))}, 50,
                                                batch=2)

            async def load() -> list[int]:
                raise AssertionError("a filled timeline is never rebuilt")

            one = await cache.timeline_or_rebuild(1, 50, load)
            two = await cache.timeline_or_rebuild(2, 50, load)  # empty, but materialised
            added = await cache.timeline_insert([1, 2], 10, 50)
            three = await cache.timeline_or_rebuild(3, 50, load)
            ttl = await cache.redis.pttl("timeline:1")
            with pytest.raises(ValueError, match="batch must be an integer >= 1"):
                await cache.timeline_fill({1: [1]}, 50, batch=0)
            return one, two, three, written, added, ttl / 1e3

    one, two, three, written, added, ttl = asyncio.run(go())
    assert written == 3 and one == [9, 5, 3] and two == []
    assert three == list(range(79, 29, -1))  # the newest 50 only
    assert added == 2  # both timelines existed, so the fan-out reached both
    assert 25 < ttl <= 30
