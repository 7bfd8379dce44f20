"""The home-timeline load model against DDIA's arithmetic ("Describing Load"), and its follower
distribution against direct integration and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from atlas_sim.analysis.timeline import FollowerDistribution, HomeTimeline


def test_fan_out_on_write_makes_ddias_345k_timeline_inserts_a_second():
    model = HomeTimeline()
    write = model.fan_out_on_write()
    assert write.timeline_inserts == pytest.approx(4_600 * 75)  # DDIA: 345k
    assert write.peak_timeline_inserts == pytest.approx(12_000 * 75)
    assert write.lookups == pytest.approx(300_000)  # one cached timeline per read
    assert write.worst_post == pytest.approx(model.followers.largest)


def test_fan_out_on_read_looks_up_every_followed_account():
    read = HomeTimeline().fan_out_on_read()
    assert read.timeline_inserts == 0
    assert read.lookups == pytest.approx(300_000 * 75)  # 75 followees per read on average
    assert read.total == pytest.approx(4_600 + 22_500_000)


def test_the_default_population_has_an_account_over_ddias_30_million():
    f = FollowerDistribution()
    assert f.largest > 30e6
    assert f.mean == 75 and f.partial_mean() == pytest.approx(75, rel=1e-12)
    # the rank-size form: the largest account is the level one account in N exceeds
    assert f.largest == pytest.approx(f.minimum * f.accounts ** (1 / f.tail_index))
    assert f.accounts_above(f.largest) == 0


@pytest.mark.parametrize(("tail_index", "mean", "accounts"),
                         [(1.15, 75, 150e6), (1.3, 75, 150e6), (2.0, 75, 1e6), (3.5, 75, 1e6),
                          (1.0, 5, 1e6), (1.0 + 1e-9, 5, 1e6), (0.8, 2, 1e6)])
def test_partial_means_agree_with_direct_integration(tail_index, mean, accounts):
    f = FollowerDistribution(tail_index=tail_index, mean=mean, accounts=accounts)
    alpha, m = f.tail_index, f.minimum
    kept = 1 - 1 / f.accounts

    def density(x):
        return alpha * m ** alpha * x ** (-alpha - 1) / kept

    # integrate in log space: the support spans many decades
    def between(a, b):
        return quad(lambda u: math.exp(u) * density(math.exp(u)) * math.exp(u),
                    math.log(a), math.log(b), limit=200)[0]

    assert between(m, f.largest) == pytest.approx(f.mean, rel=1e-8)
    for t in (m * 2, 1e3, f.largest / 2):
        assert f.partial_mean(high=t) == pytest.approx(between(m, t), rel=1e-8)
        assert f.partial_mean(high=t) + f.partial_mean(low=t) == pytest.approx(f.mean)
        probability = quad(lambda u: density(math.exp(u)) * math.exp(u),
                           math.log(t), math.log(f.largest), limit=200)[0]
        assert f.share_above(t) == pytest.approx(probability, rel=1e-8)


def test_samples_follow_the_distribution():
    f = FollowerDistribution(tail_index=2.5, accounts=1e6)  # finite variance: a tight mean
    x = f.sample(np.random.default_rng(1), 400_000)
    assert x.min() >= f.minimum and x.max() <= f.largest
    se = x.std() / math.sqrt(x.size)
    assert abs(x.mean() - f.mean) < 4 * se
    for t in (50.0, 200.0, 1000.0):
        p = f.share_above(t)
        assert abs((x > t).mean() - p) < 4 * math.sqrt(p * (1 - p) / x.size)
    assert f.quantile(0.0) == pytest.approx(f.minimum)
    assert f.quantile(1.0) == pytest.approx(f.largest)


def test_the_mean_stays_75_whatever_the_skew_and_the_tail_grows():
    lighter, heavier = FollowerDistribution(tail_index=2.0), FollowerDistribution(tail_index=1.2)
    assert lighter.partial_mean() == pytest.approx(heavier.partial_mean())
    assert heavier.largest > 100 * lighter.largest
    # the same average load, whatever the skew
    assert HomeTimeline(followers=lighter).fan_out_on_write().timeline_inserts == pytest.approx(
        HomeTimeline(followers=heavier).fan_out_on_write().timeline_inserts)


def test_a_tail_too_heavy_for_the_population_is_refused():
    with pytest.raises(ValueError, match="tail_index must be large enough"):
        FollowerDistribution(tail_index=1.1)
    with pytest.raises(ValueError, match=r"tail_index must be a number >= 0\.5 and <= 5"):
        FollowerDistribution(tail_index=0.2)


def test_the_hybrid_moves_follows_from_inserts_to_lookups():
    model = HomeTimeline()
    f = model.followers
    t = 1e6
    hybrid = model.hybrid(t)
    celebrity_follows = f.partial_mean(low=t)
    assert hybrid.timeline_inserts == pytest.approx(4_600 * (75 - celebrity_follows))
    assert hybrid.lookups == pytest.approx(300_000 * (1 + celebrity_follows))
    assert hybrid.worst_post == t
    assert hybrid.accounts_read_on_demand == pytest.approx(
        f.accounts * ((f.minimum / t) ** f.tail_index - 1 / f.accounts) / (1 - 1 / f.accounts))
    # the ends: no celebrities is fan-out on write; everyone a celebrity reads all on demand
    assert model.hybrid(math.inf).total == pytest.approx(model.fan_out_on_write().total)
    assert model.hybrid(f.largest).total == pytest.approx(model.fan_out_on_write().total)
    everyone = model.hybrid(f.minimum / 2)
    assert everyone.timeline_inserts == 0 and everyone.worst_post == 0
    assert everyone.lookups == pytest.approx(300_000 * (1 + 75))


def test_total_work_is_least_at_an_end_and_the_ratio_says_which():
    for ratio, end in ((300_000 / 4_600, "largest"), (0.5, "minimum")):
        model = HomeTimeline(reads_per_second=ratio * 4_600)
        f = model.followers
        best = model.work_minimising_threshold()
        assert best == getattr(f, end)
        grid = np.geomspace(f.minimum, f.largest, 60)
        totals = [model.hybrid(t).total for t in grid]
        assert model.hybrid(best).total <= min(totals) * (1 + 1e-12)


def test_one_celebrity_post_costs_minutes_of_the_sites_average_fan_out():
    model = HomeTimeline()
    seconds = model.celebrity_post_seconds()
    assert seconds == pytest.approx(model.followers.largest / 345_000)
    assert 90 < seconds < 110  # about 34 million inserts at 345k/s
    # 5 s to deliver, at the rate a 31M-follower post took up to 5 minutes to deliver
    assert HomeTimeline.threshold_for_delivery() == pytest.approx(5 * 31e6 / 300)


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="peak_posts_per_second"):
        HomeTimeline(peak_posts_per_second=1_000.0)
    with pytest.raises(ValueError, match="threshold"):
        HomeTimeline().hybrid(-1)
    with pytest.raises(ValueError, match="followers must be a FollowerDistribution"):
        HomeTimeline(followers=75)  # type: ignore[arg-type]
