"""/api/fanout: N concurrent dependency calls, each driven by the same GuardedCall as every other
caller, hedged when /admin/fanout says so; slow calls from the shared Fault vocabulary."""

from __future__ import annotations

import math

import httpx
import pytest

from atlas_sim.config import Settings
from atlas_sim.policies import BreakerState
from atlas_sim.service.loadgen import parse_server_timing
from atlas_sim.service.loadgen.timeline import plan_faults
from atlas_sim.workload import Distribution, Fault
from tests.service.support import start_server

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1


@pytest.fixture(scope="module")
def served():
    server, _ = start_server(Settings(), dependency_latency=Distribution(mean=0.002), seed=3)
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        yield server, client
    server.stop()


@pytest.fixture
def clean(served):
    server, client = served
    client.post("/admin/reset")
    yield server, client
    client.post("/admin/reset")


def test_a_fanout_makes_width_calls_and_says_so(clean):
    _, client = clean
    response = client.get("/api/fanout?width=7")
    body = response.json()
    assert (body["width"], body["calls"], body["copies"], body["hedges"]) == (7, 7, 7, 0)
    assert body["request_id"] and body["slowest"] > 0
    # how far its calls overran their drawn latency (the loop's lateness): in the body and
    # in Server-Timing, as the load generator reads it
    assert body["overrun"] >= 0 and body["overrun"] < body["slowest"]
    assert parse_server_timing(response.headers["server-timing"], "overrun") == pytest.approx(
        body["overrun"], abs=1e-6)
    assert client.get("/admin/fanout").json() == {
        "hedge_delay": None, "max_extra": 0, "requests": 1, "calls": 7, "copies": 7,
        "hedges": 0, "cancelled": 0}


@pytest.mark.parametrize("query", ["width=0", "width=101", "width=x", "width=2.5"])
def test_a_bad_width_is_a_422_with_the_request_id(clean, query):
    _, client = clean
    r = client.get(f"/api/fanout?{query}", headers={"X-Request-ID": "w-1"})
    assert r.status_code == 422 and r.json()["request_id"] == "w-1"


def test_slow_calls_are_hedged_and_the_losers_cancelled_and_counted_nowhere(clean):
    server, client = clean
    # every call slow (0.4 s): each copy's hedge (after 0.05 s) is slow too, so the first
    # copy wins at 0.4 s and the hedge, still out, is cancelled
    assert client.put("/admin/faults", json={"slow_rate": 1.0, "slow_latency": 0.4}).is_success
    assert client.put("/admin/fanout", json={"hedge_delay": 0.05}).json()["hedge_delay"] == 0.05
    for _ in range(2):
        body = client.get("/api/fanout?width=4").json()
        assert (body["copies"], body["hedges"], body["cancelled"]) == (8, 4, 4)
        assert body["slowest"] >= 0.4
    counts = client.get("/admin/fanout").json()
    assert (counts["requests"], counts["calls"], counts["copies"], counts["hedges"],
            counts["cancelled"]) == (2, 8, 16, 8, 8)
    fanout = server.app.state.atlas.fanout
    # 8 winners recorded as successes, 8 cancelled losers recorded nowhere: the budget is
    # full and the breaker closed with no probe slot held
    assert fanout.budget.tokens == Settings().retry_budget_max_tokens
    assert fanout.breaker.state is BreakerState.CLOSED
    # the reset turns hedging off and zeroes the counts
    client.post("/admin/reset")
    assert client.get("/admin/fanout").json()["hedge_delay"] is None
    assert client.get("/api/fanout?width=3").json()["hedges"] == 0


def test_a_fanout_cut_off_by_the_request_timeout_records_every_copy_out_as_a_failure():
    settings = Settings(http_timeout=0.3, circuit_breaker_failure_threshold=5,
                        circuit_breaker_recovery_timeout=60)
    server, _ = start_server(settings, dependency_latency=Distribution(mean=0.002))
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            client.put("/admin/faults", json={"slow_rate": 1.0, "slow_latency": 2.0})
            client.put("/admin/fanout", json={"hedge_delay": 0.05})
            assert client.get("/api/fanout?width=3").status_code == 504
            # 3 calls with 2 copies out each: 6 failures, so the breaker (5 in a row) is open;
            # counting one per call it would still be closed
            assert server.app.state.atlas.fanout.breaker.state is BreakerState.OPEN
            refused = client.get("/api/fanout?width=3")
            assert refused.status_code == 503 and "circuit breaker open" in refused.json()["error"]
    finally:
        server.stop()


@pytest.mark.parametrize(("body", "allowed"), [
    ({"hedge_delay": -0.1}, "from 0 to 60 or null"),
    ({"hedge_delay": True}, "from 0 to 60 or null"),
    ({"hedge_delay": "0.1"}, "from 0 to 60 or null"),
    ({"hedge_delay": 0.1, "max_extra": 2}, "unknown field"),
])
def test_a_bad_fanout_setting_is_a_422_that_changes_nothing(clean, body, allowed):
    _, client = clean
    client.put("/admin/fanout", json={"hedge_delay": 0.2})
    r = client.put("/admin/fanout", json=body, headers={"X-Request-ID": "f-1"})
    assert r.status_code == 422 and r.json()["request_id"] == "f-1"
    assert allowed in r.json()["error"]
    assert client.get("/admin/fanout").json()["hedge_delay"] == 0.2
    assert client.put("/admin/fanout", json={"hedge_delay": None}).json()["hedge_delay"] is None


def test_a_cross_site_page_cannot_switch_hedging(clean):
    _, client = clean
    r = client.post("/admin/fanout", json={"hedge_delay": 0.1},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.get("/admin/fanout").json()["hedge_delay"] is None


def test_the_slow_call_fault_travels_in_the_shared_vocabulary():
    fault = Fault(start=0.0, dependency_slow_rate=0.01, dependency_slow_latency=0.3)
    assert plan_faults([fault]) == [(0.0, {"slow_rate": 0.01, "slow_latency": 0.3}),
                                    (math.inf, {"slow_rate": 0.0, "slow_latency": 0.0})]
    assert fault.describe() == "1.0% of dependency calls slow (>= 0.3s)"
    with pytest.raises(ValueError, match="dependency_slow_rate"):
        Fault(start=0.0, dependency_slow_rate=1.5)
