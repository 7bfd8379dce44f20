"""Shared inputs: distributions, arrival schedules and named random streams."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_sim.workload import STREAM_NAMES, Distribution, arrival_times, rng_streams


def _two_point(mean=0.02, slow_share=0.05, slow_ratio=20.0):
    return Distribution(mean=mean, kind="two_point", slow_share=slow_share, slow_ratio=slow_ratio)


@pytest.mark.parametrize("kind", ["exponential", "constant", "lognormal", "two_point"])
def test_draws_have_the_requested_mean(kind):
    d = (_two_point() if kind == "two_point"
         else Distribution(mean=0.02, kind=kind, shape=0.8))
    x = d.sample(np.random.default_rng(1), 200_000)
    assert (x >= 0).all()
    se = x.std() / np.sqrt(x.size)
    assert abs(x.mean() - 0.02) <= 4 * se + 1e-12


def test_lognormal_shape_sets_the_tail_not_the_mean():
    rng = np.random.default_rng(2)
    mild = Distribution(mean=1, kind="lognormal", shape=0.3).sample(rng, 100_000)
    heavy = Distribution(mean=1, kind="lognormal", shape=1.5).sample(rng, 100_000)
    assert np.percentile(heavy, 99.9) > 3 * np.percentile(mild, 99.9)


def test_sampler_hands_out_the_same_sequence_as_sample():
    d = Distribution(mean=3.0)
    draw = d.sampler(np.random.default_rng(5), block=7)
    assert [draw() for _ in range(20)] == d.sample(np.random.default_rng(5), 20).tolist()


@pytest.mark.parametrize("kind", ["exponential", "lognormal"])
def test_quantile_matches_the_draws(kind):
    d = Distribution(mean=0.1, kind=kind, shape=1.0)
    x = d.sample(np.random.default_rng(3), 400_000)
    for q in (0.5, 0.95, 0.99):
        assert np.quantile(x, q) == pytest.approx(d.quantile(q), rel=0.03)
    assert Distribution(mean=0.1, kind="constant").quantile(0.99) == 0.1


@pytest.mark.parametrize("kind", ["exponential", "lognormal", "constant"])
def test_cdf_matches_the_draws_and_inverts_the_quantile(kind):
    d = Distribution(mean=0.1, kind=kind, shape=0.7)
    x = d.sample(np.random.default_rng(4), 200_000)
    for t in (0.01, 0.1, 0.3):
        assert d.cdf(t) == pytest.approx((x <= t).mean(), abs=0.005)
    if kind != "constant":
        assert d.cdf(d.quantile(0.99)) == pytest.approx(0.99)
    assert d.cdf(-1) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"mean": -1}, "mean must be a number >= 0"),
     ({"mean": 1, "kind": "pareto"}, "kind must be one of 'exponential', 'constant', 'lognormal'"),
     ({"mean": 1, "shape": 0}, "shape must be a number > 0 and <= 5")],
)
def test_bad_distributions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Distribution(**kwargs)


def test_existing_kinds_draw_and_print_as_before():
    # two_point came later: the kinds before it keep their draws and their repr
    rng = np.random.default_rng(11)
    assert Distribution(mean=2.0).sample(rng, 3).tolist() == (
        np.random.default_rng(11).exponential(2.0, 3).tolist())
    assert repr(Distribution(mean=0.01, kind="lognormal", shape=0.5)) == (
        "Distribution(mean=0.01, kind='lognormal', shape=0.5)")


def test_two_point_is_fast_or_slow_with_the_slow_share_and_ratio():
    d = _two_point(mean=0.02, slow_share=0.05, slow_ratio=20.0)
    fast, slow = d.two_point_values()
    assert slow == pytest.approx(20 * fast)
    assert 0.95 * fast + 0.05 * slow == pytest.approx(0.02)  # the mean is honoured
    x = d.sample(np.random.default_rng(6), 100_000)
    assert set(np.unique(x).tolist()) == {fast, slow}
    assert (x == slow).mean() == pytest.approx(0.05, abs=0.004)
    draw = d.sampler(np.random.default_rng(6), block=5)
    assert [draw() for _ in range(12)] == d.sample(np.random.default_rng(6), 12).tolist()
    assert (d.cdf(fast / 2), d.cdf(fast), d.cdf((fast + slow) / 2), d.cdf(slow)) == (
        0.0, pytest.approx(0.95), pytest.approx(0.95), 1.0)
    assert (d.quantile(0.5), d.quantile(0.95), d.quantile(0.96)) == (fast, fast, slow)
    assert "slow_share=0.05, slow_ratio=20.0" in repr(d)
    assert _two_point(slow_share=0.0).sample(np.random.default_rng(0), 4).tolist() == [0.02] * 4
    assert _two_point(slow_ratio=1.0).two_point_values() == (0.02, 0.02)


def test_two_point_is_the_closed_form_of_the_tail_model():
    from atlas_sim.analysis.tail import TailModel

    d = _two_point(mean=0.02, slow_share=0.05, slow_ratio=20.0)
    model = TailModel.two_point(d)
    fast, slow = d.two_point_values()
    assert (model.slow_rate, model.slow_latency) == (0.05, slow)
    for t in (0.5 * fast, fast, 2 * fast, slow):
        assert model.survival(t) == pytest.approx(1 - d.cdf(t))
    with pytest.raises(ValueError, match="two_point"):
        TailModel.two_point(Distribution(mean=0.02))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"kind": "two_point"}, "kind='two_point' needs slow_share"),
     ({"kind": "two_point", "slow_share": 0.1}, "kind='two_point' needs slow_ratio"),
     ({"kind": "two_point", "slow_share": 1.5, "slow_ratio": 2},
      "slow_share must be a number >= 0 and <= 1"),
     ({"kind": "two_point", "slow_share": 0.1, "slow_ratio": 0.5},
      "slow_ratio must be a number >= 1"),
     ({"slow_share": 0.1}, "slow_share applies to kind='two_point' only"),
     ({"kind": "lognormal", "slow_ratio": 3}, "slow_ratio applies to kind='two_point' only")],
)
def test_a_bad_two_point_is_refused_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Distribution(mean=1, **kwargs)
    with pytest.raises(ValueError, match="two_point_values needs kind='two_point'"):
        Distribution(mean=1).two_point_values()


def test_poisson_arrivals_have_the_rate_and_are_sorted():
    t = arrival_times(200.0, 50.0, np.random.default_rng(0))
    assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 50
    assert abs(t.size - 10_000) < 4 * np.sqrt(10_000)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps


def test_constant_arrivals_are_evenly_spaced():
    t = arrival_times(4.0, 2.0, np.random.default_rng(0), process="constant")
    assert t.tolist() == [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def test_steps_change_the_rate():
    t = arrival_times(100.0, 20.0, np.random.default_rng(9), steps=[(10.0, 400.0)])
    before, after = (t < 10).sum(), (t >= 10).sum()
    assert abs(before - 1000) < 150 and abs(after - 4000) < 300
    t0 = arrival_times(100.0, 20.0, np.random.default_rng(9), steps=[(5.0, 0.0), (15.0, 100.0)])
    assert not ((t0 >= 5) & (t0 < 15)).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": -1, "duration": 1}, "rate must be a number >= 0"),
     ({"rate": 1, "duration": 0}, "duration must be a number > 0"),
     ({"rate": 1, "duration": 10, "steps": [(5, 1), (4, 2)]}, r"steps\[1\] time must be"),
     ({"rate": 1, "duration": 10, "steps": [(5,)]}, r"steps\[0\] must be a \(time, rate\) pair")],
)
def test_bad_arrival_schedules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        arrival_times(rng=np.random.default_rng(0), **kwargs)


def test_streams_are_reproducible_and_independent():
    a, b = rng_streams(7), rng_streams(7)
    assert set(a) == set(STREAM_NAMES)
    draws = {name: a[name].random(3).tolist() for name in STREAM_NAMES}
    assert draws == {name: b[name].random(3).tolist() for name in STREAM_NAMES}
    assert len({tuple(v) for v in draws.values()}) == len(STREAM_NAMES)
    assert rng_streams(8)["service"].random() != rng_streams(7)["service"].random()
    with pytest.raises(ValueError, match="seed must be an integer >= 0 or None"):
        rng_streams(-1)


def test_instance_zero_has_the_single_server_streams_and_other_instances_their_own():
    def first(seed, **kw):
        return {name: g.random(2).tolist() for name, g in rng_streams(seed, **kw).items()}

    assert first(3, instance=0) == first(3)
    one, two = first(3, instance=1), first(3, instance=2)
    assert one == first(3, instance=1)  # reproducible
    values = [tuple(v) for streams in (first(3), one, two) for v in streams.values()]
    assert len(set(values)) == 3 * len(STREAM_NAMES)  # no stream shared by two instances
    with pytest.raises(ValueError, match="instance must be an integer >= 0"):
        rng_streams(3, instance=-1)


def test_a_fault_hits_the_instances_it_names():
    from atlas_sim.workload import Fault

    everywhere = Fault(start=0.0, capacity=0.5)
    assert everywhere.instances is None
    assert all(everywhere.applies_to(k) for k in range(4))
    one = Fault(start=0.0, capacity=0.5, instances=[1])
    assert one.instances == (1,)  # stored as a tuple
    assert [one.applies_to(k) for k in range(3)] == [False, True, False]
    assert "on instance 1" in one.describe()
    assert "on instances 0, 2" in Fault(start=0.0, capacity=0.5, instances=(0, 2)).describe()


@pytest.mark.parametrize(
    ("instances", "message"),
    [((), "instances must name at least one instance, each once"),
     ((1, 1), "instances must name at least one instance, each once"),
     ((-1,), r"instances\[0\] must be an integer >= 0"),
     ((0, 1.5), r"instances\[1\] must be an integer"),
     ("1", "instances must be a tuple of instance indices >= 0 or None"),
     (1, "instances must be a tuple of instance indices >= 0 or None")],
)
def test_a_bad_instances_list_is_refused(instances, message):
    from atlas_sim.workload import Fault

    with pytest.raises(ValueError, match=message):
        Fault(start=0.0, capacity=0.5, instances=instances)


def test_overlapping_faults_combine_by_one_rule():
    from atlas_sim.workload import Fault, FaultConditions

    assert FaultConditions.of(()) == FaultConditions()
    both = FaultConditions.of([
        Fault(start=0.0, capacity=0.5, added_latency=0.1, dependency_error_rate=0.2,
              bad_input_rate=0.01, dependency_slow_rate=0.1, dependency_slow_latency=0.3),
        Fault(start=0.0, capacity=0.5, added_latency=0.2, dependency_error_rate=0.1,
              dependency_added_latency=0.05, dependency_outage=True, stall=True,
              bad_input_rate=0.05, dependency_slow_rate=0.02, dependency_slow_latency=0.5)])
    assert both == FaultConditions(
        capacity=0.25, added_latency=pytest.approx(0.3), stall=True, dependency_error_rate=0.2,
        dependency_added_latency=0.05, dependency_outage=True, bad_input_rate=0.05,
        dependency_slow_rate=0.1, dependency_slow_latency=0.5)
