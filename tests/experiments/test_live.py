"""The live experiments' plumbing: twins mirror the service, fault windows become the service's
timed changes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atlas_sim import Backoff, RetryPolicy, Settings
from atlas_sim.experiments import live
from atlas_sim.policies import ClientPolicy
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import create_app
from atlas_sim.sim import Fault
from atlas_sim.workload import Load


def test_fault_windows_become_the_services_timed_changes():
    from atlas_sim.service.loadgen.timeline import plan_faults

    plan = plan_faults([Fault(start=5.0, end=8.0, dependency_outage=True),
                        Fault(start=8.0, end=12.0, dependency_error_rate=0.3),
                        Fault(start=10.0, end=14.0, dependency_error_rate=0.5, capacity=0.5),
                        Fault(start=13.0, dependency_added_latency=0.1),
                        Fault(start=13.0, end=14.0, dependency_slow_rate=0.01,
                              dependency_slow_latency=0.3),
                        Fault(start=13.0, end=14.0, dependency_slow_rate=0.02,
                              dependency_slow_latency=0.2)])
    assert plan == [
        (5.0, {"outage": True}),
        (8.0, {"error_rate": 0.3, "outage": False}),
        (10.0, {"capacity": 0.5, "error_rate": 0.5}),  # overlapping: the larger rate wins
        (13.0, {"added_latency": 0.1, "slow_rate": 0.02, "slow_latency": 0.3}),  # larger wins
        (14.0, {"capacity": 1.0, "error_rate": 0.0, "slow_rate": 0.0, "slow_latency": 0.0}),
        (math.inf, {"added_latency": 0.0}),  # closed when the run ends
    ]
    with pytest.raises(ValueError, match=r"faults\[0\].added_latency must be 0"):
        plan_faults([Fault(start=1.0, end=2.0, added_latency=0.1)])
    # a shared software error: the larger share of bad inputs wins, like an error rate
    assert plan_faults([Fault(start=0.0, end=4.0, bad_input_rate=0.1),
                        Fault(start=2.0, bad_input_rate=0.05)]) == [
        (0.0, {"bad_input_rate": 0.1}), (4.0, {"bad_input_rate": 0.05}),
        (math.inf, {"bad_input_rate": 0.0})]


def test_the_compose_twin_is_the_live_apps_own_server_config_on_the_compose_route():
    settings = Settings(http_timeout=2.0, database_timeout=0.5, retry_max_attempts=2,
                        circuit_breaker_failure_threshold=7, load_shedding_max_concurrent=50)
    policy = RetryPolicy(max_attempts=3, backoff=Backoff(base=0.05))
    app = create_app(settings)
    config = app.state.atlas.server
    twin = live.compose_twin(config, load=Load(rate=40.0, duration=10.0),
                             client=ClientPolicy(timeout=1.5, retry=policy), seed=3,
                             faults=[Fault(start=1.0, dependency_error_rate=0.2)],
                             calibration=live.Calibration(round_trip=0.003, work_overhead=0.001))
    assert twin.server is config and twin.path == "/api/compose"  # the object, not a copy
    assert twin.load == Load(rate=40.0, duration=10.0) and twin.seed == 3
    assert twin.client == ClientPolicy(timeout=1.5, retry=policy)  # the object given, unchanged
    assert config.timeout == 2.0 and config.admission.max_concurrent == 50
    assert config.dependency.client == settings.dependency_client()
    assert twin.round_trip == 0.003 and twin.work_overhead == 0.0  # no local work
    assert twin.faults[0].dependency_error_rate == 0.2
    # Settings stand for the config create_app(settings) builds: the same twin
    assert live.compose_twin(settings, load=twin.load, seed=3).server == config
    work = live.work_twin(config, load=twin.load, seed=3, instances=3)
    assert work.server is config and work.path == "/api/work" and work.instances == 3


@pytest.mark.parametrize("old", ["servers", "service_time", "dependency_latency"])
def test_the_twins_and_start_service_refuse_their_old_parameters(old):
    for function in (live.work_twin, live.compose_twin):
        with pytest.raises(ValueError, match=rf"{function.__name__}\({old}=...\) is no longer"):
            function(ServerConfig(), load=Load(rate=1.0, requests=1), seed=0, **{old: 2})
    with pytest.raises(ValueError, match=rf"start_service\({old}=...\) is no longer"):
        live.start_service("never-started", **{old: 2})
    with pytest.raises(ValueError, match=r"calibrate\(servers=...\) is no longer.*workers="):
        live.calibrate(servers=2)


@pytest.mark.live
def test_a_single_attempt_compose_experiment_matches_its_twin_exactly():
    settings = Settings(retry_max_attempts=1, circuit_breaker_failure_threshold=1000)
    server = live.start_service("test-compose-experiment", settings=settings, seed=9)
    try:
        runs = live.compose_experiment(server, settings, load=Load(rate=50.0, duration=4.0),
                                       client=ClientPolicy(timeout=2.0), seed=9,
                                       faults=[Fault(start=0.0, dependency_error_rate=0.3)])
        again = live.compose_experiment(server, settings, load=Load(rate=50.0, duration=4.0),
                                        client=ClientPolicy(timeout=2.0), seed=9,
                                        faults=[Fault(start=0.0, dependency_error_rate=0.3)])
    finally:
        server.stop()
    sim, real = runs["simulated"], runs["live"]
    # Same arrivals and the same coins, one call per request: exactly as many requests fail,
    # and nearly always the very same ones (two requests sent within a millisecond of each
    # other may reach the service in either order and swap coins).
    assert sim.requests["ok"].sum() == real.requests["ok"].sum()
    assert (sim.requests["ok"] == real.requests["ok"]).mean() > 0.95
    assert 0.2 < 1 - real.requests["ok"].mean() < 0.4
    # the reset rewound the service's streams: a repeat draws the same coins again
    assert again["live"].requests["ok"].sum() == real.requests["ok"].sum()
    assert "send lag p50" in live.generator_note(real)


def test_the_generator_note_says_when_the_generator_fell_behind():
    from types import SimpleNamespace

    from tests.helpers import live_shaped_run

    def run(p99: float):
        lag = np.full(100, 0.0005)
        lag[-2:] = p99  # the p99 of 100 sorted lags lies between the 99th and 100th
        return live_shaped_run(send_lag=lag, generator="2 child process(es)")

    assert live.generator_note(run(0.004)).endswith("p99 4.0 ms, on schedule")
    assert "behind schedule" in live.generator_note(run(0.02))
    assert "on schedule" in live.generator_note(run(0.02), tolerance=0.05)
    with pytest.raises(ValueError, match="needs a live run"):
        live.generator_note(SimpleNamespace(meta={}))
    with pytest.raises(ValueError, match="tolerance"):
        live.generator_note(run(0.004), tolerance=-1)
    with pytest.raises(ValueError, match="scale"):
        live.generator_note(run(0.004), scale=0.0)


@pytest.mark.live
def test_calibration_measures_small_positive_costs():
    calibration = live.calibrate(workers=2, requests=60)
    assert 0 < calibration.round_trip < 0.05 and 0 <= calibration.work_overhead < 0.01
    with pytest.raises(ValueError, match="workers must be"):
        live.calibrate(workers=0)


def test_transition_table_lines_up_the_breakers_of_two_runs():
    from atlas_sim.sim import simulate
    from atlas_sim.sim.scenarios import dependency_outage

    a = simulate(dependency_outage(True, seed=1))
    table = live.transition_table({"simulated": a, "live": a})
    assert list(table[("simulated", "state")][:2]) == ["open", "half_open"]
    assert (table[("live - simulated", "seconds")] == 0).all()


@pytest.mark.live
@pytest.mark.parametrize("through", ["run_load", "compose_experiment"])
def test_an_interrupted_live_run_leaves_no_fault_on(through):
    import _thread
    import threading

    import httpx

    from atlas_sim.service import run_load

    settings = Settings(retry_max_attempts=1, http_timeout=1.0, database_timeout=0.2)
    server = live.start_service("test-interrupt", settings=settings, seed=1)
    faults = [Fault(start=0.0, dependency_outage=True),
              Fault(start=0.0, end=30.0, dependency_error_rate=0.5)]
    load = Load(rate=20.0, duration=20.0)
    seen = {}

    def interrupt_when_the_fault_is_on() -> None:
        for _ in range(100):  # bounded: 10 s at most
            state = httpx.get(server.url + "/admin/faults", trust_env=False).json()
            if state["outage"]:
                seen["during"] = state
                _thread.interrupt_main()  # what the kernel's stop button does
                return
            threading.Event().wait(0.1)

    watcher = threading.Thread(target=interrupt_when_the_fault_is_on, daemon=True)
    try:
        watcher.start()
        with pytest.raises(KeyboardInterrupt) as raised:
            if through == "run_load":
                run_load(server.url, path="/api/compose", load=load, faults=faults,
                         progress=False)
            else:
                live.compose_experiment(server, settings, load=load, faults=faults, seed=1,
                                        progress=False)
        watcher.join(15)
        after = httpx.get(server.url + "/admin/faults", trust_env=False).json()
    finally:
        server.stop()
    assert seen["during"]["outage"] and seen["during"]["error_rate"] == 0.5
    assert not after["outage"] and after["error_rate"] == 0
    if through == "compose_experiment":
        assert "interrupted" in str(raised.value) and "was reset" in str(raised.value)


def test_the_retry_table_shows_each_world_with_its_interval_and_theory():
    from atlas_sim.sim import simulate
    from atlas_sim.sim.scenarios import retry_storm

    run = simulate(retry_storm("budget", seed=1))
    table = live.retry_table({"simulated": run, "live": run}, error_rate=0.3,
                             client=ClientPolicy(retry=RetryPolicy(max_attempts=3)))
    assert table.loc["theory", "errors (%)"] == pytest.approx(2.7)
    assert table.loc["theory", "attempts per request"] == pytest.approx(1.39)
    low = table.loc["live", "95% interval, low (%)"]
    high = table.loc["live", "95% interval, high (%)"]
    assert low < table.loc["live", "errors (%)"] < high
    assert table.loc["live", "requests"] == len(run.requests)  # a count, not 2196.0
    verdict = live.theory_verdict(table)
    assert ("inside" in verdict) == (low <= 2.7 <= high)
    table.loc["live", ["95% interval, low (%)", "95% interval, high (%)"]] = [0.0, 5.0]
    assert "lies inside the live run's 95% interval [0.00%, 5.00%]" in live.theory_verdict(table)


@pytest.mark.live
def test_a_shared_software_fault_beats_retries_on_other_instances_and_an_independent_one_not():
    settings = Settings(retry_max_attempts=1, circuit_breaker_failure_threshold=1000)
    server = live.start_service("test-shared-fault", settings=settings, seed=5)
    instances = [server, *live.start_instances(server, 2)]
    try:
        assert [i.name for i in instances] == ["test-shared-fault", "test-shared-fault-2",
                                               "test-shared-fault-3"]
        # one seed, instance k's own streams, one config: instance k of the twin's cluster
        assert [i.app.state.atlas.seed for i in instances] == [5, 5, 5]
        assert [i.app.state.atlas.instance for i in instances] == [0, 1, 2]
        assert all(i.app.state.atlas.server is server.app.state.atlas.server for i in instances)
        runs = live.shared_fault_experiment(instances, settings, seed=5,
                                            load=Load(rate=200.0, requests=200))
        table = live.shared_fault_table(runs, error_rate=0.2, bad_input_rate=0.05, attempts=3)
    finally:
        for instance in instances:
            instance.stop()
    assert not [name for name in live.leftovers() if name.startswith("test-shared-fault")]
    failed = table["requests failed (%)"]
    first = table["first attempts failed (%)"]
    # the shared fault: the same requests fail in both worlds, on every attempt and instance
    assert failed["shared", "live"] == failed["shared", "simulated"] == first["shared", "live"]
    assert 1 <= failed["shared", "live"] <= 10  # theory 5% of 200 requests
    bad = runs["shared"]["live"].requests["status"].eq(500).sum()
    assert table.loc[("shared", "live"), "crash log lines"] == 3 * bad  # every attempt crashed
    # the independent fault: a fifth of first attempts fail, retries elsewhere rescue them
    assert 10 <= first["independent", "live"] <= 30
    assert 10 <= first["independent", "simulated"] <= 30
    assert failed["independent", "live"] <= 3 and failed["independent", "simulated"] <= 3
    assert table.loc[("shared", "theory"), "attempts per request"] == pytest.approx(1.1)
    with pytest.raises(ValueError, match="instances must hold at least 2 servers"):
        live.shared_fault_experiment(instances[:1], settings, seed=5)
