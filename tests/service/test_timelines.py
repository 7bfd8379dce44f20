"""DDIA's home timelines in the live service (``service.timelines``, ``routes.timelines``): the
three approaches answer the same timelines once fan-out has landed (SQLite without a cache, a
real Redis, PostgreSQL), a celebrity's post reaches every follower, a dual write loses fan-out
under ``lose_events`` while the outbox cannot, a cold cache is rebuilt from the database (and
counted as database work), bad input is refused, promtool accepts ``/metrics``, and nothing is
left behind."""

from __future__ import annotations

import dataclasses
import glob
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from atlas_sim.config import Settings
from atlas_sim.server_config import CacheConfig, EventLogConfig, StoreConfig, TimelineConfig
from atlas_sim.service import LiveServer, create_app
from atlas_sim.service.programs import check_metrics
from atlas_sim.social import SocialGraph
from tests.programs import require_program

pytestmark = pytest.mark.live

GRAPH = {"accounts": 300, "mean_followers": 8, "tail_index": 1.3, "seed": 3}
LENGTH = 10


def _graph() -> SocialGraph:
    return SocialGraph.generate(**GRAPH)


def _server(approach: str, *, store: str | None = None, cache: str | None = None,
            threshold: int = 40, outbox: bool = True, events: bool = False) -> Any:
    return dataclasses.replace(
        Settings().server_config(), store=StoreConfig(url=store),
        cache=None if cache is None else CacheConfig(url=cache),
        events=EventLogConfig(poll_interval=0.01) if events else None,
        timelines=TimelineConfig(approach=approach, threshold=threshold, length=LENGTH,
                                 outbox=outbox))


@contextmanager
def _serve(server: Any) -> Iterator[tuple[httpx.Client, Any]]:
    app = create_app(Settings(), server=server)
    with LiveServer(app, name="timelines") as live, httpx.Client(base_url=live.url) as client:
        yield client, app.state.atlas


def _wait_for_fanout(client: httpx.Client) -> dict[str, Any]:
    deadline = time.monotonic() + 10.0  # a bound on the wait, never an assertion on time
    while True:
        view = client.get("/admin/timelines").json()
        if view["fanout_lag"] in (0, None) or time.monotonic() > deadline:
            return view
        time.sleep(0.02)


def _post_and_read(client: httpx.Client, users: list[int]) -> tuple[list[tuple[int, int]],
                                                                      dict[int, list[int]]]:
    """Load the graph, post 80 seeded posts (the celebrity's among them), wait for fan-out,
    read ``users``' timelines; returns the posts (id, author) and the timelines."""
    graph = _graph()
    loaded = client.post("/admin/timelines", json=GRAPH)
    assert loaded.status_code == 200
    assert loaded.json()["celebrity"] == graph.celebrity
    assert loaded.json()["follows"] == len(graph.edges)
    rng = np.random.default_rng(7)
    authors = [int(a) for a in rng.integers(0, GRAPH["accounts"], 80)]
    authors[40] = authors[75] = graph.celebrity
    posts = []
    for author in authors:
        answer = client.post("/api/posts", json={"author": author, "text": "hello"})
        assert answer.status_code == 201
        posts.append((answer.json()["post"], author))
    assert [p for p, _ in posts] == list(range(1, 81))
    assert _wait_for_fanout(client)["fanout_lag"] in (0, None)
    timelines = {}
    for user in users:
        answer = client.get(f"/api/timeline/{user}").json()
        timelines[user] = answer["posts"]
    return posts, timelines


def _expected(posts: list[tuple[int, int]], users: list[int]) -> dict[int, list[int]]:
    graph = _graph()
    out = {}
    for user in users:
        followees = set(graph.followees_of(user).tolist())
        out[user] = sorted((p for p, a in posts if a in followees), reverse=True)[:LENGTH]
    return out


USERS = list(range(0, 300, 7))


@pytest.mark.parametrize("approach", ["read", "write", "hybrid"])
def test_each_approach_answers_the_same_timelines_on_sqlite_without_a_cache(tmp_path,
                                                                             approach):
    with _serve(_server(approach, store=f"sqlite:///{tmp_path / 'atlas.db'}")) as (client, _):
        posts, timelines = _post_and_read(client, USERS)
        view = client.get("/admin/timelines").json()
    assert timelines == _expected(posts, USERS)
    assert any(timelines.values())
    work = view["database_work"]
    assert work["timeline_read"]["queries"] == len(USERS) * (1 if approach != "hybrid" else 2)
    assert view["timelines_in"] == (None if approach == "read" else "store")
    if approach == "read":
        assert work["fanout"]["queries"] == 0 and view["home_timeline_rows"] == 0
    else:  # the materialised timelines are in the store's table
        assert view["home_timeline_rows"] == view["fanout_inserts"] > 0


@pytest.mark.parametrize("approach", ["write", "hybrid"])
def test_fan_out_into_a_real_redis_answers_the_same_timelines(tmp_path, redis_url, approach):
    server = _server(approach, store=f"sqlite:///{tmp_path / 'atlas.db'}", cache=redis_url,
                     events=True)  # the app's own consumers, beside the receipts
    with _serve(server) as (client, state):
        assert state.cache is not None
        posts, timelines = _post_and_read(client, USERS)
        again = {u: client.get(f"/api/timeline/{u}").json()["posts"] for u in USERS}
        view = client.get("/admin/timelines").json()
    assert timelines == again == _expected(posts, USERS)
    assert view["timelines_in"] == "cache" and view["home_timeline_rows"] == 0
    # each first read rebuilt its timeline: two queries (the second catches a post fanned out
    # while the key was missing; see Cache.timeline_or_rebuild)
    assert view["database_work"]["rebuild"]["queries"] == 2 * len(USERS)
    assert view["database_work"]["fanout"]["rows_written"] == 0  # the inserts went to Redis


def test_postgresql_store_answers_the_same_timelines(postgres_url):
    with _serve(_server("hybrid", store=postgres_url)) as (client, _):
        posts, timelines = _post_and_read(client, USERS[:15])
    assert timelines == _expected(posts, USERS[:15])


def _celebrity_posts(client: Any, graph: SocialGraph, text: str) -> tuple[int, dict[str, Any]]:
    """Load the graph, post ``text`` as its celebrity, wait for the fan-out: the post's id and
    its delivery record."""
    client.post("/admin/timelines", json=GRAPH)
    post = client.post("/api/posts", json={"author": graph.celebrity,
                                           "text": text}).json()["post"]
    _wait_for_fanout(client)
    return post, client.get(f"/admin/timelines/delivery/{post}").json()


def test_a_celebritys_post_is_delivered_to_every_follower(tmp_path):
    graph = _graph()
    followers = graph.followers_of(graph.celebrity).tolist()
    assert len(followers) > 40
    with _serve(_server("write", store=f"sqlite:///{tmp_path / 'atlas.db'}")) as (client, _):
        post, delivery = _celebrity_posts(client, graph, "to all")
        holding = [u for u in followers
                   if client.get(f"/api/timeline/{u}").json()["posts"][:1] == [post]]
    assert delivery["author"] == graph.celebrity
    assert delivery["followers"] == delivery["delivered"] == len(followers)
    assert delivery["delivered_at"] >= delivery["posted_at"]
    assert holding == followers


def test_hybrid_reads_a_celebritys_post_at_read_time_delivered_at_commit(tmp_path):
    graph = _graph()
    with _serve(_server("hybrid", store=f"sqlite:///{tmp_path / 'atlas.db'}")) as (client, _):
        post, delivery = _celebrity_posts(client, graph, "read me")
        follower = int(graph.followers_of(graph.celebrity)[0])
        assert client.get(f"/api/timeline/{follower}").json()["posts"] == [post]
        view = client.get("/admin/timelines").json()
    assert delivery["delivered_at"] == delivery["posted_at"]
    assert view["home_timeline_rows"] == 0  # never fanned out


@pytest.mark.parametrize("outbox", [False, True])
def test_a_crash_between_the_dual_writes_loses_the_fan_out_and_the_outbox_cannot(tmp_path,
                                                                                   outbox):
    graph = _graph()
    author = graph.celebrity
    follower = int(graph.followers_of(author)[0])
    server = _server("write", store=f"sqlite:///{tmp_path / 'atlas.db'}", outbox=outbox)
    with _serve(server) as (client, _):
        client.post("/admin/timelines", json={**GRAPH, "lose_events": 1})
        assert client.patch("/admin/timelines", json={"lose_events": 1}).json()[
            "lose_events"] == 1
        post = client.post("/api/posts", json={"author": author, "text": "x"}).json()["post"]
        view = _wait_for_fanout(client)
        seen = client.get(f"/api/timeline/{follower}").json()["posts"]
        delivery = client.get(f"/admin/timelines/delivery/{post}").json()
    assert view["posts"] == 1  # the post committed either way
    if outbox:
        assert seen == [post] and view["lost_events"] == 0
        assert delivery["delivered"] == len(graph.followers_of(author))
    else:  # its event was never appended: the reader's timeline is stale for good
        assert seen == [] and view["lost_events"] == 1
        assert delivery["delivered"] == 0 and delivery["delivered_at"] is None


def test_a_cold_cache_is_rebuilt_from_the_database_and_counted(tmp_path, redis_url):
    graph = _graph()
    author = graph.celebrity
    user = int(graph.followers_of(author)[0])
    server = _server("write", store=f"sqlite:///{tmp_path / 'atlas.db'}", cache=redis_url)
    with _serve(server) as (client, state):
        client.post("/admin/timelines", json=GRAPH)
        first = client.post("/api/posts", json={"author": author, "text": "1"}).json()["post"]
        _wait_for_fanout(client)

        def rebuilds() -> int:
            return client.get("/admin/timelines").json()["database_work"]["rebuild"]["queries"]

        assert client.get(f"/api/timeline/{user}").json()["posts"] == [first]
        assert rebuilds() == 2  # the first read found no timeline: rebuilt (two queries)
        second = client.post("/api/posts", json={"author": author, "text": "2"}).json()["post"]
        _wait_for_fanout(client)
        assert client.get(f"/api/timeline/{user}").json()["posts"] == [second, first]
        assert rebuilds() == 2  # a hit: the fan-out kept the cached timeline up to date
        with redis.Redis.from_url(redis_url) as direct:
            direct.flushdb()  # the cache goes cold
        assert client.get(f"/api/timeline/{user}").json()["posts"] == [second, first]
        assert rebuilds() == 4
        assert state.cache.misses == 2 and state.cache.hits == 1
        metrics = client.get("/metrics").text
    assert 'atlas_api_db_queries_total{operation="rebuild"} 4.0' in metrics


def test_bad_input_is_refused_naming_the_field(tmp_path):
    with _serve(_server("read", store=f"sqlite:///{tmp_path / 'atlas.db'}")) as (client, _):
        bad = client.post("/admin/timelines", json={"accounts": 1})
        assert bad.status_code == 422 and "accounts" in bad.text
        assert client.post("/admin/timelines", json={"tail_index": 9}).status_code == 422
        assert client.patch("/admin/timelines", json={"lose_events": 2}).status_code == 422
        assert client.patch("/admin/timelines", json={"other": 0}).status_code == 422
        client.post("/admin/timelines", json=GRAPH)
        assert client.post("/api/posts", json={"author": -1}).status_code == 422
        assert client.post("/api/posts", json={"text": "no author"}).status_code == 422
        assert client.post("/api/posts", json={"author": 1, "text": 5}).status_code == 422
        assert client.post("/api/posts", json={"author": 300}).status_code == 404
        assert client.get("/api/timeline/300").status_code == 404
        assert client.get("/admin/timelines/delivery/99").status_code == 404


def test_metrics_with_the_database_work_are_accepted_by_promtool(tmp_path):
    require_program("promtool", "prometheus")
    with _serve(_server("hybrid", store=f"sqlite:///{tmp_path / 'atlas.db'}")) as (client, _):
        client.post("/admin/timelines", json=GRAPH)
        client.post("/api/posts", json={"author": 1, "text": "x"})
        _wait_for_fanout(client)
        client.get("/api/timeline/2")
        text = client.get("/metrics").text
    assert check_metrics(text) == []
    assert 'atlas_api_db_queries_total{operation="timeline_read"} 2.0' in text
    assert 'atlas_api_db_rows_total{direction="written",operation="post"}' in text
    assert 'atlas_api_event_consumer_lag{group="fanout",topic="posts"} 0.0' in text


def test_nothing_is_left_behind_twice():
    pattern = os.path.join(tempfile.gettempdir(), "atlas-store-*")
    threads, directories = threading.active_count(), set(glob.glob(pattern))
    for _ in range(2):
        with _serve(_server("write")) as (client, state):  # a temporary SQLite store
            client.post("/admin/timelines", json=GRAPH)
            client.post("/api/posts", json={"author": 1, "text": "x"})
            _wait_for_fanout(client)
            assert state.timelines.own_consumers is not None
        assert state.timelines.own_consumers is None
        assert threading.active_count() == threads
        assert set(glob.glob(pattern)) == directories


def test_without_a_timelines_config_fan_out_starts_with_the_first_graph(tmp_path):
    server = dataclasses.replace(_server("write", store=f"sqlite:///{tmp_path / 'a.db'}"),
                                 timelines=None, events=EventLogConfig(poll_interval=0.01))
    with _serve(server) as (client, state):
        assert state.timelines.own_consumers is None  # a service not using timelines: no task
        assert state.events.handlers.keys() == {("receipts", "orders")}
        client.post("/admin/timelines", json=GRAPH)
        post = client.post("/api/posts", json={"author": 1, "text": "x"}).json()["post"]
        assert _wait_for_fanout(client)["fanout_lag"] == 0
        assert client.get(f"/admin/timelines/delivery/{post}").json()["delivered_at"] is not None
    assert state.timelines.own_consumers is None
