"""The load generator's closed loop (``Load(clients=...)``), a stall played on the live service,
and two generators at once on one clock."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from atlas_sim.config import Settings
from atlas_sim.service.loadgen import blocking, run_load, run_load_async
from atlas_sim.workload import Distribution, Fault, Load, request_inputs
from tests.service.support import start_server

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1

WORK = "/api/work?service_time=0.001"


@pytest.fixture(scope="module")
def server():
    server, _ = start_server(Settings(http_timeout=5), workers=1,
                             service_time=Distribution(mean=0.01, kind="constant"))
    yield server
    server.stop()


def most_in_flight(requests) -> int:
    """The largest number of requests in flight at once (sent, not yet answered)."""
    edges = np.concatenate([np.c_[requests["t_start"], np.ones(len(requests))],
                            np.c_[requests["t_end"], -np.ones(len(requests))]])
    edges = edges[np.lexsort((edges[:, 1], edges[:, 0]))]  # an end before a start at a tie
    return int(np.cumsum(edges[:, 1]).max())


def test_a_closed_loop_keeps_one_request_per_client_in_flight(server):
    # 3 clients, no think time, one 10 ms slot: each client always has exactly one request
    # out, so the service always has 3 (one at work, two queued) and never more.
    result = run_load(server.url, load=Load(clients=3, think_time=0.0, synchronized=True,
                                            duration=0.5), progress=False)
    req = result.requests
    assert result.meta["loop"] == "closed" and result.meta["scheduled"] is None
    assert req["ok"].all() and len(req) >= 10
    assert most_in_flight(req) == 3
    assert (result.attempts["queue_wait"] > 0.005).mean() > 0.5  # it queues behind the others
    # latency counts from the actual send: the "schedule" is the send itself, so the lag is
    # only the generator's own bookkeeping (microseconds; the median, since a busy host can
    # delay any one send by milliseconds: a maximum of 5.2 ms was seen on a shared machine)
    assert np.nanmedian(result.meta["send_lag"]) < 0.001
    assert (req["t_start"].diff().dropna() >= 0).all()  # rows in the order sent
    assert result.duration == 0.5 and req["t_start"].max() < 0.5


def test_a_closed_loops_requests_carry_their_inputs_in_the_order_sent(server):
    # A closed loop has no schedule: its requests take workload.request_inputs in the order
    # they are sent, as the simulator's closed-loop requests do, drawing on as they go.
    result = run_load(server.url, load=Load(clients=2, think_time=0.0, duration=0.3),
                      faults=[Fault(start=0.0, bad_input_rate=0.5)], path=WORK, seed=4,
                      progress=False)
    req = result.requests
    bad = request_inputs(4, len(req)) < 0.5
    assert list(req["status"]) == [500 if b else 200 for b in bad] and bad.any()


def test_an_open_loop_run_says_so(server):
    result = run_load(server.url, load=Load(rate=50, requests=3), path=WORK, progress=False)
    assert result.meta["loop"] == "open" and result.meta["scheduled"] == 3


def test_two_generators_share_one_clock_and_one_stall():
    # Both generators at once (20 requests/s on a schedule; 2 clients thinking 20 ms), the
    # open-loop run playing a stall from 0.4 s to 0.8 s. The closed loop records one stalled
    # request per client; every open-loop request sent during the stall waits for its end.
    server, _ = start_server(Settings(http_timeout=5), workers=2)
    stall = Fault(start=0.4, end=0.8, stall=True, name="pause")
    try:
        async def both():
            start_at = time.monotonic() + 0.3
            return await asyncio.gather(
                run_load_async(server.url, load=Load(rate=20.0, duration=1.2, process="constant"),
                               faults=[stall], path=WORK, progress=False, start_at=start_at),
                run_load_async(server.url, load=Load(clients=2, think_time=0.02, duration=1.2),
                               path=WORK, progress=False, server_events=False,
                               start_at=start_at))

        opened, closed = blocking(both)()
    finally:
        server.stop()
    assert opened.meta["origin_monotonic"] == closed.meta["origin_monotonic"]  # one time 0
    assert (opened.meta["loop"], closed.meta["loop"]) == ("open", "closed")
    events = opened.events[opened.events["kind"] == "fault"]
    assert list(events["detail"]) == ["start", "end"] and events["reason"].iloc[0] == (
        "server stalled")
    # The stall's edges as the service switched them (a busy machine may switch late: no
    # assertion on how late; every check below is relative to the recorded edges).
    began, ended = (float(t) for t in events["time"])
    assert 0.4 <= began < ended
    o, c = opened.requests, closed.requests
    assert o["ok"].all() and c["ok"].all()
    # open-loop requests sent well inside the stall are answered only when it is lifted
    during = o[(o["t_start"] > began) & (o["t_start"] < ended - 0.05)]
    assert len(during) >= int(20 * (ended - began)) - 3
    assert (during["t_end"] >= ended - 0.05).all()
    # each client was in flight or thinking (20 ms) when the stall began, so each sent one
    # request that waited for about the whole stall: the two in flight at its middle
    middle = (began + ended) / 2
    stalled = c[(c["t_start"] < middle) & (c["t_end"] > middle)]
    assert len(stalled) == 2 and (stalled["latency"] > (ended - began) - 0.1).all()
    assert most_in_flight(c) <= 2
