"""Stores for tests: ``store_maker`` (stores of one kind sharing one database) and
``ThreadedStore`` (a ``Store`` driven from synchronous test code: its own event loop in a
thread, so that the idempotency contract tests, written against ``MemoryIdempotencyStore``'s
``begin_now`` and ``len``, run unchanged against every store)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from atlas_sim.service.idempotency import Begun, Stored, Verdict
from atlas_sim.service.store import MemoryStore, Store

T = TypeVar("T")


def store_maker(kind: str, request: pytest.FixtureRequest) -> Callable[..., Store]:
    """A function making stores of ``kind`` that share one database (not opened)."""
    if kind == "memory":
        import uuid

        name = "test-" + uuid.uuid4().hex

        def memory(**kw: Any) -> Store:
            return MemoryStore(name, **kw)
        return memory
    if kind == "sqlite":
        from atlas_sim.service.store.sqlite import SqliteStore

        path = str(request.getfixturevalue("tmp_path") / "atlas.sqlite3")

        def sqlite(**kw: Any) -> Store:
            return SqliteStore(path, **kw)
        return sqlite
    from atlas_sim.service.store.postgres import PostgresStore

    url = request.getfixturevalue("postgres_url")

    def postgresql(**kw: Any) -> Store:
        return PostgresStore(url, **kw)
    return postgresql


class ThreadedStore:
    """``store`` opened on a loop of its own; ``close()`` closes it and joins the thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.capacity, self.retention = store.capacity, store.retention
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="threaded-store")
        self._thread.start()
        self.call(store.open())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's loop and wait for it (30 s at most)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30.0)

    async def _there(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def close(self) -> None:
        self.call(self.store.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        self._loop.close()

    # the synchronous calls of MemoryIdempotencyStore
    def begin_now(self, key: str, fingerprint: str) -> Verdict:
        return self.call(self.store.begin(key, fingerprint))

    def complete_now(self, begun: Begun, response: Stored) -> None:
        self.call(self.store.complete(begun, response))

    def abandon_now(self, begun: Begun) -> None:
        self.call(self.store.abandon(begun))

    def __len__(self) -> int:
        return self.call(self.store.count())

    # the IdempotencyStore protocol, awaitable from any event loop
    async def begin(self, key: str, fingerprint: str) -> Verdict:
        return await self._there(self.store.begin(key, fingerprint))

    async def complete(self, begun: Begun, response: Stored) -> None:
        await self._there(self.store.complete(begun, response))

    async def abandon(self, begun: Begun) -> None:
        await self._there(self.store.abandon(begun))

    async def count(self) -> int:
        return await self._there(self.store.count())

    async def clear(self) -> None:
        await self._there(self.store.clear())


def run(make: Callable[..., Store], body: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
    """``body(store)`` on a new opened store (``make(**kwargs)``, closed afterwards), in a fresh
    event loop."""
    async def main() -> T:
        store = make(**kwargs)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()
    return asyncio.run(main())
