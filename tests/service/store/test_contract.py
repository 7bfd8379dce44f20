"""One contract, three stores (memory, SQLite, PostgreSQL): keys with their lease, orders placed
with their key in one transaction, the event log, and the pool in front of every call."""

from __future__ import annotations

import asyncio
import json
from typing import TypeVar

import pytest

from atlas_sim.clocks import ManualClock
from atlas_sim.policies.pool import PoolConfig
from atlas_sim.service.idempotency import Begun, IdempotencyStore, Stored, StoreFull
from atlas_sim.service.store import KeyLost, PoolRefused, PoolTimeout, Store
from tests.service.store.support import run

T = TypeVar("T")
POOL2 = PoolConfig(size=2, max_waiting=1, timeout=10.0)
OK = Stored("f", 200, b'{"order": 1}', "application/json")




def answer(n: int) -> Stored:
    return Stored("f", 200, json.dumps({"order": n}).encode(), "application/json")


def test_keys_begin_complete_abandon_replay_and_mismatch(make_store):
    async def body(store: Store) -> None:
        assert isinstance(store, IdempotencyStore)
        k = await store.begin("k", "f")
        assert isinstance(k, Begun) and k.key == "k"
        assert await store.begin("k", "f") == "in progress"
        assert await store.begin("k", "other") == "mismatch"
        await store.complete(k, OK)
        assert await store.begin("k", "f") == OK
        failed = await store.begin("failed", "f")
        assert isinstance(failed, Begun)
        await store.complete(failed, Stored("f", 503, b"", "application/json"))  # not kept
        again = await store.begin("failed", "f")
        assert isinstance(again, Begun) and again.token != failed.token
        await store.abandon(again)
        assert await store.count() == 1
    run(make_store, body, retention=10.0, capacity=3, clock=ManualClock())


def test_a_full_store_refuses_a_new_key_with_retry_after(make_store):
    clock = ManualClock(1000.0)

    async def body(store: Store) -> None:
        a = await store.begin("a", "f")
        assert isinstance(a, Begun) and isinstance(await store.begin("b", "f"), Begun)
        assert await store.begin("c", "f") == StoreFull(capacity=2, retry_after=None)
        await store.complete(a, OK)
        clock.advance(4.0)
        assert await store.begin("c", "f") == StoreFull(capacity=2, retry_after=6.0)
        clock.advance(6.0)
        assert isinstance(await store.begin("c", "f"), Begun)
    run(make_store, body, retention=10.0, capacity=2, clock=clock)


def test_a_key_past_its_lease_is_taken_over_and_its_old_hold_is_lost(make_store):
    clock = ManualClock(1000.0)

    async def body(store: Store) -> None:
        old = await store.begin("k", "f")
        assert isinstance(old, Begun)
        clock.advance(9.999)
        assert await store.begin("k", "f") == "in progress"  # still within its lease
        clock.advance(0.001)
        new = await store.begin("k", "f")  # the instance that began it died
        assert isinstance(new, Begun) and new.token != old.token
        with pytest.raises(KeyLost):
            await store.place_order(request_id="old", begun=old, answer=answer)
        await store.complete(old, OK)  # the protocol: a lost hold's ending does nothing
        await store.abandon(old)
        assert await store.begin("k", "f") == "in progress" and await store.orders() == 0
        kept = await store.place_order(request_id="new", begun=new, answer=answer)
        assert await store.begin("k", "f") == kept == answer(1)
    run(make_store, body, retention=100.0, capacity=10, lease=10.0, clock=clock)


def test_a_cleared_key_is_lost_to_its_order(make_store):
    async def body(store: Store) -> None:
        old = await store.begin("k", "f")
        assert isinstance(old, Begun)
        await store.clear()
        with pytest.raises(KeyLost):
            await store.place_order(request_id=None, begun=old, answer=answer)
        assert await store.orders() == 0 and await store.end_offset("orders") == 0
    run(make_store, body)


def test_an_order_and_its_key_are_stored_together(make_store):
    async def body(store: Store) -> None:
        k = await store.begin("k", "f")
        assert isinstance(k, Begun)
        got = await store.place_order(request_id="r1", begun=k, answer=answer)
        assert got == answer(1) and await store.begin("k", "f") == got
        plain = await store.place_order(request_id=None, begun=None, answer=answer)
        assert plain == answer(2) and await store.orders() == 2
        assert await store.get_order(1) == {"order": 1, "request_id": "r1", "key": "k"}
        assert await store.get_order(2) == {"order": 2, "request_id": None, "key": None}
        assert await store.get_order(3) is None and await store.get_order(0) is None
        events = await store.read("orders", after=0, limit=10)
        assert [(o, json.loads(p)) for o, p in events] == [
            (1, {"order": 1, "request_id": "r1"}), (2, {"order": 2, "request_id": None})]
    run(make_store, body)


def test_an_exception_inside_the_transaction_leaves_no_order_and_the_key_unanswered(make_store):
    def crash(n: int) -> Stored:
        raise RuntimeError(f"crashed after inserting order {n}")

    async def body(store: Store) -> None:
        k = await store.begin("k", "f")
        assert isinstance(k, Begun)
        with pytest.raises(RuntimeError, match="crashed"):
            await store.place_order(request_id="r", begun=k, answer=crash)
        assert await store.orders() == 0 and await store.get_order(1) is None
        assert await store.end_offset("orders") == 0
        assert await store.begin("k", "f") == "in progress"  # still this request's, unanswered
        assert await store.place_order(request_id="r", begun=k, answer=answer) == answer(1)
    run(make_store, body)


def test_order_numbers_are_unique_across_stores_sharing_one_database(make_store):
    async def main() -> list[int]:
        a, b = make_store(), make_store()
        await a.open()
        await b.open()
        try:
            placed = await asyncio.gather(*[
                s.place_order(request_id=f"{i}", begun=None, answer=answer)
                for i in range(10) for s in (a, b)])
            assert await a.orders() == await b.orders() == 20
            return sorted(json.loads(s.body)["order"] for s in placed)
        finally:
            await a.close()
            await b.close()
    assert asyncio.run(main()) == list(range(1, 21))


def test_clear_forgets_keys_orders_events_and_offsets(make_store):
    async def body(store: Store) -> None:
        k = await store.begin("k", "f")
        assert isinstance(k, Begun)
        await store.place_order(request_id=None, begun=k, answer=answer)
        await store.append("t", "x")
        await store.commit("g", "t", 1)
        await store.clear()
        assert (await store.count(), await store.orders(), await store.end_offset("t"),
                await store.end_offset("orders"), await store.committed("g", "t")) == (0,) * 5
        await store.place_order(request_id=None, begun=None, answer=answer)
        assert await store.get_order(1) is not None  # numbering starts again
        assert await store.append("t", "y") == 1
    run(make_store, body)


def test_the_event_log_appends_reads_and_commits_offsets(make_store):
    async def body(store: Store) -> None:
        assert await store.end_offset("t") == 0 and await store.committed("g", "t") == 0
        assert [await store.append("t", p) for p in "abc"] == [1, 2, 3]
        assert await store.append("u", "z") == 1  # offsets are per topic
        assert await store.read("t", after=0, limit=2) == [(1, "a"), (2, "b")]
        assert await store.read("t", after=2, limit=10) == [(3, "c")]
        assert await store.read("t", after=3, limit=10) == []
        await store.commit("g", "t", 2)
        await store.commit("h", "t", 3)
        assert (await store.committed("g", "t"), await store.committed("h", "t"),
                await store.committed("g", "u"), await store.end_offset("t")) == (2, 3, 0, 3)
        # a late commit (a holder whose lease was taken over) never moves an offset back
        await store.commit("h", "t", 1)
        assert await store.committed("h", "t") == 3
        await store.clear()
        assert await store.committed("h", "t") == 0
    run(make_store, body)


def test_concurrent_appends_get_offsets_in_order_without_gaps(make_store):
    async def main() -> None:
        a, b = make_store(), make_store()
        await a.open()
        await b.open()
        try:
            offsets = await asyncio.gather(*[s.append("t", f"{i}") for i in range(15)
                                             for s in (a, b)])
            assert sorted(offsets) == list(range(1, 31))
            events = await a.read("t", after=0, limit=100)
            assert [o for o, _ in events] == list(range(1, 31))
            assert sorted(p for _, p in events) == sorted(f"{i}" for i in range(15) for _ in "ab")
        finally:
            await a.close()
            await b.close()
    asyncio.run(main())


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: s.read("t", after=-1, limit=1), "after"),
    (lambda s: s.read("t", after=0, limit=0), "limit"),
    (lambda s: s.commit("g", "t", -1), "offset"),
    (lambda s: s.place_order(request_id=None, begun=None, answer=answer, hold=-1), "hold")])
def test_bad_arguments_are_refused_naming_them(make_store, call, message):
    async def body(store: Store) -> None:
        with pytest.raises(ValueError, match=message):
            await call(store)
    run(make_store, body)


async def occupy(store: Store, hold: float) -> list[asyncio.Task[Stored]]:
    """Two orders holding both connections of ``store``'s pool for ``hold`` seconds, once
    both have their connection."""
    slow = [asyncio.create_task(store.place_order(request_id=None, begun=None, answer=answer,
                                                  hold=hold)) for _ in range(2)]
    while store.pool.policy.in_use < 2:
        await asyncio.sleep(0.005)
    return slow


async def exhaust(store: Store, hold: float) -> tuple[list[asyncio.Task[Stored]],
                                                     asyncio.Task[int]]:
    """``occupy(store, hold)``, then a third call (``orders()``), once it waits in the queue."""
    slow = await occupy(store, hold)
    waiter = asyncio.create_task(store.orders())
    while store.pool.policy.waiting < 1:
        await asyncio.sleep(0.005)
    return slow, waiter


@pytest.mark.live
def test_a_pool_of_two_with_slow_queries_queues_times_out_and_refuses(make_store):
    # two orders hold both connections 0.5 s; a third waits; a fourth is refused (max_waiting 1)
    # and, once the third has a connection, a fifth with a 0.05 s timeout gives up
    async def body(store: Store) -> None:
        slow, third = await exhaust(store, 0.5)
        pool = store.pool
        with pytest.raises(PoolRefused) as refused:
            await store.count()
        assert refused.value.waiting == 1
        assert await third in (1, 2)  # served once an order released its connection
        await asyncio.gather(*slow)
        assert pool.policy.waiting == 0
        assert (pool.policy.requests, pool.policy.queued, pool.policy.refusals,
                pool.policy.acquisitions) == (4, 1, 1, 3)
        waits = pool.take_wait_times()
        assert len(waits) == 1 and waits[0] > 0
        # a timeout: both held again, the next waits 0.05 s and gives up
        slow = await occupy(store, 0.5)
        async with asyncio.timeout(5):
            with pytest.raises(PoolTimeout) as late:
                async with pool.connection(timeout=0.05):
                    pass
        assert late.value.timeout == 0.05 and late.value.waited >= 0
        assert pool.policy.timeouts == 1 and pool.policy.waiting == 0
        await asyncio.gather(*slow)
        assert await store.orders() == 4
    run(make_store, body, pool=POOL2)


@pytest.mark.live
def test_a_cancelled_waiter_leaves_the_queue(make_store):
    async def body(store: Store) -> None:
        slow, waiter = await exhaust(store, 0.3)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert store.pool.policy.waiting == 0 and store.pool.policy.cancelled == 1
        await asyncio.gather(*slow)
        assert store.pool.policy.in_use == 0 and await store.orders() == 2
    run(make_store, body, pool=POOL2)


@pytest.mark.live
def test_an_order_cancelled_during_its_slow_query_stores_nothing_and_frees_its_connection(
        make_store):
    # a request's task cancelled mid-transaction (its deadline passed, its client left): the
    # transaction rolls back, the connection returns clean, the key stays with its request
    async def body(store: Store) -> None:
        k = await store.begin("k", "f")
        assert isinstance(k, Begun)
        slow = asyncio.create_task(store.place_order(request_id="r", begun=k, answer=answer,
                                                     hold=60.0))
        while store.pool.policy.in_use < 1:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)  # into the slow query
        slow.cancel()
        await asyncio.sleep(0.05)
        slow.cancel()  # again, while it rolls back
        async with asyncio.timeout(10):  # the slow query is stopped, not waited out
            with pytest.raises(asyncio.CancelledError):
                await slow
        assert store.pool.policy.in_use == 0
        assert await store.orders() == 0 and await store.end_offset("orders") == 0
        assert await store.begin("k", "f") == "in progress"
        assert await store.place_order(request_id="r", begun=k, answer=answer) == answer(1)
        assert await store.begin("k", "f") == answer(1)
    run(make_store, body, pool=PoolConfig(size=1))
