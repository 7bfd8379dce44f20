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

from atlas_sim.analysis.stats import replications
from atlas_sim.sim import Scenario, simulate
from atlas_sim.workload import Load

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
        run = simulate(Scenario(load=Load(rate=rate, duration=duration), service_time_mean=1.0,
                                servers=servers, seed=seed))
        a = run.attempts
        keep = a["t_start"].to_numpy() >= WARMUP * duration
        wait = a["queue_wait"].to_numpy()[keep]
        latency = a["latency"].to_numpy()[keep]
        out["P_wait"].append(float((wait > 0).mean()))
        out["Wq"].append(float(wait.mean()))
        out["W"].append(float(latency.mean()))
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            out[name].append(float(np.percentile(latency, q)))
        out["L"].append(time_average_in_system(run.requests, WARMUP * duration, duration))
    return out


def time_average_in_system(requests, start: float, end: float) -> float:
    """Mean number of requests in the system over [start, end], from the table's times alone."""
    t0 = np.clip(requests["t_start"].to_numpy(), start, end)
    t1 = np.clip(requests["t_end"].to_numpy(), start, end)
    return float((t1 - t0).sum() / (end - start))


@pytest.mark.parametrize(("servers", "utilisation"), [(1, 0.5), (1, 0.8), (2, 0.8), (4, 0.8),
                                                      (8, 0.9)])
def test_mmc_matches_erlang_c_mean_response_and_percentiles(servers, utilisation):
    ref = REFERENCE[(servers, utilisation)]
    measured = replicate(servers, utilisation)
    for name, values in measured.items():
        ci = replications(values, confidence=0.999)
        assert ci.contains(ref[name]), f"{name}: theory {ref[name]:.4g}, simulated {ci!r}"


def test_littles_law_holds_on_the_simulated_tables():
    duration = 20_000.0
    run = simulate(Scenario(load=Load(rate=1.6, duration=duration), service_time_mean=1.0,
                            servers=2, seed=11))
    req = run.requests
    assert np.allclose(req["t_end"] - req["t_start"], req["latency"])
    inside = req[req["t_end"] <= duration]
    lam = len(req) / duration
    L = time_average_in_system(req, 0.0, duration)
    assert pytest.approx(lam * inside["latency"].mean(), rel=0.01) == L


def test_utilisation_and_capacity_are_what_the_scenario_says():
    s = Scenario(load=Load(rate=3.2, duration=60.0), service_time_mean=0.5, servers=2)
    assert s.capacity == 4.0 and s.utilisation == pytest.approx(0.8)
