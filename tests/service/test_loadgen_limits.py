"""The generator under careless use and at its edges (issue 20): the wait inside the client
counts in the verdict (item 6), the fault player is stopped before faults are switched off
(item 16), schedules too large to keep and paths that leave the service are refused (item 17).
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import numpy as np
import pytest

from atlas_sim import Fault, Load
from atlas_sim.experiments import live
from atlas_sim.service import run_load
from atlas_sim.service.loadgen import run as run_module
from atlas_sim.service.loadgen import run_load_async
from tests.helpers import free_port, live_shaped_run
from tests.service.support import start_server


@pytest.fixture
def server():
    server, _ = start_server(workers=4)
    try:
        yield server
    finally:
        server.stop()


# -- item 6: every wait before a request leaves the client is in the verdict ------------------

@pytest.mark.live
def test_a_wait_at_the_clients_own_connection_limit_is_not_on_schedule(server):
    # One connection, 30 requests of 50 ms each scheduled 25 ms apart: the service is never the
    # bottleneck (4 slots), the client's single connection is. The last request cannot leave
    # before 29 x 50 ms after the first, about 0.7 s after its scheduled time.
    path = "/api/work?service_time=0.05"
    limited = run_load(server.url, load=Load(rate=40.0, requests=30, process="constant"),
                       path=path, max_connections=1, progress=False, server_events=False)
    normal = run_load(server.url, load=Load(rate=40.0, requests=30, process="constant"),
                      path=path, progress=False, server_events=False)
    # generous tolerance: a busy test machine must not turn the normal run's verdict
    note = live.generator_note(limited, tolerance=0.25)
    assert "requests waited at the client for a connection (max_connections=1)" in note
    assert live.generator_note(normal, tolerance=0.25).endswith(", on schedule")
    assert f"p99 {1e3 * limited.meta['client_wait_p99']:.1f} ms" in note
    assert limited.meta["client_wait_p99"] > 0.5  # at least (29 x 50 - 29 x 25) ms, by design
    wait, pool = limited.meta["client_wait"], limited.meta["pool_wait"]
    assert wait.shape == pool.shape == (len(limited.attempts),)
    # each attempt's wait is part of its latency, and its wait at the pool part of that
    assert (wait <= limited.attempts["latency"].to_numpy() + 1e-9).all()
    assert (pool <= wait + 1e-9).all() and (pool >= 0).all()
    assert limited.meta["pool_wait_p99"] > 0.5


def test_the_verdict_names_where_requests_waited():
    def run(lag: float, wait: float | None, pool: float = 0.0):
        return live_shaped_run(send_lag=lag, client_wait=wait,
                               pool_wait=None if wait is None else pool, max_connections=4)

    assert live.generator_note(run(0.0005, 0.002)).endswith(
        "wait before leaving the client p50 2.0 ms, p99 2.0 ms, on schedule")
    waited = live.generator_note(run(0.0005, 1.5, pool=1.4))
    assert "waited at the client for a connection (max_connections=4)" in waited
    assert "p99 1500.0 ms" in waited and "on schedule" not in waited
    late = live.generator_note(run(0.02, 0.03, pool=0.02))
    assert "the generator started requests late" in late
    after = live.generator_note(run(0.0005, 0.03, pool=0.0005))
    assert "requests waited at the client after they started (connecting" in after
    # a run recorded before the client wait was measured: the send lag alone
    assert live.generator_note(run(0.0008, None)).endswith("p99 0.8 ms, on schedule")


# -- item 16: no fault switched on behind an interrupt ----------------------------------------

@pytest.mark.live
def test_an_interrupt_as_the_fault_player_is_about_to_apply_leaves_the_fault_off(
        server, monkeypatch):
    """Deterministic: the player's change to switch the outage on is held at the instant it is
    about to be sent; the run is cancelled there (what the kernel's stop button does through
    ``run_load``), and the change is released only once the run has switched its faults off.
    Stopped first, the player never sends it; stopped after the switch-off (48b2dfa's order),
    it switched the outage on for good."""
    real_put = httpx.AsyncClient.put
    state: dict[str, object] = {}

    async def put(self, url, *, json=None, **kwargs):
        if str(url).endswith("/admin/faults") and json == {"outage": True}:
            state["held"] = True
            state["run"].cancel()  # the interrupt, as the player is about to apply
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):
                    await state["off"].wait()
            # the player's change, applied at once (no await: a cancel cannot split it)
            return httpx.put(str(url), json=json, trust_env=False, timeout=5.0)
        response = await real_put(self, url, json=json, **kwargs)
        if str(url).endswith("/admin/faults") and json.get("outage") is False:
            state["off"].set()
            for _ in range(3):  # as a real request's awaits would: a player still there runs
                await asyncio.sleep(0)
        return response

    monkeypatch.setattr(httpx.AsyncClient, "put", put)

    async def main() -> None:
        state["off"] = asyncio.Event()
        state["run"] = asyncio.ensure_future(run_load_async(
            server.url, load=Load(rate=20.0, duration=3.0), path="/api/work?service_time=0",
            faults=[Fault(start=0.3, dependency_outage=True)], progress=False,
            server_events=False))
        with pytest.raises(asyncio.CancelledError):
            await state["run"]

    asyncio.run(main())
    faults = httpx.get(server.url + "/admin/faults", trust_env=False, timeout=5.0).json()
    assert state.get("held")
    assert faults["outage"] is False


# -- item 17: a schedule too large to keep, a path that leaves the service --------------------

def test_a_schedule_too_large_to_keep_is_refused_before_it_is_drawn(monkeypatch):
    def drawn(self, seed):
        raise AssertionError("the schedule was drawn")

    monkeypatch.setattr(Load, "schedule", drawn)
    url = f"http://127.0.0.1:{free_port()}"
    for load in (Load(rate=1e6, duration=60.0),  # tens of millions
                 Load(rate=2e5, requests=150_000),
                 Load(rate=10.0, duration=20_000.0, steps=((10.0, 1000.0),))):
        with pytest.raises(ValueError, match=r"load must schedule at most 100,000 requests per "
                                             r"run \(rate x duration, or requests\)"):
            run_load(url, load=load, progress=False)


def test_the_expected_count_is_rate_times_duration_step_by_step():
    assert run_module.expected_requests(Load(rate=100.0, duration=10.0)) == 1000
    assert run_module.expected_requests(Load(rate=100.0, duration=10.0, requests=50)) == 50
    assert run_module.expected_requests(Load(rate=100.0, requests=70)) == 70
    steps = Load(rate=10.0, duration=10.0, steps=((4.0, 100.0), (8.0, 0.0)))
    assert run_module.expected_requests(steps) == pytest.approx(10 * 4 + 100 * 4)
    assert run_module.MAX_REQUESTS == 100_000


@pytest.mark.parametrize("path", [
    "@evil.example/x", "@127.0.0.2:9/x", "//other.example/x", "api/work", "", "/api work",
    "/x#fragment", "/\\evil", "/x\n", ":8080/x", ".evil.example/x",
])
def test_a_path_that_is_not_a_path_on_the_service_is_refused(path, monkeypatch):
    def drive(job, **kwargs):
        raise AssertionError(f"the load was sent to {job.target!r}")

    monkeypatch.setattr(run_module, "drive", drive)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match=r"^path must"):
        run_load(url, load=Load(rate=10.0, requests=1), path=path, progress=False,
                 warm_up=False)
    with pytest.raises(ValueError, match=r"^path must"):  # the other instances too
        run_load(url, instances=[f"http://127.0.0.1:{free_port()}"],
                 load=Load(rate=10.0, requests=1), path=path, progress=False, warm_up=False)


def test_good_paths_pass_the_check():
    for path in ("/api/work", "/api/work?service_time=0.01", "/", "/a/b?x=1&y=%2F"):
        run_module._check_path(path, "http://127.0.0.1:8000")
    assert np.isfinite(run_module.expected_requests(Load(rate=1.0, duration=1.0)))


def test_the_expected_count_of_a_closed_loop_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^load must be an open-loop Load"):
        run_module.expected_requests(Load(clients=4, duration=1.0))
    with pytest.raises(ValueError, match=r"^load must be an open-loop Load"):
        run_module.expected_requests("100 per second")  # type: ignore[arg-type]


@pytest.mark.live
def test_a_closed_loop_stops_at_the_request_cap(server, monkeypatch):
    """No think, a fast route: a closed loop sends as fast as the service answers, so no
    count is known in advance; the cap (here lowered to 25) bounds what it keeps."""
    monkeypatch.setattr(run_module, "MAX_REQUESTS", 25)
    run = run_load(server.url, load=Load(clients=3, think_time=0.0, duration=2.0),
                   path="/api/work?service_time=0.001", progress=False, server_events=False)
    assert len(run.requests) == 25 and run.meta["max_requests_reached"] is True
    assert run.requests["ok"].all()

