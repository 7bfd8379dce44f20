"""The queue seam: Fifo builds an empty FifoQueue that serves first come, first served, and
names the item that waited longest for the server timeout's reaper."""

from __future__ import annotations

import pytest

from atlas_sim.policies import Fifo, FifoQueue


def test_fifo_builds_a_fresh_empty_queue():
    config = Fifo()
    queue = config.build()
    assert isinstance(queue, FifoQueue)
    assert len(queue) == 0 and not queue
    queue.push("a")
    assert len(config.build()) == 0  # one queue per instance and per run
    assert config == Fifo()


def test_a_fifo_queue_serves_in_arrival_order():
    queue = Fifo().build()
    for item in "abc":
        queue.push(item)
    assert len(queue) == 3 and queue
    assert queue.oldest() == "a"
    assert queue.pop() == "a"
    queue.push("d")
    assert [queue.pop() for _ in range(3)] == ["b", "c", "d"]


def test_the_oldest_is_the_one_served_next_and_pop_oldest_removes_it():
    queue = Fifo().build()
    for item in (1, 2, 3):
        queue.push(item)
    assert queue.oldest() == 1 and len(queue) == 3  # oldest() only looks
    assert queue.pop_oldest() == 1
    assert queue.oldest() == 2 and queue.pop() == 2
    assert repr(queue) == "FifoQueue(1 waiting)"


@pytest.mark.parametrize("method", ["pop", "oldest", "pop_oldest"])
def test_an_empty_queue_raises_index_error(method):
    queue = Fifo().build()
    with pytest.raises(IndexError):
        getattr(queue, method)()
    queue.push("x")
    queue.pop()
    with pytest.raises(IndexError):
        getattr(queue, method)()


def test_fifo_discard_removes_an_item_that_stopped_waiting_and_ignores_one_already_gone():
    from atlas_sim.policies import Fifo

    q = Fifo().build()
    for item in "abc":
        q.push(item)
    q.discard("b")
    q.discard("z")  # not (or no longer) there: nothing happens
    assert len(q) == 2 and q.pop() == "a" and q.pop() == "c"
