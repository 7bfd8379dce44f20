"""The event log's consumers: background tasks that read a topic of the store's log in order,
hand each batch to a handler, and commit the offset they have processed.

Kafka is not installable here (Debian packages Kafka's clients, librdkafka and
python3-confluent-kafka, but no broker, and this workbook installs only Debian packages and
PyPI's), so the card's "Kafka events" are Kafka's model kept on a database table
(``Store.append``, ``read``, ``end_offset``, ``committed``, ``commit``; SQLite, PostgreSQL or
memory). What is the same, in the terms of Kafka's documentation ("Design": the consumer
position, offset management; "the consumer-offset design" of ``__consumer_offsets``):

* a topic is an append-only log; an event's offset (1, 2, ... per topic) is its position and
  never changes; appends to one topic are serialised, so offsets become visible in order;
* a consumer group names one reader's progress: its committed offset is the last event it has
  processed, kept in the same database as the log (as Kafka keeps it in ``__consumer_offsets``);
  a consumer that starts, restarts or takes over reads from the committed offset on;
* delivery is at least once: a batch is committed only after its handler returned, so a crash
  between the two (a handler that raised, a task cancelled mid-batch, a process killed) hands
  the same batch out again. Handlers that are idempotent make that *effectively once*;
* within a group, a topic is read by one consumer at a time (Kafka's rule: one partition, one
  consumer of the group); the others are standbys that take over when it stops or dies.

What is not: partitions (a topic is one partition, so a group's throughput is one consumer's),
brokers and replication (the log is as durable as the database it lives in), the group
coordinator (replaced by a lease kept in the log itself, below), retention and compaction (the
log grows until ``Store.clear``), and transactions across topics.

Who reads, in a group (``EventConsumers(config=EventLogConfig(consumers=n))`` starts n tasks per
group and topic, and several instances or processes may run theirs on one database): a consumer
processes batches only while it holds the group's *lease* on the topic. The lease is decided by
a log of its own, topic ``"__lease__.<group>.<topic>"``, with no coordinator: a consumer appends
``{"owner": token, "at": wall time, "lease": seconds}`` to claim or renew it and ``{"owner":
token, "release": true, "at": wall time}`` to give it up, and everyone folds the same records in
offset order with one rule (a claim wins when nobody holds the lease, when it comes from the
holder, or when it was made after the holder's lease ran out). Appends to a topic are totally
ordered, so every consumer, in any process, computes the same holder: DDIA's "total order
broadcast" used as a lock. The holder renews when half its lease is left and starts no batch and
commits nothing once its lease has run out; a standby claims only after the lease has run out
(or was released: ``stop()``, or a task cancelled, releases at once). So two consumers of one
group never both process a batch, with one caveat Kafka shares (its ``max.poll.interval.ms``): a
handler that runs longer than the lease may see its batch handed to the next holder while it is
still at work; the batch is then applied twice, which an idempotent handler absorbs, and the
late holder does not commit. After ``Store.clear`` (``/admin/reset``) the lease log is gone too:
a consumer notices (the last record it folded is no longer there), folds the new log from its
start, and the first claim wins again.

What it costs: each poll, the holder makes three store calls (the lease log, the committed
offset, the read; two more per batch handled: the lease log and the commit) and each standby
one, each on a pooled connection: with ``poll_interval=0.05``, one holder and one standby make
about 80 calls a second while idle (measured on all three stores), which the pool's counts in
``/metrics`` include.

Handlers and "effectively once". ``Handler = Callable[[list[tuple[int, str]]], Awaitable[None]]``
gets a batch of ``(offset, payload)`` in offset order. Its effect must be idempotent, because a
batch may be delivered again after a crash. The standard way (DDIA chapter 11, "Idempotence";
Kafka's idempotent consumer pattern) is to key the effect by the event's identity: its offset,
or an id the producer put in the payload (an order number, a request id), and to apply an
event only if its key is not recorded yet, with the key recorded *together with* the effect
(a set of applied ids in memory for an in-memory effect; a unique key or ``INSERT ... ON
CONFLICT DO NOTHING`` in the same transaction for a database effect; or "apply only if offset >
the last offset applied", stored with the effect). A counter that adds one per delivery is not
idempotent: the tests show it counting a redelivered batch twice.

A handler that raises: the batch is not committed, the error is logged once per distinct error
(its type and message, numbers masked, per group and topic; a store call that fails likewise)
and counted in ``failures``, and the consumer tries the same batch again after
``poll_interval``. A payload that can never be handled (a poison message) therefore stops its
group, whose lag then grows: Kafka's consumers have the same problem, and its cure, a
dead-letter topic, is not built here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..server_config import EventLogConfig
from ..validation import check_real

__all__ = ["LEASE_PREFIX", "ORDERS", "RECEIPTS", "EventConsumers", "EventLog", "Handler",
           "lease_topic", "order_receipts"]

log = logging.getLogger(__name__)

#: A consumer's handler: given a batch of ``(offset, payload)`` in offset order; raising means
#: "not processed" (the batch is not committed and comes again).
Handler = Callable[[list[tuple[int, str]]], Awaitable[None]]

#: The topic ``Store.place_order`` appends each order to (the transactional outbox).
ORDERS = "orders"
#: The consumer group and topic of ``order_receipts``.
RECEIPTS = ("receipts", ORDERS)
#: Lease topics are named ``LEASE_PREFIX + group + "." + topic``.
LEASE_PREFIX = "__lease__."
_LEASE_PAGE = 1000  # lease records read at once
#: Seconds ``stop()`` lets a consumer's store call finish before cancelling it anyway.
STOP_GRACE = 10.0
T = TypeVar("T")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MAX_LOGGED = 1000  # distinct errors logged at most, per EventConsumers


class EventLog(Protocol):
    """What the consumers need of a store: the event-log half of ``atlas_sim.service.store``'s
    ``Store`` (memory, SQLite or PostgreSQL), which satisfies it."""

    async def append(self, topic: str, payload: str) -> int: ...
    async def read(self, topic: str, *, after: int, limit: int) -> list[tuple[int, str]]: ...
    async def end_offset(self, topic: str) -> int: ...
    async def committed(self, group: str, topic: str) -> int: ...
    async def commit(self, group: str, topic: str, offset: int) -> None: ...


def lease_topic(group: str, topic: str) -> str:
    """The topic that holds the lease of ``group`` on ``topic``."""
    return f"{LEASE_PREFIX}{group}.{topic}"


class _Lease:
    """One consumer's view of a (group, topic) lease: the lease log folded up to ``seen``.

    The rule (the same in every consumer, so all agree on the holder): a claim
    ``{"owner", "at", "lease"}`` is granted when nobody holds the lease, when it comes from the
    holder (a renewal), or when it was made at or after the holder's expiry; a release by the
    holder frees it. Times are wall-clock seconds (``time.time``: one host's processes share it).
    """

    def __init__(self, store: EventLog, topic: str, token: str, seconds: float,
                 clock: Callable[[], float]) -> None:
        self.store, self.topic, self.token = store, topic, token
        self.seconds, self.clock = seconds, clock
        self._forget()

    def _forget(self) -> None:
        self.seen, self.last = 0, ""  # the last record folded: its offset and payload
        self.holder: str | None = None
        self.until = -math.inf

    def _fold(self, payload: str) -> None:
        try:
            record = json.loads(payload)
            owner = str(record["owner"])
            if record.get("release"):
                if owner == self.holder:
                    self.holder, self.until = None, -math.inf
                return
            at, seconds = float(record["at"]), float(record["lease"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # not a lease record: ignored by everyone alike
        if self.holder is None or owner == self.holder or at >= self.until:
            self.holder, self.until = owner, at + seconds

    async def refresh(self) -> None:
        """Fold the records appended since the last look. The read starts at the last record
        folded, which must still be there: if it is not (``Store.clear`` forgot the log, which
        may have grown again since), the fold starts over from the log's first record."""
        while True:
            raw = await self.store.read(self.topic, after=max(self.seen - 1, 0),
                                        limit=_LEASE_PAGE)
            records = raw
            if self.seen:
                if not raw or raw[0][0] != self.seen or raw[0][1] != self.last:
                    self._forget()
                    continue
                records = raw[1:]
            for offset, payload in records:
                self._fold(payload)
                self.seen, self.last = offset, payload
            if len(raw) < _LEASE_PAGE:
                return

    def held(self) -> bool:
        """Whether this consumer holds the lease now, as far as it has read."""
        return self.holder == self.token and self.clock() < self.until

    async def acquire(self) -> bool:
        """Hold the lease: renew it when half of it is gone, claim it when it is free or has run
        out; True if this consumer holds it afterwards."""
        await self.refresh()
        now = self.clock()
        mine = self.holder == self.token and now < self.until
        if mine and self.until - now > self.seconds / 2:
            return True
        if mine or self.holder is None or now >= self.until:
            claim = {"owner": self.token, "at": now, "lease": self.seconds}
            await self.store.append(self.topic, json.dumps(claim))
            await self.refresh()
        return self.held()

    async def release(self) -> None:
        """Give the lease up if this consumer holds it (a standby may take it at once)."""
        if self.holder == self.token:
            record = {"owner": self.token, "release": True, "at": self.clock()}
            await self.store.append(self.topic, json.dumps(record))
            self.holder, self.until = None, -math.inf


@dataclass(eq=False)
class _Consumer:
    group: str
    topic: str
    handler: Handler
    lease: _Lease
    task: asyncio.Task[None] | None = None
    in_store: bool = False  # in a store call: stop() lets it finish rather than cancel it
    stopping: bool = False


class _Stopping(Exception):
    """Raised in a consumer when its store call ends after ``stop()`` asked it to."""


class EventConsumers:
    """The background consumers of one service instance: for each ``(group, topic)`` in
    ``handlers``, ``config.consumers`` asyncio tasks, of which one at a time (the lease holder)
    reads and the others stand by (see the module docstring).

    Args:
        store: the event log (a ``Store``, opened; stop the consumers before closing it).
        config: ``EventLogConfig``: ``consumers`` tasks per group and topic (0: none, the lag
            grows), ``poll_interval`` seconds to wait when nothing is new or after a failure,
            ``batch`` events handed over and committed at once.
        handlers: ``{(group, topic): handler}``; a handler gets ``[(offset, payload), ...]``.
        lease: seconds a holder's lease lasts without renewal (> 0; default 10): how long a
            standby waits to take over from a consumer that died without releasing, and the
            longest a batch may take before it may be handed out again.
        sleep: how a consumer waits (``asyncio.sleep``; a test may inject its own).
        clock: wall-clock seconds for the lease (``time.time``).

    Counts, per group: ``processed`` (events whose batch was committed) and ``failures``
    (batches whose handler raised, and store calls that failed).

    Raises ValueError for a key that is not two non-empty strings, a handler that is not
    callable, a config that is not an ``EventLogConfig`` or a lease out of range.
    """

    def __init__(self, store: EventLog, config: EventLogConfig,
                 handlers: Mapping[tuple[str, str], Handler], *, lease: float = 10.0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(config, EventLogConfig):
            raise ValueError(f"config must be an EventLogConfig, got {config!r}")
        for key, handler in handlers.items():
            if not (isinstance(key, tuple) and len(key) == 2
                    and all(isinstance(k, str) and k for k in key)):
                raise ValueError(f"handlers' keys must be (group, topic), two non-empty "
                                 f"strings, got {key!r}")
            if not callable(handler):
                raise ValueError(f"handlers[{key!r}] must be an async callable, got {handler!r}")
        self.store = store
        self.config = config
        self.handlers: dict[tuple[str, str], Handler] = dict(handlers)
        self.lease = check_real("lease", lease, low=0, low_open=True)
        self._sleep = sleep
        self._clock = clock
        self.processed: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self._logged: set[tuple[str, str, str, str]] = set()
        self._consumers: list[_Consumer] = []

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The consumer tasks started and not yet stopped (one list over every group)."""
        return [c.task for c in self._consumers if c.task is not None]

    @property
    def running(self) -> bool:
        """Whether the consumers have been started and not stopped since."""
        return bool(self._consumers)

    def start(self) -> None:
        """Start ``config.consumers`` tasks per group and topic on the running event loop.
        RuntimeError if already started (``stop()`` first) or called outside a running loop."""
        if self._consumers:
            raise RuntimeError("the event consumers are already running; stop() them first")
        loop = asyncio.get_running_loop()
        for (group, topic), handler in self.handlers.items():
            for _ in range(self.config.consumers):
                token = f"{uuid.uuid4().hex[:12]}"
                lease = _Lease(self.store, lease_topic(group, topic), token, self.lease,
                               self._clock)
                consumer = _Consumer(group, topic, handler, lease)
                consumer.task = loop.create_task(self._run(consumer),
                                                 name=f"atlas-consumer-{group}-{topic}-{token}")
                self._consumers.append(consumer)

    async def stop(self) -> None:
        """Stop every consumer task and wait for it to end, leaving no task behind (call it
        before closing the store). Idempotent. A task waiting or in its handler is cancelled
        (its batch is not committed: it comes again); a task in a store call finishes that
        call first (at most ``STOP_GRACE`` seconds, then it is cancelled too), so that no
        transaction is cut in the middle. Each releases its lease on the way out."""
        consumers, self._consumers = self._consumers, []
        tasks = []
        for consumer in consumers:
            if consumer.task is None:
                continue
            consumer.stopping = True
            if not consumer.in_store:
                consumer.task.cancel()
            tasks.append(consumer.task)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def lag(self) -> dict[tuple[str, str], int]:
        """``end_offset(topic) - committed(group, topic)`` per ``(group, topic)`` handled: the
        events appended and not yet processed by the group (``/metrics``:
        ``atlas_api_event_consumer_lag{group, topic}``)."""
        lags = {}
        for group, topic in self.handlers:
            end = await self.store.end_offset(topic)
            lags[group, topic] = max(0, end - await self.store.committed(group, topic))
        return lags

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"processed": {group: n}, "failures": {group: n}}`` for every group handled."""
        groups = sorted({g for g, _ in self.handlers})
        return {"processed": {g: self.processed[g] for g in groups},
                "failures": {g: self.failures[g] for g in groups}}

    def _failed(self, consumer: _Consumer, what: str, exc: Exception) -> None:
        self.failures[consumer.group] += 1
        # distinct: by type and message with its numbers masked ("after 0.503 s" is the same
        # pool timeout as "after 0.517 s"), and never more than _MAX_LOGGED of them
        key = (consumer.group, consumer.topic, type(exc).__name__,
               _NUMBER.sub("#", str(exc)))
        if key not in self._logged and len(self._logged) < _MAX_LOGGED:
            self._logged.add(key)
            log.warning("event consumer %s on %r: %s failed (%s: %s); retrying from the "
                        "committed offset every %g s (logged once per distinct error)",
                        consumer.group, consumer.topic, what, type(exc).__name__, exc,
                        self.config.poll_interval)

    async def _store(self, consumer: _Consumer, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, marked as a store call that ``stop()`` lets finish."""
        consumer.in_store = True
        try:
            result = await call()
        finally:
            consumer.in_store = False
        if consumer.stopping:
            raise _Stopping
        return result

    async def _run(self, consumer: _Consumer) -> None:
        try:
            while True:
                try:
                    busy = await self._step(consumer)
                except (asyncio.CancelledError, _Stopping):
                    raise
                except Exception as exc:  # a store call failed: same batch, next time
                    self._failed(consumer, "a store call", exc)
                    busy = False
                if busy:
                    await asyncio.sleep(0)  # a long backlog still lets the loop's others run
                else:
                    await self._sleep(self.config.poll_interval)
        except _Stopping:
            pass
        finally:
            with contextlib.suppress(Exception):
                await consumer.lease.release()

    async def _step(self, consumer: _Consumer) -> bool:
        """One batch: True if one was handled and committed (look again at once)."""
        if not await self._store(consumer, consumer.lease.acquire):
            return False
        store, group, topic = self.store, consumer.group, consumer.topic

        async def next_batch() -> list[tuple[int, str]]:
            committed = await store.committed(group, topic)
            return await store.read(topic, after=committed, limit=self.config.batch)

        batch = await self._store(consumer, next_batch)
        if not batch:
            return False
        try:
            await consumer.handler(batch)
        except Exception as exc:
            self._failed(consumer, f"the handler (events {batch[0][0]}..{batch[-1][0]})", exc)
            return False

        async def commit() -> bool:
            await consumer.lease.refresh()
            if not consumer.lease.held():
                return False  # the lease ran out while handling: the next holder redoes it
            await store.commit(group, topic, batch[-1][0])
            self.processed[group] += len(batch)
            return True

        return await self._store(consumer, commit)


def order_receipts(state_like: Any) -> Handler:
    """A handler for ``RECEIPTS`` (group ``"receipts"`` on topic ``"orders"``, the outbox
    ``Store.place_order`` appends ``{"order": n, "request_id": ...}`` to): it records each
    order's receipt by adding ``n`` to ``state_like.receipted`` (a ``set[int]``, e.g. a field of
    ``ServiceState`` that ``/admin/orders`` reports as ``receipted``).

    Idempotent: the effect is keyed by the order number, so a batch delivered again adds
    nothing. The set lives in the instance's memory while the group's offset lives in the
    database: after a restart it holds the orders received since. A payload that is not an
    order raises ValueError (the batch is not committed: a poison message, see the module
    docstring). ValueError at once if ``state_like.receipted`` is not a set.
    """
    if not isinstance(getattr(state_like, "receipted", None), set):
        raise ValueError(f"state_like.receipted must be a set of order numbers, "
                         f"got {getattr(state_like, 'receipted', None)!r}")

    async def receipts(batch: list[tuple[int, str]]) -> None:
        numbers = []
        for offset, payload in batch:
            try:
                number = json.loads(payload)["order"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"event {offset} on {ORDERS!r} is not an order: "
                                 f"{payload[:80]!r}") from None
            if isinstance(number, bool) or not isinstance(number, int):
                raise ValueError(f"event {offset} on {ORDERS!r} has no order number: "
                                 f"{payload[:80]!r}")
            numbers.append(number)
        state_like.receipted.update(numbers)

    return receipts
