"""The simulator against queueing theory.

Each check runs independent replications (fixed seeds, so the test is deterministic) and asks
that the reference value lie inside the replications' 99.9% Student-t confidence interval. A
correct simulator passes with probability 99.9% for any choice of seeds; a biased one fails.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from atlas_sim.analysis.queueing import MGc, MMc, squared_cv, time_average_in_system
from atlas_sim.analysis.stats import replications
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Scenario, simulate
from atlas_sim.workload import Distribution, Load

REFERENCE = {
    (int(r["servers"]), float(r["utilisation"])): {k: float(v) for k, v in r.items()}
    for r in csv.DictReader((Path(__file__).parents[1] / "reference" / "mmc_queue.csv").open())
}
SEEDS = range(8)
CUSTOMERS = 40_000  # per replication
WARMUP = 0.05  # share of each run discarded while the queue fills


def replicate(servers: int, utilisation: float) -> dict[str, list[float]]:
    ref = REFERENCE[(servers, utilisation)]
    rate = ref["arrival_rate"]
    out: dict[str, list[float]] = {"P_wait": [], "Wq": [], "W": [], "p50": [], "p95": [],
                                   "p99": [], "L": []}
    for seed in SEEDS:
        duration = CUSTOMERS / rate
        run = simulate(Scenario(load=Load(rate=rate, duration=duration),
                                server=ServerConfig(workers=servers,
                                                    service_time=Distribution(mean=1.0)),
                                seed=seed))
        a = run.attempts
        keep = a["t_start"].to_numpy() >= WARMUP * duration
        wait = a["queue_wait"].to_numpy()[keep]
        latency = a["latency"].to_numpy()[keep]
        out["P_wait"].append(float((wait > 0).mean()))
        out["Wq"].append(float(wait.mean()))
        out["W"].append(float(latency.mean()))
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            out[name].append(float(np.percentile(latency, q)))
        out["L"].append(in_system(run.requests, WARMUP * duration, duration))
    return out


def in_system(requests, start: float, end: float) -> float:
    """Mean number of requests in the system over [start, end], from the table's times alone."""
    return time_average_in_system(requests["t_start"].to_numpy(), requests["t_end"].to_numpy(),
                                  start=start, end=end)


@pytest.mark.parametrize(("servers", "utilisation"), [(1, 0.5), (1, 0.8), (2, 0.5), (2, 0.8),
                                                      (4, 0.8), (8, 0.8), (8, 0.9)])
def test_mmc_matches_erlang_c_mean_response_and_percentiles(servers, utilisation):
    ref = REFERENCE[(servers, utilisation)]
    measured = replicate(servers, utilisation)
    for name, values in measured.items():
        ci = replications(values, confidence=0.999)
        assert ci.contains(ref[name]), f"{name}: theory {ref[name]:.4g}, simulated {ci!r}"


def test_littles_law_holds_on_the_simulated_tables():
    duration = 20_000.0
    run = simulate(Scenario(load=Load(rate=1.6, duration=duration),
                            server=ServerConfig(workers=2, service_time=Distribution(mean=1.0)),
                            seed=11))
    req = run.requests
    assert np.allclose(req["t_end"] - req["t_start"], req["latency"])
    inside = req[req["t_end"] <= duration]
    lam = len(req) / duration
    L = in_system(req, 0.0, duration)
    assert pytest.approx(lam * inside["latency"].mean(), rel=0.01) == L
    # and near Erlang C's L (4.44): one long run, so only roughly
    assert pytest.approx(MMc(arrival_rate=1.6, service_rate=1.0, servers=2).L, rel=0.1) == L


@pytest.mark.parametrize("servers", [1, 2, 8])
def test_littles_law_is_an_identity_over_a_whole_run(servers):
    """Over a window that starts empty and ends after the last departure, the area under the
    number in the system, N(t), is the sum of the times in the system, so L = lambda W holds
    exactly (to rounding) whatever the queue does, not only on average."""
    run = simulate(Scenario(load=Load(rate=0.9 * servers, duration=2000.0),
                            server=ServerConfig(workers=servers, service_time=Distribution(
                                mean=1.0, kind="lognormal", shape=1.5)), seed=3))
    req = run.requests
    assert req["ok"].all()
    end = float(req["t_end"].max())
    L = in_system(req, 0.0, end)
    lam, W = len(req) / end, float(req["latency"].mean())
    assert pytest.approx(lam * W, rel=1e-9) == L


@pytest.mark.parametrize("kind", ["constant", "lognormal"])
def test_mg1_mean_wait_matches_pollaczek_khinchine(kind):
    """One server, any service-time shape: the Pollaczek-Khinchine mean wait is exact."""
    service = Distribution(mean=1.0, kind=kind, shape=1.0)
    theory = MGc(arrival_rate=0.8, service_rate=1.0, servers=1, scv=squared_cv(service))
    ci = replications(_waits(1, 0.8, service), confidence=0.999)
    assert ci.contains(theory.Wq), f"theory {theory.Wq:.4g}, simulated {ci!r}"


def test_allen_cunneen_is_close_for_two_servers_with_constant_service():
    """Several servers and another shape: Allen-Cunneen is an approximation. For M/D/2 at
    0.8 it is within 10% of the simulated mean wait (measured 5% low; at c = 8 about 10%
    low: see MGc's docstring)."""
    service = Distribution(mean=1.0, kind="constant")
    approx = MGc(arrival_rate=1.6, service_rate=1.0, servers=2, scv=squared_cv(service)).Wq
    ci = replications(_waits(2, 0.8, service), confidence=0.999)
    assert abs(approx / ci.mean - 1) < 0.10, f"approximation {approx:.4g}, simulated {ci!r}"
    assert approx < MMc(arrival_rate=1.6, service_rate=1.0, servers=2).Wq  # less variable


def _waits(servers: int, utilisation: float, service: Distribution) -> list[float]:
    rate = utilisation * servers
    waits = []
    for seed in SEEDS:
        duration = CUSTOMERS / rate
        run = simulate(Scenario(load=Load(rate=rate, duration=duration),
                                server=ServerConfig(workers=servers, service_time=service),
                                seed=seed))
        a = run.attempts
        keep = a["t_start"].to_numpy() >= WARMUP * duration
        waits.append(float(a["queue_wait"].to_numpy()[keep].mean()))
    return waits


def test_utilisation_and_capacity_are_what_the_scenario_says():
    s = Scenario(load=Load(rate=3.2, duration=60.0),
                 server=ServerConfig(workers=2, service_time=Distribution(mean=0.5)))
    assert s.capacity == 4.0 and s.utilisation == pytest.approx(0.8)
