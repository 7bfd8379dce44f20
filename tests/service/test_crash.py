"""A crash mid-load (issue 22, "Done when"): the service, in a child process on a SQLite or
PostgreSQL store, takes orders with ``Idempotency-Key`` from concurrent clients that retry; it is
killed with SIGKILL while orders are at work, started again on the same store, and every key is
retried. Every order acknowledged with a 2xx is stored exactly once; a retry of an acknowledged
key replays its answer (``Idempotent-Replayed: true``, the same body); a key never acknowledged is
applied once (or replayed, if its order was stored before the answer was lost); no key is stuck
in flight beyond its lease."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from atlas_sim.server_config import ServerConfig, StoreConfig
from atlas_sim.service.programs import ServiceProcess
from atlas_sim.service.store import open_store
from atlas_sim.workload import Distribution

pytestmark = pytest.mark.live  # child processes, sockets on 127.0.0.1

KEYS = 60  # orders, one key each
CLIENTS = 6  # concurrent clients
KILL_AFTER = 15  # acknowledged orders before the crash
LEASE = 2.0  # seconds a key in flight is held (and the server's timeout)
RETRIED = (409, 503, 504)  # in progress, no connection or key store full, timed out


def crash_config(url: str) -> ServerConfig:
    # each order: 5 ms of work, then a transaction holding its connection 5 ms more (a slow
    # query), so that a crash finds transactions open
    return ServerConfig(workers=4, service_time=Distribution(mean=0.005, kind="constant"),
                        timeout=LEASE, store=StoreConfig(
                            url=url, key_lease=LEASE,
                            query_time=Distribution(mean=0.005, kind="constant")))


async def first_round(url: str, service: ServiceProcess
                      ) -> tuple[dict[str, httpx.Response], set[str]]:
    """Send every key once (retrying 409, 503 and 504 while the service lives) from ``CLIENTS``
    concurrent clients; SIGKILL the service once ``KILL_AFTER`` orders are acknowledged. The
    answers received, by key, and the keys whose attempt died with the service (in flight)."""
    acked: dict[str, httpx.Response] = {}
    cut: set[str] = set()
    killed = asyncio.Event()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(KEYS):
        queue.put_nowait(f"key-{i:03d}")

    async def client(http: httpx.AsyncClient) -> None:
        while not killed.is_set() and not queue.empty():
            key = queue.get_nowait()
            for _ in range(50):
                try:
                    r = await http.post("/api/orders", json={"key": key},
                                        headers={"Idempotency-Key": f'"{key}"'})
                except httpx.TransportError:
                    cut.add(key)  # the service died with this order at work: unknown
                    break
                if 200 <= r.status_code < 300:
                    acked[key] = r
                    if len(acked) >= KILL_AFTER and not killed.is_set():
                        killed.set()
                        await asyncio.to_thread(service.kill)  # a crash, orders in flight
                    break
                assert r.status_code in RETRIED, r.text
                await asyncio.sleep(0.01)

    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0,
                                 limits=httpx.Limits(max_connections=CLIENTS)) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    assert killed.is_set(), "the load ended before the crash"
    return acked, cut


async def second_round(url: str) -> dict[str, httpx.Response]:
    """Retry every key on the restarted service until it answers 2xx: 409 (its hold from
    before the crash, until the lease runs out), 503 and 504 are retried for at most three
    leases."""
    answers: dict[str, httpx.Response] = {}

    async def retry(http: httpx.AsyncClient, key: str) -> None:
        give_up = time.monotonic() + 3 * LEASE + 2.0
        while True:
            r = await http.post("/api/orders", json={"key": key},
                                headers={"Idempotency-Key": f'"{key}"'})
            if 200 <= r.status_code < 300:
                answers[key] = r
                return
            assert r.status_code in RETRIED, r.text
            assert time.monotonic() < give_up, f"{key} stuck beyond its lease: {r.text}"
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0,
                                 limits=httpx.Limits(max_connections=CLIENTS)) as http:
        semaphore = asyncio.Semaphore(CLIENTS)

        async def bounded(key: str) -> None:
            async with semaphore:
                await retry(http, key)
        await asyncio.gather(*(bounded(f"key-{i:03d}") for i in range(KEYS)))
    return answers


def stored_orders(url: str, numbers: list[int]) -> tuple[int, dict[int, Any]]:
    """The store's order count and the orders numbered ``numbers``, read by a store of the
    test's own."""
    async def read() -> tuple[int, dict[int, Any]]:
        store = open_store(StoreConfig(url=url), pool=None, lease=LEASE)
        await store.open()
        try:
            return await store.orders(), {n: await store.get_order(n) for n in numbers}
        finally:
            await store.close()
    return asyncio.run(read())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_crash_mid_load_loses_no_acknowledged_order_and_applies_none_twice(
        backend, tmp_path, request):
    url = (f"sqlite:///{tmp_path / 'crash.sqlite3'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    config = crash_config(url)
    service = ServiceProcess(server=config, name="crash-test").start()
    try:
        acked, cut = asyncio.run(first_round(service.url, service))
    finally:
        service.kill()
    assert not service.running
    restarted = ServiceProcess(server=config, name="crash-test").start()
    try:
        answers = asyncio.run(second_round(restarted.url))
    finally:
        restarted.stop()

    assert len(acked) >= KILL_AFTER and len(answers) == KEYS
    assert cut, "no order was at work when the service was killed"
    for key, first in acked.items():  # acknowledged: replayed, the very answer
        again = answers[key]
        assert again.headers.get("Idempotent-Replayed") == "true", key
        assert again.content == first.content, key
    numbers = {key: r.json()["order"] for key, r in answers.items()}
    assert len(set(numbers.values())) == KEYS  # one order per key, none shared
    count, orders = stored_orders(url, sorted(numbers.values()))
    assert count == KEYS  # every key stored exactly once: nothing applied twice, none lost
    for key, n in numbers.items():
        assert orders[n] is not None and orders[n]["key"] == key
