"""The open-loop load generator against the live service, and the service's breaker."""

from __future__ import annotations

import asyncio
import math

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atlas_sim.config import Settings
from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    RetryPolicy,
    Status,
)
from atlas_sim.results import ATTEMPT_COLUMNS, EVENT_COLUMNS, REQUEST_COLUMNS
from atlas_sim.service import LiveServer, parse_server_timing, run_load
from atlas_sim.service._asyncio_stream import AsyncioBackend
from atlas_sim.service.loadgen.children import drive_in_children as _drive_in_children
from atlas_sim.service.loadgen.driver import Job as _Job
from atlas_sim.service.loadgen.pool import ClientPool as _ClientPool
from atlas_sim.workload import (
    Distribution,
    Fault,
    Load,
    arrival_times,
    request_inputs,
    rng_streams,
)
from tests.service.support import start_server

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1

QUICK = Settings(
    http_timeout=5,
    database_timeout=0.05,
    retry_max_attempts=2,
    retry_min_wait=0.001,
    retry_max_wait=0.002,
    circuit_breaker_failure_threshold=3,
    circuit_breaker_recovery_timeout=60,
)


@pytest.fixture
def server():
    server, _ = start_server(QUICK, workers=1, service_time=Distribution(mean=0.01,
                                                                         kind="constant"))
    yield server
    server.stop()


def test_the_schedule_is_the_simulators_for_the_same_seed():
    times, length = Load(rate=50.0, duration=4.0).schedule(3)
    expected = arrival_times(50.0, 4.0, rng_streams(3)["arrivals"])
    assert length == 4.0 and np.array_equal(times, expected)
    cut, cut_length = Load(rate=50.0, duration=4.0, requests=10).schedule(3)
    assert np.array_equal(cut, expected[:10]) and cut_length == expected[10]
    only, _ = Load(rate=50.0, requests=25).schedule(3)
    assert len(only) == 25
    with pytest.raises(ValueError, match="duration"):
        Load(rate=50.0)


def test_server_timing_is_parsed_into_seconds():
    assert parse_server_timing("queue;dur=12.5, work;dur=3") == pytest.approx(0.0125)
    assert parse_server_timing("work;dur=3", "work") == pytest.approx(0.003)
    assert math.isnan(parse_server_timing(None))
    assert math.isnan(parse_server_timing("queue;dur=abc"))


def test_run_load_returns_the_simulations_tables_and_respects_the_count(server):
    # One slot of 10 ms and 150 requests/s (more than it can do): a queue must form.
    result = run_load(server.url, load=Load(rate=150, requests=60), seed=1, progress=False)
    assert tuple(result.requests.columns) == REQUEST_COLUMNS
    assert tuple(result.attempts.columns) == ATTEMPT_COLUMNS
    assert tuple(result.events.columns) == EVENT_COLUMNS
    assert result.source == "live" and len(result.requests) == 60
    assert (result.requests["status"] == 200).all() and result.requests["ok"].all()
    assert len(result.attempts) == 60
    times, _ = Load(rate=150, requests=60).schedule(1)
    assert np.allclose(result.requests["t_start"], times)
    assert (result.requests["latency"] > 0).all()
    queue = result.attempts["queue_wait"]
    assert queue.notna().all() and (queue > 0).any()
    lag = result.meta["send_lag"]
    assert len(lag) == 60 and result.meta["send_lag_p99"] >= result.meta["send_lag_p50"]


def test_run_load_works_from_inside_a_running_event_loop(server):
    async def jupyter_cell():
        return run_load(server.url, load=Load(rate=100, requests=5), progress=False)

    assert len(asyncio.run(jupyter_cell()).requests) == 5


def test_a_client_timeout_is_recorded_as_599(server):
    result = run_load(server.url, load=Load(rate=50, requests=4),
                      client=ClientPolicy(timeout=0.05), path="/api/work?service_time=2",
                      drain_timeout=5, progress=False)
    assert (result.requests["status"] == Status.CLIENT_TIMEOUT).all()
    assert (result.attempts["status"] == Status.CLIENT_TIMEOUT).all()
    assert result.attempts["queue_wait"].isna().all()


def test_unfinished_requests_are_cut_off_at_the_drain_deadline(server):
    result = run_load(server.url, load=Load(rate=50, requests=3), path="/api/work?service_time=2",
                      drain_timeout=0.2, server_events=False, progress=False)
    assert (result.requests["status"] == Status.CLIENT_TIMEOUT).all()
    assert result.meta["unfinished"] == 3 and len(result.attempts) == 3


def test_a_refused_connection_is_598():
    from tests.helpers import free_port

    result = run_load(f"http://127.0.0.1:{free_port()}", load=Load(rate=100, requests=3),
                      server_events=False, progress=False)
    assert (result.requests["status"] == Status.CONNECTION_ERROR).all()


def test_an_injected_fault_shows_in_compose_and_opens_the_service_breaker(server):
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        assert client.get("/api/compose").json()["attempts"] == 1
        assert client.put("/admin/faults", json={"error_rate": 1.0}).status_code == 200
        failed = client.get("/api/compose")
        assert failed.status_code == 503
        assert failed.json()["attempts"] == 2  # RETRY_MAX_ATTEMPTS=2
        assert [a["outcome"] for a in failed.json()["attempt_log"]] == ["error", "error"]
        client.get("/api/compose")  # 4 failed calls: the threshold of 3 is passed
        fast = client.get("/api/compose")
        assert fast.status_code == 503 and fast.json()["attempts"] == 0
        assert "breaker" in fast.json()["error"]
        breaker = client.get("/admin/breaker").json()
        assert breaker["state"] == "open"
        assert [(t["old"], t["new"]) for t in breaker["transitions"]] == [("closed", "open")]
        client.post("/admin/reset")
        assert client.get("/admin/breaker").json()["state"] == "closed"
        assert client.get("/api/compose").status_code == 200


def test_client_breaker_and_budget_refuse_under_a_dependency_outage(server):
    httpx.put(server.url + "/admin/faults", json={"outage": True}, trust_env=False)
    result = run_load(server.url, load=Load(rate=100, requests=30),
                      client=ClientPolicy(
                          timeout=2,
                          retry=RetryPolicy(max_attempts=3, backoff=Backoff(base=0.001, cap=0.002)),
                          budget=BudgetConfig(max_tokens=2, token_ratio=0.1),
                          breaker=BreakerConfig(failure_threshold=3, recovery_timeout=60)),
                      path="/api/compose", seed=2, progress=False)
    statuses = set(result.requests["status"])
    assert Status.BUDGET_EXHAUSTED in statuses and Status.BREAKER_OPEN in statuses
    assert not result.requests["ok"].any()
    refused = result.requests[result.requests["status"] == Status.BREAKER_OPEN]
    assert (refused["attempts"] == 0).all()
    events = result.events
    client = events[(events["kind"] == "breaker") & (events["name"] == "client")]
    assert client["detail"].iloc[0] == "open"
    service = events[(events["kind"] == "breaker") & (events["name"] == "dependency")]
    assert "open" in set(service["detail"])
    assert (events["time"] >= 0).all() and (events["time"] <= result.requests["t_end"].max()).all()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Load(rate=10, requests=0), "requests must be an integer >= 1"),
    (lambda: Load(rate=10, requests=5, process="bursty"), "process must be one of"),
    (lambda: ClientPolicy(timeout=0), "timeout must be"),
    (lambda: ClientPolicy(retry=3), "retry must be a RetryPolicy"),
    (lambda: run_load("http://127.0.0.1:9", load=Load(rate=10, requests=5), max_connections=0),
     "max_connections must be"),
    (lambda: run_load("http://127.0.0.1:9", load={"rate": 10}), "load must be a Load"),
    (lambda: run_load("http://127.0.0.1:9", load=Load(clients=3, duration=1.0), processes=1),
     "processes must be 0 for a closed-loop load"),
    (lambda: run_load("http://127.0.0.1:9", load=Load(rate=10, requests=5), start_at="now"),
     "start_at must be a number"),
    (lambda: run_load("http://127.0.0.1:9", load=Load(rate=10, requests=5), client=2.0),
     "client must be a ClientPolicy"),
])
def test_bad_arguments_are_refused_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_generator_can_run_in_a_child_process(server):
    result = run_load(server.url, load=Load(rate=100, requests=5), processes=1, progress=True)
    assert result.meta["generator"] == "1 child process(es)"
    assert len(result.requests) == 5 and (result.requests["status"] == 200).all()


def test_several_child_processes_share_one_schedule_and_merge_in_order(server):
    times, _ = Load(rate=200.0, requests=40).schedule(3)
    result = run_load(server.url, load=Load(rate=200.0, requests=40), seed=3, processes=2,
                      progress=False, path="/api/work?service_time=0.001")
    req = result.requests
    assert list(req["request_id"]) == list(range(40)) and req["ok"].all()
    assert np.allclose(req["t_start"], times)  # each request keeps its place in the schedule
    assert (req["t_end"] > req["t_start"]).all() and len(result.meta["send_lag"]) == 40
    assert (result.attempts["t_start"] >= 0).all()  # both children counted from one origin


def health_requests(url: str) -> float:
    families = text_string_to_metric_families(httpx.get(url + "/metrics", trust_env=False).text)
    return sum(sample.value for family in families for sample in family.samples
               if sample.name == "atlas_api_http_requests_total"
               and sample.labels["endpoint"] == "/health")


@pytest.mark.parametrize(("processes", "warm_up", "expected"),
                         [(0, True, 8), (2, True, 16), (0, False, 0)])
def test_each_generator_warms_up_with_health_requests_outside_the_result(server, processes,
                                                                         warm_up, expected):
    before = health_requests(server.url)
    result = run_load(server.url, load=Load(rate=100, requests=4), processes=processes,
                      warm_up=warm_up, progress=False)
    assert health_requests(server.url) - before == expected  # 8 connections per generator
    assert result.meta["warm_up"] is warm_up
    assert len(result.requests) == 4 and result.requests["ok"].all()  # none of them counted


def test_plain_http_clients_take_their_sockets_from_the_asyncio_backend():
    async def backends(plain_tcp: bool) -> type:
        pool = _ClientPool(4, plain_tcp=plain_tcp)
        try:
            return type(pool.clients[0]._transport._pool._network_backend)
        finally:
            await pool.aclose()

    assert asyncio.run(backends(True)) is AsyncioBackend
    assert asyncio.run(backends(False)) is not AsyncioBackend  # https:// keeps httpx's own


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:99999", r"url's port must be in 1..65535, got 99999"),
    ("http://[::1", "url must be a valid URL"),
])
def test_a_bad_url_is_refused_naming_it(url, message):
    with pytest.raises(ValueError, match=message):
        run_load(url, load=Load(rate=10, requests=2), progress=False)


def test_a_child_that_fails_before_it_is_ready_sends_its_error_back():
    # Past run_load's checks, a port out of range fails in the child's warm-up (socket
    # connect); the child writes its exception instead of "ready", and it is raised here.
    bad = "http://127.0.0.1:99999"
    job = _Job(client=ClientPolicy(), target=bad + "/api/work", method="GET", headers={},
               times=np.array([0.0]), seed=0, max_connections=4, drain_timeout=1.0,
               progress=False, warm_up_url=bad + "/health")
    with pytest.raises(OverflowError, match="port must be 0-65535"):
        asyncio.run(_drive_in_children(job, 1))


def test_a_shared_client_breaker_needs_a_single_process():
    with pytest.raises(ValueError, match="processes must be 0 or 1 with a client breaker"):
        run_load("http://127.0.0.1:9", load=Load(rate=10, requests=2),
                 client=ClientPolicy(breaker=BreakerConfig()), processes=2, progress=False)


def test_timed_faults_are_applied_on_the_runs_clock_and_recorded():
    settings = Settings(retry_max_attempts=1, circuit_breaker_failure_threshold=1000)
    server, _ = start_server(settings, dependency_latency=Distribution(mean=0.001))
    try:
        result = run_load(server.url, load=Load(rate=100.0, duration=3.0), seed=4,
                          path="/api/compose",
                          faults=[Fault(start=1.0, end=2.0, dependency_error_rate=1.0,
                                        name="errors")],
                          progress=False)
        events = result.events[result.events["kind"] == "fault"]
        # the rows the simulator writes for the same window, at the times the service switched
        assert list(events["detail"]) == ["start", "end"]
        assert list(events["name"]) == ["errors", "errors"]
        assert events["reason"].iloc[0] == "dependency errors 100%"
        start, end = events["time"]
        assert 1.0 <= start < 1.5 and 2.0 <= end < 2.5  # bounds, not a timing measurement
        req = result.requests
        before = req[req["t_end"] < start]
        during = req[(req["t_start"] > start) & (req["t_end"] < end)]
        assert before["ok"].all() and len(during) > 0 and not during["ok"].any()
        assert httpx.get(server.url + "/admin/faults", trust_env=False).json()["error_rate"] == 0
    finally:
        server.stop()


@pytest.mark.parametrize(("faults", "message"), [
    ([(5.0, {"outage": True})], r"faults\[0\] must be a Fault"),
    ([Fault(start=1.0, end=2.0, added_latency=0.5)], r"faults\[0\].added_latency must be 0"),
])
def test_fault_windows_are_checked(faults, message):
    with pytest.raises(ValueError, match=message):
        run_load("http://127.0.0.1:9", load=Load(rate=10, duration=2.0), faults=faults,
                 progress=False)


def test_a_fault_change_the_service_refuses_fails_the_run():
    from fastapi import FastAPI

    bare = FastAPI()  # healthy, but without the service's /admin/faults switch

    @bare.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    with LiveServer(bare, name="test-no-fault-switch") as server, pytest.raises(
            ValueError, match="the service refused the fault change"):
        run_load(server.url, load=Load(rate=10, duration=1.0),
                 faults=[Fault(start=0.1, end=0.5, dependency_error_rate=0.5)], progress=False)


# -- several instances, and inputs that travel with the request --------------------------------

def test_each_retry_goes_to_the_next_instance_and_faults_reach_every_instance():
    settings = Settings(retry_max_attempts=1, circuit_breaker_failure_threshold=1000)
    started = [start_server(settings, workers=2, service_time=Distribution(mean=0.001))[0]
               for _ in range(3)]
    down, up, other = started
    try:
        httpx.put(down.url + "/admin/faults", json={"capacity": 0}, trust_env=False)
        retry = RetryPolicy(max_attempts=2, backoff=Backoff(base=0.001, cap=0.001))
        result = run_load(down.url, instances=[up.url, other.url], seed=2,
                          load=Load(rate=200.0, requests=60), client=ClientPolicy(retry=retry),
                          faults=[Fault(start=0.0, bad_input_rate=0.2)], progress=False)
        bad = request_inputs(2, 60) < 0.2
        attempts = result.attempts.set_index(["request_id", "attempt"])["status"]
        for i in range(60):
            first = attempts[(i, 1)]
            if i % 3 == 0:  # the first attempt met the instance that is down
                assert first == 503
                assert attempts[(i, 2)] == (500 if bad[i] else 200)  # the next one answers
            else:  # a bad input crashes whichever instance gets it, on every attempt
                assert first == (500 if bad[i] else 200)
                assert ((i, 2) in attempts.index) == bool(bad[i])
                if bad[i]:
                    assert attempts[(i, 2)] in (500, 503)
        assert result.meta["instances"] == (up.url, other.url)
        for server in started:  # the run switched its fault off on every instance
            view = httpx.get(server.url + "/admin/faults", trust_env=False).json()
            assert view["bad_input_rate"] == 0.0
    finally:
        for server in started:
            server.stop()


@pytest.mark.parametrize(("instances", "message"), [
    ("http://127.0.0.1:9", "instances must be a list of base URLs"),
    (["ftp://127.0.0.1:9"], r"instances\[0\] must be an http:// or https:// URL"),
])
def test_bad_instances_are_refused_naming_them(instances, message):
    with pytest.raises(ValueError, match=message):
        run_load("http://127.0.0.1:9", instances=instances, load=Load(rate=10, requests=2),
                 progress=False)
