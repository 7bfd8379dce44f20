"""Exact traces of tiny scenarios, checked by hand (SimPy's habit: assert (name, time) traces).

Constant arrivals, constant service and no jitter make every time exact."""

from __future__ import annotations

import math

import pytest

from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    FixedLimit,
    RetryPolicy,
)
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Dependency, Fault, Scenario, simulate
from atlas_sim.workload import Distribution, Load

NO_JITTER = Backoff(base=0.1, multiplier=2, cap=1, jitter="none")


def rows(table):
    out = []
    for row in table.itertuples(index=False):
        out.append(tuple(None if isinstance(v, float) and math.isnan(v) else
                         (round(v, 9) if isinstance(v, float) else v) for v in row))
    return out


LOAD_FIELDS = ("rate", "duration", "steps")
CLIENT_FIELDS = ("timeout", "retry", "budget", "breaker")
SERVER_FIELDS = ("workers", "admission", "drop_expired", "dependency")
CONSTANT_WORK = Distribution(mean=0.1, kind="constant")


def one_request(*, server_timeout: float | None = None, **kwargs) -> Scenario:
    """One request a second for a second, constant 0.1 s of work on one worker; keywords name
    a ``Load`` field (rate, duration, steps), a ``ClientPolicy`` field (timeout, retry, budget,
    breaker), a ``ServerConfig`` field (workers, admission, drop_expired, dependency;
    ``server_timeout`` is its ``timeout``) or a ``Scenario`` field."""
    load = {"rate": 1.0, "process": "constant", "duration": 1.0}
    load |= {k: kwargs.pop(k) for k in LOAD_FIELDS if k in kwargs}
    client = {k: kwargs.pop(k) for k in CLIENT_FIELDS if k in kwargs}
    server = {k: kwargs.pop(k) for k in SERVER_FIELDS if k in kwargs}
    return Scenario(load=Load(**load), client=ClientPolicy(**client),
                    server=ServerConfig(service_time=CONSTANT_WORK, timeout=server_timeout,
                                        **server), **kwargs)


def test_one_request():
    run = simulate(one_request())
    assert rows(run.requests) == [(0, 0.0, 0.1, 0.1, 200, 1, True)]
    assert rows(run.attempts) == [(0, 1, 0.0, 0.1, 0.1, 200, 0.0, 0)]
    assert run.events.empty


def test_one_retry_after_the_server_was_down():
    run = simulate(one_request(
        retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER),
        faults=(Fault(start=0.0, end=0.05, capacity=0.0, name="crash"),)))
    assert rows(run.attempts) == [(0, 1, 0.0, 0.0, 0.0, 503, None, 0),
                                  (0, 2, 0.1, 0.2, 0.1, 200, 0.0, 0)]
    assert rows(run.requests) == [(0, 0.0, 0.2, 0.2, 200, 2, True)]
    assert rows(run.events) == [(0.0, "fault", "crash", "start", "server down"),
                                (0.05, "fault", "crash", "end", "")]


def test_queueing_and_the_server_timeout():
    # Three requests 1/3000 s apart on one worker, 0.1 s each, HTTP_TIMEOUT 0.25 s: the third
    # starts at 0.2 s and is cut off at its deadline (arrival + 0.25 s) with 504, work dropped.
    run = simulate(one_request(rate=3000.0, duration=0.001, server_timeout=0.25))
    assert [(r[0], r[2], r[4]) for r in rows(run.requests)] == [
        (0, 0.1, 200), (1, 0.2, 200), (2, round(2 / 3000 + 0.25, 9), 504)]
    assert rows(run.attempts)[2][6] == round(0.2 - 2 / 3000, 9)  # it did reach a worker


def test_shedding_refuses_what_exceeds_max_concurrent():
    run = simulate(one_request(rate=3000.0, duration=0.001, admission=FixedLimit(max_concurrent=2)))
    assert [r[4] for r in rows(run.requests)] == [200, 200, 429]


def test_client_timeout_and_the_work_nobody_waits_for():
    # One worker, 0.1 s per request, client timeout 0.15 s. Three requests at t ~ 0 and one
    # at 0.22 s. The second starts at 0.1 s and its client gives up at 0.1503 s (599) while
    # the server works on it until 0.2 s. The third's client has given up (at 0.1507 s) before
    # a worker reaches it at 0.2 s. Without drop_expired the server does that work anyway and
    # the fourth waits behind it, too long (599); with it, the work is skipped and the fourth
    # is served at once (200).
    base = one_request(rate=3000.0, steps=((0.001, 0.0), (0.22, 1000.0)),
                       duration=0.2205, timeout=0.15)
    kept = simulate(base)
    assert [(r[1], r[4]) for r in rows(kept.requests)] == [
        (0.0, 200), (round(1 / 3000, 9), 599), (round(2 / 3000, 9), 599), (0.22, 599)]
    assert rows(kept.attempts)[1][6] == round(0.1 - 1 / 3000, 9)  # it had reached a worker
    dropped = simulate(base.replace({"server.drop_expired": True}))
    assert [r[4] for r in rows(dropped.requests)] == [200, 599, 599, 200]


def test_a_client_breaker_opens_rejects_and_half_opens():
    run = simulate(one_request(
        rate=2.0, duration=4.0,
        breaker=BreakerConfig(failure_threshold=2, recovery_timeout=1.0),
        faults=(Fault(start=0.0, end=2.4, capacity=0.0, name="down"),)))
    statuses = [(r[1], r[4], r[5]) for r in rows(run.requests)]
    assert statuses == [(0.0, 503, 1), (0.5, 503, 1), (1.0, 597, 0), (1.5, 503, 1),
                        (2.0, 597, 0), (2.5, 200, 1), (3.0, 200, 1), (3.5, 200, 1)]
    breaker = run.events[run.events["kind"] == "breaker"]
    assert [(t, d) for t, d in zip(breaker["time"], breaker["detail"], strict=True)] == [
        (0.5, "open"), (1.5, "half_open"), (1.5, "open"), (2.5, "half_open"), (2.6, "closed")]


def test_budget_refuses_retries_once_half_its_tokens_are_spent():
    # Budget of 2 tokens: the first failure leaves 1 (= half), so its retry is refused.
    run = simulate(one_request(
        retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER),
        budget=BudgetConfig(max_tokens=2, token_ratio=0.1),
        faults=(Fault(start=0.0, end=0.5, capacity=0.0),)))
    assert rows(run.requests) == [(0, 0.0, 0.0, 0.0, 596, 1, False)]


def test_dependency_failures_retries_and_breaker_in_the_handler():
    dep = Dependency(latency=Distribution(mean=0.02), client=ClientPolicy(
        timeout=0.05, retry=RetryPolicy(max_attempts=2, backoff=NO_JITTER),
        breaker=BreakerConfig(failure_threshold=2, recovery_timeout=10.0)))
    # The dependency hangs (latency above its timeout) for the whole run: each call fails at
    # its 0.05 s timeout. Request 0: work 0.1, call, fail at 0.15, wait 0.1, call, fail at 0.3:
    # two failures open the breaker, 503. Request 1 (t=1): the breaker is open: 503 at 1.1.
    run = simulate(one_request(
        rate=1.0, duration=2.0, dependency=dep,
        faults=(Fault(start=0.0, end=5.0, dependency_added_latency=1.0),)))
    assert [(r[2], r[4]) for r in rows(run.requests)] == [(0.3, 503), (1.1, 503)]
    breaker = run.events[run.events["kind"] == "breaker"]
    assert list(breaker["name"]) == ["dependency"] and list(breaker["time"]) == [
        pytest.approx(0.3)]


def test_a_server_timeout_mid_call_counts_as_a_dependency_failure():
    dep = Dependency(latency=Distribution(mean=0.0), client=ClientPolicy(
        timeout=5.0, breaker=BreakerConfig(failure_threshold=1, recovery_timeout=10.0)))
    run = simulate(one_request(
        server_timeout=0.5, dependency=dep,
        faults=(Fault(start=0.0, end=1.0, dependency_added_latency=2.0),)))
    assert rows(run.requests) == [(0, 0.0, 0.5, 0.5, 504, 1, False)]
    assert list(run.events.loc[run.events["kind"] == "breaker", "detail"]) == ["open"]


def test_closed_loop_clients_think_between_requests():
    run = simulate(Scenario(load=Load(clients=3, think_time=0.0, synchronized=True,
                                        duration=0.95),
                            server=ServerConfig(workers=3, service_time=CONSTANT_WORK)))
    # Each client sends back to back: at 0, 0.1, ..., 0.9: 10 requests each.
    assert len(run.requests) == 30
    assert run.requests["t_start"].round(9).value_counts().iloc[0] == 3  # in step


def test_the_server_log_shows_work_done_for_clients_who_gave_up():
    # Client timeout 0.05 s, service 0.1 s, one retry: both attempts time out at the client, yet
    # the server completes both: a non-idempotent operation would have been applied twice.
    run = simulate(one_request(timeout=0.05,
                               retry=RetryPolicy(max_attempts=2, backoff=NO_JITTER)))
    assert [r[5] for r in rows(run.attempts)] == [599, 599]
    log = run.meta["server_log"]
    assert list(zip(log["attempt"], log["time"].round(9), strict=True)) == [(1, 0.1), (2, 0.25)]


def test_round_trip_and_work_overhead():
    # Round trip 0.02 s (0.01 each way), handling overhead 0.005 s on top of 0.1 s of work:
    # the server sees the request at 0.01, works until 0.115, the answer lands at 0.125.
    run = simulate(one_request(round_trip=0.02, work_overhead=0.005))
    assert rows(run.attempts) == [(0, 1, 0.0, 0.125, 0.125, 200, 0.0, 0)]
    assert rows(run.meta["server_log"]) == [(0, 1, 0.115, 0)]  # request, attempt, time, instance
    # A client timeout counts the way there and back: 0.12 s is not enough.
    late = simulate(one_request(round_trip=0.02, work_overhead=0.005, timeout=0.12))
    assert rows(late.requests)[0][4] == 599
    with pytest.raises(ValueError, match="round_trip must be a number >= 0"):
        one_request(round_trip=-1)
