"""Notebook 03's coordinated-omission section: the closed forms, the simulated pair of
generators against them, the panel, and (live) both generators at once through one stall."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_sim.analysis.omission import (
    closed_loop_percentile,
    closed_loop_stalled,
    open_loop_percentile,
    open_loop_stalled,
    samples_above,
    stalled_share_over,
)
from atlas_sim.analysis.percentiles import exact_percentiles
from atlas_sim.experiments import live
from atlas_sim.experiments import omission as om
from atlas_sim.service.loadgen.timeline import plan_faults
from atlas_sim.workload import Fault

# -- the closed forms -------------------------------------------------------------------------


def test_the_closed_forms_by_hand():
    # 100/s through a 1 s stall in a 10 s run: 100 samples delayed, evenly from 1 s down to 0.
    assert open_loop_stalled(100.0, 1.0) == 100.0
    assert open_loop_stalled(100.0, 1.0, utilisation=0.5) == 200.0  # the drain doubles it
    assert closed_loop_stalled(8) == 8
    assert stalled_share_over(0.5, rate=100.0, stall=1.0, samples=1000) == pytest.approx(0.05)
    assert stalled_share_over(2.0, rate=100.0, stall=1.0, samples=1000) == 0.0
    shares = stalled_share_over(np.array([0.0, 0.25, 1.0]), rate=100.0, stall=1.0,
                                samples=1000)
    assert shares == pytest.approx([0.1, 0.075, 0.0])
    # p99: 1% of 1000 samples = 10 above it, the 10 sent in the stall's first 0.1 s: 0.9 s
    assert open_loop_percentile(0.99, rate=100.0, stall=1.0, samples=1000) == pytest.approx(0.9)
    assert open_loop_percentile(0.5, rate=100.0, stall=1.0, samples=1000, base=0.002) == 0.002
    # and it inverts the share: share_over(p_q) = 1 - q
    p = open_loop_percentile(0.95, rate=100.0, stall=1.0, samples=1000, utilisation=0.2)
    assert stalled_share_over(p, rate=100.0, stall=1.0, samples=1000,
                              utilisation=0.2) == pytest.approx(0.05)
    # 8 stalled samples of 1000: the p99 (10 above it) misses them, the p99.9 does not
    assert closed_loop_percentile(0.99, clients=8, stall=1.0, samples=1000) == 0.0
    assert closed_loop_percentile(0.999, clients=8, stall=1.0, samples=1000) == 1.0
    # 4 of 371: (1 - 0.99) 371 = 3.71 < 4, but the p99 is the sample of rank round(367.29) =
    # 367, with 4 above it: not a stalled one (the panel's stall maximum showed 2001 ms here)
    assert samples_above(0.99, 371) == 4
    assert closed_loop_percentile(0.99, clients=4, stall=2.0, samples=371) == 0.0
    assert closed_loop_percentile(0.999, clients=4, stall=2.0, samples=371) == 2.0
    # q = 1 is the maximum; a connection thinking 20 ms before the stall sends into it: the
    # largest of 4 waits T minus the smallest of 4 exponential thinks, 20/4 ms on average
    assert samples_above(1.0, 371) == 0
    assert closed_loop_percentile(1.0, clients=4, stall=2.0, samples=371,
                                  think_time=0.02) == pytest.approx(2.0 - 0.005)
    # the p99.5 has 2 above it (rank round(369.1)): the third largest, the third smallest think
    assert closed_loop_percentile(0.995, clients=4, stall=2.0, samples=371, think_time=0.02) \
        == pytest.approx(2.0 - 0.02 * (1 / 4 + 1 / 3 + 1 / 2))
    assert open_loop_percentile(1.0, rate=100.0, stall=1.0, samples=1000, base=0.001) == 1.001


@settings(max_examples=300, deadline=None)
@given(samples=st.integers(1, 3000), q=st.floats(0.001, 1.0),
       clients=st.integers(1, 40), data=st.data())
def test_theory_reads_the_rank_the_measured_percentile_reads(samples, q, clients, data):
    # Synthetic runs that are exactly the model: theory must equal exact_percentiles.
    base, stall = 0.001, 1.5
    # closed loop: c samples of base + T above N - c of base
    c = min(clients, samples)
    closed = np.r_[np.full(samples - c, base), np.full(c, base + stall)]
    assert closed_loop_percentile(q, clients=c, stall=stall, samples=samples, base=base) \
        == exact_percentiles(closed, [100 * q])[0]
    # open loop: m requests sent 1/rate apart from the stall's start wait T, T - 1/rate, ...
    rate = data.draw(st.sampled_from([10.0, 50.0, 200.0]))
    m = min(samples, int(rate * stall))
    delays = base + np.maximum(0.0, stall - np.arange(m) / rate)
    opened = np.r_[np.full(samples - m, base), delays]
    assert open_loop_percentile(q, rate=rate, stall=stall, samples=samples, base=base) \
        == pytest.approx(exact_percentiles(opened, [100 * q])[0], abs=1e-12)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: open_loop_stalled(-1.0, 1.0), "rate must be a number >= 0"),
    (lambda: open_loop_stalled(1.0, 1.0, utilisation=1.0), "utilisation must be a number"),
    (lambda: closed_loop_stalled(0), "clients must be an integer >= 1"),
    (lambda: open_loop_percentile(0.0, rate=1.0, stall=1.0, samples=10), "q must be"),
    (lambda: open_loop_percentile(1.01, rate=1.0, stall=1.0, samples=10), "q must be"),
    (lambda: closed_loop_percentile(0.5, clients=1, stall=1.0, samples=9, think_time=-1.0),
     "think_time must be"),
    (lambda: open_loop_percentile(0.5, rate=0.0, stall=1.0, samples=10), "rate must be"),
    (lambda: stalled_share_over(0.1, rate=1.0, stall=-1.0, samples=10), "stall must be"),
    (lambda: closed_loop_percentile(0.5, clients=1, stall=1.0, samples=0), "samples must be"),
    (lambda: om.stall_fault(0.0), "stall must be a number > 0"),
    (lambda: om.simulate_omission(stall=3.0, stall_start=1.5), "stall_start \\+ stall must end"),
    # the c of M/M/c is spelled ``workers`` everywhere; the old name says what to write
    (lambda: om.simulate_omission(servers=2),
     r"simulate_omission\(servers=\.\.\.\) is no longer a parameter: write workers="),
    (lambda: om.omission_table({}, servers=2), r"omission_table\(servers=\.\.\.\) .* workers="),
    (lambda: om.plot_spectra({}, servers=2), r"plot_spectra\(servers=\.\.\.\) .* workers="),
    (lambda: om.SpectraFigure(servers=2), r"SpectraFigure\(servers=\.\.\.\) .* workers="),
    (lambda: Fault(start=0.0, stall=1), "stall must be True or False"),
])
def test_bad_arguments_are_refused_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_stall_is_one_switch_on_the_live_service():
    assert plan_faults([Fault(start=1.0, end=2.0, stall=True)]) == [
        (1.0, {"stall": True}), (2.0, {"stall": False})]
    # overlapping stalls are one stall, as in the simulator
    assert plan_faults([Fault(start=1.0, end=3.0, stall=True),
                        Fault(start=2.0, end=4.0, stall=True, capacity=0.5)]) == [
        (1.0, {"stall": True}), (2.0, {"capacity": 0.5}),
        (4.0, {"capacity": 1.0, "stall": False})]  # nothing to change at 3.0
    assert Fault(start=0.0, stall=True).describe() == "server stalled"


# -- simulated --------------------------------------------------------------------------------


def test_the_simulated_pair_matches_theory():
    runs = om.simulate_omission(seed=5)
    assert runs["open loop"].meta["loop"] == "open"
    assert runs["closed loop"].meta["loop"] == "closed"
    table = om.omission_table({"simulated": runs})
    sim = table.loc["simulated"]
    # one stalled sample per connection, exactly; lambda T for the open loop
    assert sim.loc["closed loop", "saw the stall"] == om.DEFAULTS["clients"] == 4
    assert sim.loc["open loop", "saw the stall"] == sim.loc["open loop, theory",
                                                            "saw the stall"] == 50
    for column in ("p90 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)"):
        assert sim.loc["open loop", column] == pytest.approx(
            sim.loc["open loop, theory", column], abs=20.0), column  # one send interval
    # the closed loop hides the stall below its p99.9; the open loop shows it from p80 up
    assert sim.loc["closed loop", "p99 (ms)"] < 5 < 500 < sim.loc["open loop", "p90 (ms)"]
    assert sim.loc["closed loop", "p99.9 (ms)"] > 900


def test_the_panel_runs_the_simulation_for_its_sliders():
    panel = om.omission_panel(seed=5)
    first = panel.update()
    assert first.table.loc["closed loop", "saw the stall"] == 4
    more = panel.update(clients=8)
    assert more.table.loc["closed loop", "saw the stall"] == 8
    shorter = panel.update(stall=0.5, rate=100.0)
    assert shorter.table.loc["open loop", "saw the stall"] == 50  # 100/s for 0.5 s
    assert shorter.table.loc["open loop", "max (ms)"] < 600
    assert shorter.figure is first.figure and len(shorter.figure.axes) == 1  # in place
    with pytest.raises(ValueError, match="clients must be an integer"):
        panel.update(clients=0)


# The panel's sliders: stall 0.1 to 2 s, connections 1 to 32, rate 10 to 200/s. The open loop
# depends on (stall, rate) only, the closed loop on (stall, clients) only, so pairing the
# connections with the rates covers both full grids, every end of every slider included.
STALLS = (0.1, 0.7, 1.3, 2.0)
CLIENTS_AND_RATES = ((1, 10.0), (3, 60.0), (12, 140.0), (32, 200.0))


@pytest.mark.parametrize("stall", STALLS)
def test_theory_follows_the_simulation_over_the_sliders_whole_range(stall):
    think, work = om.DEFAULTS["think_time"], om.DEFAULTS["service_time"]
    workers = om.DEFAULTS["workers"]
    panel = om.omission_panel(seed=2024)
    for clients, rate in CLIENTS_AND_RATES:
        table = panel.update(stall=stall, clients=clients, rate=rate).table
        for column in ("p50 (ms)", "p90 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)"):
            where = f"stall={stall}, clients={clients}, rate={rate}, {column}"
            # open loop: each percentile on the line T - (1 - rho) a / rate, to a millisecond
            assert table.loc["open loop", column] == pytest.approx(
                table.loc["open loop, theory", column], abs=1.0), where
            measured, theory = (table.loc["closed loop", column],
                                table.loc["closed loop, theory", column])
            if theory > 1e3 * stall / 2:  # theory: a stalled sample, the k-th largest of c
                n = int(table.loc["closed loop", "samples"])
                k = samples_above(float(column[1:-5]) / 100 if column != "max (ms)" else 1.0,
                                  n) + 1
                # the k-th smallest of c exponential thinks is a sum of k independent
                # exponentials (Renyi): six of its standard deviations, beyond which a single
                # exponential (k = 1) lies with a chance of e^-7
                spread = think * math.sqrt(sum(1 / (clients - i) ** 2 for i in range(k)))
                assert measured == pytest.approx(theory, abs=1e3 * 6 * spread), where
            else:  # below the stalled samples: the base, give or take the burst of c
                # requests the stall releases at once onto the workers
                assert measured == pytest.approx(
                    theory, abs=2.0 + 1e3 * clients * work / workers), where


def test_the_panel_at_the_stall_maximum_agrees_with_its_own_theory():
    # What the issue saw at stall = 2 s (theory 110.5, 2060.5 and 2001 ms against 51, 2001 and
    # 1.6): half the open loop's samples waited, so the run's median was not a base latency,
    # and the closed loop's p99 was read at the wrong rank.
    table = om.omission_panel(seed=2024).update(stall=2.0).table
    assert table.loc["open loop", "p50 (ms)"] == table.loc["open loop, theory", "p50 (ms)"] \
        == 51.0  # 1 ms of work + 2 s of stall drained at 2.5% of the workers' speed
    assert table.loc["open loop", "max (ms)"] == table.loc["open loop, theory", "max (ms)"] \
        == 2001.0
    assert table.loc["closed loop", "p99 (ms)"] < 2 and \
        table.loc["closed loop, theory", "p99 (ms)"] < 2


def test_the_spectra_plot_one_panel_per_world_on_a_nines_axis():
    runs = om.simulate_omission(seed=5)
    fig = om.plot_spectra({"simulated": runs, "again": runs})
    plt.close(fig)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:4] == ["0%", "90%", "99%", "99.9%"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    n = len(runs["closed loop"].requests)
    assert ax.get_title() == f"simulated: 200 open, {n} closed-loop samples"
    x, y = lines["closed loop"].get_data()
    assert x[-1] == pytest.approx(math.log10(n))  # the largest sample sits at 1 - 1/N
    assert np.sort(y)[-4] > 900 > np.sort(y)[-5]  # its 4 stalled samples, at the top


# -- live -------------------------------------------------------------------------------------


@pytest.mark.live
def test_live_both_generators_at_once_record_the_stall_as_theory_says():
    # 2.5 s of load (about 125 open-loop and 300 closed-loop requests), a 0.8 s stall.
    server = live.start_service("test-omission", seed=3)
    try:
        runs = om.live_omission(server, duration=2.5, stall=0.8, stall_start=0.8, seed=3)
    finally:
        server.stop()
    table = om.omission_table({"live": runs}).loc["live"]
    assert (runs["open loop"].requests["ok"].all() and runs["closed loop"].requests["ok"].all())
    # the stall is the open run's, on the closed run's clock too
    assert list(runs["closed loop"].events["reason"])[:1] == ["server stalled"]
    assert abs(table.loc["closed loop", "saw the stall"] - 4) <= 1
    assert abs(table.loc["open loop", "saw the stall"] - 40) <= 2  # 50/s x 0.8 s
    for column in ("p90 (ms)", "p99 (ms)", "max (ms)"):
        assert table.loc["open loop", column] == pytest.approx(
            table.loc["open loop, theory", column], abs=100.0), column
    assert table.loc["closed loop", "p90 (ms)"] < 100 < 400 < table.loc["open loop", "p90 (ms)"]


@pytest.mark.parametrize("samples", [1, 2, 7, 100, 999, 2000, 4001])
def test_the_vectorised_open_loop_spectrum_equals_the_per_sample_percentiles(samples):
    """Exactly, over a grid of settings: the figure's slider path draws the same curve."""
    for rate in (10.0, 200.0, 37.0):
        for stall in (0.1, 1.0, 1.7):
            for base, rho in ((0.0, 0.0), (0.002, 0.3), (0.0013, 0.85)):
                one_by_one = np.array([
                    open_loop_percentile((i + 1) / samples, rate=rate, stall=stall,
                                         samples=samples, base=base, utilisation=rho)
                    for i in range(samples)])
                spectrum = om.open_loop_spectrum(samples, rate=rate, stall=stall, base=base,
                                                 utilisation=rho)
                assert spectrum.shape == (samples,)
                np.testing.assert_array_equal(spectrum, one_by_one)
    with pytest.raises(ValueError, match="rate must be"):
        om.open_loop_spectrum(10, rate=0.0, stall=1.0)
    with pytest.raises(ValueError, match="samples must be"):
        om.open_loop_spectrum(0, rate=1.0, stall=1.0)
