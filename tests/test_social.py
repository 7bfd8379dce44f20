"""The social graph both worlds share: shapes, no self-follows or duplicates, the mean and the
tail of the follower law, determinism, and bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_sim.analysis import timeline
from atlas_sim.social import FollowerDistribution, SocialGraph


@pytest.fixture(scope="module")
def graph() -> SocialGraph:
    return SocialGraph.generate(accounts=2000, mean_followers=20, seed=1)


def test_shapes(graph):
    assert graph.accounts == 2000
    assert graph.edges.shape == (graph.follows, 2)
    assert graph.edges.dtype == np.int64
    assert graph.follower_counts.shape == (2000,)
    assert graph.followee_counts.shape == (2000,)
    assert graph.follower_counts.sum() == graph.followee_counts.sum() == graph.follows
    assert graph.edges.min() >= 0 and graph.edges.max() < 2000


def test_no_self_follows_and_no_duplicate_edges(graph):
    assert not np.any(graph.edges[:, 0] == graph.edges[:, 1])
    assert np.unique(graph.edges, axis=0).shape[0] == graph.follows


def test_followers_and_followees_agree_with_the_edges(graph):
    edges = {tuple(e) for e in graph.edges.tolist()}
    for a in (0, 7, graph.celebrity):
        followers = graph.followers_of(a)
        assert len(followers) == graph.follower_counts[a]
        assert all((int(f), a) in edges for f in followers)
        followees = graph.followees_of(a)
        assert all((a, int(g)) in edges for g in followees)
        assert np.all(np.diff(followers) > 0) and np.all(np.diff(followees) > 0)


def test_mean_close_to_mean_followers():
    for seed in range(3):
        g = SocialGraph.generate(accounts=2000, mean_followers=20, seed=seed)
        assert g.follower_counts.mean() == pytest.approx(20, rel=0.01)


def test_the_tail_one_account_has_far_more_followers_than_the_mean(graph):
    counts = graph.follower_counts
    assert counts[graph.celebrity] == counts.max() > 20 * counts.mean()
    assert np.median(counts) < counts.mean()  # skewed: most accounts have fewer than the mean
    assert counts.min() >= 1


def test_counts_capped_below_the_number_of_other_accounts():
    g = SocialGraph.generate(accounts=20, mean_followers=15, tail_index=3.0, seed=3)
    assert g.follower_counts.max() == 19
    assert g.follower_counts.sum() == 20 * 15
    assert not np.any(g.edges[:, 0] == g.edges[:, 1])
    assert np.unique(g.edges, axis=0).shape[0] == g.follows


def test_same_seed_same_graph_other_seed_other_graph():
    a = SocialGraph.generate(accounts=500, mean_followers=10, seed=5)
    b = SocialGraph.generate(accounts=500, mean_followers=10, seed=5)
    c = SocialGraph.generate(accounts=500, mean_followers=10, seed=6)
    assert np.array_equal(a.edges, b.edges)
    assert not np.array_equal(a.edges, c.edges)


def test_arrays_are_read_only(graph):
    with pytest.raises(ValueError):
        graph.edges[0, 0] = 1


@pytest.mark.parametrize("kwargs, name", [
    ({"accounts": 1}, "accounts"),
    ({"accounts": 2.5}, "accounts"),
    ({"mean_followers": 0}, "mean_followers"),
    ({"mean_followers": 2000}, "mean_followers"),
    ({"tail_index": 0.1}, "tail_index"),
    ({"seed": -1}, "seed"),
])
def test_bad_input_named(kwargs, name):
    args = {"accounts": 2000, "mean_followers": 20, "seed": 1} | kwargs
    with pytest.raises(ValueError, match=name):
        SocialGraph.generate(**args)


def test_bad_edges_refused():
    with pytest.raises(ValueError, match="self-follow"):
        SocialGraph(accounts=3, edges=np.array([[1, 1]]))
    with pytest.raises(ValueError, match="twice"):
        SocialGraph(accounts=3, edges=np.array([[0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="accounts in"):
        SocialGraph(accounts=3, edges=np.array([[0, 3]]))
    with pytest.raises(ValueError, match="account"):
        SocialGraph(accounts=3, edges=np.array([[0, 1]])).followers_of(3)


def test_follower_distribution_moved_and_re_exported():
    assert timeline.FollowerDistribution is FollowerDistribution
    assert FollowerDistribution().largest == pytest.approx(34e6, rel=0.02)
