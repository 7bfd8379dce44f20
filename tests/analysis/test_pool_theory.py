"""The pool's closed forms (``analysis.pool``) against hand-computed and published numbers and
against each other's limits. (Against the simulated pool: ``tests/sim/test_pool.py``.)"""

from __future__ import annotations

import math

import pytest

from atlas_sim.analysis.pool import (
    FiniteWaitingPool,
    MMcPool,
    TimeoutPool,
    boots_tijms,
    pool_theory,
)
from atlas_sim.analysis.queueing import MMc
from atlas_sim.policies import PoolConfig
from atlas_sim.workload import Distribution


def test_erlang_c_by_hand():
    # c = 2, a = 1.5 erlangs: C = (a^2/2 * 2/(2 - a)) / (1 + a + a^2/2 * 2/(2 - a)) = 4.5 / 7
    pool = MMcPool(arrival_rate=30, service_rate=20, size=2)
    assert pool.P_wait == pytest.approx(4.5 / 7)
    assert pool.mean_wait_granted == pytest.approx((4.5 / 7) / (40 - 30))
    assert pool.mean_wait_granted == pytest.approx(MMc(arrival_rate=30, service_rate=20,
                                                       workers=2).Wq)


def test_finite_buffer_by_hand():
    # c = 2, K = 3, a = 2 erlangs: p_n proportional to 1, 2, 2, 2, 2, 2 (n = 0..5)
    pool = FiniteWaitingPool(arrival_rate=40, service_rate=20, size=2, max_waiting=3)
    assert pool.P_refused == pytest.approx(2 / 11)
    assert pool.P_wait == pytest.approx(6 / 9)
    assert pool.mean_wait_granted == pytest.approx((2 / 9) * (1 + 2 + 3) / 40)


def test_m_m_1_plus_d_by_hand():
    # Barrer's M/M/1 with constant patience: P = rho (1 - rho) e / (1 - rho^2 e),
    # e = exp(-(mu - lambda) tau); rho = 0.5, mu = 1, tau = 1: 0.178735 (by hand)
    pool = TimeoutPool(arrival_rate=0.5, service_rate=1, size=1, timeout=1)
    assert pool.P_timeout == pytest.approx(0.1787347, abs=1e-6)
    # at rho = 1 the formula's limit is 1 / (2 + mu tau)
    critical = TimeoutPool(arrival_rate=20, service_rate=20, size=1, timeout=0.1)
    assert critical.P_timeout == pytest.approx(1 / (2 + 20 * 0.1))


@pytest.mark.parametrize(("rate", "size", "timeout"),
                         [(30, 2, 0.05), (15, 1, 0.2), (150, 10, 0.01), (5, 3, 1.0)])
def test_m_m_c_plus_d_agrees_with_boots_and_tijms(rate, size, timeout):
    pool = TimeoutPool(arrival_rate=rate, service_rate=20, size=size, timeout=timeout)
    published = boots_tijms(arrival_rate=rate, service_rate=20, size=size, timeout=timeout)
    assert pool.P_timeout == pytest.approx(published, rel=1e-9)


def test_a_timeout_that_never_fires_is_m_m_c_and_a_huge_buffer_too():
    mmc = MMcPool(arrival_rate=30, service_rate=20, size=2)
    patient = TimeoutPool(arrival_rate=30, service_rate=20, size=2, timeout=100.0)
    assert patient.P_timeout < 1e-100
    assert patient.P_wait == pytest.approx(mmc.P_wait)
    assert patient.mean_wait_granted == pytest.approx(mmc.mean_wait_granted)
    assert patient.wait_quantile(0.99) == pytest.approx(mmc.wait_quantile(0.99))
    roomy = FiniteWaitingPool(arrival_rate=30, service_rate=20, size=2, max_waiting=2000)
    assert roomy.P_refused < 1e-100
    assert roomy.mean_wait_granted == pytest.approx(mmc.mean_wait_granted)
    assert roomy.wait_quantile(0.9) == pytest.approx(mmc.wait_quantile(0.9), rel=1e-6)


def test_an_overloaded_pool_with_a_long_timeout_serves_its_capacity_without_overflow():
    pool = TimeoutPool(arrival_rate=100, service_rate=1, size=2, timeout=100.0)
    assert pool.P_timeout == pytest.approx(1 - 2 / 100, rel=1e-6)  # throughput c mu
    assert pool.mean_wait_granted == pytest.approx(100 - 1 / 98, rel=1e-3)  # near tau
    assert math.isfinite(pool.mean_wait) and pool.wait_quantile(0.5) <= 100


@pytest.mark.parametrize("model", [
    MMcPool(arrival_rate=30, service_rate=20, size=2),
    FiniteWaitingPool(arrival_rate=40, service_rate=20, size=2, max_waiting=3),
    TimeoutPool(arrival_rate=60, service_rate=20, size=2, timeout=0.1),
    TimeoutPool(arrival_rate=30, service_rate=20, size=2, timeout=0.05),
])
def test_quantiles_invert_the_cdf(model):
    assert model.wait_cdf(0.0) == pytest.approx(1 - model.P_wait
                                                if model.P_timeout == 0 else
                                                (1 - model.P_wait) / (1 - model.P_timeout))
    for p in (0.5, 0.9, 0.99):
        q = model.wait_quantile(p)
        if q > 0:
            assert model.wait_cdf(q) == pytest.approx(p)


def test_pool_theory_picks_the_model_and_refuses_what_it_cannot_do():
    hold = Distribution(mean=0.05)
    assert isinstance(pool_theory(rate=30, pool=PoolConfig(size=2), hold=hold), TimeoutPool)
    assert isinstance(pool_theory(rate=30, pool=PoolConfig(size=2), hold=hold,
                                  timeout_fires=False), MMcPool)
    assert isinstance(pool_theory(rate=30, pool=PoolConfig(size=2, max_waiting=3), hold=hold,
                                  timeout_fires=False), FiniteWaitingPool)
    with pytest.raises(ValueError, match="max_waiting"):
        pool_theory(rate=30, pool=PoolConfig(size=2, max_waiting=3), hold=hold)
    with pytest.raises(ValueError, match="hold"):
        pool_theory(rate=30, pool=PoolConfig(), hold=Distribution(mean=0.05, kind="constant"))
    with pytest.raises(ValueError, match="arrival_rate"):
        MMcPool(arrival_rate=40, service_rate=20, size=2)  # unstable
    with pytest.raises(ValueError, match="timeout"):
        TimeoutPool(arrival_rate=1, service_rate=1, size=1, timeout=0)
    with pytest.raises(ValueError, match="max_waiting"):
        FiniteWaitingPool(arrival_rate=1, service_rate=1, size=1, max_waiting=0)
    with pytest.raises(ValueError, match="p"):
        MMcPool(arrival_rate=1, service_rate=2, size=1).wait_quantile(1.0)
