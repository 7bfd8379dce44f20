"""The load generator drives a hedged client (issue 21, item 6): each copy an attempt row with
its instance, the losers cancelled (their connections closed, so the server counts the client
gone, 499) and recorded 499, the client timeout per copy, open and closed loops, and the drain
deadline.

Two instances make the timing unambiguous: instance 0 takes 0.3 s on every request, instance 1
2 ms, and ``NextInstance()`` sends copy k of request i to instance (i + k - 1) mod 2."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from atlas_sim.policies import ClientPolicy, HedgePolicy, Status
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import Cluster, run_load
from atlas_sim.workload import Distribution, Load
from tests.service.raw_http import requests_counted, settle

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1

SLOW, FAST = 0.3, 0.002
DELAY = 0.05  # well past the fast instance's answer, well before the slow one's


def constant(seconds: float, workers: int = 8) -> ServerConfig:
    return ServerConfig(workers=workers, service_time=Distribution(mean=seconds, kind="constant"))


def hedged(delay: float = DELAY, **kwargs) -> ClientPolicy:
    return ClientPolicy(hedge=HedgePolicy(delay=delay), **kwargs)


@pytest.fixture(scope="module")
def slow_and_fast():
    # services and generator share this process: a full garbage collection of what earlier
    # tests left stalls both, and a stall longer than SLOW - DELAY lets the slow copy win
    # (seen once in a full run); the objects made so far are set aside meanwhile
    gc.collect()
    gc.freeze()
    try:
        with Cluster([constant(SLOW), constant(FAST)], name="hedge-pair") as cluster:
            yield cluster
    finally:
        gc.unfreeze()


def copies(run, request_id: int):
    rows = run.attempts[run.attempts["request_id"] == request_id]
    return list(zip(rows["attempt"], rows["instance"], rows["status"], strict=True))


def test_a_hedge_goes_to_the_next_instance_and_the_loser_is_cancelled(slow_and_fast):
    slow_app = slow_and_fast.servers[0].app
    before = requests_counted(slow_app, endpoint="/api/work", status="499")
    run = run_load(slow_and_fast.urls[0], instances=slow_and_fast.urls[1:],
                   load=Load(rate=40.0, requests=20), client=hedged(), seed=1,
                   progress=False)
    assert (run.requests["status"] == 200).all()
    for i in range(20):
        rows = copies(run, i)
        if i % 2 == 0:  # first copy on the slow instance: the hedge, on the next one, wins
            assert rows == [(1, 0, Status.CANCELLED), (2, 1, 200)], (i, rows)
        else:  # first copy on the fast instance answers before the hedge is due
            assert rows[0] == (1, 1, 200), (i, rows)
            assert all(status == Status.CANCELLED for _, _, status in rows[1:]), (i, rows)
    cancelled = run.attempts[run.attempts["status"] == Status.CANCELLED]
    # a cancelled copy ends when it was cancelled: after the hedge left, before its 0.3 s
    assert (cancelled["latency"] >= DELAY).all()
    # its connection was closed: the server saw the client leave (499), answered no one
    settle(slow_app)
    left = requests_counted(slow_app, endpoint="/api/work", status="499") - before
    assert left == (cancelled["instance"] == 0).sum() >= 10
    assert run.requests["attempts"].tolist() == [
        len(copies(run, i)) for i in range(20)]


def test_each_copy_has_the_client_timeout_and_a_timeout_sends_the_next_copy_at_once(
        slow_and_fast):
    # the slow instance alone; the hedge delay is never reached: each copy times out first
    run = run_load(slow_and_fast.urls[0], load=Load(rate=20.0, requests=4),
                   client=hedged(delay=1.0, timeout=0.05), seed=2, progress=False)
    assert (run.requests["status"] == Status.CLIENT_TIMEOUT).all()
    for i in range(4):
        rows = run.attempts[run.attempts["request_id"] == i]
        assert rows["attempt"].tolist() == [1, 2]
        assert (rows["status"] == Status.CLIENT_TIMEOUT).all()
        assert (rows["latency"] >= 0.05).all()
        first, second = rows.iloc[0], rows.iloc[1]
        assert second["t_start"] >= first["t_end"]  # sent on the 599, not after 1 s
        assert second["t_start"] - first["t_start"] < 1.0


def test_a_closed_loop_client_hedges_too(slow_and_fast):
    run = run_load(slow_and_fast.urls[0], instances=slow_and_fast.urls[1:],
                   load=Load(clients=1, think_time=0.0, duration=0.6), client=hedged(),
                   seed=3, progress=False)
    assert run.meta["loop"] == "closed" and len(run.requests) >= 4
    assert (run.requests["status"] == 200).all()
    firsts = run.attempts[run.attempts["attempt"] == 1]
    on_slow = firsts[firsts["instance"] == 0]["request_id"]
    assert len(on_slow) >= 2
    for i in on_slow:
        assert copies(run, i) == [(1, 0, Status.CANCELLED), (2, 1, 200)]


def test_copies_still_out_at_the_drain_deadline_are_client_timeouts(slow_and_fast):
    run = run_load(slow_and_fast.urls[0], load=Load(rate=50.0, requests=2),
                   client=hedged(delay=0.01), drain_timeout=0.1, seed=4, progress=False)
    assert run.meta["unfinished"] == 2
    assert (run.requests["status"] == Status.CLIENT_TIMEOUT).all()
    assert run.attempts["attempt"].tolist() == [1, 2, 1, 2]
    assert (run.attempts["status"] == Status.CLIENT_TIMEOUT).all()
    assert not np.isnan(run.attempts["t_end"]).any()


def test_the_default_drain_deadline_leaves_room_for_every_copy(slow_and_fast):
    run = run_load(slow_and_fast.urls[0], load=Load(rate=10.0, requests=1),
                   client=hedged(delay=0.5, timeout=2.0), seed=5, progress=False)
    # two copies of 2 s each, one after the other at worst, and the delay: 2 x 2 + 0.5 + 1
    assert run.meta["drain_timeout"] == pytest.approx(5.5)
    assert run.requests["status"].tolist() == [200]
