"""The event log's consumers: every event handled once and in order, lag, at-least-once
delivery after a crash (and what an idempotent handler makes of it), one consumer per group,
and nothing left running."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from atlas_sim import EventLogConfig, StoreConfig
from atlas_sim.service.eventlog import (
    RECEIPTS,
    EventConsumers,
    lease_topic,
    order_receipts,
)
from atlas_sim.service.idempotency import Stored
from atlas_sim.service.store import open_store

FAST = EventLogConfig(consumers=2, poll_interval=0.002, batch=7)


# --- the stores, each a factory of new Store objects on one database -----------------------------

Factory = Callable[[], Any]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.live)])
def new_store(request, tmp_path) -> Factory:
    """A function giving a new, unopened Store object on one database per test."""
    kind = request.param
    if kind == "memory":
        url = f"memory://eventlog-{request.node.name}-{time.monotonic_ns()}"
    elif kind == "sqlite":
        url = f"sqlite://{tmp_path / 'events.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    return _factory(StoreConfig(url=url))


@pytest.fixture
def memory_store() -> Factory:
    return _factory(StoreConfig(url=f"memory://eventlog-{time.monotonic_ns()}"))


def _factory(config: StoreConfig) -> Factory:
    keeper = open_store(config, pool=None, lease=30.0)  # memory://: keeps the data alive

    def new() -> Any:
        assert keeper is not None
        return open_store(config, pool=None, lease=30.0)
    return new


@asynccontextmanager
async def opened(factory: Factory) -> AsyncIterator[Any]:
    store = factory()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def until(condition: Callable[[], Any], *, limit: float = 20.0) -> None:
    """Wait until ``condition()`` (awaited if it is a coroutine) is true; fail after ``limit``
    seconds (a bound on a hung test, not a measurement)."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


async def append_all(store: Any, topic: str, payloads: list[str]) -> None:
    for payload in payloads:
        await store.append(topic, payload)


class Recorder:
    """Handlers for the tests: ``applied`` an idempotent effect (a dict keyed by offset, as a
    table keyed by the event's id), ``deliveries`` a non-idempotent count of every delivery."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.applied: dict[int, str] = {}
        self.order: list[int] = []
        self.deliveries: Counter[int] = Counter()
        self.batches: list[list[int]] = []

    async def __call__(self, batch: list[tuple[int, str]]) -> None:
        self.batches.append([offset for offset, _ in batch])
        for offset, payload in batch:
            await asyncio.sleep(0)  # let other consumers run between events
            self.deliveries[offset] += 1
            if offset not in self.applied:  # the dedupe: the effect keyed by the offset
                self.applied[offset] = payload
                self.order.append(offset)


def events(n: int, start: int = 1) -> list[str]:
    return [json.dumps({"event": i}) for i in range(start, start + n)]


# --- every event, in order ----------------------------------------------------------------------

def test_every_event_is_handled_once_and_in_order(new_store):
    async def main() -> tuple[Recorder, dict, dict, list]:
        async with opened(new_store) as store:
            recorder = Recorder()
            consumers = EventConsumers(store, FAST, {("g", "t"): recorder})
            await append_all(store, "t", events(40))
            consumers.start()
            await append_all(store, "t", events(60, start=41))  # while they run
            await until(lambda: len(recorder.applied) == 100)
            await until(lambda: consumers.counts()["processed"]["g"] == 100)
            lag = await consumers.lag()
            await consumers.stop()
            return recorder, lag, consumers.counts(), consumers.tasks

    recorder, lag, counts, tasks = asyncio.run(main())
    assert recorder.order == list(range(1, 101))
    assert [json.loads(recorder.applied[k])["event"] for k in range(1, 101)] == \
        list(range(1, 101))
    assert set(recorder.deliveries.values()) == {1}  # no failure, no takeover: once each
    assert all(len(b) <= FAST.batch for b in recorder.batches)
    assert lag == {("g", "t"): 0}
    assert counts == {"processed": {"g": 100}, "failures": {"g": 0}}
    assert tasks == []


def test_each_group_reads_the_whole_topic_on_its_own_offset(memory_store):
    async def main() -> tuple[Recorder, Recorder, dict]:
        async with opened(memory_store) as store:
            a, b = Recorder(), Recorder()
            consumers = EventConsumers(store, FAST, {("a", "t"): a, ("b", "t"): b})
            await append_all(store, "t", events(20))
            consumers.start()
            await until(lambda: len(a.applied) == len(b.applied) == 20)
            await consumers.stop()
            return a, b, {g: await store.committed(g, "t") for g in "ab"}

    a, b, committed = asyncio.run(main())
    assert a.order == b.order == list(range(1, 21))
    assert committed == {"a": 20, "b": 20}


# --- lag --------------------------------------------------------------------------------------

def test_lag_rises_while_consumers_are_stopped_or_slow_and_falls_to_zero(new_store):
    async def main() -> list[int]:
        seen = []
        async with opened(new_store) as store:
            gate = asyncio.Event()
            recorder = Recorder()
            entered = []

            async def slow(batch: list[tuple[int, str]]) -> None:
                entered.append(batch[0][0])
                await gate.wait()
                await recorder(batch)

            consumers = EventConsumers(store, FAST, {("g", "t"): slow})

            async def lag() -> int:
                return (await consumers.lag())["g", "t"]

            seen.append(await lag())  # empty log
            await append_all(store, "t", events(5))
            seen.append(await lag())  # stopped: 5 behind
            gate.set()
            consumers.start()
            await until(lambda: _zero(lag))
            seen.append(await lag())
            gate.clear()  # slow: the handler waits
            await append_all(store, "t", events(9, start=6))
            await until(lambda: 6 in entered)
            seen.append(await lag())  # 9 behind while the handler is stuck
            gate.set()
            await until(lambda: _zero(lag))
            seen.append(await lag())
            await consumers.stop()
            await append_all(store, "t", events(3, start=15))
            seen.append(await lag())  # stopped again
        return seen

    assert asyncio.run(main()) == [0, 5, 0, 9, 0, 3]


async def _zero(lag: Callable[[], Awaitable[int]]) -> bool:
    return await lag() == 0


def test_no_consumers_no_tasks_and_the_lag_grows(memory_store):
    async def main() -> tuple[list, dict]:
        async with opened(memory_store) as store:
            consumers = EventConsumers(store, EventLogConfig(consumers=0), {("g", "t"): Recorder()})
            consumers.start()
            await append_all(store, "t", events(4))
            tasks = consumers.tasks
            lag = await consumers.lag()
            await consumers.stop()
            return tasks, lag

    assert asyncio.run(main()) == ([], {("g", "t"): 4})


# --- a crash resumes from the committed offset ---------------------------------------------------

def test_a_handler_that_raises_half_way_gets_the_batch_again(new_store, caplog):
    """At least once: the half applied before the crash is delivered again. The idempotent
    effect (keyed by offset) has every event once; the counting handler counts 1..5 twice."""
    async def main() -> tuple[Recorder, dict, int]:
        async with opened(new_store) as store:
            recorder, calls = Recorder(), []

            async def crashy(batch: list[tuple[int, str]]) -> None:
                calls.append(batch[0][0])
                if len(calls) == 1:
                    await recorder(batch[:5])
                    raise RuntimeError("crashed half way")
                await recorder(batch)

            consumers = EventConsumers(store, EventLogConfig(consumers=1, poll_interval=0.002,
                                                             batch=10), {("g", "t"): crashy})
            await append_all(store, "t", events(10))
            consumers.start()
            await until(lambda: consumers.processed["g"] == 10)
            await consumers.stop()
            return recorder, consumers.counts(), await store.committed("g", "t")

    with caplog.at_level(logging.WARNING, logger="atlas_sim.service.eventlog"):
        recorder, counts, committed = asyncio.run(main())
    assert recorder.order == list(range(1, 11))  # none lost, none applied twice
    assert recorder.deliveries == Counter({**dict.fromkeys(range(1, 6), 2),
                                           **dict.fromkeys(range(6, 11), 1)})
    assert counts == {"processed": {"g": 10}, "failures": {"g": 1}}
    assert committed == 10
    assert [r.getMessage() for r in caplog.records if "crashed half way" in r.getMessage()]


def test_a_failing_handler_is_logged_once_per_distinct_error_and_counted_each_time(
        memory_store, caplog):
    async def main() -> tuple[dict, int]:
        async with opened(memory_store) as store:
            calls = []

            async def failing(batch: list[tuple[int, str]]) -> None:
                calls.append(1)
                if len(calls) <= 4:
                    raise RuntimeError(f"database down after {0.5 + len(calls) / 1000} s")
                if len(calls) <= 6:
                    raise ValueError("bad payload")

            consumers = EventConsumers(store, EventLogConfig(consumers=1, poll_interval=0.002),
                                       {("g", "t"): failing})
            await append_all(store, "t", events(3))
            consumers.start()
            await until(lambda: consumers.processed["g"] == 3)
            await consumers.stop()
            return consumers.counts(), await store.committed("g", "t")

    with caplog.at_level(logging.WARNING, logger="atlas_sim.service.eventlog"):
        counts, committed = asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database down" in m for m in messages) == 1
    assert sum("bad payload" in m for m in messages) == 1
    assert counts == {"processed": {"g": 3}, "failures": {"g": 6}}
    assert committed == 3


def test_a_failing_store_call_is_counted_and_retried(memory_store):
    async def main() -> tuple[Recorder, dict]:
        async with opened(memory_store) as store:
            real_read, fails = store.read, [3]

            async def read(topic: str, *, after: int, limit: int) -> list[tuple[int, str]]:
                if topic == "t" and fails[0]:
                    fails[0] -= 1
                    raise ConnectionError("pool timeout")
                return await real_read(topic, after=after, limit=limit)

            recorder = Recorder()
            consumers = EventConsumers(SimpleNamespace(
                append=store.append, read=read, end_offset=store.end_offset,
                committed=store.committed, commit=store.commit),
                EventLogConfig(consumers=1, poll_interval=0.002), {("g", "t"): recorder})
            await append_all(store, "t", events(4))
            consumers.start()
            await until(lambda: consumers.processed["g"] == 4)
            await consumers.stop()
            return recorder, consumers.counts()

    recorder, counts = asyncio.run(main())
    assert recorder.order == [1, 2, 3, 4]
    assert counts == {"processed": {"g": 4}, "failures": {"g": 3}}


def test_a_consumer_cancelled_mid_batch_is_replaced_by_its_standby(new_store):
    """The holder's task is cancelled (a crash) after applying half a batch: it commits
    nothing and releases its lease; the standby takes over from the committed offset."""
    async def main() -> tuple[Recorder, dict, list, list]:
        async with opened(new_store) as store:
            recorder, halfway = Recorder(), asyncio.Event()
            holders: list[asyncio.Task[Any] | None] = []

            async def stuck_once(batch: list[tuple[int, str]]) -> None:
                holders.append(asyncio.current_task())
                if len(holders) == 1:
                    await recorder(batch[:3])
                    halfway.set()
                    await asyncio.Event().wait()  # stuck until cancelled
                await recorder(batch)

            consumers = EventConsumers(store, EventLogConfig(consumers=2, poll_interval=0.002,
                                                             batch=6), {("g", "t"): stuck_once},
                                       lease=600.0)  # so only a release lets the standby in
            await append_all(store, "t", events(6))
            consumers.start()
            await halfway.wait()
            committed = await store.committed("g", "t")
            assert holders[0] is not None
            holders[0].cancel()
            await until(lambda: consumers.processed["g"] == 6)
            await consumers.stop()
            return recorder, consumers.counts(), [committed], holders

    recorder, counts, committed, holders = asyncio.run(main())
    assert committed == [0]  # nothing was committed by the crashed consumer
    assert recorder.order == [1, 2, 3, 4, 5, 6]
    assert recorder.deliveries == Counter({1: 2, 2: 2, 3: 2, 4: 1, 5: 1, 6: 1})
    assert holders[0] is not holders[1]  # the standby did it
    assert counts["processed"] == {"g": 6}


def test_new_consumers_on_a_new_store_resume_from_the_committed_offset(new_store):
    """Consumers stopped (one of them mid-batch), the store closed; a NEW Store object on the
    same database and NEW consumers go on from the committed offset: the events already
    committed are not delivered again, the interrupted batch is, and the idempotent effect
    (a table keyed by offset, kept across the 'restart') has every event once."""
    async def main() -> tuple[Recorder, Recorder, Recorder, int]:
        effect: dict[int, str] = {}
        first, second = Recorder("first"), Recorder("second")
        second.applied = first.applied = effect
        cfg = EventLogConfig(consumers=1, poll_interval=0.002, batch=5)
        async with opened(new_store) as store:
            await append_all(store, "t", events(10))
            consumers = EventConsumers(store, cfg, {("g", "t"): first})
            consumers.start()
            await until(lambda: consumers.processed["g"] == 10)
            await consumers.stop()
            await append_all(store, "t", events(5, start=11))
            interrupted = asyncio.Event()

            async def crash(batch: list[tuple[int, str]]) -> None:
                await first(batch[:2])
                interrupted.set()
                await asyncio.Event().wait()

            consumers.handlers["g", "t"] = crash
            consumers.start()
            await interrupted.wait()
            await consumers.stop()  # mid-batch: 11 and 12 applied, not committed
            committed = await store.committed("g", "t")
        async with opened(new_store) as store:
            await append_all(store, "t", events(5, start=16))
            again = EventConsumers(store, cfg, {("g", "t"): second})
            again.start()
            await until(lambda: again.processed["g"] == 10)
            await again.stop()
            lag = (await again.lag())["g", "t"]
        assert lag == 0
        both = Recorder()
        both.applied = effect
        return first, second, both, committed

    first, second, both, committed = asyncio.run(main())
    assert committed == 10
    assert sorted(both.applied) == list(range(1, 21))  # none lost
    assert sorted(second.deliveries) == list(range(11, 21))  # 1..10 were not delivered again
    assert first.deliveries[11] == second.deliveries[11] == 1  # 11, 12: at least once
    assert [json.loads(both.applied[k])["event"] for k in range(1, 21)] == list(range(1, 21))


# --- one consumer per group -------------------------------------------------------------------

def test_two_event_consumers_sharing_a_group_never_both_process_a_batch(new_store):
    """Two services (two EventConsumers, each with two tasks, each on its own Store object)
    in one group: every event is delivered once in all, never two handlers at once; when the
    holder stops, the other takes over."""
    async def main() -> tuple[Recorder, Recorder, int, list[int]]:
        a, b = Recorder("a"), Recorder("b")
        inside, most = [0], [0]

        def watched(recorder: Recorder) -> Callable[[list[tuple[int, str]]], Awaitable[None]]:
            async def handle(batch: list[tuple[int, str]]) -> None:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                try:
                    await recorder(batch)
                finally:
                    inside[0] -= 1
            return handle

        async with opened(new_store) as one, opened(new_store) as two:
            ca = EventConsumers(one, FAST, {("g", "t"): watched(a)}, lease=600.0)
            cb = EventConsumers(two, FAST, {("g", "t"): watched(b)}, lease=600.0)
            ca.start()
            cb.start()
            for k in range(6):
                await append_all(one if k % 2 else two, "t", events(10, start=10 * k + 1))
                await asyncio.sleep(0.005)
            await until(lambda: ca.processed["g"] + cb.processed["g"] == 60)
            holder, other, other_recorder = (ca, cb, b) if ca.processed["g"] else (cb, ca, a)
            await holder.stop()
            await append_all(one, "t", events(5, start=61))
            await until(lambda: other.processed["g"] + holder.processed["g"] == 65)
            await other.stop()
            return a, b, most[0], sorted(other_recorder.deliveries)[-5:]

    a, b, most, taken_over = asyncio.run(main())
    assert most == 1
    assert a.deliveries + b.deliveries == Counter(dict.fromkeys(range(1, 66), 1))
    assert taken_over == [61, 62, 63, 64, 65]


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_holder_that_died_is_taken_over_when_its_lease_runs_out(memory_store):
    """A holder that died without releasing (a killed process: only its claim is in the lease
    log) keeps the group idle until its lease runs out; then a standby takes over."""
    async def main() -> tuple[int, int, Recorder]:
        clock, naps = ManualClock(), [0]

        async def nap(seconds: float) -> None:
            naps[0] += 1
            await asyncio.sleep(0.001)

        async with opened(memory_store) as store:
            await store.append(lease_topic("g", "t"),
                               json.dumps({"owner": "dead", "at": clock.now, "lease": 5.0}))
            await append_all(store, "t", events(8))
            recorder = Recorder()
            consumers = EventConsumers(store, FAST, {("g", "t"): recorder}, lease=5.0,
                                       sleep=nap, clock=clock)
            consumers.start()
            await until(lambda: naps[0] >= 20)  # many polls, all idle
            idle = len(recorder.applied)
            clock.now += 4.9
            naps[0] = 0
            await until(lambda: naps[0] >= 20)
            idle += len(recorder.applied)
            clock.now += 0.1  # the dead holder's lease has run out
            await until(lambda: consumers.processed["g"] == 8)
            await consumers.stop()
            return idle, (await consumers.lag())["g", "t"], recorder

    idle, lag, recorder = asyncio.run(main())
    assert idle == 0
    assert lag == 0
    assert recorder.order == list(range(1, 9))


def test_a_holder_whose_lease_ran_out_while_handling_does_not_commit(memory_store):
    """A batch that outlasts the lease is not committed by its late holder (someone else may
    hold the group by then): it comes again, and only the idempotent effect is right."""
    async def main() -> tuple[Recorder, list[int], int]:
        clock = ManualClock()
        recorder, commits = Recorder(), []

        async def slow_once(batch: list[tuple[int, str]]) -> None:
            if not recorder.batches:
                clock.now += 11.0  # longer than the lease
            await recorder(batch)

        async with opened(memory_store) as store:
            real_commit = store.commit

            async def commit(group: str, topic: str, offset: int) -> None:
                commits.append(offset)
                await real_commit(group, topic, offset)

            log = SimpleNamespace(append=store.append, read=store.read,
                                  end_offset=store.end_offset, committed=store.committed,
                                  commit=commit)
            consumers = EventConsumers(log, EventLogConfig(consumers=1, poll_interval=0.002),
                                       {("g", "t"): slow_once}, lease=10.0, clock=clock)
            await append_all(store, "t", events(3))
            consumers.start()
            await until(lambda: consumers.processed["g"] == 3)
            await consumers.stop()
            return recorder, commits, await store.committed("g", "t")

    recorder, commits, committed = asyncio.run(main())
    assert recorder.batches == [[1, 2, 3], [1, 2, 3]]
    assert commits == [3]
    assert committed == 3
    assert recorder.order == [1, 2, 3]


def test_after_a_clear_the_consumers_read_the_new_log_from_its_start(memory_store):
    """``Store.clear`` (``/admin/reset``) forgets events, offsets and the lease log: the
    consumers (two services, two tasks each, and a third started after the reset) read the new
    log from offset 1, still one at a time, even when the lease log has grown back past what a
    holder had read."""
    async def main() -> tuple[list[str], int]:
        seen: list[str] = []
        inside, most = [0], [0]

        async def record(batch: list[tuple[int, str]]) -> None:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            for _, payload in batch:
                await asyncio.sleep(0)
                seen.append(payload)
            inside[0] -= 1

        async with opened(memory_store) as one, opened(memory_store) as two:
            both = [EventConsumers(store, FAST, {("g", "t"): record}, lease=600.0)
                    for store in (one, two)]
            for consumers in both:
                consumers.start()
            await append_all(one, "t", ["a", "b"])
            await until(lambda: sum(c.processed["g"] for c in both) == 2)
            await one.clear()  # /admin/reset: events, offsets (and leases) forgotten
            for k in range(3):  # the lease log grows back: claims, released, claimed again
                await one.append(lease_topic("g", "t"), json.dumps(
                    {"owner": f"other{k}", "at": time.time(), "lease": 600.0}))
                await one.append(lease_topic("g", "t"), json.dumps(
                    {"owner": f"other{k}", "release": True}))
            late = EventConsumers(two, FAST, {("g", "t"): record}, lease=600.0)
            late.start()  # reads the lease log from its start: all released, so it claims
            both.append(late)
            await append_all(two, "t", [f"new{k}" for k in range(20)])
            await until(lambda: len(seen) == 22)
            await until(lambda: _zero(lambda: _lag(both[0])))
            for consumers in both:
                await consumers.stop()
        return seen, most[0]

    seen, most = asyncio.run(main())
    assert seen == ["a", "b"] + [f"new{k}" for k in range(20)]
    assert most == 1


# --- starting and stopping ----------------------------------------------------------------------

def test_stop_leaves_no_task_behind_and_is_idempotent(memory_store):
    async def main() -> tuple[int, int, set]:
        async with opened(memory_store) as store:
            recorder = Recorder()
            consumers = EventConsumers(store, EventLogConfig(consumers=3, poll_interval=0.002),
                                       {("g", "t"): recorder, ("h", "t"): recorder})
            consumers.start()
            started = len(consumers.tasks)
            with pytest.raises(RuntimeError, match="already running"):
                consumers.start()
            tasks = consumers.tasks
            await append_all(store, "t", events(3))
            await until(lambda: consumers.processed["h"] == 3)
            await consumers.stop()
            await consumers.stop()
            assert all(t.done() for t in tasks)
            consumers.start()  # and again
            await append_all(store, "t", events(2, start=4))
            await until(lambda: consumers.processed["g"] == 5)
            await consumers.stop()
            left = len(consumers.tasks)
            return started, left, asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(main()) == (6, 0, set())


def test_stop_lets_a_store_call_in_progress_finish(memory_store):
    """A consumer stopped in the middle of its commit finishes it (no transaction cut in the
    middle); one stopped in its handler is cancelled there."""
    async def main() -> tuple[int, list[str]]:
        async with opened(memory_store) as store:
            gate, calls = asyncio.Event(), []
            real_commit = store.commit

            async def commit(group: str, topic: str, offset: int) -> None:
                calls.append("commit")
                await gate.wait()
                await real_commit(group, topic, offset)
                calls.append("committed")

            log = SimpleNamespace(append=store.append, read=store.read,
                                  end_offset=store.end_offset, committed=store.committed,
                                  commit=commit)
            consumers = EventConsumers(log, EventLogConfig(consumers=1, poll_interval=0.002),
                                       {("g", "t"): Recorder()})
            await append_all(store, "t", events(3))
            consumers.start()
            await until(lambda: calls == ["commit"])
            stopping = asyncio.ensure_future(consumers.stop())
            await asyncio.sleep(0.01)
            gate.set()
            await stopping
            return await store.committed("g", "t"), calls

    assert asyncio.run(main()) == (3, ["commit", "committed"])


def test_stopping_and_starting_often_leaves_the_database_usable(new_store):
    """Stopped at any moment, over and over: no connection is left inside a transaction
    (the next write works) and every event is handled."""
    async def main() -> tuple[Recorder, int]:
        async with opened(new_store) as store:
            recorder = Recorder()
            consumers = EventConsumers(store, EventLogConfig(consumers=2, poll_interval=0.001,
                                                             batch=3), {("g", "t"): recorder})
            for k in range(25):
                consumers.start()
                await append_all(store, "t", events(2, start=2 * k + 1))
                await asyncio.sleep(0.001 * (k % 5))
                await consumers.stop()
            consumers.start()
            await until(lambda: len(recorder.applied) == 50)
            await until(lambda: _zero(lambda: _lag(consumers)))
            await consumers.stop()
            return recorder, await store.append("t", "after")

    recorder, offset = asyncio.run(main())
    assert recorder.order == list(range(1, 51))
    assert offset == 51


def test_start_needs_a_running_event_loop():
    consumers = EventConsumers(SimpleNamespace(), EventLogConfig(), {("g", "t"): Recorder()})
    with pytest.raises(RuntimeError, match="no running event loop"):
        consumers.start()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"handlers": {"g": Recorder()}}, r"\(group, topic\)"),
    ({"handlers": {("g", ""): Recorder()}}, r"\(group, topic\)"),
    ({"handlers": {("g", "t"): "not callable"}}, "async callable"),
    ({"config": {"consumers": 1}}, "config must be an EventLogConfig"),
    ({"lease": 0}, "lease must be"),
])
def test_bad_arguments_are_refused_naming_them(kwargs, message):
    arguments: dict[str, Any] = {"config": EventLogConfig(), "handlers": {("g", "t"): Recorder()}}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        EventConsumers(SimpleNamespace(), **arguments)


# --- the orders' receipts -----------------------------------------------------------------------

def test_order_receipts_record_each_order_once():
    state = SimpleNamespace(receipted=set())
    handle = order_receipts(state)
    batch = [(1, json.dumps({"order": 1, "request_id": "r1"})),
             (2, json.dumps({"order": 2, "request_id": None}))]
    asyncio.run(handle(batch))
    asyncio.run(handle(batch))  # delivered again: nothing more
    assert state.receipted == {1, 2}
    assert RECEIPTS == ("receipts", "orders")


@pytest.mark.parametrize("payload", ["not json", '{"no": 1}', '{"order": "1"}', "[1]"])
def test_a_payload_that_is_not_an_order_is_refused(payload):
    state = SimpleNamespace(receipted=set())
    with pytest.raises(ValueError, match="event 7 on 'orders'"):
        asyncio.run(order_receipts(state)([(6, '{"order": 6}'), (7, payload)]))
    assert state.receipted == set()  # nothing of the batch applied


def test_order_receipts_needs_a_set_to_record_in():
    with pytest.raises(ValueError, match="receipted must be a set"):
        order_receipts(SimpleNamespace())


def test_the_receipts_group_receipts_every_order_placed(memory_store):
    """The outbox end to end: ``place_order`` appends each order to "orders" in its own
    transaction; the "receipts" group records each one."""
    async def main() -> tuple[set[int], dict]:
        state = SimpleNamespace(receipted=set())
        async with opened(memory_store) as store:
            consumers = EventConsumers(store, FAST, {RECEIPTS: order_receipts(state)})
            consumers.start()
            for k in range(5):
                await store.place_order(request_id=f"r{k}", begun=None, answer=lambda n: Stored(
                    "f", 200, json.dumps({"order": n}).encode(), "application/json"))
            await until(lambda: len(state.receipted) == 5)
            await until(lambda: _zero(lambda: _lag(consumers)))
            await consumers.stop()
            return state.receipted, await consumers.lag()

    receipted, lag = asyncio.run(main())
    assert receipted == {1, 2, 3, 4, 5}
    assert lag == {RECEIPTS: 0}


async def _lag(consumers: EventConsumers) -> int:
    return sum((await consumers.lag()).values())


# --- two processes ------------------------------------------------------------------------------

_CHILD = """
import asyncio, os, sys
from atlas_sim import EventLogConfig, StoreConfig
from atlas_sim.service.store import open_store
from atlas_sim.service.eventlog import EventConsumers

url, out, stop = sys.argv[1:4]

async def main():
    store = open_store(StoreConfig(url=url), pool=None, lease=30.0)
    await store.open()
    with open(out, "a") as record:
        async def handle(batch):
            for offset, _ in batch:
                record.write(f"{offset}\\n")
            record.flush()
        consumers = EventConsumers(store, EventLogConfig(consumers=2, poll_interval=0.005,
                                                         batch=5), {("g", "t"): handle})
        consumers.start()
        while not os.path.exists(stop):
            await asyncio.sleep(0.01)
        await consumers.stop()
    await store.close()

asyncio.run(main())
"""


@pytest.mark.live
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_processes_in_one_group_share_the_work_without_overlap(kind, tmp_path, request):
    """Two service processes on one database, one group: the lease in the log keeps them from
    both handling an event (each offset is handled by one process, once)."""
    import subprocess
    import sys
    from pathlib import Path

    url = (f"sqlite://{tmp_path / 'events.db'}" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    root = str(Path(__file__).resolve().parents[2])
    env = {**__import__("os").environ, "PYTHONPATH": root}
    outs = [tmp_path / f"out{k}.txt" for k in range(2)]
    stop = tmp_path / "stop"

    async def produce() -> None:
        async with opened(_factory(StoreConfig(url=url))) as store:
            await store.append("warm-up", "x")  # the schema exists before the children start
            children.extend(subprocess.Popen([sys.executable, "-c", _CHILD, url, str(out),
                                              str(stop)], env=env) for out in outs)
            for k in range(20):
                await append_all(store, "t", events(10, start=10 * k + 1))
                await asyncio.sleep(0.02)

            def handled() -> list[int]:
                return [int(line) for out in outs if out.exists()
                        for line in out.read_text().split()]

            await until(lambda: len(handled()) >= 200)
            await asyncio.sleep(0.1)  # any duplicate would show by now

    children: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(produce())
    finally:
        stop.touch()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    handled = [int(line) for out in outs for line in out.read_text().split()]
    assert sorted(handled) == list(range(1, 201))
    assert [child.returncode for child in children] == [0, 0]


# --- the service (the lead's wiring: lifespan, /admin/orders, /admin/reset, /metrics) -------

@pytest.mark.live
def test_the_service_receipts_its_orders_and_shows_the_lag(tmp_path):
    import dataclasses
    import threading

    import httpx

    from atlas_sim.config import Settings
    from atlas_sim.service import LiveServer, create_app

    server_config = dataclasses.replace(
        Settings().server_config(), store=StoreConfig(url=f"sqlite://{tmp_path / 'a.db'}"),
        events=EventLogConfig(consumers=2, poll_interval=0.01))
    threads = threading.active_count()
    app = create_app(Settings(), server=server_config)
    with LiveServer(app, name="eventlog-receipts") as server, \
            httpx.Client(base_url=server.url) as client:
        for _ in range(5):
            assert client.post("/api/orders?service_time=0").status_code == 200

        def lag() -> float:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith('atlas_api_event_consumer_lag{group="receipts"'):
                    return float(line.split()[-1])
            raise AssertionError("no consumer lag in /metrics")

        asyncio.run(until(lambda: client.get("/admin/orders").json()["receipted"] == 5))
        asyncio.run(until(lambda: lag() == 0))
        client.post("/admin/reset")
        assert client.get("/admin/orders").json() == {"applied": 0, "keys": 0, "receipted": 0}
    assert app.state.atlas.events is None  # stopped with the server
    assert threading.active_count() == threads
