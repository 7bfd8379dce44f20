"""The home timelines' tables and queries, on every store (memory, SQLite, PostgreSQL): follows
loaded in bulk, posts with or without their outbox event, approach 1's one-query read and the
hybrid's two halves, the fan-out insert (idempotent by post id), the per-operation counts of
database work, and ``clear_timelines``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atlas_sim.service.store import Store
from atlas_sim.service.store.base import POSTS
from tests.service.store.support import run

# account 0 is followed by 1, 2, 3, 4 (a "celebrity" above threshold 3); 1 follows 0, 2, 3;
# 2 follows 0 and 3; 3 follows 2
EDGES = [(1, 0), (2, 0), (3, 0), (4, 0), (1, 2), (1, 3), (2, 3), (3, 2)]




def test_approach_one_reads_the_newest_posts_of_the_followees_in_one_query(make_store):
    async def body(store: Store) -> None:
        assert await store.load_follows(np.array(EDGES)) == len(EDGES)
        authors = [0, 2, 3, 0, 4, 2, 1, 3]
        ids = [await store.add_post(a, f"post by {a}", event=False) for a in authors]
        assert ids == list(range(1, 9))
        before = store.work.snapshot()["timeline_read"]["queries"]
        assert await store.timeline_query(1, 50) == [8, 6, 4, 3, 2, 1]
        assert await store.timeline_query(1, 2) == [8, 6]
        assert store.work.snapshot()["timeline_read"] == {
            "queries": before + 2, "rows_read": 8, "rows_written": 0}
        assert await store.timeline_query(4, 50) == [4, 1]
        assert await store.timeline_query(0, 50) == []  # follows nobody
        # the hybrid's halves: followees with > 3 followers (account 0), and the others
        assert await store.timeline_query(1, 50, above=3) == [4, 1]
        assert await store.timeline_query(1, 50, at_most=3, operation="rebuild") == [8, 6, 3, 2]
        assert store.work.snapshot()["rebuild"]["queries"] == 1
        assert await store.follower_count(0, operation="fanout") == 4
        assert await store.follower_count(9, operation="fanout") == 0
        assert sorted(await store.followers(2)) == [1, 3]
    run(make_store, body)


def test_a_post_and_its_event_commit_together_with_the_outbox_and_not_without(make_store):
    async def body(store: Store) -> None:
        await store.load_follows(EDGES)
        first = await store.add_post(0, "with its event", event=True)
        second = await store.add_post(2, "without", event=False)
        events = await store.read(POSTS, after=0, limit=10)
        assert [json.loads(p) for _, p in events] == [{"post": first, "author": 0}]
        assert second == first + 1
        assert store.work.snapshot()["post"]["rows_written"] == 3  # two posts, one event
    run(make_store, body)


def test_fan_out_is_one_idempotent_insert_into_every_followers_timeline(make_store):
    async def body(store: Store) -> None:
        await store.load_follows(EDGES)
        post = await store.add_post(0, "hello", event=True)
        assert await store.fan_out(post, 0) == 4
        assert await store.fan_out(post, 0) == 0  # delivered again: nothing changes
        for user in (1, 2, 3, 4):
            assert await store.home_timeline(user, 50) == [post]
        assert await store.home_timeline(0, 50) == []
        work = store.work.snapshot()["fanout"]
        assert work["queries"] == 2 and work["rows_written"] == 4
        counts = await store.timeline_counts()
        assert counts == {"posts": 1, "follows": len(EDGES), "home_timeline_rows": 4}
    run(make_store, body)


def test_clear_timelines_forgets_posts_follows_timelines_and_the_posts_topic_only(make_store):
    async def body(store: Store) -> None:
        await store.load_follows(EDGES)
        post = await store.add_post(0, "x", event=True)
        await store.fan_out(post, 0)
        await store.commit("fanout", POSTS, 1)
        await store.append("orders", "kept")
        await store.commit("receipts", "orders", 1)
        await store.clear_timelines()
        assert await store.timeline_counts() == {"posts": 0, "follows": 0,
                                                 "home_timeline_rows": 0}
        assert await store.end_offset(POSTS) == 0
        assert await store.committed("fanout", POSTS) == 0
        assert await store.end_offset("orders") == 1  # another topic is kept
        assert await store.committed("receipts", "orders") == 1
        assert await store.add_post(3, "again", event=True) == 1  # ids start again at 1
        await store.load_follows(EDGES[:2])
        await store.load_follows(EDGES[:3])  # a load replaces the follows
        assert (await store.timeline_counts())["follows"] == 3
        await store.clear()  # /admin/reset forgets them too
        assert await store.timeline_counts() == {"posts": 0, "follows": 0,
                                                 "home_timeline_rows": 0}
    run(make_store, body)


def test_loading_a_thousand_followers_and_fanning_out_to_them(make_store):
    edges = [(u, 0) for u in range(1, 1001)] + [(u, u + 1) for u in range(1, 1000)]

    async def body(store: Store) -> None:
        assert await store.load_follows(edges) == len(edges)
        post = await store.add_post(0, "celebrity", event=True)
        assert await store.fan_out(post, 0) == 1000
        assert await store.home_timeline(777, 5) == [post]
    run(make_store, body)


@pytest.mark.parametrize("edges", [[(1, 1)], [(-1, 2)], [("a", 2)], [(1, 2, 3)]])
def test_bad_edges_are_refused_naming_edges(make_store, edges):
    async def body(store: Store) -> None:
        with pytest.raises(ValueError, match="edges"):
            await store.load_follows(edges)
    run(make_store, body)
