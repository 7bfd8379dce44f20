"""The service on its store (issue 22): orders and their keys kept together in the store, the
store opened and closed with the server (nothing left behind), the pool running dry as a 503
with ``Retry-After``, ``/metrics`` showing the pool, cache and consumer lag, and a cluster's
instances sharing one store, so a retry sent to another instance replays the first answer."""

from __future__ import annotations

import asyncio
import glob
import math
import os
import tempfile
import threading
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atlas_sim.clocks import ManualClock
from atlas_sim.config import Settings
from atlas_sim.policies import PoolConfig
from atlas_sim.server_config import ServerConfig, StoreConfig
from atlas_sim.service import Cluster, LiveServer, create_app
from atlas_sim.service.programs import check_metrics
from atlas_sim.service.store import MemoryStore, open_store
from atlas_sim.workload import Distribution, rng_streams
from tests.programs import require_program

KEY = {"Idempotency-Key": '"order-1"'}


def config(store: StoreConfig | None, **fields: Any) -> ServerConfig:
    """The live defaults (``Settings().server_config()``) on ``store``."""
    import dataclasses

    return dataclasses.replace(Settings().server_config(), store=store, **fields)


def asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def read_store(url: str) -> tuple[int, list[dict[str, Any] | None]]:
    """Orders in the store at ``url`` and each one, read by a store of the test's own."""
    async def read() -> tuple[int, list[dict[str, Any] | None]]:
        store = open_store(StoreConfig(url=url), pool=None, lease=30.0)
        await store.open()
        try:
            count = await store.orders()
            return count, [await store.get_order(n) for n in range(1, count + 1)]
        finally:
            await store.close()
    return asyncio.run(read())


def store_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "atlas-store-*")))


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "memory":
        return f"memory://service-{id(request)}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orders.sqlite3'}"
    return request.getfixturevalue("postgres_url")


# -- an app without a server: the memory store, no startup ------------------------------------

def test_an_app_used_without_a_server_keeps_its_orders_in_a_memory_store():
    app = create_app(Settings())
    state = app.state.atlas
    assert state.server.store is None and isinstance(state.store, MemoryStore)
    assert state.idempotency is state.store

    async def run() -> None:
        async with asgi(app) as client:
            first = await client.post("/api/orders?service_time=0", headers=KEY)
            again = await client.post("/api/orders?service_time=0", headers=KEY)
            plain = await client.post("/api/orders?service_time=0")
            assert first.status_code == again.status_code == plain.status_code == 200
            assert again.headers["Idempotent-Replayed"] == "true"
            assert first.content == again.content and first.json()["order"] == 1
            assert plain.json()["order"] == 2
            assert (await client.get("/admin/orders")).json() == {"applied": 2, "keys": 1}
            assert (await state.store.get_order(1))["key"] == "order-1"  # kept together
            assert (await client.post("/admin/reset")).status_code == 200
            assert (await client.get("/admin/orders")).json() == {"applied": 0, "keys": 0}
    asyncio.run(run())


def test_the_live_default_pool_waits_database_timeout():
    assert Settings(database_timeout=2.5).server_config().pool == PoolConfig(timeout=2.5)


# -- the store, opened and closed with the server ----------------------------------------------

@pytest.mark.live
def test_orders_and_their_keys_are_kept_in_the_store_and_outlive_the_server(store_url):
    server = LiveServer(create_app(Settings(), server=config(StoreConfig(url=store_url))),
                        name="store-orders").start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            first = client.post("/api/orders?service_time=0", headers=KEY, json={"item": 1})
            again = client.post("/api/orders?service_time=0", headers=KEY, json={"item": 1})
            plain = client.post("/api/orders?service_time=0")
            assert first.status_code == again.status_code == plain.status_code == 200
            assert again.headers["Idempotent-Replayed"] == "true"
            assert first.content == again.content
            assert client.get("/admin/orders").json() == {"applied": 2, "keys": 1}
    finally:
        server.stop()
    count, orders = read_store(store_url)
    assert count == 2
    assert [o["key"] for o in orders] == ["order-1", None]
    assert orders[0]["request_id"] == first.json()["request_id"]


@pytest.mark.live
def test_a_temporary_store_opens_with_the_server_and_is_removed_when_it_stops():
    before_dirs, before_threads = store_dirs(), threading.active_count()
    for _ in range(2):  # a notebook cell run twice
        app = create_app(Settings(), server=config(StoreConfig()))
        server = LiveServer(app, name="store-temporary").start()
        state = app.state.atlas
        made = store_dirs() - before_dirs
        assert len(made) == 1 and state.store.kind == "sqlite"  # opened at start
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            assert client.post("/api/orders?service_time=0", headers=KEY).status_code == 200
            assert client.get("/admin/orders").json() == {"applied": 1, "keys": 1}
    server.stop()
    assert store_dirs() == before_dirs
    assert threading.active_count() == before_threads
    server.start()  # the same app served again: a fresh temporary store
    try:
        assert len(store_dirs() - before_dirs) == 1
        assert httpx.get(server.url + "/admin/orders", trust_env=False).json() == {
            "applied": 0, "keys": 0}
    finally:
        server.stop()
    assert store_dirs() == before_dirs and threading.active_count() == before_threads


@pytest.mark.live
def test_a_store_that_cannot_open_stops_the_server_from_starting_saying_why():
    before = threading.active_count()
    bad = StoreConfig(url="postgresql://postgres@127.0.0.1:9/nothing")  # port 9: discard
    server = LiveServer(create_app(Settings(), server=config(bad)), name="store-bad")
    with pytest.raises(RuntimeError, match="failed to start: OperationalError"):
        server.start()
    assert not server.running and threading.active_count() == before


# -- a lost hold, a dry pool ----------------------------------------------------------------

@pytest.mark.parametrize("how", ["reset", "lease"])
def test_a_key_lost_while_its_order_is_at_work_applies_nothing_and_answers_409(how):
    app = create_app(Settings())
    state = app.state.atlas
    clock = ManualClock()
    state.store = state.idempotency = MemoryStore(lease=5.0, clock=clock)

    async def run() -> None:
        async with asgi(app) as client:
            assert (await client.put("/admin/faults", json={"stall": True})).status_code == 200
            first = asyncio.create_task(client.post("/api/orders?service_time=0", headers=KEY))
            while state.work.waiting < 1:  # its key begun, held at the door by the stall
                await asyncio.sleep(0.001)
            second = None
            if how == "reset":  # the key is cleared (and the stall lifted) meanwhile
                assert (await client.post("/admin/reset")).status_code == 200
            else:  # the lease runs out: a retry begins the key again and is held too
                clock.advance(10.0)
                second = asyncio.create_task(client.post("/api/orders?service_time=0",
                                                         headers=KEY))
                while state.work.waiting < 2:
                    await asyncio.sleep(0.001)
                assert (await client.put("/admin/faults", json={"stall": False})
                        ).status_code == 200
            lost = await first
            assert lost.status_code == 409, lost.text
            assert "nothing was applied" in lost.json()["error"]
            applied = 0
            if second is not None:
                kept = await second
                assert kept.status_code == 200 and kept.json()["order"] == 1
                replay = await client.post("/api/orders?service_time=0", headers=KEY)
                assert replay.headers["Idempotent-Replayed"] == "true"
                assert replay.content == kept.content
                applied = 1
            assert (await client.get("/admin/orders")).json()["applied"] == applied
    asyncio.run(run())


def test_a_dry_pool_answers_503_with_retry_after_naming_the_pool():
    # one connection held 0.3 s by a slow query: a second order waits 0.02 s at most (timeout),
    # a third is refused at once (max_waiting 1 already waits)
    slow = StoreConfig(url="memory://dry-pool", query_time=Distribution(mean=0.3,
                                                                        kind="constant"))
    app = create_app(Settings(), server=config(
        slow, workers=4, retry_after=2, pool=PoolConfig(size=1, max_waiting=1, timeout=0.05)))

    async def run() -> list[httpx.Response]:
        async with asgi(app) as client:
            await client.post("/admin/reset")
            tasks = [asyncio.create_task(client.post("/api/orders?service_time=0",
                                                     headers={"X-Request-ID": f"r{i}"}))
                     for i in range(3)]
            return list(await asyncio.gather(*tasks))
    answers = asyncio.run(run())
    assert sorted(r.status_code for r in answers) == [200, 503, 503]
    refused = [r for r in answers if r.status_code == 503]
    for r in refused:
        assert r.headers["Retry-After"] == "2"
        body = r.json()
        assert body["pool"]["size"] == 1 and body["pool"]["timeout"] == 0.05
        assert body["pool"]["max_waiting"] == 1 and "waiting" in body["pool"]
        assert body["retry_after"] == 2 and body["request_id"].startswith("r")
    errors = sorted(r.json()["error"] for r in refused)
    assert any("within 0.05 s" in e for e in errors)  # PoolTimeout
    assert any("already wait" in e for e in errors)  # PoolRefused
    policy = app.state.atlas.store.pool.policy
    assert (policy.timeouts, policy.refusals) == (1, 1)


# -- /metrics ---------------------------------------------------------------------------------

class _Events:
    def __init__(self, lag: dict[tuple[str, str], int]) -> None:
        self._lag = lag
        self.failing = False

    async def lag(self) -> dict[tuple[str, str], int]:
        if self.failing:
            raise ConnectionError("the database went away")
        return self._lag


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_the_pool_the_cache_and_the_consumer_lag():
    slow = StoreConfig(url="memory://metrics", query_time=Distribution(mean=0.02,
                                                                       kind="constant"))
    app = create_app(Settings(), server=config(slow, workers=4,
                                               pool=PoolConfig(size=1, timeout=5.0)))
    state = app.state.atlas

    async def run() -> tuple[str, str]:
        async with asgi(app) as client:
            await client.post("/admin/reset")
            bare = (await client.get("/metrics")).text
            state.cache = SimpleNamespace(hits=3, misses=1, errors=0)
            state.events = _Events({("timeline", "posts"): 5, ("audit", "orders"): 0})
            await asyncio.gather(*(client.post("/api/orders?service_time=0")
                                   for _ in range(3)))
            return bare, (await client.get("/metrics")).text
    bare, text = asyncio.run(run())
    before, after = _samples(bare), _samples(text)
    assert not any(name.startswith(("atlas_api_cache", "atlas_api_event")) for name, _ in before)
    assert after[("atlas_api_db_pool_connections", (("state", "idle"),))] == 1
    assert after[("atlas_api_db_pool_connections", (("state", "in_use"),))] == 0
    assert after[("atlas_api_db_pool_waiting", ())] == 0
    assert after[("atlas_api_db_pool_timeouts_total", ())] == 0
    assert after[("atlas_api_db_pool_refusals_total", ())] == 0
    assert after[("atlas_api_db_pool_replaced_total", ())] == 0
    # two of the three orders waited for the one connection (about 0.02 and 0.04 s)
    assert after[("atlas_api_db_pool_wait_seconds_count", ())] >= 2
    assert after[("atlas_api_db_pool_wait_seconds_bucket", (("le", "+Inf"),))] >= 2
    assert after[("atlas_api_db_pool_wait_seconds_sum", ())] > 0
    assert after[("atlas_api_cache_requests_total", (("result", "hit"),))] == 3
    assert after[("atlas_api_cache_requests_total", (("result", "miss"),))] == 1
    assert after[("atlas_api_cache_requests_total", (("result", "error"),))] == 0
    assert after[("atlas_api_cache_hit_ratio", ())] == 0.75
    assert after[("atlas_api_event_consumer_lag",
                  (("group", "timeline"), ("topic", "posts")))] == 5
    state.cache = SimpleNamespace(hits=0, misses=0, errors=0)
    assert math.isnan(_samples(asyncio.run(_scrape(app)))[("atlas_api_cache_hit_ratio", ())])


async def _scrape(app: Any) -> str:
    async with asgi(app) as client:
        return (await client.get("/metrics")).text


def test_a_lag_that_cannot_be_read_is_left_out_and_counted_not_shown_stale():
    app = create_app(Settings(), server=config(StoreConfig(url="memory://lagfail")))
    state = app.state.atlas
    state.events = _Events({("timeline", "posts"): 7})

    async def run() -> tuple[str, str]:
        async with asgi(app) as client:
            good = (await client.get("/metrics")).text
            state.events.failing = True
            return good, (await client.get("/metrics")).text
    good, failed = (_samples(t) for t in asyncio.run(run()))
    lag = ("atlas_api_event_consumer_lag", (("group", "timeline"), ("topic", "posts")))
    assert good[lag] == 7 and good[("atlas_api_event_consumer_lag_failures_total", ())] == 0
    assert lag not in failed
    assert failed[("atlas_api_event_consumer_lag_failures_total", ())] == 1


def test_promtool_accepts_the_metrics_page():
    require_program("promtool", "prometheus")
    app = create_app(Settings(), server=config(StoreConfig(url="memory://promtool")))
    state = app.state.atlas
    state.cache = SimpleNamespace(hits=1, misses=2, errors=1)
    state.events = _Events({("timeline", "posts"): 2})

    async def run() -> str:
        async with asgi(app) as client:
            await client.post("/api/orders?service_time=0", headers=KEY)
            await client.get("/api/work?service_time=0")
            return (await client.get("/metrics")).text
    text = asyncio.run(run())
    assert "atlas_api_db_pool_wait_seconds_bucket" in text
    assert "atlas_api_event_consumer_lag" in text and "atlas_api_cache_hit_ratio" in text
    assert check_metrics(text) == []


def test_a_reset_rewinds_the_store_stream():
    slow = StoreConfig(url="memory://rewind", query_time=Distribution(mean=0.001))
    app = create_app(Settings(), server=config(slow), seed=4)
    state = app.state.atlas
    expected = slow.query_time.sample(rng_streams(4)["store"], 3).tolist()
    assert [state.draw_hold() for _ in range(3)] == expected

    async def reset() -> None:
        async with asgi(app) as client:
            assert (await client.post("/admin/reset")).status_code == 200
    asyncio.run(reset())
    assert state.draw_hold() == expected[0]


# -- a cluster on one store ----------------------------------------------------------------

@pytest.mark.live
@pytest.mark.parametrize("where", ["temporary", "postgresql"])
def test_a_retry_sent_to_another_instance_replays_the_first_answer(where, request):
    store = (StoreConfig() if where == "temporary"
             else StoreConfig(url=request.getfixturevalue("postgres_url")))
    before = store_dirs()
    cluster = Cluster(config(store), 3, name="store-cluster")
    with cluster:
        states = [s.app.state.atlas for s in cluster.servers]
        assert all(s.server is states[0].server for s in states)  # the very config given
        if where == "temporary":
            assert len(store_dirs() - before) == 1  # one directory for the three
        answers = []
        for url in cluster.urls:
            with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
                answers.append(client.post("/api/orders?service_time=0", headers=KEY))
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert "Idempotent-Replayed" not in answers[0].headers
        assert [a.headers.get("Idempotent-Replayed") for a in answers[1:]] == ["true", "true"]
        assert answers[0].content == answers[1].content == answers[2].content
        for url in cluster.urls:
            assert httpx.get(url + "/admin/orders", trust_env=False).json() == {
                "applied": 1, "keys": 1}
        # orders from every instance are numbered in one sequence
        numbers = [httpx.post(url + "/api/orders?service_time=0", trust_env=False).json()["order"]
                   for url in cluster.urls]
        assert sorted(numbers) == [2, 3, 4]
    assert store_dirs() == before
    if where == "postgresql":  # every instance closed its connections
        assert _connections(request.getfixturevalue("postgres_url")) == 0


def _connections(url: str) -> int:
    """Connections to ``url``'s database other than this one."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND pid <> pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.live
def test_a_cluster_started_twice_under_one_name_leaves_one_store_directory():
    before, threads = store_dirs(), threading.active_count()
    first = Cluster(config(StoreConfig()), 2, name="store-rerun").start()
    second = Cluster(config(StoreConfig()), 2, name="store-rerun").start()  # the cell again
    try:
        assert not first.running and len(store_dirs() - before) == 1
        url = second.urls[0]
        assert httpx.post(url + "/api/orders?service_time=0", headers=KEY,
                          trust_env=False).status_code == 200
        replay = httpx.post(second.urls[1] + "/api/orders?service_time=0", headers=KEY,
                            trust_env=False)
        assert replay.headers["Idempotent-Replayed"] == "true"
    finally:
        second.stop()
    assert store_dirs() == before and threading.active_count() == threads
    second.start()  # started again: a fresh store in a new directory
    try:
        assert httpx.get(second.urls[0] + "/admin/orders", trust_env=False).json() == {
            "applied": 0, "keys": 0}
    finally:
        second.stop()
    assert store_dirs() == before
