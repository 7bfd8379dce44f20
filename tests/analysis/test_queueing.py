"""atlas_sim.analysis.queueing reproduces the project's reference table (computed independently,
see tests/reference/README.md)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from atlas_sim.analysis.queueing import MGc, MMc, erlang_c, squared_cv, time_average_in_system
from atlas_sim.analysis.stats import batch_means, replications
from atlas_sim.workload import Distribution

ROWS = list(csv.DictReader((Path(__file__).parents[1] / "reference" / "mmc_queue.csv").open()))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"c{r['servers']}-rho{r['utilisation']}")
def test_formulas_match_the_reference_table(row):
    q = MMc(arrival_rate=float(row["arrival_rate"]), service_rate=float(row["service_rate"]),
            workers=int(row["servers"]))
    for name in ("P_wait", "Wq", "W", "L"):
        assert getattr(q, name) == pytest.approx(float(row[name]), abs=6e-5), name
    for name, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert q.quantile(p) == pytest.approx(float(row[name]), abs=6e-5), name


def test_textbook_special_cases():
    assert erlang_c(1, 0.8) == pytest.approx(0.8)  # M/M/1: P(wait) = rho
    q = MMc(arrival_rate=0.5, service_rate=1.0, workers=1)
    assert pytest.approx(2.0) == q.W and q.quantile(0.99) == pytest.approx(9.2103, abs=1e-4)


def test_an_unstable_queue_is_refused():
    with pytest.raises(ValueError, match="arrival_rate must be a number >= 0 and < 2"):
        MMc(arrival_rate=2.0, service_rate=1.0, workers=2)


@pytest.mark.parametrize("theory", [MMc, MGc])
def test_the_old_name_servers_is_refused_with_the_new_one(theory):
    # the c of M/M/c is ``workers`` everywhere (as in ServerConfig); the old spelling says so
    with pytest.raises(ValueError, match=rf"{theory.__name__}\(servers=\.\.\.\) is no longer a "
                                         r"parameter: write workers=\.\.\. \(the c of M/M/c\)"):
        theory(arrival_rate=0.5, service_rate=1.0, servers=1)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        theory(arrival_rate=0.5, service_rate=1.0, workers=0)
    assert theory(arrival_rate=1.6, service_rate=1.0, workers=2).utilisation == 0.8


def test_intervals():
    ci = replications([1.0, 2.0, 3.0], confidence=0.95)
    assert ci.mean == 2.0 and ci.half_width == pytest.approx(2.4841, abs=1e-4)
    assert ci.contains(0.5) and not ci.contains(4.5)
    assert batch_means(list(range(100)), batches=4).mean == pytest.approx(49.5)
    # on the log scale: 1, 2, 3 in three batches, mean 2, t s / sqrt(3) = 2.4841 as above,
    # so 2 exp(+-2.4841 / 2): reaching further up than down
    log = batch_means([1.0, 2.0, 3.0], batches=3, scale="log")
    assert (log.low, log.mean, log.high) == pytest.approx(
        (2 * math.exp(-1.24205), 2.0, 2 * math.exp(1.24205)), rel=1e-4)
    assert log.high - log.mean > log.mean - log.low and log.contains(0.6) and log.contains(6.9)
    assert log.half_width == pytest.approx(log.high - log.mean)
    with pytest.raises(ValueError, match="scale must be one of 'linear', 'log'"):
        batch_means([1.0, 2.0], batches=2, scale="sqrt")
    with pytest.raises(ValueError, match='scale="log" needs values >= 0'):
        batch_means([-1.0, 2.0], batches=2, scale="log")
    with pytest.raises(ValueError, match="number of values must be an integer >= 2"):
        replications([1.0])


def test_squared_coefficient_of_variation_of_each_shape():
    assert squared_cv(Distribution(mean=0.02)) == 1.0
    assert squared_cv(Distribution(mean=0.02, kind="constant")) == 0.0
    lognormal = Distribution(mean=1.0, kind="lognormal", shape=1.0)
    assert squared_cv(lognormal) == pytest.approx(math.e - 1)
    draws = lognormal.sample(np.random.default_rng(0), 2_000_000)
    assert draws.var() / draws.mean() ** 2 == pytest.approx(math.e - 1, rel=0.05)
    with pytest.raises(ValueError, match="distribution must be a Distribution"):
        squared_cv(0.5)


def test_mgc_is_erlang_c_for_exponential_and_pollaczek_khinchine_for_one_worker():
    for row in ROWS:
        lam, mu, c = float(row["arrival_rate"]), float(row["service_rate"]), int(row["servers"])
        assert pytest.approx(
            float(row["W"]), abs=6e-5) == MGc(arrival_rate=lam, service_rate=mu, workers=c).W
    # M/D/1 at rho = 0.8, S = 1: Wq = rho S / (2 (1 - rho)) = 2 (half of M/M/1's 4)
    md1 = MGc(arrival_rate=0.8, service_rate=1.0, scv=0.0)
    assert md1.Wq == pytest.approx(2.0) and pytest.approx(3.0) == md1.W
    assert pytest.approx(2.4) == md1.L and md1.utilisation == pytest.approx(0.8)
    # lognormal sigma 1: Wq = 4 (1 + e - 1) / 2 = 2 e
    assert MGc(arrival_rate=0.8, service_rate=1.0, scv=math.e - 1).Wq == pytest.approx(2 * math.e)


def test_mgc_refuses_bad_input():
    with pytest.raises(ValueError, match="scv must be a number >= 0"):
        MGc(arrival_rate=0.5, service_rate=1.0, scv=-1.0)
    with pytest.raises(ValueError, match="arrival_rate must be a number >= 0 and < 8"):
        MGc(arrival_rate=8.0, service_rate=1.0, workers=8, scv=0.0)


def test_time_average_in_system_by_hand():
    # requests in the system: [0, 2) one, [1, 3) one, [4, 5) one -> area 2 + 2 + 1 = 5
    t_start, t_end = np.array([0.0, 1.0, 4.0]), np.array([2.0, 3.0, 5.0])
    assert time_average_in_system(t_start, t_end, start=0.0, end=5.0) == pytest.approx(1.0)
    # clipped to [1, 4]: one from [1, 2) and one from [1, 3): area 1 + 2 = 3 over 3 s
    assert time_average_in_system(t_start, t_end, start=1.0, end=4.0) == pytest.approx(1.0)
    # [1.5, 2.5]: two until 2, then one: 0.5 * 2 + 0.5 * 1 = 1.5 over 1 s
    assert time_average_in_system(t_start, t_end, start=1.5, end=2.5) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="t_end must be >= t_start"):
        time_average_in_system(t_end, t_start, start=0.0, end=5.0)
    with pytest.raises(ValueError, match="must be finite"):
        time_average_in_system(t_start, np.array([2.0, np.nan, 5.0]), start=0.0, end=5.0)
    with pytest.raises(ValueError, match="end must be a number > 5"):
        time_average_in_system(t_start, t_end, start=5.0, end=5.0)
    with pytest.raises(ValueError, match="same length"):
        time_average_in_system(t_start, t_end[:2], start=0.0, end=5.0)


def test_squared_cv_of_a_two_point_service_time_is_its_sampled_one():
    import numpy as np

    from atlas_sim.analysis.queueing import squared_cv
    from atlas_sim.workload import Distribution

    d = Distribution(mean=0.05, kind="two_point", slow_share=0.1, slow_ratio=20.0)
    x = d.sample(np.random.default_rng(1), 400_000)
    assert squared_cv(d) == pytest.approx(x.var() / x.mean() ** 2, rel=0.02)
    assert squared_cv(d) != pytest.approx(np.expm1(d.shape ** 2), rel=0.1)  # not a lognormal's
