"""AsyncPool: the pool policy driven with asyncio; who is granted, queued, refused, handed a
released connection, timed out or cancelled (without wall-clock timing, except the live
timeout test)."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from atlas_sim.clocks import ManualClock
from atlas_sim.policies.pool import PoolConfig
from atlas_sim.service.store import AsyncPool, MemoryStore, PoolRefused, PoolTimeout


def test_connections_are_handed_out_and_a_release_goes_to_the_oldest_waiter():
    async def main() -> list[str]:
        pool = AsyncPool(PoolConfig(size=2, timeout=60.0), ["a", "b"], clock=ManualClock())
        log: list[str] = []
        gate = asyncio.Event()

        async def user(name: str) -> None:
            async with pool.connection() as conn:
                log.append(f"{name}:{conn}")
                await gate.wait()

        first = [asyncio.create_task(user(n)) for n in ("u1", "u2")]
        await asyncio.sleep(0)
        later = [asyncio.create_task(user(n)) for n in ("u3", "u4")]
        await asyncio.sleep(0)
        assert (pool.policy.in_use, pool.policy.waiting) == (2, 2)
        gate.set()
        await asyncio.gather(*first, *later)
        assert (pool.policy.in_use, pool.policy.acquisitions, pool.policy.queued) == (0, 4, 2)
        assert len(pool.take_wait_times()) == 2 and pool.take_wait_times() == []
        return log
    log = asyncio.run(main())
    assert log[:2] == ["u1:b", "u2:a"] and [e[:3] for e in log[2:]] == ["u3:", "u4:"]
    assert sorted(e[3:] for e in log[2:]) == ["a", "b"]  # the released connections, handed on


def test_max_waiting_refuses_at_once():
    async def main() -> None:
        pool = AsyncPool(PoolConfig(size=1, max_waiting=1), [object()])
        async with pool.connection():
            waiter = asyncio.create_task(_use(pool))
            await asyncio.sleep(0)
            with pytest.raises(PoolRefused, match="1 clients already waiting") as refused:
                async with pool.connection():
                    pass
            assert refused.value.waiting == 1
        await waiter
        assert (pool.policy.refusals, pool.policy.acquisitions) == (1, 2)
    asyncio.run(main())


async def _use(pool: AsyncPool) -> None:
    async with pool.connection():
        await asyncio.sleep(0)


def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_is_served():
    async def main() -> None:
        pool = AsyncPool(PoolConfig(size=1), ["c"])
        async with pool.connection():
            gone = asyncio.create_task(_use(pool))
            kept = asyncio.create_task(_use(pool))
            await asyncio.sleep(0)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert pool.policy.waiting == 1 and pool.policy.cancelled == 1
        await kept
        assert pool.policy.in_use == 0 and pool._idle == ["c"]
    asyncio.run(main())


def test_a_grant_that_races_a_cancellation_is_released_not_lost():
    async def main() -> None:
        pool = AsyncPool(PoolConfig(size=1), ["c"])
        holder = pool.connection()
        await holder.__aenter__()
        waiter = asyncio.create_task(_use(pool))
        await asyncio.sleep(0)
        await holder.__aexit__(None, None, None)  # hands "c" to the waiter's future...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.policy.in_use == 0 and pool._idle == ["c"] and pool.policy.cancelled == 0
        async with pool.connection() as conn:
            assert conn == "c"
    asyncio.run(main())


def test_the_pool_needs_one_connection_per_slot():
    with pytest.raises(ValueError, match=r"connections must hold config\.size = 2"):
        AsyncPool(PoolConfig(size=2), ["only one"])
    with pytest.raises(ValueError, match="timeout"):
        asyncio.run(_use_with_timeout(AsyncPool(PoolConfig(size=1), ["c"]), 0))


async def _use_with_timeout(pool: AsyncPool, timeout: float) -> None:
    async with pool.connection(timeout=timeout):
        pass


@pytest.mark.live
def test_a_waiter_past_its_timeout_gets_pool_timeout_and_leaves_the_queue():
    async def main() -> None:
        pool = AsyncPool(PoolConfig(size=1, timeout=60.0), ["c"])
        async with pool.connection():
            with pytest.raises(PoolTimeout, match="couldn't get a connection") as late:
                await _use_with_timeout(pool, 0.05)
            assert late.value.timeout == 0.05 and late.value.waited > 0
            assert (pool.policy.waiting, pool.policy.timeouts) == (0, 1)
        assert pool.policy.in_use == 0
    asyncio.run(main())


def test_a_memory_store_works_without_open_and_shares_its_data_by_name():
    async def main() -> None:
        a, b, other = MemoryStore("shared-x"), MemoryStore("shared-x"), MemoryStore()
        await a.append("t", "x")
        assert await b.end_offset("t") == 1 and await other.end_offset("t") == 0
        assert a.pool is not b.pool  # each instance its own pool, as each process has
    asyncio.run(main())


def test_a_memory_store_shared_by_threads_numbers_orders_uniquely():
    store_name = "threads-y"
    results: list[int] = []

    def worker() -> None:
        async def main() -> None:
            store = MemoryStore(store_name)
            for _ in range(20):
                s = await store.place_order(request_id=None, begun=None,
                                            answer=lambda n: n)  # type: ignore[arg-type,return-value]
                results.append(s)  # type: ignore[arg-type]
        asyncio.run(main())

    keep = MemoryStore(store_name)
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 61))
    assert asyncio.run(keep.orders()) == 60
    del keep
    gc.collect()
    assert asyncio.run(MemoryStore(store_name).orders()) == 0  # forgotten with its last store


def test_open_store_builds_a_memory_store_from_its_config():
    from atlas_sim.server_config import StoreConfig
    from atlas_sim.service.store import open_store

    private = open_store(None, pool=None, lease=30.0)
    assert isinstance(private, MemoryStore) and private.pool.policy.size == 4
    named = open_store(StoreConfig(url="memory://cfg", key_retention=5.0, key_capacity=7),
                       pool=PoolConfig(size=2), lease=12.0)
    assert isinstance(named, MemoryStore) and named.name == "cfg"
    assert (named.retention, named.capacity, named.lease, named.pool.policy.size) == (
        5.0, 7, 12.0, 2)
    leased = open_store(StoreConfig(url="memory://cfg2", key_lease=3.0), pool=None, lease=12.0)
    assert leased.lease == 3.0
    with pytest.raises(ValueError, match="config"):
        open_store("memory://x", pool=None, lease=1.0)  # type: ignore[arg-type]
