"""Tail latency in closed form (analysis.tail), against the published figures and hand
calculations."""

from __future__ import annotations

import math

import pytest

from atlas_sim.analysis.tail import TailModel, hedge_delay_at
from atlas_sim.workload import Distribution

FAST = Distribution(mean=0.01)


def test_the_tail_at_scale_figures():
    # Dean and Barroso, "The Tail at Scale": one slow call (1 s) in 100 per server; a request
    # to 100 servers: "63% of user requests will take more than one second"; one in 10,000
    # and 2,000 servers: "almost one in five user requests"
    assert TailModel(fast=FAST, slow_rate=0.01, slow_latency=1.0).slow_share(100) == (
        pytest.approx(0.634, abs=5e-4))
    assert TailModel(fast=FAST, slow_rate=1e-4, slow_latency=1.0).slow_share(2000) == (
        pytest.approx(0.181, abs=5e-4))
    # and the request's p99 is the slow call's latency as soon as 1 - 0.99^n > 1%
    model = TailModel(fast=FAST, slow_rate=0.01, slow_latency=1.0)
    assert model.quantile(0.99, width=100) == pytest.approx(1.0)
    assert model.request_survival(0.999, width=100) == pytest.approx(1 - 0.99 ** 100, rel=1e-9)


def test_without_slow_calls_the_model_is_the_fast_distribution():
    model = TailModel(fast=FAST, slow_rate=0.0, slow_latency=1.0)
    for q in (0.5, 0.95, 0.999):
        assert model.quantile(q) == pytest.approx(FAST.quantile(q), abs=1e-8)
    # hedged: min(X1, d + X2) of two exponentials; P(T > t) = exp(-t/m) exp(-(t-d)/m), t >= d
    d, t = 0.02, 0.05
    assert model.hedged_survival(t, d) == pytest.approx(math.exp(-t / 0.01 - (t - d) / 0.01))
    assert model.hedged_survival(0.01, d) == pytest.approx(math.exp(-1))  # before the hedge
    # n calls: the request is faster than t only if all are
    assert model.request_survival(t, width=5) == pytest.approx(1 - (1 - math.exp(-5)) ** 5)


def test_extra_calls_and_the_hedge_delay():
    model = TailModel(fast=FAST, slow_rate=0.01, slow_latency=0.3)
    d95 = hedge_delay_at(model, 95)
    assert model.survival(d95) == pytest.approx(0.05, abs=1e-7)
    assert model.extra_calls(d95) == pytest.approx(0.05, abs=1e-7)  # "approximately 5%"
    assert model.extra_calls(0.0) == 1.0  # a delay of 0 sends both copies at once
    assert model.extra_calls(0.0, max_extra=3) == 3.0
    assert model.extra_calls(None) == 0.0
    # copy 3 goes out at 2d only if copies 1 and 2 are both still out
    assert model.extra_calls(d95, 2) == pytest.approx(
        model.survival(d95) + model.survival(d95) * model.survival(2 * d95))
    # hedging at the p95 pulls the p99 and p99.9 of one call from the slow calls' 0.3 s down
    # to a few fast calls' worth: both copies are slow only once in 10,000
    assert model.quantile(0.999) == pytest.approx(0.3)
    assert model.quantile(0.999, delay=d95) < 0.07
    assert model.hedged_survival(0.2, d95) == pytest.approx(
        (0.99 * math.exp(-20) + 0.01) * (0.99 * math.exp(-(0.2 - d95) / 0.01) + 0.01))


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"fast": 0.01, "slow_rate": 0.01, "slow_latency": 0.3}, "fast"),
    ({"fast": FAST, "slow_rate": 1.5, "slow_latency": 0.3}, "slow_rate"),
    ({"fast": FAST, "slow_rate": 0.01, "slow_latency": -1}, "slow_latency"),
])
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TailModel(**kwargs)
    model = TailModel(fast=FAST, slow_rate=0.01, slow_latency=0.3)
    with pytest.raises(ValueError, match="percentile"):
        hedge_delay_at(model, 100)
    with pytest.raises(ValueError, match="max_extra"):
        model.extra_calls(0.01, max_extra=5)


def test_a_percentile_on_the_slow_calls_plateau_is_the_slow_latency():
    # exactly 1 call in 100 takes 300 ms and every other call is faster: the p99 is 300 ms,
    # although the fast calls' tail is below a float's resolution long before
    model = TailModel(fast=Distribution(mean=0.005), slow_rate=0.01, slow_latency=0.3)
    assert model.quantile(0.99) == 0.3
    assert model.quantile(0.98) < 0.03
    # and a hedge at that percentile is never sent: nothing is slower than 300 ms
    assert model.extra_calls(hedge_delay_at(model, 99)) == 0.0
