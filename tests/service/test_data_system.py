"""The data system end to end, on real parts: the service on a SQLite store, a real Redis cache
(``redis-server``) and the event log's consumers, all opened by the app's lifespan; ``/metrics``
shows the pool, the cache's hit ratio and the consumer lag from real counts, and promtool
accepts the page."""

from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import pytest

from atlas_sim.config import Settings
from atlas_sim.server_config import CacheConfig, EventLogConfig, StoreConfig
from atlas_sim.service import LiveServer, create_app
from atlas_sim.service.programs import check_metrics
from tests.programs import require_program

pytestmark = pytest.mark.live


def _metric(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    raise AssertionError(f"no {prefix} in /metrics")


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds  # a bound on the wait, never an assertion on time
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_store_cache_and_event_log_together_show_in_metrics(tmp_path, redis_url):
    require_program("promtool", "prometheus")
    server = dataclasses.replace(
        Settings().server_config(), store=StoreConfig(url=f"sqlite://{tmp_path / 'atlas.db'}"),
        cache=CacheConfig(url=redis_url), events=EventLogConfig(poll_interval=0.01))
    threads = set(threading.enumerate())
    app = create_app(Settings(), server=server)
    with LiveServer(app, name="data-system") as live, httpx.Client(base_url=live.url) as client:
        assert app.state.atlas.cache is not None  # the lifespan opened the real cache
        for _ in range(3):
            assert client.post("/api/orders?service_time=0").status_code == 200
        for n in (1, 1, 1, 2):  # order 1: a miss, then two hits; order 2: a miss
            answer = client.get(f"/api/orders/{n}")
            assert answer.status_code == 200 and answer.json()["order"] == n
        assert _wait_for(lambda: client.get("/admin/orders").json()["receipted"] == 3)
        assert _wait_for(lambda: _metric(
            client.get("/metrics").text, 'atlas_api_event_consumer_lag{group="receipts"') == 0)
        text = client.get("/metrics").text
        assert _metric(text, 'atlas_api_cache_requests_total{result="hit"}') == 2
        assert _metric(text, 'atlas_api_cache_requests_total{result="miss"}') == 2
        assert _metric(text, "atlas_api_cache_hit_ratio") == 0.5
        # the consumers poll through the same pool, so a connection may be in use at the scrape
        in_use = _metric(text, 'atlas_api_db_pool_connections{state="in_use"}')
        idle = _metric(text, 'atlas_api_db_pool_connections{state="idle"}')
        assert in_use + idle == server.pool.size and 0 <= in_use <= server.pool.size
        assert check_metrics(text) == []
        client.post("/admin/reset")  # empties the store and flushes the cache with it
        assert client.get("/api/orders/1").status_code == 404  # not the old order from the cache
    assert app.state.atlas.cache is None and app.state.atlas.events is None
    # no new thread left (an aiosqlite worker ends a moment after its connection closed)
    assert _wait_for(lambda: set(threading.enumerate()) <= threads)


def test_without_a_reachable_redis_the_service_runs_without_a_cache_and_says_so(caplog):
    server = dataclasses.replace(Settings().server_config(),
                                 cache=CacheConfig(url="redis://127.0.0.1:1/0", timeout=0.5))
    app = create_app(Settings(), server=server)
    with caplog.at_level("WARNING"), LiveServer(app, name="no-cache") as live, \
            httpx.Client(base_url=live.url) as client:
        assert app.state.atlas.cache is None
        assert client.post("/api/orders?service_time=0").status_code == 200
        assert client.get("/api/orders/1").json()["order"] == 1  # from the store
    said = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(said) == 1 and "redis-server" in said[0]
