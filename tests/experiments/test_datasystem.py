"""The data-system experiments beyond the pool's live twin (``experiments.datasystem``): the
simulated client honours the pool's ``Retry-After`` as the live load generator does, the
summaries and tables, the crash and consumer-lag demonstrations (live), and bad input."""

from __future__ import annotations

import dataclasses
import time

import pytest

from atlas_sim import ClientPolicy, Load, ServerConfig, StoreConfig
from atlas_sim.experiments.datasystem import (
    HoldCalibration,
    pool_exhaustion_scenario,
    pool_exhaustion_twin,
    pool_intervals,
    pool_table,
)
from atlas_sim.policies import Backoff, PoolConfig, RetryPolicy
from atlas_sim.sim import Scenario, simulate
from atlas_sim.workload import Distribution

CONSTANT_ZERO = Distribution(mean=0.0, kind="constant")


def _retried_orders(*, retry_after: int, honor: bool):
    """Two orders at once on a pool of 1 whose query holds 1 s and whose timeout is 0.1 s:
    the second times out (503) at 0.1 s and retries after a 10 ms backoff, or after the
    server's Retry-After when honoured."""
    store = StoreConfig(query_time=Distribution(mean=1.0, kind="constant"))
    config = ServerConfig(workers=10, service_time=CONSTANT_ZERO, store=store,
                          pool=PoolConfig(size=1, timeout=0.1), retry_after=retry_after)
    client = ClientPolicy(timeout=None, retry=RetryPolicy(
        max_attempts=2, honor_retry_after=honor,
        backoff=Backoff(base=0.01, cap=0.01, jitter="none")))
    load = Load(rate=1e6, requests=2, process="constant")
    return simulate(Scenario(load=load, server=config, path="/api/orders", client=client))


def test_the_simulated_client_honours_the_pools_retry_after_on_its_503():
    attempts = _retried_orders(retry_after=3, honor=True).attempts
    second = attempts[attempts["attempt"] == 2]
    assert len(second) == 1
    first_503 = attempts[(attempts["attempt"] == 1) & (attempts["status"] == 503)]
    assert float(second["t_start"].iloc[0] - first_503["t_end"].iloc[0]) == pytest.approx(3.0)


def test_without_honouring_it_the_backoff_alone_counts():
    attempts = _retried_orders(retry_after=3, honor=False).attempts
    second = attempts[attempts["attempt"] == 2]
    first_503 = attempts[(attempts["attempt"] == 1) & (attempts["status"] == 503)]
    assert float(second["t_start"].iloc[0] - first_503["t_end"].iloc[0]) == pytest.approx(0.01)


def test_a_503_of_a_server_that_is_down_carries_no_retry_after():
    from atlas_sim import Fault
    config = ServerConfig(workers=1, service_time=Distribution(mean=0.01, kind="constant"),
                          retry_after=3)
    client = ClientPolicy(timeout=None, retry=RetryPolicy(
        max_attempts=2, honor_retry_after=True,
        backoff=Backoff(base=0.01, cap=0.01, jitter="none")))
    run = simulate(Scenario(load=Load(rate=1e6, requests=1, process="constant"),
                            server=config, client=client,
                            faults=(Fault(start=0.0, end=0.005, capacity=0.0),)))
    attempts = run.attempts
    assert list(attempts["status"]) == [503, 200]
    assert float(attempts["t_start"].iloc[1] - attempts["t_end"].iloc[0]) == pytest.approx(0.01)


# -- the twin, intervals and table (simulated) ------------------------------------------------

POOL = PoolConfig(size=2, timeout=0.1)
QUERY = Distribution(mean=0.05, kind="constant")


def test_the_calibrated_twin_holds_longer_and_pays_the_round_trip():
    calibration = HoldCalibration(round_trip=0.002, hold_overhead=0.003)
    twin = pool_exhaustion_twin(rate=40, requests=50, pool=POOL, query_time=QUERY, seed=1,
                                calibration=calibration)
    plain = pool_exhaustion_scenario(rate=40, requests=50, pool=POOL, query_time=QUERY, seed=1)
    hold = twin.server.store.query_time
    assert hold.kind == "constant" and hold.mean == pytest.approx(0.053)
    assert twin.round_trip == 0.002
    assert dataclasses.replace(twin, round_trip=0.0,
                               server=plain.server) == plain
    assert pool_exhaustion_twin(rate=40, requests=50, pool=POOL, query_time=QUERY,
                                seed=1) == plain


def test_pool_intervals_hold_the_run_and_pool_table_puts_the_worlds_side_by_side():
    run = simulate(pool_exhaustion_scenario(rate=40, requests=400, pool=POOL,
                                            query_time=QUERY, seed=3))
    intervals = pool_intervals(run, pool=POOL)
    from atlas_sim.experiments.datasystem import pool_summary
    summary = pool_summary(run, pool=POOL)
    for name, (low, high) in intervals.items():
        assert low <= summary[name] <= high, name
    assert intervals["timed_out"][0] < summary["timed_out"] < intervals["timed_out"][1]
    table = pool_table(run, run, pool=POOL)
    assert table["live inside"].all()
    assert table.loc["granted: wait p99 (ms)", "simulated"] == pytest.approx(
        1e3 * summary["wait_p99"])


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"confidence": 0.2}, "confidence"), ({"batches": 1}, "batches"),
    ({"resamples": 5}, "resamples")])
def test_pool_intervals_refuse_bad_input_by_name(kwargs, name):
    run = simulate(pool_exhaustion_scenario(rate=40, requests=50, pool=POOL,
                                            query_time=QUERY, seed=3))
    with pytest.raises(ValueError, match=name):
        pool_intervals(run, **kwargs)


def test_the_twin_refuses_a_calibration_of_another_kind():
    with pytest.raises(ValueError, match="calibration"):
        pool_exhaustion_twin(rate=40, requests=50, pool=POOL, query_time=QUERY, seed=1,
                             calibration=0.003)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"orders": 0}, "orders"), ({"orders": 10, "kill_after": 11}, "kill_after"),
    ({"clients": 0}, "clients"), ({"lease": 0}, "lease"),
    ({"store_url": "memory://crash"}, "store_url")])
def test_crash_run_refuses_bad_input_by_name_before_starting_anything(kwargs, name):
    from atlas_sim.experiments.datasystem import crash_run
    with pytest.raises(ValueError, match=name):
        crash_run(**kwargs)


# -- consumer lag (live) -----------------------------------------------------------------------

@pytest.mark.live
def test_a_slow_consumer_group_falls_behind_drains_and_resumes_from_its_committed_offset():
    from atlas_sim.experiments.datasystem import consumer_lag_demo
    frame = consumer_lag_demo(orders=60, consumers=2, handler_time=0.01, seed=1,
                              store_url="memory://consumer-lag-test")
    info = frame.attrs
    assert info["orders"] == 120 and info["receipted"] == 120  # every order receipted
    first = frame[frame["phase"] == "first round"]["lag"]
    after = frame[frame["phase"] == "after the restart"]["lag"]
    assert first.max() >= 20  # orders came faster than the slowed group drained them
    assert first.iloc[-1] == 0 and after.iloc[-1] == 0  # ... and then it caught up, twice
    # the new consumers resumed from the committed offset: they processed exactly what was
    # left (nothing before it again, nothing skipped)
    assert info["committed_at_kill"] + info["processed_after_restart"] == 120
    assert info["lag_at_restart"] == info["processed_after_restart"] > 0


def test_slow_handler_and_the_demo_refuse_bad_input_by_name():
    from atlas_sim.experiments.datasystem import consumer_lag_demo, slow_handler

    async def handler(batch):
        return None
    with pytest.raises(ValueError, match="handler_time"):
        slow_handler(handler, -1.0)
    for kwargs, name in (({"orders": 0}, "orders"), ({"consumers": 0}, "consumers"),
                         ({"handler_time": -1}, "handler_time"), ({"rate": 0}, "rate")):
        with pytest.raises(ValueError, match=name):
            consumer_lag_demo(**kwargs)


# -- nothing left behind (live) ---------------------------------------------------------------

def _footprint() -> tuple[int, int, int, int, list[str]]:
    import glob
    import os
    import tempfile
    import threading

    from atlas_sim.service import leftovers, running_programs
    children = len(os.listdir(f"/proc/{os.getpid()}/task"))  # threads, seen by the kernel
    temp = len(glob.glob(os.path.join(tempfile.gettempdir(), "atlas-crash-*")))
    processes = sum(1 for pid in os.listdir("/proc") if pid.isdigit()
                    and _parent(pid) == os.getpid())
    return threading.active_count(), children, processes, temp + len(running_programs()), \
        leftovers()


def _parent(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.live
def test_the_live_experiments_leave_no_thread_process_port_or_directory_behind():
    from atlas_sim.experiments.datasystem import (
        consumer_lag_demo,
        crash_run,
        pool_exhaustion_live,
    )

    def once() -> None:
        crash_run(orders=10, kill_after=3, lease=0.5)
        pool_exhaustion_live(rate=40, requests=20, pool=POOL, query_time=QUERY, seed=1,
                             store_url="memory://footprint")
        consumer_lag_demo(orders=10, handler_time=0.0, store_url="memory://footprint-lag")

    once()  # whatever a first run starts once for good (an interpreter's own helpers)
    before = _footprint()
    once()
    deadline = time.monotonic() + 5  # a bound on the wait, not an assertion on time
    after = _footprint()
    while (after[0] > before[0] or after[1] > before[1]) and time.monotonic() < deadline:
        # an aiosqlite worker, or an executor's native thread, ends a moment after its
        # connection or loop closed (a fresh-clone run counted one kernel thread still there)
        time.sleep(0.05)
        after = _footprint()
    assert after[0] <= before[0]  # Python threads: none left (an older one may have ended)
    assert after[1] <= before[1]  # the kernel's (native helpers may end, none may stay)
    # child processes, programs and directories: as many as before (a session's PostgreSQL,
    # started by a fixture, may run throughout); no Atlas server or thread still running
    assert after[2:4] == before[2:4] and after[-1] == before[-1] == []
