"""The stall fault in the simulator (``Fault(stall=True)``): exact traces of tiny scenarios, and
the two generators' records of a stall against the closed forms of ``analysis.omission``."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_sim.analysis.omission import (
    closed_loop_stalled,
    open_loop_percentile,
    open_loop_stalled,
    stalled_share_over,
)
from atlas_sim.policies import ClientPolicy
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Fault, Scenario, simulate
from atlas_sim.workload import Distribution, Load
from tests.sim.test_traces import rows

STALL = Fault(start=0.25, end=1.25, stall=True, name="gc")
TWO_FAST = ServerConfig(workers=2, service_time=Distribution(mean=0.001, kind="constant"))


def constant(rate: float, duration: float, *, timeout: float | None = None,
             **kwargs) -> Scenario:
    """Requests every 1/``rate`` s for ``duration`` s, 0.1 s of work each, one worker."""
    server = ServerConfig(workers=1, service_time=Distribution(mean=0.1, kind="constant"),
                          timeout=timeout)
    return Scenario(load=Load(rate=rate, duration=duration, process="constant"), server=server,
                    **kwargs)


def test_a_stall_holds_arrivals_and_answers_until_it_ends():
    # Sends at 0, 0.5 and 1.0 s, 0.1 s of work each, one worker; stall from 0.25 to 1.25 s.
    # The first is answered before the stall; the second and third wait at the door until
    # 1.25 and are then served in turn, the third after the second (1.35 to 1.45).
    run = simulate(constant(2.0, 1.5, faults=(STALL,)))
    assert rows(run.requests) == [(0, 0.0, 0.1, 0.1, 200, 1, True),
                                  (1, 0.5, 1.35, 0.85, 200, 1, True),
                                  (2, 1.0, 1.45, 0.45, 200, 1, True)]
    assert [r[6] for r in rows(run.attempts)] == [0.0, 0.75, 0.35]  # the wait is queueing
    assert rows(run.events) == [(0.25, "fault", "gc", "start", "server stalled"),
                                (1.25, "fault", "gc", "end", "")]


def test_work_under_way_runs_on_but_its_answer_waits():
    # Sends every 0.2 s. The one sent at 0.2 s works until 0.3 s; the stall (0.25 to 1.25 s)
    # holds its answer, and its worker, until the end, so it is answered at 1.25 s, not
    # after another 0.1 s of work; those sent at 0.4, 0.6 and 0.8 s wait at the door and are
    # then served in turn.
    run = simulate(constant(5.0, 1.0, faults=(STALL,)))
    assert [r[2] for r in rows(run.requests)] == [0.1, 1.25, 1.35, 1.45, 1.55]
    # the server's log has its work done when it answered (the live service, too, applies
    # an order only once the stall lets its handler go on)
    assert rows(run.meta["server_log"])[1] == (1, 1, 1.25, 0)


def test_a_server_timeout_still_answers_during_a_stall():
    # HTTP_TIMEOUT 0.5 s, as the live Timeout layer in front of the work: the answer held
    # since 0.3 s (sent at 0.2) is cut at 0.7 s, the request at the door since 0.4 s at 0.9 s.
    run = simulate(constant(5.0, 1.0, timeout=0.5, faults=(STALL,)))
    assert [r[2:5] for r in rows(run.requests)][1:3] == [(0.7, 0.5, 504), (0.9, 0.5, 504)]


def test_the_result_says_which_loop_made_it():
    open_run = simulate(constant(2.0, 1.0))
    closed_run = simulate(Scenario(load=Load(clients=2, think_time=0.1, duration=1.0),
                                   server=ServerConfig(service_time=Distribution(mean=0.01))))
    assert open_run.meta["loop"] == "open" and closed_run.meta["loop"] == "closed"


def saw_the_stall(run, fault):
    req = run.requests
    return int(((req["t_start"] < fault.end) & (req["t_end"] > fault.start)).sum())


@pytest.mark.parametrize("clients", [1, 4, 8, 16])
@pytest.mark.parametrize("think_time", [0.0, 0.02])
def test_a_closed_loop_records_one_stalled_sample_per_connection(clients, think_time):
    fault = Fault(start=1.5, end=2.5, stall=True)
    run = simulate(Scenario(load=Load(clients=clients, think_time=think_time, duration=4.0),
                            server=TWO_FAST, faults=(fault,), seed=7))
    assert saw_the_stall(run, fault) == closed_loop_stalled(clients) == clients
    latency = run.requests["latency"].to_numpy()
    # each of them waited for (nearly) the whole stall: at most a think time less
    assert (np.sort(latency)[-clients:] > 1.0 - 10 * max(think_time, 0.001)).all()


@pytest.mark.parametrize(("rate", "stall"), [(50.0, 1.0), (200.0, 0.5), (20.0, 2.0)])
def test_an_open_loop_records_the_stall_as_theory_says(rate, stall):
    # A schedule at ``rate``, 1 ms of work on 2 workers (utilisation rho = rate / 2000): the
    # requests sent during the stall all wait for it, and their delays fall on the line
    # T - (1 - rho) u: the percentiles are theory's to within one send interval.
    fault = Fault(start=1.0, end=1.0 + stall, stall=True)
    duration = 5.0
    run = simulate(Scenario(load=Load(rate=rate, duration=duration, process="constant"),
                            server=TWO_FAST, faults=(fault,), seed=3))
    latency = run.requests["latency"].to_numpy()
    n, rho = latency.size, rate * 0.001 / 2
    assert n == rate * duration
    assert abs(saw_the_stall(run, fault) - open_loop_stalled(rate, stall)) <= 1
    for q in (0.9, 0.95, 0.99, 0.999):
        expected = open_loop_percentile(q, rate=rate, stall=stall, samples=n, base=0.001,
                                        utilisation=rho)
        assert np.quantile(latency, q) == pytest.approx(expected, abs=1.5 / rate), q
    for x in (0.1 * stall, 0.5 * stall, 0.9 * stall):
        share = float((latency - 0.001 > x).mean())
        assert share == pytest.approx(stalled_share_over(x, rate=rate, stall=stall, samples=n,
                                                         utilisation=rho), abs=2 / n)


def test_a_client_timeout_ends_the_wait_on_the_clients_side():
    # The stall holds the answer; a client that gives up after 0.3 s records 599 at 0.8 s.
    run = simulate(constant(2.0, 1.0, faults=(STALL,), client=ClientPolicy(timeout=0.3)))
    assert rows(run.requests)[1][:5] == (1, 0.5, 0.8, 0.3, 599)
