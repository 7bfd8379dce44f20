"""The live server's seams: the work station's queue discipline (its waiters kept in the
config's ``QueueDiscipline``) and the admission limiter the shedding layer tells how each
request went."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from atlas_sim.config import Settings
from atlas_sim.policies import Fifo
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import LiveServer, create_app
from atlas_sim.service.middleware import LoadSheddingMiddleware
from atlas_sim.service.work import WorkStation
from atlas_sim.workload import Distribution
from tests.helpers import Lifo, RecordingLimit, RecordingLimiter
from tests.service.support import add_test_routes

# -- test-local seams: a LIFO queue and a limiter that records what it is told ----------------


# -- the work station's queue, without sockets --------------------------------------------


def _station(queue=None, workers: int = 1) -> WorkStation:
    return WorkStation(workers=workers, service_time=Distribution(mean=0.01),
                       rng=np.random.default_rng(0), queue=queue)


def _order_of_service(station: WorkStation, *, cancel: Callable[[dict], list] = lambda t: []):
    """Request "hold" takes the only slot; "a", "b", "c", "d" queue behind it in that order;
    ``cancel(tasks)`` names tasks cancelled while they wait. The order they finished in, which
    with one worker is the order they were served in."""
    finished: list[str] = []

    async def go() -> None:
        async def one(name: str, seconds: float) -> None:
            await station.serve(fixed=seconds)
            finished.append(name)

        # each task runs to its first wait in one turn of the loop (sleep(0)), so the order of
        # arrival is certain and no wall-clock time passes before all four wait
        tasks = {"hold": asyncio.ensure_future(one("hold", 0.05))}
        await asyncio.sleep(0)
        for name in "abcd":
            tasks[name] = asyncio.ensure_future(one(name, 0.001))
            await asyncio.sleep(0)
        assert station.waiting == 4 and station.busy == 1
        for task in cancel(tasks):
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)

    asyncio.run(go())
    return finished


def test_fifo_serves_in_arrival_order_and_a_cancelled_waiter_takes_no_slot():
    station = _station()
    assert _order_of_service(station) == ["hold", "a", "b", "c", "d"]
    station = _station()
    order = _order_of_service(station, cancel=lambda tasks: [tasks["b"], tasks["c"]])
    assert order == ["hold", "a", "d"]
    assert station._free == 1 and station.busy == 0 and station.waiting == 0


def test_a_waiter_cancelled_after_it_was_handed_the_slot_passes_it_on():
    station = _station()
    release = station._release
    handed_over: list[bool] = []

    async def go() -> list[str]:
        served: list[str] = []

        async def one(name: str, seconds: float) -> None:
            await station.serve(fixed=seconds)
            served.append(name)

        def release_then_cancel_a() -> None:
            release()  # "hold" hands its slot to "a"'s ticket ...
            if not handed_over:
                handed_over.append(True)
                a.cancel()  # ... and "a" is cancelled before it resumes: it must pass it on

        station._release = release_then_cancel_a  # type: ignore[method-assign]
        hold = asyncio.ensure_future(one("hold", 0.02))
        await asyncio.sleep(0.001)
        a = asyncio.ensure_future(one("a", 0.001))
        b = asyncio.ensure_future(one("b", 0.001))
        # a lost slot would leave "b" waiting for ever: a deadlock shows as a timeout here
        await asyncio.wait_for(asyncio.gather(hold, a, b, return_exceptions=True), 5.0)
        return served

    assert asyncio.run(go()) == ["hold", "b"]
    assert handed_over and station._free == 1 and station.busy == 0 and station.waiting == 0


def test_the_queue_discipline_is_the_configs():
    assert _order_of_service(_station(Lifo())) == ["hold", "d", "c", "b", "a"]
    assert _order_of_service(_station(Fifo())) == ["hold", "a", "b", "c", "d"]
    with pytest.raises(ValueError, match="workers must be"):
        WorkStation(workers=0, service_time=Distribution(mean=0.01),
                    rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="queue must be a config with build"):
        _station(queue=3)


# -- live: the config's queue and limiter in a running app ----------------------------------


def _served_order(queue) -> list[int]:
    """One worker: request 0 holds it 1 s; 1, 2, 3 (50 ms of work each) are sent one at a time,
    each once the one before is seen waiting in the station's queue (so their arrival order is
    certain, whatever the host's scheduling). The order they were answered in, which with one
    worker is the order they were served in."""
    config = ServerConfig(workers=1, service_time=Distribution(mean=0.01), queue=queue)
    with LiveServer(create_app(Settings(), server=config), name="queue-order") as server, \
            httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as client, \
            ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client.get("/api/work?service_time=0.05"), range(4)))
        station = server.app.state.atlas.work
        answered: dict[int, float] = {}

        def get(i: int) -> None:
            r = client.get("/api/work?service_time=" + ("1.0" if i == 0 else "0.05"))
            assert r.status_code == 200
            answered[i] = time.monotonic()

        def until(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 5.0
            while not condition():
                assert time.monotonic() < deadline, "the request never reached the station"
                time.sleep(0.002)

        futures = [pool.submit(get, 0)]
        until(lambda: station.busy == 1)
        for i in (1, 2, 3):
            futures.append(pool.submit(get, i))
            until(lambda i=i: station.waiting == i)
        for f in futures:
            f.result()
    return sorted(answered, key=lambda i: answered[i])


@pytest.mark.live
def test_a_lifo_queue_config_live_serves_the_newest_waiter_first():
    assert _served_order(Lifo()) == [0, 3, 2, 1]
    assert _served_order(Fifo()) == [0, 1, 2, 3]


@pytest.mark.live
def test_the_admission_limiter_is_told_each_requests_latency_and_whether_it_was_dropped():
    admission = RecordingLimit(max_concurrent=1)
    config = ServerConfig(workers=2, service_time=Distribution(mean=0.01), timeout=0.3,
                          admission=admission)
    app = create_app(Settings(), server=config)
    probe = add_test_routes(app)
    with LiveServer(app, name="recording-limiter") as server:
        limiter = app.state.atlas.limiter
        assert admission.built == [limiter]  # built once, from the config
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as client:
            assert client.get("/api/work?service_time=0.05").status_code == 200
            assert client.get("/api/work?service_time=5").status_code == 504  # server timeout
            assert client.get("/test/boom").status_code == 500
            assert client.get("/health").status_code == 200  # exempt: not admitted
            # one in progress, the limit is 1: the next is refused, and never released
            held = threading.Thread(target=client.get, args=("/test/gate",))
            held.start()
            deadline = time.monotonic() + 5
            while probe.at_gate == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = client.get("/api/work?service_time=0")
            client.post("/admin/test/release")
            held.join(5)
        assert refused.status_code == 429 and "(limit 1)" in refused.json()["error"]
        assert refused.headers["retry-after"] == "1"
    latencies = [latency for latency, _ in limiter.released]
    assert [dropped for _, dropped in limiter.released] == [False, True, True, False]
    assert 0.05 <= latencies[0] < 0.3 and 0.3 <= latencies[1] < 1.0
    assert limiter.in_flight == 0


def test_the_shedding_layer_takes_any_admission_limiter_and_refuses_other_objects():
    LoadSheddingMiddleware(None, limiter=RecordingLimiter(3))
    with pytest.raises(ValueError, match="limiter must be an AdmissionLimiter"):
        LoadSheddingMiddleware(None, limiter=object())


def test_no_admission_config_means_no_shedding_layer():
    app = create_app(Settings(), server=ServerConfig(admission=None))
    assert app.state.atlas.limiter is None
    assert LoadSheddingMiddleware not in [m.cls for m in app.user_middleware]


@pytest.mark.parametrize("queue", [Fifo(), Lifo()], ids=["fifo", "lifo"])
def test_a_waiter_that_gives_up_leaves_the_queue_at_once(queue):
    # under sustained timeouts a LIFO queue is served from the top, so waiters that gave up at
    # the bottom would stay for as long as it never empties: each one leaves when it gives up
    station = _station(queue)

    async def go() -> tuple[int, int]:
        hold = asyncio.ensure_future(station.serve(fixed=0.05))
        await asyncio.sleep(0)  # each task reaches its first wait in one turn of the loop
        waiting = [asyncio.ensure_future(station.serve(fixed=0.001)) for _ in range(3)]
        await asyncio.sleep(0)
        before = len(station._waiters)
        waiting[0].cancel()
        waiting[1].cancel()
        await asyncio.sleep(0)
        after = len(station._waiters)
        await asyncio.gather(hold, *waiting, return_exceptions=True)
        return before, after

    assert asyncio.run(go()) == (3, 1)
    assert station._free == 1 and len(station._waiters) == 0
