"""One client policy, two worlds: a shedding server, then an outage, simulated and live with the
same config objects (one ``ServerConfig``, given to ``create_app`` and ``Scenario`` alike);
both end the same number of requests 596 (budget) and 597 (breaker)."""

from __future__ import annotations

import gc

import pytest

from atlas_sim.config import Settings
from atlas_sim.experiments.live import work_twin
from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    FixedLimit,
    RetryPolicy,
)
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import LiveServer, create_app, run_load
from atlas_sim.sim import Fault, simulate
from atlas_sim.workload import Distribution, Load

pytestmark = pytest.mark.live

SEED, WORKERS, MEAN, LIMIT = 5, 2, 0.02, 4
OUTAGE = (5.0, 7.0)
# One description of the experiment, given unchanged to both worlds: the load, the client's
# policy (retries only 503, not the 429s of shedding; a budget; a breaker) and the outage.
LOAD = Load(rate=150.0, duration=8.0)
CLIENT = ClientPolicy(
    timeout=5.0,
    retry=RetryPolicy(max_attempts=3, retry_on=frozenset({503}),
                      backoff=Backoff(base=0.05, cap=0.5, jitter="full")),
    budget=BudgetConfig(max_tokens=10, token_ratio=0.1),
    breaker=BreakerConfig(failure_threshold=5, recovery_timeout=0.5))
FAULTS = (Fault(start=OUTAGE[0], end=OUTAGE[1], capacity=0.0),)
SERVER = ServerConfig(workers=WORKERS, service_time=Distribution(mean=MEAN),
                      admission=FixedLimit(max_concurrent=LIMIT), timeout=30.0)


@pytest.fixture(scope="module")
def runs():
    gc.collect()
    gc.freeze()
    try:
        app = create_app(Settings(), server=SERVER, seed=SEED)
        with LiveServer(app, name="policies-twin") as server:
            live = run_load(server.url, load=LOAD, client=CLIENT, faults=FAULTS, seed=SEED,
                            path="/api/work", progress=False, server_events=False)
    finally:
        gc.unfreeze()
    return simulate(work_twin(SERVER, load=LOAD, client=CLIENT, faults=FAULTS, seed=SEED)), live


def counts(run) -> dict[int, int]:
    status = run.requests["status"]
    return {code: int((status == code).sum()) for code in (200, 429, 503, 596, 597)}


def test_both_worlds_shed_and_neither_breaker_opens_on_429s(runs):
    simulated, live = runs
    for run in (simulated, live):
        before = run.window(0.0, OUTAGE[0] - 1.0)  # a request sent just before may retry into it
        assert (before.requests["status"] == 429).sum() > 50
        assert not (before.requests["status"] >= 596).any()  # 429 costs no token, trips nothing


def test_the_outage_is_retried_and_then_refused_alike(runs):
    simulated, live = runs
    sim, real = counts(simulated.window(*OUTAGE)), counts(live.window(*OUTAGE))
    for run in (simulated, live):
        # The 429s before the outage cost no token, so the budget refuses only the few retries
        # after the outage's first failures; the breaker, open within a few dozen ms, refuses
        # the rest. (Had the 429s drained the budget, nearly every request would end 596.)
        outage = run.window(*OUTAGE).requests
        assert (outage["status"] == 596).sum() < 0.1 * len(outage)
    # Breaker refusals (597) dominate the outage and budget refusals (596) follow the breaker's
    # probes: a 10% tolerance (and a floor of 5 requests) absorbs the live run's timing noise.
    for code in (596, 597):
        assert abs(real[code] - sim[code]) <= max(5, 0.10 * sim[code]), (code, sim, real)
    assert sim[597] > 100 and real[597] > 100
