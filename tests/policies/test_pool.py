"""The connection pool: each rule on a ManualClock, a property test over random sequences, and
the same script driven on asyncio and on SimPy giving the same outcomes (one policy, two
clocks)."""

from __future__ import annotations

import asyncio

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_sim.clocks import ManualClock
from atlas_sim.policies import (
    ConnectionPool,
    Granted,
    PoolConfig,
    Queued,
    Refused,
    TimedOut,
)


def make(size=2, max_waiting=0, timeout=5.0):
    clock = ManualClock()
    return PoolConfig(size=size, max_waiting=max_waiting, timeout=timeout).build(clock), clock


# --- config ---------------------------------------------------------------------------------

def test_the_defaults_are_psycopg_pools():
    assert PoolConfig() == PoolConfig(size=4, max_waiting=0, timeout=30.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 0}, r"size must be an integer >= 1 and <= 10000, got 0"),
    ({"size": 2.5}, r"size must be an integer"),
    ({"max_waiting": -1}, r"max_waiting must be an integer >= 0 and <= 1e\+06, got -1"),
    ({"timeout": 0}, r"timeout must be a number > 0 and <= 3600, got 0"),
    ({"timeout": float("nan")}, r"timeout must be a finite number"),
])
def test_bad_settings_name_the_field_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PoolConfig(**kwargs)


def test_a_config_is_keyword_only_and_frozen_and_builds_fresh_pools():
    with pytest.raises(TypeError):
        PoolConfig(2)  # type: ignore[misc]
    config = PoolConfig(size=1)
    with pytest.raises(AttributeError):
        config.size = 3  # type: ignore[misc]
    a, b = config.build(ManualClock()), config.build(ManualClock())
    assert isinstance(a.acquire(), Granted)
    assert (a.in_use, b.in_use, b.idle) == (1, 0, 1)
    with pytest.raises(ValueError, match="config must be a PoolConfig"):
        ConnectionPool(object(), clock=ManualClock())  # type: ignore[arg-type]


# --- each rule ------------------------------------------------------------------------------

def test_idle_connections_are_granted_at_once_then_clients_queue_with_a_deadline():
    pool, clock = make(size=2, timeout=5.0)
    clock.set(1.0)
    assert pool.acquire() == Granted(1, 0.0)
    assert pool.acquire() == Granted(2, 0.0)
    assert pool.acquire() == Queued(3, 6.0)
    assert pool.acquire(timeout=0.5) == Queued(4, 1.5)  # getconn(timeout=) overrides
    assert (pool.in_use, pool.idle, pool.waiting, pool.waiters()) == (2, 0, 2, (3, 4))
    assert (pool.requests, pool.queued, pool.acquisitions) == (4, 2, 2)
    assert pool.deadline(3) == 6.0 and pool.deadline(1) is None
    with pytest.raises(ValueError, match="timeout must be a number > 0"):
        pool.acquire(timeout=-1)


def test_max_waiting_refuses_the_next_client_and_zero_means_unbounded():
    pool, _ = make(size=1, max_waiting=2)
    pool.acquire()
    assert isinstance(pool.acquire(), Queued) and isinstance(pool.acquire(), Queued)
    assert pool.acquire() == Refused(4, 2)  # psycopg_pool: TooManyRequests
    assert (pool.waiting, pool.refusals, pool.requests) == (2, 1, 4)
    unbounded, _ = make(size=1, max_waiting=0)
    unbounded.acquire()
    assert all(isinstance(unbounded.acquire(), Queued) for _ in range(1000))


def test_release_hands_the_connection_to_the_oldest_waiter_and_records_its_wait():
    pool, clock = make(size=1)
    pool.acquire()
    clock.set(1.0)
    pool.acquire()
    clock.set(2.0)
    pool.acquire()
    clock.set(3.5)
    assert pool.release() == Granted(2, 2.5)
    assert pool.release() == Granted(3, 1.5)
    assert (pool.in_use, pool.waiting, pool.acquisitions) == (1, 0, 3)
    assert pool.release() is None  # nobody waits: back to the idle set
    assert (pool.in_use, pool.idle) == (0, 1)
    assert pool.wait_seconds_total == 4.0
    assert pool.take_wait_times() == [2.5, 1.5]
    assert pool.take_wait_times() == []
    with pytest.raises(RuntimeError, match="no connection in use"):
        pool.release()


def test_a_waiter_past_its_deadline_times_out_and_leaves_the_queue():
    pool, clock = make(size=1, timeout=2.0)
    pool.acquire()
    pool.acquire()                      # 2: deadline 2
    clock.set(1.0)
    pool.acquire()                      # 3: deadline 3
    clock.set(2.0)
    assert pool.expire(2) == TimedOut(2, 2.0)  # psycopg_pool: PoolTimeout
    assert pool.expire(2) is None       # a stale timer is ignored
    assert (pool.timeouts, pool.waiting) == (1, 1)
    assert pool.release() == Granted(3, 1.0)  # the next one gets it
    assert pool.expire(3) is None       # granted before its timer fired


def test_expire_due_times_out_every_waiter_whose_deadline_has_come():
    pool, clock = make(size=1, timeout=2.0)
    pool.acquire()
    pool.acquire()                      # deadline 2
    pool.acquire(timeout=1.0)           # deadline 1
    pool.acquire()                      # deadline 2
    clock.set(1.5)
    assert pool.expire_due() == (TimedOut(3, 1.5),)
    clock.set(2.0)
    assert pool.expire_due() == (TimedOut(2, 2.0), TimedOut(4, 2.0))
    assert (pool.waiting, pool.timeouts) == (0, 3)


def test_a_cancelled_waiter_leaves_the_queue_and_is_not_a_timeout():
    pool, _ = make(size=1, max_waiting=1)
    pool.acquire()
    pool.acquire()
    assert isinstance(pool.acquire(), Refused)
    assert pool.cancel(2) is True
    assert pool.cancel(2) is False and pool.cancel(1) is False  # 1 holds a connection
    assert (pool.waiting, pool.cancelled, pool.timeouts) == (0, 1, 0)
    assert isinstance(pool.acquire(), Queued)  # its place is free again
    assert pool.release() == Granted(4, 0.0)


# --- property ----------------------------------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("acquire"), st.sampled_from([None, 0.5, 3.0])),
    st.tuples(st.just("release"), st.none()),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.25, 1.0, 2.5])),
    st.tuples(st.just("expire_due"), st.none()),
    st.tuples(st.just("expire"), st.integers(0, 30)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 3), max_waiting=st.integers(0, 3), ops=OPS)
def test_any_sequence_keeps_the_bounds_fifo_and_ends_each_ticket_once(size, max_waiting, ops):
    pool, clock = make(size=size, max_waiting=max_waiting, timeout=2.0)
    ends: dict[int, str] = {}
    queue: list[int] = []     # the model's waiters, oldest first
    holders = immediate = 0

    def end(ticket, how):
        assert ticket not in ends, f"ticket {ticket} ended twice"
        ends[ticket] = how

    for op, arg in ops:
        if op == "acquire":
            decision = pool.acquire(timeout=arg)
            if isinstance(decision, Granted):
                assert holders < size and not queue
                end(decision.ticket, "granted")
                holders += 1
                immediate += 1
            elif isinstance(decision, Queued):
                assert holders == size
                queue.append(decision.ticket)
            else:
                assert max_waiting and len(queue) == max_waiting
                end(decision.ticket, "refused")
        elif op == "release" and holders:
            granted = pool.release()
            if queue:
                assert granted is not None and granted.ticket == queue.pop(0)  # FIFO
                assert granted.waited >= 0
                end(granted.ticket, "granted")
            else:
                assert granted is None
                holders -= 1
        elif op == "advance":
            clock.advance(arg)
        elif op == "expire_due":
            for out in pool.expire_due():
                queue.remove(out.ticket)
                assert out.waited >= 0.5  # the shortest timeout given
                end(out.ticket, "timed out")
            assert all(pool.deadline(t) > clock() for t in queue)
        elif op == "expire":
            out = pool.expire(arg)
            assert (out is not None) == (arg in queue)
            if out is not None:
                queue.remove(arg)
                end(arg, "timed out")
        elif op == "cancel":
            assert pool.cancel(arg) == (arg in queue)
            if arg in queue:
                queue.remove(arg)
                end(arg, "cancelled")
        # the bounds and the counts, after every step
        assert pool.in_use == holders <= size and pool.idle == size - holders
        assert pool.waiters() == tuple(queue)
        assert not max_waiting or pool.waiting <= max_waiting
        assert not (pool.idle and pool.waiting)
        kinds = list(ends.values())
        assert pool.acquisitions == kinds.count("granted")
        assert pool.refusals == kinds.count("refused")
        assert pool.timeouts == kinds.count("timed out")
        assert pool.cancelled == kinds.count("cancelled")
        assert pool.requests == len(ends) + len(queue)
        assert pool.queued == pool.requests - pool.refusals - immediate
    # every ticket ends exactly once: drain the rest
    for ticket in list(queue):
        assert pool.expire(ticket) is not None
        end(ticket, "timed out")
    assert sorted(ends) == list(range(1, pool.requests + 1))


# --- two clocks --------------------------------------------------------------------------------

# (arrive, hold) per client in time units; pool of 2, at most 2 waiting, timeout 3 units.
# Expected: 1, 2 at once; 3 waits for 1's release; 4 times out; 5 is refused (3 and 4 wait);
# 6 and 7 wait and are served in turn. No two events fall on the same instant.
SCRIPT = [(0.0, 4.0), (0.0, 10.0), (1.5, 2.0), (2.0, 1.0), (2.5, 1.0), (5.5, 1.0), (6.5, 1.0)]
CONFIG = dict(size=2, max_waiting=2)
TIMEOUT = 3.0
EXPECTED = [(1, "granted"), (2, "granted"), (3, "queued"), (4, "queued"), (5, "refused"),
            (3, "granted"), (4, "timed out"), (6, "queued"), (6, "granted"), (7, "queued"),
            (7, "granted")]


def run_on_asyncio(unit: float) -> tuple[list[tuple[int, str]], ConnectionPool]:
    """A tiny asyncio driver: waits are ``asyncio.sleep`` and futures, time is the loop's."""
    log: list[tuple[int, str]] = []

    async def main() -> ConnectionPool:
        loop = asyncio.get_running_loop()
        pool = PoolConfig(timeout=TIMEOUT * unit, **CONFIG).build(loop.time)
        granted: dict[int, asyncio.Future[Granted]] = {}

        def release() -> None:
            handed = pool.release()
            if handed is not None:
                granted.pop(handed.ticket).set_result(handed)

        async def client(arrive: float, hold: float) -> None:
            await asyncio.sleep(arrive * unit)
            decision = pool.acquire()
            if isinstance(decision, Queued):
                log.append((decision.ticket, "queued"))
                future = granted[decision.ticket] = loop.create_future()
                done, _ = await asyncio.wait({future}, timeout=decision.deadline - loop.time())
                if not done:
                    timed_out = pool.expire(decision.ticket)
                    assert timed_out is not None
                    granted.pop(decision.ticket)
                    log.append((decision.ticket, "timed out"))
                    return
                log.append((decision.ticket, "granted"))
            elif isinstance(decision, Refused):
                log.append((decision.ticket, "refused"))
                return
            else:
                log.append((decision.ticket, "granted"))
            await asyncio.sleep(hold * unit)
            release()

        await asyncio.gather(*(client(a, h) for a, h in SCRIPT))
        return pool

    return log, asyncio.run(main())


def run_on_simpy() -> tuple[list[tuple[int, str]], ConnectionPool]:
    """A tiny SimPy driver: waits are ``env.timeout`` and events, time is ``env.now``."""
    env = simpy.Environment()
    pool = PoolConfig(timeout=TIMEOUT, **CONFIG).build(lambda: env.now)
    granted: dict[int, simpy.Event] = {}
    log: list[tuple[int, str]] = []

    def release() -> None:
        handed = pool.release()
        if handed is not None:
            granted.pop(handed.ticket).succeed(handed)

    def client(arrive: float, hold: float):
        yield env.timeout(arrive)
        decision = pool.acquire()
        if isinstance(decision, Queued):
            log.append((decision.ticket, "queued"))
            event = granted[decision.ticket] = env.event()
            yield event | env.timeout(decision.deadline - env.now)
            if not event.triggered:
                timed_out = pool.expire(decision.ticket)
                assert timed_out is not None
                granted.pop(decision.ticket)
                log.append((decision.ticket, "timed out"))
                return
            log.append((decision.ticket, "granted"))
        elif isinstance(decision, Refused):
            log.append((decision.ticket, "refused"))
            return
        else:
            log.append((decision.ticket, "granted"))
        yield env.timeout(hold)
        release()

    for arrive, hold in SCRIPT:
        env.process(client(arrive, hold))
    env.run()
    return log, pool


def counts(pool: ConnectionPool) -> tuple[int, ...]:
    return (pool.requests, pool.queued, pool.acquisitions, pool.timeouts, pool.refusals,
            pool.cancelled, pool.in_use, pool.waiting)


def test_the_same_script_gives_the_same_outcomes_on_simpy_and_on_asyncio():
    sim_log, sim_pool = run_on_simpy()
    assert sim_log == EXPECTED
    assert sim_pool.take_wait_times() == pytest.approx([2.5, 0.5, 0.5])  # 3, 6, 7
    # seconds per time unit live: the nearest two events are 0.5 units (100 ms) apart, far
    # beyond a busy host's timer lateness, so the order of events is the script's
    unit = 0.2
    live_log, live_pool = run_on_asyncio(unit)
    assert live_log == sim_log
    assert counts(live_pool) == counts(sim_pool) == (7, 4, 5, 1, 1, 0, 0, 0)
