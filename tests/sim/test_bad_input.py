"""A software error every server shares (``Fault(bad_input_rate=...)``): the handler crashes on
what a request carries, so the same requests fail on every attempt, unlike a per-attempt coin."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_sim.policies import Backoff, ClientPolicy, RetryPolicy
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Dependency, Scenario, simulate
from atlas_sim.workload import Distribution, Fault, Load, RequestInputs, request_inputs


def scenario(attempts: int, fault: Fault, *, seed: int = 3, requests: int = 2000) -> Scenario:
    return Scenario(load=Load(rate=100.0, requests=requests),
                    server=ServerConfig(workers=4, service_time=Distribution(mean=0.01)),
                    client=ClientPolicy(retry=RetryPolicy(
                        max_attempts=attempts, backoff=Backoff(base=0.01, cap=0.05))),
                    faults=(fault,), seed=seed)


def failed(run) -> np.ndarray:
    return ~run.requests.sort_values("request_id")["ok"].to_numpy()


@pytest.mark.parametrize("attempts", [1, 3, 5])
def test_exactly_the_requests_with_a_bad_input_fail_whatever_the_retries(attempts):
    run = simulate(scenario(attempts, Fault(start=0.0, bad_input_rate=0.05)))
    bad = request_inputs(3, 2000) < 0.05
    assert 70 < bad.sum() < 130  # about 5% of 2000
    assert np.array_equal(failed(run), bad)
    assert set(run.requests.loc[~run.requests["ok"], "status"]) == {500}
    # every bad request was tried every time, and every try crashed
    assert len(run.attempts) == 2000 + (attempts - 1) * bad.sum()
    assert set(run.attempts.loc[run.attempts["status"] != 200, "request_id"]) == set(
        np.flatnonzero(bad))


def test_an_independent_fault_of_the_same_size_is_beaten_by_retries():
    fault = Fault(start=0.0, dependency_error_rate=0.05)

    def with_dependency(attempts: int) -> Scenario:
        return scenario(attempts, fault).replace({"server.dependency": Dependency(
            latency=Distribution(mean=0.001), client=ClientPolicy(timeout=1.0))})

    once, thrice = (failed(simulate(with_dependency(k))).mean() for k in (1, 3))
    assert once == pytest.approx(0.05, abs=0.015)  # binomial: SE 0.5% at n = 2000
    assert thrice < 0.002  # theory 0.05**3 = 0.0125%


def test_a_larger_share_keeps_the_bad_inputs_of_a_smaller_one():
    small = failed(simulate(scenario(1, Fault(start=0.0, bad_input_rate=0.02))))
    large = failed(simulate(scenario(1, Fault(start=0.0, bad_input_rate=0.1))))
    assert small.sum() < large.sum() and not (small & ~large).any()


def test_the_window_bounds_the_bad_inputs_and_closed_loop_requests_carry_inputs_too():
    run = simulate(scenario(1, Fault(start=5.0, end=10.0, bad_input_rate=1.0)))
    crashed = run.requests[run.requests["status"] == 500]
    assert len(crashed) > 400 and crashed["t_start"].between(5.0, 10.0).all()
    closed = simulate(Scenario(load=Load(clients=5, duration=5.0),
                               server=ServerConfig(workers=5, service_time=Distribution(mean=0.01)),
                               faults=(Fault(start=0.0, bad_input_rate=0.1),), seed=4))
    ids = closed.requests.sort_values("request_id")
    bad = request_inputs(4, len(ids)) < 0.1
    assert np.array_equal(~ids["ok"].to_numpy(), bad)


def test_request_inputs_continue_one_sequence_and_bad_shares_are_checked():
    assert np.array_equal(request_inputs(7, 20)[:10], request_inputs(7, 10))
    read_on = RequestInputs(7)  # as a run without a known length reads them, in blocks
    whole = request_inputs(7, 5000)
    assert [read_on[i] for i in (0, 1023, 1024, 4999, 5)] == [whole[i] for i in
                                                               (0, 1023, 1024, 4999, 5)]
    values = request_inputs(7, 1000)
    assert values.shape == (1000,)
    assert values.min() >= 0
    assert values.max() < 1
    with pytest.raises(ValueError, match=r"bad_input_rate must be .*<= 1"):
        Fault(start=0.0, bad_input_rate=1.5)
    with pytest.raises(ValueError, match="count must be an integer >= 0"):
        request_inputs(7, -1)
    assert Fault(start=0.0, bad_input_rate=0.05).describe() == (
        "bad input crashes 5% of requests")
