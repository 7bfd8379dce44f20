"""The fan-out model with a client policy: each backend call driven through GuardedCall, graded
against the closed forms of analysis.tail (hedged survival, extra calls, 1 - (1 - S)^n)."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_sim.analysis.tail import TailModel, hedge_delay_at
from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    HedgePolicy,
    RetryPolicy,
)
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim.fanout import CANCELLED, fanout, fanout_latency
from atlas_sim.workload import Distribution

FAST = Distribution(mean=0.01)
SLOW = 0.3
MODEL = TailModel(fast=FAST, slow_rate=0.01, slow_latency=SLOW)


def within(measured: float, expected: float, n: int, sigmas: float = 4.0) -> bool:
    """A proportion measured over ``n`` draws agrees with ``expected`` within binomial error."""
    se = np.sqrt(max(expected * (1 - expected), 1e-12) / n)
    return abs(measured - expected) <= sigmas * se + 1e-12


def hedge(delay: float, max_extra: int = 1, **kwargs) -> ClientPolicy:
    return ClientPolicy(hedge=HedgePolicy(delay=delay, max_extra=max_extra), **kwargs)


def test_a_policy_that_decides_nothing_changes_nothing():
    plain = fanout(10, 0.01, requests=300, fast=FAST, slow_latency=SLOW, seed=4)
    driven = fanout(10, 0.01, requests=300, fast=FAST, slow_latency=SLOW, seed=4,
                    client=ClientPolicy())
    for column in ("latency", "status", "attempts"):
        assert np.array_equal(plain.requests[column], driven.requests[column]), column
    assert np.array_equal(plain.attempts["latency"], driven.attempts["latency"])
    assert driven.meta["hedges"] == 0 and driven.meta["copies"] == 3000


@pytest.mark.parametrize("percentile", [90.0, 95.0, 99.0])
def test_hedged_call_latency_follows_the_closed_form(percentile):
    delay = hedge_delay_at(MODEL, percentile)
    n = 40_000
    run = fanout(1, 0.01, requests=n, fast=FAST, slow_latency=SLOW, client=hedge(delay),
                 seed=11)
    latency = run.requests["latency"].to_numpy()
    for t in (0.5 * delay, delay, 1.5 * delay, 2 * delay, 0.1, 0.25, 0.31):
        assert within(float((latency > t).mean()), MODEL.hedged_survival(t, delay), n), t
    # the extra load: a hedge for every call still out at the delay, S(d)...
    assert within(run.meta["hedges"] / n, MODEL.extra_calls(delay), n)
    assert MODEL.extra_calls(delay) == MODEL.survival(delay)
    # ...which is 1 - percentile, except where the percentile sits on the slow calls' atom
    # (every slow call takes exactly 0.3 s, so the p99 is 0.3 s and nothing is slower)
    expected = 1 - percentile / 100 if percentile < 99 else 0.0
    assert MODEL.extra_calls(delay) == pytest.approx(expected, abs=1e-7)  # bisection to 1 ns
    # every hedge leaves exactly one loser, cancelled when the winner answers
    assert run.meta["cancelled"] == run.meta["hedges"]
    losers = run.attempts[run.attempts["status"] == CANCELLED]
    assert len(losers) == run.meta["hedges"]
    assert run.requests["ok"].all()


def test_a_two_point_backend_hedged_gives_the_closed_form_of_its_tail_model():
    # The done-when shape: fast with probability 1 - p, slow (20x) with p; hedged after 2x the
    # fast latency, a call is slow only when both copies are (p^2), else fast or d + fast.
    service = Distribution(mean=0.01, kind="two_point", slow_share=0.05, slow_ratio=20.0)
    model = TailModel.two_point(service)
    fast, slow = service.two_point_values()
    delay = 2 * fast
    n = 20_000
    run = fanout(1, 0.0, requests=n, fast=service, slow_latency=0.0, seed=5,
                 client=hedge(delay))
    latency = run.requests["latency"].to_numpy()
    for t in (0.5 * fast, 1.5 * fast, delay + 0.5 * fast, delay + 1.5 * fast, 0.99 * slow):
        assert within((latency > t).mean(), model.hedged_survival(t, delay), n), t
    assert within(run.meta["hedges"] / n, model.extra_calls(delay), n)
    assert np.quantile(latency, 0.999) == pytest.approx(model.quantile(0.999, delay=delay))


def test_two_extra_copies_follow_the_closed_form():
    delay = hedge_delay_at(MODEL, 90.0)
    n = 40_000
    run = fanout(1, 0.01, requests=n, fast=FAST, slow_latency=SLOW,
                 client=hedge(delay, max_extra=2), seed=12)
    latency = run.requests["latency"].to_numpy()
    for t in (0.5 * delay, 1.5 * delay, 2.5 * delay, 0.2):
        assert within(float((latency > t).mean()), MODEL.hedged_survival(t, delay, 2), n), t
    third = float((run.requests["attempts"] == 3).mean())
    assert within(third, MODEL.survival(delay) * MODEL.survival(2 * delay), n)
    assert run.meta["hedges"] / n == pytest.approx(MODEL.extra_calls(delay, 2), abs=0.01)


def test_a_hedged_fanout_request_waits_for_its_slowest_hedged_call():
    delay = hedge_delay_at(MODEL, 95.0)
    n, width = 8000, 10
    run = fanout(width, 0.01, requests=n, fast=FAST, slow_latency=SLOW, client=hedge(delay),
                 seed=13)
    latency = run.requests["latency"].to_numpy()
    for t in (0.03, 0.05, 0.08):
        assert within(float((latency > t).mean()), MODEL.request_survival(t, width, delay), n)
    # without hedging, the share held up by a slow call is 1 - (1 - p)^n
    plain = fanout(width, 0.01, requests=n, fast=FAST, slow_latency=SLOW, seed=13)
    share = float((plain.requests["latency"] >= SLOW).mean())
    assert within(share, MODEL.slow_share(width), n)
    assert np.percentile(latency, 99) < 0.1 < SLOW == np.percentile(plain.requests["latency"], 99)


def test_a_copy_that_times_out_asks_for_the_next_at_once_and_all_failing_ends_599():
    # every call is slow (0.5 s); copies give up at 0.2 s; a hedge after 0.1 s
    always_slow = dict(fast=Distribution(mean=0.01, kind="constant"), slow_latency=0.5)
    run = fanout(1, 1.0, requests=3, client=hedge(0.1, max_extra=2, timeout=0.2),
                 **always_slow)
    # copy 1 at 0, copy 2 at 0.1 (timer), copy 1 times out at 0.2 -> copy 3 at once (0.2);
    # copy 2 times out at 0.3, copy 3 at 0.4: the call ends 599 at 0.4
    assert run.requests["status"].tolist() == [599] * 3
    assert run.requests["latency"].to_numpy() == pytest.approx([0.4] * 3)
    first = run.attempts[run.attempts["request_id"] == 0]
    assert first["t_start"].to_numpy() == pytest.approx([0.0, 0.1, 0.2])
    assert first["status"].tolist() == [599, 599, 599]


def test_retries_drive_through_the_same_call_and_a_budget_throttles_hedges():
    always_slow = dict(fast=Distribution(mean=0.01, kind="constant"), slow_latency=0.5)
    no_jitter = Backoff(base=0.1, multiplier=2.0, cap=1.0, jitter="none")
    run = fanout(1, 1.0, requests=2, client=ClientPolicy(
        timeout=0.2, retry=RetryPolicy(max_attempts=2, backoff=no_jitter)), **always_slow)
    assert run.requests["latency"].to_numpy() == pytest.approx([0.5, 0.5])  # 0.2 + 0.1 + 0.2
    assert run.requests["attempts"].tolist() == [2, 2]
    # a budget of 4 tokens: each timed-out copy costs one, hedges stop at half (2 tokens)
    run = fanout(1, 1.0, requests=4, client=hedge(0.05, timeout=0.2,
                                                  budget=BudgetConfig(max_tokens=4)),
                 **always_slow)
    assert run.requests["attempts"].tolist() == [2, 1, 1, 1]
    assert run.requests["status"].tolist() == [599, 596, 596, 596]


def test_a_breaker_is_refused_and_runs_repeat_per_seed():
    with pytest.raises(ValueError, match=r"client\.breaker"):
        fanout(2, 0.1, requests=10, client=ClientPolicy(breaker=BreakerConfig()))
    a = fanout(5, 0.05, requests=200, client=hedge(0.02), seed=9)
    b = fanout(5, 0.05, requests=200, client=hedge(0.02), seed=9)
    assert a.requests.equals(b.requests) and a.attempts.equals(b.attempts)


def test_the_event_engine_plays_the_slow_call_fault_as_the_service_does():
    from atlas_sim.sim import Dependency, Fault, Scenario, simulate
    from atlas_sim.workload import Load

    base = Scenario(load=Load(rate=50.0, duration=40.0),
                    server=ServerConfig(workers=50, service_time=Distribution(mean=0.001),
                                        dependency=Dependency(latency=Distribution(mean=0.002))),
                    seed=5)
    plain = simulate(base)
    slow = simulate(base.replace(faults=(Fault(start=10.0, end=30.0, dependency_slow_rate=0.3,
                                               dependency_slow_latency=0.2),)))
    window = slow.window(10.0, 29.5).requests["latency"].to_numpy()
    n = len(window)
    assert within(float((window >= 0.2).mean()), 0.3, n)
    assert (slow.window(0.0, 10.0).requests["latency"] < 0.2).all()
    # the slow coins come from a stream of their own: the other draws do not move
    outside = slow.window(31.0, 40.0).requests["latency"].to_numpy()
    assert np.array_equal(outside, plain.window(31.0, 40.0).requests["latency"].to_numpy())


def test_the_engines_dependency_call_sends_one_attempt_at_a_time_and_refuses_a_hedge():
    from atlas_sim.sim import Dependency, Scenario
    from atlas_sim.workload import Load

    hedging = hedge(0.01)
    # (a Scenario's client may hedge: tests/sim/test_hedged_engine.py, and run_load's too:
    # tests/service/test_loadgen_hedging.py; the engine's dependency call may not)
    with pytest.raises(ValueError, match=r"client\.hedge must be None"):
        Scenario(load=Load(rate=1.0, duration=1.0),
                 server=ServerConfig(dependency=Dependency(client=hedging)))


@pytest.mark.parametrize("width", [1, 7, 100])
def test_fanout_latency_is_the_runs_request_latency(width: int) -> None:
    """``fanout_latency`` gives the plain run's request latencies without its tables."""
    run = fanout(width, 0.02, requests=500, fast=FAST, slow_latency=SLOW, seed=11)
    latency = fanout_latency(width, 0.02, requests=500, fast=FAST, slow_latency=SLOW, seed=11)
    assert np.array_equal(latency, run.requests["latency"].to_numpy())


def test_fanout_latency_checks_as_fanout_does() -> None:
    with pytest.raises(ValueError, match="width"):
        fanout_latency(0)
    with pytest.raises(ValueError, match="fast"):
        fanout_latency(3, fast=0.01)  # type: ignore[arg-type]
