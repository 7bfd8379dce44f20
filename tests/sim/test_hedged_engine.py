"""Hedged requests in the event engine: a Scenario whose client hedges, driven by GuardedCall's
actions (sim.client), graded against the closed form of analysis.tail, as the fan-out model is
in test_fanout.py; and the policy's rules on the engine's clock: the client timeout per copy,
the budget and the breaker on every copy, the cancelled copies counted nowhere."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_sim.analysis.tail import TailModel
from atlas_sim.policies import BreakerConfig, BudgetConfig, ClientPolicy, HedgePolicy
from atlas_sim.server_config import Dependency, ServerConfig
from atlas_sim.sim import Scenario, simulate
from atlas_sim.sim.engine import Run
from atlas_sim.sim.fanout import CANCELLED
from atlas_sim.workload import Distribution, Load

# The shape the closed form assumes: a constant fast time, slow (20x) for 5% of the work.
SERVICE = Distribution(mean=0.01, kind="two_point", slow_share=0.05, slow_ratio=20.0)
MODEL = TailModel.two_point(SERVICE)
FAST, SLOW = SERVICE.two_point_values()
DELAY = 2 * FAST  # between the fast and the slow time: a hedge for every slow first copy
ALWAYS_SLOW = ServerConfig(workers=100, service_time=Distribution(mean=0.5, kind="constant"))


def within(measured: float, expected: float, n: int, sigmas: float = 4.0) -> bool:
    """A proportion measured over ``n`` draws agrees with ``expected`` within binomial error
    (as in test_fanout.py)."""
    se = np.sqrt(max(expected * (1 - expected), 1e-12) / n)
    return abs(measured - expected) <= sigmas * se + 1e-12


def hedge(delay: float, max_extra: int = 1, **kwargs) -> ClientPolicy:
    return ClientPolicy(hedge=HedgePolicy(delay=delay, max_extra=max_extra), **kwargs)


def hedged(workers: int, max_extra: int = 1, *, rate: float = 50.0, duration: float = 400.0,
           seed: int = 3, **client) -> Scenario:
    return Scenario(load=Load(rate=rate, duration=duration),
                    server=ServerConfig(workers=workers, service_time=SERVICE),
                    client=hedge(DELAY, max_extra, **client), seed=seed)


def one_per_second(n: int) -> Load:
    """``n`` requests one second apart, so that each call is over before the next starts."""
    return Load(rate=1.0, requests=n, process="constant")


def agrees_with_the_closed_form(latency: np.ndarray, copies: np.ndarray,
                                max_extra: int) -> list[str]:
    """What disagrees with analysis.tail beyond sampling error: the survival at the points
    between its atoms, the p50 and p99 (each: the measured percentile is the closed form's,
    and the share of calls above it is the closed form's survival there), the extra copies."""
    n = len(latency)
    wrong = []
    points = [0.5 * FAST] + [i * DELAY + f * FAST for i in range(max_extra + 1)
                             for f in (0.5, 1.5)] + [0.99 * SLOW]
    for t in points:
        if not within(float((latency > t).mean()), MODEL.hedged_survival(t, DELAY, max_extra),
                      n):
            wrong.append(f"survival at {t:.4f}")
    for q in (0.5, 0.99):
        expected = MODEL.quantile(q, delay=DELAY, max_extra=max_extra)
        if np.quantile(latency, q) != pytest.approx(expected, abs=1e-6):
            wrong.append(f"p{q * 100:g}: {np.quantile(latency, q):.4f} vs {expected:.4f}")
        above = float((latency > expected + 1e-6).mean())
        if not within(above, MODEL.hedged_survival(expected + 1e-6, DELAY, max_extra), n):
            wrong.append(f"share above p{q * 100:g}")
    if not within(float((copies - 1).mean()) / max_extra,
                  MODEL.extra_calls(DELAY, max_extra) / max_extra, n):
        wrong.append(f"extra copies {float((copies - 1).mean()):.4f} vs "
                     f"{MODEL.extra_calls(DELAY, max_extra):.4f}")
    return wrong


@pytest.mark.parametrize("max_extra", [1, 2])
def test_a_hedged_scenario_gives_the_closed_form_hedged_latency(max_extra):
    run = simulate(hedged(workers=200, max_extra=max_extra))
    requests, attempts = run.requests, run.attempts
    assert len(requests) > 19_000 and requests["ok"].all()
    assert (attempts["queue_wait"].dropna() == 0).all()  # no copy queued: the closed form's case
    latency = requests["latency"].to_numpy()
    assert agrees_with_the_closed_form(latency, requests["attempts"].to_numpy(), max_extra) == []
    # the figures: p50 the fast time, p99 one hedge later (both copies slow: p^2 = 0.25%)
    assert np.quantile(latency, 0.5) == pytest.approx(FAST)
    assert np.quantile(latency, 0.99) == pytest.approx(DELAY + FAST)
    plain = simulate(hedged(workers=200).replace(client=ClientPolicy()))
    assert np.quantile(plain.requests["latency"], 0.99) == pytest.approx(SLOW)
    # every copy sent is a row; each call leaves its losers cancelled, one row each
    assert len(attempts) == requests["attempts"].sum()
    hedges = int((requests["attempts"] - 1).sum())
    assert (attempts["status"] == CANCELLED).sum() == hedges
    assert set(attempts["status"]) == {200, CANCELLED}


def test_copies_that_queue_make_hedging_worse_than_the_closed_form():
    # One worker at 20% load: the hedges queue behind the work of the copies they race, and
    # the cancelled copies still take the worker: the same check fails, and the tail is far off.
    run = simulate(hedged(workers=1, rate=20.0, duration=300.0))
    requests = run.requests
    latency = requests["latency"].to_numpy()
    wrong = agrees_with_the_closed_form(latency, requests["attempts"].to_numpy(), 1)
    assert "p99: " in " ".join(wrong) and len(wrong) >= 3, wrong
    assert np.quantile(latency, 0.99) > 2 * MODEL.quantile(0.99, delay=DELAY)
    assert (run.attempts["queue_wait"] > 0).mean() > 0.05


def test_each_copy_is_an_attempt_routed_to_the_next_instance_and_cancelled_at_the_win():
    scenario = hedged(workers=100, duration=40.0).replace(instances=2)
    run = Run(scenario)
    result = run.execute()
    assert run.outstanding == [0, 0]  # every copy left: answered, timed out or cancelled
    attempts = result.attempts.set_index(["request_id", "attempt"])
    twice = result.requests[result.requests["attempts"] == 2]
    assert len(twice) > 50
    for row in twice.itertuples():
        first, second = attempts.loc[(row.request_id, 1)], attempts.loc[(row.request_id, 2)]
        # NextInstance: request i to instance i mod 2, its next copy to the next instance
        assert first["instance"] == row.request_id % 2
        assert second["instance"] == (row.request_id + 1) % 2
        assert second["t_start"] == pytest.approx(row.t_start + DELAY)
        # the first copy was slow; the first to answer wins, the other is cut off then
        # (copy 1 wins only when both are slow: the slow time is 10x the delay)
        statuses = sorted([first["status"], second["status"]])
        assert statuses == [200, CANCELLED]
        assert first["t_end"] == second["t_end"] == row.t_end
    firsts = attempts.xs(1, level="attempt").loc[twice["request_id"]]
    assert within(float((firsts["status"] == 200).mean()), MODEL.slow_rate, len(twice))
    # the server did not hear of the cancellation: the slow copies were served to their end
    log = result.meta["server_log"]
    assert len(log) == len(result.attempts)
    # ... each by the instance its copy was sent to (a loser's wasted work included)
    done_by = log.set_index(["request_id", "attempt"])["instance"].sort_index()
    assert done_by.equals(attempts["instance"].sort_index())


def test_the_client_timeout_applies_to_each_copy():
    # every copy takes 0.5 s and is given up at 0.2 s: copy 2 at 0.1 (the delay), copy 3 at
    # 0.2 (copy 1's timeout asks for the next at once); copy 3 gives up at 0.4
    run = simulate(Scenario(load=one_per_second(3), server=ALWAYS_SLOW,
                            client=hedge(0.1, max_extra=2, timeout=0.2)))
    assert run.requests["status"].tolist() == [599] * 3
    assert run.requests["latency"].to_numpy() == pytest.approx([0.4] * 3)
    first = run.attempts[run.attempts["request_id"] == 0]
    assert first["attempt"].tolist() == [1, 2, 3]
    assert (first["t_start"] - run.requests["t_start"][0]).to_numpy() == pytest.approx(
        [0.0, 0.1, 0.2])
    assert first["status"].tolist() == [599, 599, 599]


def test_a_budget_at_half_refuses_the_hedge():
    # 4 tokens: the first call's two copies time out and cost one each, which leaves half;
    # from then on the hedge is refused, and each call ends 596 when its only copy fails
    run = simulate(Scenario(load=one_per_second(4), server=ALWAYS_SLOW,
                            client=hedge(0.05, timeout=0.2, budget=BudgetConfig(max_tokens=4))))
    assert run.requests["attempts"].tolist() == [2, 1, 1, 1]
    assert run.requests["status"].tolist() == [599, 596, 596, 596]


def test_every_copy_goes_through_the_breaker():
    # One failure opens it. Call A (t = 0): copy 2 at 0.15, copy 1 times out at 0.2 and opens
    # the breaker. Call B (t = 0.1): its hedge, due at 0.25, is refused; its copy 1 times out at
    # 0.3 and the call ends 597, as a refused retry does. Then nothing is sent at all.
    breaker = BreakerConfig(failure_threshold=1, recovery_timeout=100.0)
    run = simulate(Scenario(load=Load(rate=10.0, requests=3, process="constant"),
                            server=ALWAYS_SLOW, client=hedge(0.15, timeout=0.2,
                                                             breaker=breaker)))
    requests = run.requests
    assert requests["t_start"].to_numpy() == pytest.approx([0.0, 0.1, 0.2])
    assert requests["attempts"].tolist() == [2, 1, 0]
    assert requests["status"].tolist() == [599, 597, 597]
    opened = run.events[run.events["kind"] == "breaker"]
    assert opened["time"].tolist() == pytest.approx([0.2])


def test_cancelled_copies_are_neither_failures_nor_spent_tokens():
    # A slow share of 30% hedged at 2x the fast time: about 30% of calls leave a loser. Were a
    # cancelled copy a failure, a breaker opening at the first one would open, and a budget of
    # 10 tokens earning 0.1 per success would fall to half within a few dozen calls and stop
    # the hedging; neither does.
    service = Distribution(mean=0.01, kind="two_point", slow_share=0.3, slow_ratio=20.0)
    fast = service.two_point_values()[0]
    client = hedge(2 * fast, breaker=BreakerConfig(failure_threshold=1),
                   budget=BudgetConfig(max_tokens=10))
    run = simulate(Scenario(load=Load(rate=50.0, duration=40.0),
                            server=ServerConfig(workers=100, service_time=service),
                            client=client, seed=1))
    requests = run.requests
    n = len(requests)
    assert requests["ok"].all()
    assert (run.attempts["status"] == CANCELLED).sum() > 0.2 * n
    assert (run.events["kind"] == "breaker").sum() == 0
    late = requests[requests["t_start"] > 30.0]
    assert within(float((late["attempts"] == 2).mean()), 0.3, len(late))


def test_hedged_runs_repeat_per_seed_and_refuse_a_hedging_dependency_client():
    scenario = hedged(workers=4, duration=30.0, timeout=0.08).replace(
        instances=2, round_trip=0.002)
    a, b = simulate(scenario), simulate(scenario)
    assert a.requests.equals(b.requests) and a.attempts.equals(b.attempts)
    assert a.events.equals(b.events)
    c = simulate(scenario.replace(seed=4))
    assert not a.requests["latency"].equals(c.requests["latency"])
    assert (a.requests["latency"] >= 0.002).all()
    # the handler's dependency call still makes one attempt at a time
    with pytest.raises(ValueError, match=r"server\.dependency\.client\.hedge must be None"):
        Scenario(load=Load(rate=1.0, duration=1.0),
                 server=ServerConfig(dependency=Dependency(client=hedge(0.01))))
