"""Parameter sweeps: the grid, the default process pool and any Executor give the direct runs'
numbers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from atlas_sim.policies import ClientPolicy, RetryPolicy
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Scenario, grid_points, simulate, sweep
from atlas_sim.workload import Distribution, Load

BASE = Scenario(load=Load(rate=20.0, duration=30.0),
                server=ServerConfig(service_time=Distribution(mean=0.04)),
                client=ClientPolicy(retry=RetryPolicy(), timeout=0.5))
GRID = {"server.workers": [1, 2], "client.retry.max_attempts": [1, 3], "seed": [0, 1]}


def test_grid_points_are_the_product_in_order():
    assert grid_points({"a": [1, 2], "b": "xy"}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert grid_points({}) == [{}]
    with pytest.raises(ValueError, match=r"grid\['a'\] must list at least one value"):
        grid_points({"a": []})


def test_sweep_in_the_default_process_pool_matches_direct_runs():
    table = sweep(BASE, GRID, progress=False)
    assert list(table.columns[:3]) == ["server.workers", "client.retry.max_attempts", "seed"]
    assert len(table) == 8
    row = table.iloc[5]  # workers=2, max_attempts=1, seed=1
    direct = simulate(BASE.replace(
        {"server.workers": 2, "client.retry.max_attempts": 1, "seed": 1})).summary()
    assert row[list(direct)].to_dict() == direct
    one = table[(table["server.workers"] == 1) & (table["seed"] == 0)]
    assert one["amplification"].iloc[1] > one["amplification"].iloc[0]  # retries add attempts


def test_sweep_accepts_any_executor_and_fails_fast_on_bad_points():
    with ThreadPoolExecutor(2) as pool:
        table = sweep(BASE, {"server.workers": [1, 3]}, executor=pool, progress=False)
    assert list(table["server.workers"]) == [1, 3]
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        sweep(BASE, {"server.workers": [1, 0]}, progress=False)


def test_sweep_runs_on_a_dask_distributed_local_cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        table = sweep(BASE, {"server.workers": [1, 2], "seed": [0, 1]},
                      executor=client.get_executor(), progress=False)
    expected = sweep(BASE, {"server.workers": [1, 2], "seed": [0, 1]}, progress=False)
    pd.testing.assert_frame_equal(table, expected)


def test_a_failed_run_ends_the_sweeps_progress_line_failed_not_done(monkeypatch):
    import importlib

    from tests.helpers import recording_progress

    sweep_module = importlib.import_module("atlas_sim.sim.sweep")

    endings: list = []
    Recorded = recording_progress(endings)

    def summarise(scenario):
        raise RuntimeError("a run failed")

    monkeypatch.setattr(sweep_module, "Progress", Recorded)
    monkeypatch.setattr(sweep_module, "_summarise", summarise)
    with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="a run failed"):
        sweep(BASE, {"server.workers": [1]}, executor=pool, progress=False)
    assert endings == ["failed"]
