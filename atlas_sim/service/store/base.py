"""The store's errors, its asyncio connection pool and the ``Store`` interface every backend
implements (memory, SQLite, PostgreSQL).

``AsyncPool`` drives the one pool policy (``policies.pool.ConnectionPool``, psycopg_pool's rule)
with asyncio on ``time.monotonic``: the policy decides who gets a connection, who waits and who
is refused; this driver hands out the connection objects, parks waiters on futures and keeps one
timer per waiter for its deadline. The simulator drives the same policy on SimPy's clock.

``Store`` is the idempotency-key store (``service.idempotency.IdempotencyStore``, unchanged,
plus a lease), the orders with their keys in one transaction, and an event log with consumer
offsets (Kafka's model on a table: an append-only log per topic, offsets 1, 2, ... and a
committed offset per consumer group; Kafka's documentation, "Consumer Position" in its design
section). Every call takes one pooled connection.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from ...policies.pool import ConnectionPool, Granted, PoolConfig, Refused
from ...validation import check_int, check_real
from ..idempotency import Begun, Stored, Verdict

__all__ = ["OPERATIONS", "POSTS", "AsyncPool", "DbWork", "KeyLost", "PoolRefused", "PoolTimeout",
           "Store"]

#: The topic a post's event goes to (``{"post": id, "author": a}``), the home timelines' outbox.
POSTS = "posts"
#: The operations whose database work a store counts (``Store.work``): a home-timeline read, a
#: post, the fan-out of a post into its author's followers' timelines, the rebuild of a
#: missing (cold) timeline.
OPERATIONS = ("timeline_read", "post", "fanout", "rebuild")

Clock = Callable[[], float]


class PoolTimeout(Exception):
    """No connection within the timeout (psycopg_pool's ``PoolTimeout``): the caller waited
    ``waited`` seconds of its ``timeout`` and left the queue."""

    def __init__(self, waited: float, timeout: float) -> None:
        super().__init__(f"couldn't get a connection after {waited:.3f} s "
                         f"(timeout {timeout:g} s)")
        self.waited = waited
        self.timeout = timeout


class PoolRefused(Exception):
    """Refused at once: no connection idle and ``waiting`` (the pool's ``max_waiting``) clients
    already wait (psycopg_pool's ``TooManyRequests``)."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"connection refused: {waiting} clients already waiting "
                         "(the pool's max_waiting)")
        self.waiting = waiting


class KeyLost(Exception):
    """``place_order`` for a key hold that is gone: cleared (``/admin/reset``) or begun again by
    another request after its lease ran out. Nothing was stored (the transaction rolled back)."""

    def __init__(self, begun: Begun) -> None:
        super().__init__(f"idempotency key {begun.key!r} is no longer held by token "
                         f"{begun.token} (cleared, or taken over after its lease)")
        self.begun = begun


class AsyncPool:
    """``connections`` (any objects, ``config.size`` of them) handed out by the pool policy.

    ``connection(timeout)`` is an async context manager: an idle connection at once, else a
    wait in the policy's FIFO queue until a release hands one over (``Granted``) or the deadline
    passes (``PoolTimeout``); refused at once when ``max_waiting`` clients already wait
    (``PoolRefused``). Leaving the block releases the connection to the oldest waiter. A waiter
    cancelled while it waits leaves the queue (counted in ``policy.cancelled``); if its grant
    raced in just before the cancellation, the connection is released at once, so none is
    lost. One event loop owns a pool (as it does the policy).

    Args:
        config: the pool's size, ``max_waiting`` and ``timeout`` (``policies.pool.PoolConfig``).
        connections: exactly ``config.size`` connection objects.
        clock: seconds, ``time.monotonic`` by default (waits and deadlines are read on it; the
            timers themselves run on the event loop's clock).

    Raises ``ValueError`` when ``connections`` does not hold ``config.size`` objects.
    """

    def __init__(self, config: PoolConfig, connections: Sequence[Any], *,
                 clock: Clock = time.monotonic) -> None:
        if not isinstance(config, PoolConfig):
            raise ValueError(f"config must be a PoolConfig, got {config!r}")
        if len(connections) != config.size:
            raise ValueError(f"connections must hold config.size = {config.size} objects, "
                             f"got {len(connections)}")
        self.policy: ConnectionPool = config.build(clock)
        self.connections: tuple[Any, ...] = tuple(connections)
        self._clock = clock
        self._idle: list[Any] = list(connections)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._replaced: dict[int, Any] = {}  # id(checked-out connection) -> its replacement

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """A pooled connection for the block (see the class docstring). ``timeout``: seconds to
        wait, > 0 and <= 3600 (default ``config.timeout``). Raises ``PoolTimeout``,
        ``PoolRefused``, ``ValueError`` for a bad ``timeout``."""
        conn = await self._acquire(timeout)
        try:
            yield conn
        finally:
            self._release(self._replaced.pop(id(conn), conn))

    def replace(self, old: Any, new: Any) -> None:
        """Put ``new`` in the place of ``old``, a connection checked out now (a broken one):
        the block that holds ``old`` releases ``new`` in its place. ValueError when ``old`` is
        not one of the pool's connections."""
        if not any(c is old for c in self.connections):
            raise ValueError("old must be one of the pool's connections")
        self.connections = tuple(new if c is old else c for c in self.connections)
        self._replaced[id(old)] = new

    async def _acquire(self, timeout: float | None) -> Any:
        decision = self.policy.acquire(timeout)
        if isinstance(decision, Granted):
            return self._idle.pop()
        if isinstance(decision, Refused):
            raise PoolRefused(decision.waiting)
        limit = self.policy.config.timeout if timeout is None else float(timeout)
        ticket = decision.ticket
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters[ticket] = future
        delay = max(0.0, decision.deadline - self._clock())
        timer = loop.call_later(delay, self._expire, ticket, limit)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                if future.exception() is None:  # granted just before the cancellation
                    self._release(future.result())
            else:
                self.policy.cancel(ticket)
            raise
        finally:
            timer.cancel()
            self._waiters.pop(ticket, None)

    def _expire(self, ticket: int, limit: float) -> None:
        out = self.policy.expire(ticket)
        future = self._waiters.pop(ticket, None)
        if out is not None and future is not None and not future.done():
            future.set_exception(PoolTimeout(out.waited, limit))

    def _release(self, conn: Any) -> None:
        while True:
            granted = self.policy.release()
            if granted is None:
                self._idle.append(conn)
                return
            future = self._waiters.pop(granted.ticket, None)
            if future is not None and not future.done():
                future.set_result(conn)
                return
            # that waiter's task was cancelled in this same tick and had not yet left the
            # queue: the policy counts it served; it hands the connection straight back

    def take_wait_times(self) -> list[float]:
        """Waits (seconds) of the waiters granted since the last call (the policy's)."""
        return self.policy.take_wait_times()

    def __repr__(self) -> str:
        return f"AsyncPool({self.policy!r})"


class DbWork:
    """The database work a store did, per operation (``OPERATIONS``, or any other name):
    statements run (``queries``) and rows read (returned by a SELECT, or by a RETURNING) and
    written (inserted). Counted by the store itself, for every statement of the timelines'
    methods, so ``/metrics`` shows what each approach costs the database."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {op: [0, 0, 0] for op in OPERATIONS}

    def add(self, operation: str, *, queries: int = 1, read: int = 0, written: int = 0) -> None:
        """Count ``queries`` statements that read ``read`` and wrote ``written`` rows."""
        cell = self.counts.setdefault(operation, [0, 0, 0])
        cell[0] += queries
        cell[1] += read
        cell[2] += written

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{operation: {"queries": n, "rows_read": n, "rows_written": n}}``."""
        return {op: {"queries": q, "rows_read": r, "rows_written": w}
                for op, (q, r, w) in self.counts.items()}

    def reset(self) -> None:
        """Every count back to 0."""
        self.counts = {op: [0, 0, 0] for op in OPERATIONS}


class Store(abc.ABC):
    """Where an instance keeps its state: idempotency keys, orders, the event log.

    Every call takes one connection from ``pool`` (an ``AsyncPool``), so a pool of 2 with slow
    queries runs dry as a database's would, raising ``PoolTimeout`` / ``PoolRefused``.

    Keys follow ``service.idempotency``'s rules (a ``Store`` is an ``IdempotencyStore``) plus a
    lease: a key in flight for ``lease`` seconds or more may be begun again, with a new token,
    by anyone (its instance died: nobody will complete it). ``complete`` and ``abandon`` of a
    hold that is gone do nothing, as the protocol says; ``place_order`` raises ``KeyLost``.

    Attributes: ``kind`` ("memory" | "sqlite" | "postgresql"), ``pool``, ``capacity`` (keys held
    at most), ``retention`` (seconds a 2xx answer is kept), ``lease`` (seconds).
    """

    kind: str
    pool: AsyncPool
    capacity: int
    retention: float
    lease: float

    async def open(self) -> None:  # noqa: B027 - a store that needs no opening keeps this
        """Connect ``pool.size`` connections and create the schema if missing (idempotent, safe
        when several instances open one database at once)."""

    async def close(self) -> None:  # noqa: B027
        """Close every connection (idempotent)."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- idempotency keys ------------------------------------------------------------------
    @abc.abstractmethod
    async def begin(self, key: str, fingerprint: str) -> Verdict:
        """What to do with a request carrying ``key`` (``idempotency.Verdict``)."""

    @abc.abstractmethod
    async def complete(self, begun: Begun, response: Stored) -> None:
        """Keep ``response`` under ``begun``'s key if 2xx, else forget the key (nothing if the
        hold is gone)."""

    @abc.abstractmethod
    async def abandon(self, begun: Begun) -> None:
        """Forget ``begun``'s key (nothing if the hold is gone)."""

    @abc.abstractmethod
    async def count(self) -> int:
        """Keys held now, in flight and kept."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget keys, orders, events and committed offsets (``/admin/reset``); order numbers
        and offsets start again at 1."""

    # -- orders ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def place_order(self, *, request_id: str | None, begun: Begun | None,
                          answer: Callable[[int], Stored], hold: float = 0.0) -> Stored:
        """One transaction on one pooled connection: insert order ``n`` (1, 2, ... across every
        store sharing the database), hold the connection ``hold`` seconds (a slow query), keep
        ``answer(n)`` under ``begun``'s key if its status is 2xx, and append
        ``{"order": n, "request_id": ...}`` to topic ``"orders"`` (a transactional outbox).
        All or nothing: an exception (``answer`` raising, ``KeyLost`` when ``begun``'s hold is
        gone) stores nothing. Returns ``answer(n)``."""

    @abc.abstractmethod
    async def orders(self) -> int:
        """Orders stored."""

    @abc.abstractmethod
    async def get_order(self, n: int) -> dict[str, Any] | None:
        """Order ``n`` as ``{"order": n, "request_id": ..., "key": ...}``, or None."""

    # -- the event log -----------------------------------------------------------------------
    @abc.abstractmethod
    async def append(self, topic: str, payload: str) -> int:
        """Append ``payload`` to ``topic``; its offset (1, 2, ... per topic). Appends to one
        topic are serialised, so offsets become visible in order."""

    @abc.abstractmethod
    async def read(self, topic: str, *, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (>= 1) events of ``topic`` with offsets above ``after`` (>= 0),
        in offset order, as ``(offset, payload)``."""

    @abc.abstractmethod
    async def end_offset(self, topic: str) -> int:
        """The last offset of ``topic`` (0 when empty)."""

    @abc.abstractmethod
    async def committed(self, group: str, topic: str) -> int:
        """The offset consumer ``group`` committed for ``topic`` (0 when none)."""

    @abc.abstractmethod
    async def commit(self, group: str, topic: str, offset: int) -> None:
        """Record that ``group`` has processed ``topic`` up to ``offset`` (>= 0). A committed
        offset never moves back: a lower one is ignored (the late commit of a consumer whose
        lease another took over meanwhile would otherwise redeliver what the new holder had
        already handled); ``clear()`` is the only way back to 0."""

    # -- home timelines (DDIA chapter 1, "Describing Load") ---------------------------------
    @property
    def work(self) -> DbWork:
        """The database work done so far, per operation (``DbWork``)."""
        work = self.__dict__.get("_work")
        if work is None:
            work = self.__dict__["_work"] = DbWork()
        return work

    @abc.abstractmethod
    async def clear_timelines(self) -> None:
        """Forget the follows, posts and home timelines, the ``"posts"`` topic's events and
        every group's committed offset on it; post ids start again at 1."""

    @abc.abstractmethod
    async def load_follows(self, edges: Sequence[tuple[int, int]]) -> int:
        """Replace the follows with ``edges`` (``(follower, followee)`` account ids >= 0) and
        each account's follower count, in one transaction; returns the follows stored."""

    @abc.abstractmethod
    async def add_post(self, author: int, text: str, *, event: bool) -> int:
        """Store a post (operation ``"post"``); its id (1, 2, ...). With ``event``, the same
        transaction appends ``{"post": id, "author": author}`` to topic ``POSTS`` (the outbox);
        without, the caller appends it in a second step (a dual write)."""

    @abc.abstractmethod
    async def follower_count(self, author: int, *, operation: str) -> int:
        """How many accounts follow ``author`` (0 for an unknown account)."""

    @abc.abstractmethod
    async def followers(self, author: int, *, operation: str = "fanout") -> list[int]:
        """The accounts following ``author``."""

    @abc.abstractmethod
    async def fan_out(self, post: int, author: int) -> int:
        """Insert ``post`` into the ``home_timelines`` rows of every follower of ``author`` in
        one statement (``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: idempotent by post id;
        operation ``"fanout"``); returns the rows inserted (0 when delivered before)."""

    @abc.abstractmethod
    async def timeline_query(self, user: int, length: int, *, above: int | None = None,
                             at_most: int | None = None,
                             operation: str = "timeline_read") -> list[int]:
        """Approach 1's read, one query: the ids of the newest ``length`` posts (newest first)
        of the accounts ``user`` follows; only those followees with more than ``above``
        followers, or with at most ``at_most`` (the hybrid's two halves), when given."""

    @abc.abstractmethod
    async def home_timeline(self, user: int, length: int) -> list[int]:
        """The newest ``length`` post ids of ``user``'s materialised home timeline (the
        ``home_timelines`` table), newest first (operation ``"timeline_read"``)."""

    @abc.abstractmethod
    async def timeline_counts(self) -> dict[str, int]:
        """``{"posts", "follows", "home_timeline_rows"}`` (not counted as work)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r})"


def check_read(after: int, limit: int) -> None:
    """ValueError for a bad ``read`` window (shared by the backends)."""
    check_int("after", after, low=0)
    check_int("limit", limit, low=1, high=100_000)


def check_offset(offset: int) -> None:
    """ValueError for a bad committed offset."""
    check_int("offset", offset, low=0)


def check_edges(edges: Any) -> list[tuple[int, int]]:
    """``edges`` (pairs, or an integer array of shape (m, 2)) as ``(follower, followee)``
    tuples of ints >= 0, no account following itself; ValueError naming ``edges`` otherwise.
    Checked with numpy: a graph's 40k follows in milliseconds."""
    try:
        array = np.asarray(edges)
    except ValueError:  # ragged
        array = np.asarray([0.5])
    if array.size == 0:
        return []
    if array.dtype.kind not in "iu" or array.ndim != 2 or array.shape[1] != 2:
        raise ValueError("edges must be (follower, followee) pairs of integer account ids "
                         ">= 0, or an integer array of shape (m, 2)")
    if array.min() < 0 or array.max() > 2**62 or bool(np.any(array[:, 0] == array[:, 1])):
        raise ValueError("edges must hold account ids 0..2**62 and no self-follow")
    return [(a, b) for a, b in array.tolist()]


def check_hold(hold: float) -> float:
    """``hold`` checked: seconds, 0..3600."""
    return check_real("hold", hold, low=0, high=3600.0)
