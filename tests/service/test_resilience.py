"""The service's dependency calls keep the policies' books straight, even when the request's
own timeout (HTTP_TIMEOUT) cuts a call off before the dependency's (DATABASE_TIMEOUT)."""

from __future__ import annotations

import time

import httpx
import pytest

from atlas_sim.config import Settings
from atlas_sim.workload import Load
from tests.service.support import start_server

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1


def breaker_state(client: httpx.Client) -> str:
    return client.get("/admin/breaker").json()["state"]


def test_calls_cut_off_by_the_request_timeout_count_as_failures_and_probes_never_leak():
    settings = Settings(http_timeout=0.2, database_timeout=10.0, retry_max_attempts=1,
                        circuit_breaker_failure_threshold=2,
                        circuit_breaker_recovery_timeout=0.1)
    server, _ = start_server(settings)
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            client.put("/admin/faults", json={"outage": True})
            statuses = [client.get("/api/compose").status_code for _ in range(2)]
            assert statuses == [504, 504]  # the request timeout cut both calls off
            assert breaker_state(client) in ("open", "half_open")  # they were failures
            # A probe cut off the same way must report too, or its slot is never freed and the
            # breaker refuses every call for ever, even after the dependency is back.
            for _ in range(3):
                client.get("/api/compose")
            client.put("/admin/faults", json={"outage": False})
            outcomes = []
            for _ in range(100):  # up to ~5 s: polling, not a timing assertion
                outcomes.append(client.get("/api/compose").status_code)
                if outcomes[-1] == 200:
                    break
                time.sleep(0.05)
            assert outcomes[-1] == 200, f"the service never recovered: {outcomes}"
            body = client.get("/admin/breaker").json()
            assert body["state"] == "closed" and body["budget_tokens"] < 10
    finally:
        server.stop()


def test_live_and_simulated_dependencies_draw_the_same_coins_and_latencies():
    import asyncio

    import numpy as np

    from atlas_sim.server_config import Dependency, ServerConfig
    from atlas_sim.service.dependency import DependencyError, FaultyDependency
    from atlas_sim.sim import Scenario, simulate
    from atlas_sim.workload import Distribution, rng_streams

    seed, p, n = 7, 0.3, 40
    coins = rng_streams(seed)["dependency"].spawn(1)[0].random(n)
    latencies = Distribution(mean=0.002).sample(rng_streams(seed)["dependency"], n)

    # simulated: one request a second, no local work, one dependency call each
    server = ServerConfig(service_time=Distribution(mean=0.0, kind="constant"),
                          dependency=Dependency(latency=Distribution(mean=0.002), error_rate=p))
    run = simulate(Scenario(load=Load(rate=1.0, process="constant", duration=n),
                            server=server, seed=seed))
    assert list(run.requests["status"]) == [503 if c < p else 200 for c in coins]
    ok = run.requests["ok"].to_numpy()
    assert np.allclose(run.requests["latency"].to_numpy()[ok], latencies[ok])

    # live: the service's dependency, called n times in a row
    dependency = FaultyDependency(latency=Distribution(mean=0.002),
                                  rng=rng_streams(seed)["dependency"])
    dependency.faults = dependency.faults.__class__(error_rate=p)

    async def outcomes() -> list[bool]:
        seen = []
        for _ in range(n):
            try:
                await dependency.call()
                seen.append(True)
            except DependencyError:
                seen.append(False)
        return seen

    assert asyncio.run(outcomes()) == [c >= p for c in coins]


def test_the_request_timeout_still_fires_when_the_same_app_is_served_again():
    from atlas_sim.service import LiveServer, create_app
    from tests.service.support import add_test_routes

    app = create_app(Settings(http_timeout=0.2))
    probe = add_test_routes(app)
    for name in ("first-loop", "second-loop"):  # each LiveServer runs its own event loop
        probe.slow_cancelled.clear()
        with LiveServer(app, name=name) as server:
            response = httpx.get(server.url + "/test/slow", trust_env=False, timeout=10)
        assert response.status_code == 504 and probe.slow_cancelled.is_set(), name
