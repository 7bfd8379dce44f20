"""The notebooks' experiments: every panel runs at its defaults and answers its sliders."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from atlas_sim.experiments import (
    breakers,
    faults,
    load,
    omission,
    percentiles,
    queueing,
    retries,
    tail,
    welcome,
)
from atlas_sim.policies import Backoff, Status
from atlas_sim.sim import simulate
from atlas_sim.sim.scenarios import full_stack, retry_storm


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_transient_errors_fall_geometrically_with_attempts():
    once = retries.transient_errors(0.2, 1).summary()
    thrice = retries.transient_errors(0.2, 3).summary()
    assert once["error_rate"] == pytest.approx(0.2, abs=0.02)
    assert thrice["error_rate"] == pytest.approx(0.008, abs=0.004)
    assert thrice["amplification"] == pytest.approx(1 + 0.2 + 0.04, abs=0.03)


def test_backoff_waits_respect_the_ceiling_and_jitter_spreads_them():
    none = retries.backoff_waits(Backoff(jitter="none"), retries=4, clients=50)
    full = retries.backoff_waits(Backoff(jitter="full"), retries=4, clients=50)
    assert (none.groupby("retry")["wait"].nunique() == 1).all()  # everyone in step
    assert (full["wait"] <= full["ceiling"]).all() and full["wait"].nunique() == len(full)


def test_backoff_panel_follows_its_sliders():
    panel = retries.backoff_panel()
    assert panel.update().table.loc[1, "ceiling (s)"] == pytest.approx(0.1)
    assert panel.update(base=0.5, jitter="none").table.loc[2, "min wait (s)"] == pytest.approx(1.0)


def test_herd_panel_shows_jitter_cutting_the_peak():
    panel = retries.herd_panel()
    in_step = panel.update(jitter="none").table.iloc[0]
    spread = panel.update(jitter="full").table.iloc[0]
    assert in_step["peak attempts/s after"] > 3 * spread["peak attempts/s after"]
    assert in_step["shed (429)"] > spread["shed (429)"]


def test_contention_panel_answers_its_sliders():
    panel = retries.contention_panel()
    few = panel.update(clients=20, repeats=2).table
    many = panel.update(clients=100, repeats=2).table
    assert (many["write calls"] > few["write calls"]).all()  # more clients, more collisions
    assert many["write calls"].idxmax() == "no_backoff"
    assert many["completion time (s)"].idxmax() == "none"


def test_retry_amplification_is_attempts_to_the_power_of_layers():
    assert retries.retry_amplification(4, 3) == 64
    with pytest.raises(ValueError, match="layers must be an integer >= 1"):
        retries.retry_amplification(3, 0)


def test_a_budget_caps_retry_load_in_an_error_burst():
    panel = retries.budget_panel()
    capped = panel.update(budget=True).table.iloc[0]
    free = panel.update(budget=False).table.iloc[0]
    assert capped["attempts per request"] < 1.05 < 1.2 < free["attempts per request"]
    assert free["p99 (s)"] > 5 * capped["p99 (s)"]  # the extra load queued everyone


def test_retries_without_idempotency_execute_work_more_than_once():
    executions = retries.executions_per_request(simulate(retry_storm("none")))
    assert executions.max() == 4 and (executions > 1).mean() > 0.5
    with pytest.raises(ValueError, match="needs a simulated run"):
        retries.executions_per_request(retries.contention_timelines(10)["full"])


def test_breaker_panel_fails_fast_and_keeps_the_healthy_half():
    panel = breakers.breaker_panel()
    with_breaker = panel.update(breaker=True).table.iloc[0]
    without = panel.update(breaker=False).table.iloc[0]
    assert with_breaker["ok within 200 ms (%)"] > without["ok within 200 ms (%)"] + 15
    rate_mode = panel.update(breaker=True, mode="failure_rate").results
    events = next(iter(rate_mode.values())).events
    assert (events["reason"].str.startswith("failure rate")).any()


def test_timeout_panel_measures_what_the_distribution_predicts():
    table = breakers.timeout_panel().update(timeout=0.2).table.iloc[0]
    assert table["false timeouts, measured (%)"] == pytest.approx(
        table["false timeouts, service time alone (%)"], abs=1)
    assert 0 < table["false timeouts, measured (%)"] < 10


@pytest.mark.parametrize("shape", [0.5, 2.0])
def test_a_timeout_cuts_off_exactly_the_requests_slower_than_it_under_common_random_numbers(
        shape):
    # why the timeout panel reads its untimed run instead of simulating each timeout
    untimed = breakers.timeouts(60.0, shape=shape, seed=7).requests
    panel = breakers.timeout_panel(seed=7)
    for timeout in (0.03, 0.1, 0.4):
        timed = breakers.timeouts(timeout, shape=shape, seed=7).requests
        cut = timed["status"] == Status.CLIENT_TIMEOUT
        assert (cut.to_numpy() == (untimed["latency"] > timeout).to_numpy()).all()
        shown = panel.update(timeout=timeout, shape=shape).table.iloc[0]
        assert shown["false timeouts, measured (%)"] == round(100 * cut.mean(), 2)


def test_status_breakdown_names_429_503_504_and_client_codes():
    run = simulate(full_stack(3000))
    table = breakers.status_breakdown(run)
    assert {"200 ok", "429 too many requests", "503 service unavailable"} <= set(table.index)
    assert table["requests"].sum() == len(run.requests)
    assert table["attempts"].sum() == len(run.attempts)


def test_overload_and_storm_panels_answer_their_sliders():
    overload = breakers.overload_panel()
    assert overload.update(max_concurrent=0).table.iloc[0]["p99 (s)"] > 2.0
    assert overload.update(max_concurrent=20).table.iloc[0]["p99 (s)"] < 1.0
    storm = breakers.storm_panel()
    ok = "ok 15 s after the drop (%)"
    assert storm.update(fix="none").table.iloc[0][ok] < 5
    assert storm.update(fix="budget").table.iloc[0][ok] > 95
    assert storm.update(fix="none", drop_to=0.9).table.iloc[0][ok] > 95
    # The prose's two experiments, in its order: a 30 s drop never comes back; a 30 s total
    # outage does, once it is over (recovery is judged after the drop, wherever it ends).
    assert storm.update(fix="none", drop_for=30.0, drop_to=0.3).table.iloc[0][ok] < 5
    assert storm.update(fix="none", drop_for=30.0, drop_to=0.0).table.iloc[0][ok] > 95


def test_storm_comparison_covers_every_fix():
    table = breakers.storm_comparison()
    ok = table["ok 15 s after the drop (%)"]
    assert ok["none"] < 5 and ok["budget"] > 95
    # a client breaker refuses requests without sending them: fewer attempts than requests
    assert table.loc["breaker", "attempts per request"] < 1


def test_the_breaker_panel_shows_what_its_sliders_change():
    panel = breakers.breaker_panel()
    default = panel.update().table.iloc[0]
    assert "errors (%)" not in panel.update().table.columns  # set by the outage, not the breaker
    slow_to_open = panel.update(failure_threshold=50).table.iloc[0]
    assert slow_to_open["ok within 200 ms (%)"] < default["ok within 200 ms (%)"]


def test_welcome_panel_answers_its_sliders():
    from atlas_sim.experiments import welcome

    panel = welcome.breaker_panel()
    default = panel.update().table.iloc[0]
    assert default["rejected calls"] == 18  # the notebook's scripted run
    quick = panel.update(recovery_timeout=1.0).table.iloc[0]
    assert quick["rejected calls"] < default["rejected calls"]
    later = panel.reset() and panel.update(down_from=6.0).table.iloc[0]
    assert later["first opened (s)"] == default["first opened (s)"] + 1.0


def test_token_ratio_matters_once_successes_are_common_enough_to_refill():
    # Tokens grow while (1 - p) * ratio > p: at p = 0.3 a ratio of 1 refills, 0.05 does not.
    panel = retries.budget_panel()
    slow = panel.update(budget=True, error_rate=0.3, token_ratio=0.05).table.iloc[0]
    fast = panel.update(budget=True, error_rate=0.3, token_ratio=1.0).table.iloc[0]
    assert fast["attempts per request"] > slow["attempts per request"] + 0.1
    assert fast["errors (%)"] < slow["errors (%)"]


def test_the_herd_tables_peak_is_the_plots_highest_bar_after_the_outage():
    panel = retries.herd_panel()
    view = panel.update(jitter="none")
    assert len(view.results) == 1
    ax = view.figure.axes[0]
    assert ax.get_ylabel() == "attempts/s"
    (bars,) = [a for a in ax.patches if a.get_label() == "attempts"]
    heights = bars.get_data()[0]  # StepPatch: values per bin of HERD_BIN seconds
    outage_end = 2.0
    first_after = round(outage_end / retries.HERD_BIN)
    assert view.table.iloc[0]["peak attempts/s after"] == int(heights[first_after:].max())
    assert any(a.get_label() == "outage" for a in ax.patches)  # the outage is shaded, named


def test_the_overload_panel_shades_the_spike_it_talks_about():
    figure = breakers.overload_panel().update(max_concurrent=0).figure
    for ax in figure.axes:  # an orange band from 10 s to 20 s behind each panel
        (band,) = [c for c in ax.collections
                   if len(c.get_paths()) and to_hex(c.get_facecolor()[0]) == "#ffcc80"]
        spans = [(p.vertices[:, 0].min(), p.vertices[:, 0].max()) for p in band.get_paths()]
        assert spans == [(pytest.approx(10.0), pytest.approx(20.0))]


def test_the_fault_panels_answer_their_sliders_and_agree_with_theory():
    from atlas_sim.experiments import faults

    fleet = faults.fleet_panel()
    table = fleet.update().table
    sim, theory = table["simulated (a year)"], table["theory (long run)"]
    assert abs(float(sim["failures per day"]) - float(theory["failures per day"])) < 0.3
    assert fleet.update(disks=20_000).table.loc["failures per day", "theory (long run)"] != (
        theory["failures per day"])
    for shape in (0.5, 4.0):  # wear-out included: the panel's fleet is of every age
        for mttf_years, repair_days in ((1.0, 30.0), (100.0, 0.5)):
            table = fleet.update(shape=shape, mttf_years=mttf_years, repair_days=repair_days,
                                 disks=100_000).table
            sim, theory = (float(table.loc["failures per day", c]) for c in table.columns)
            daily_error = math.sqrt(theory * 365 * (5 if shape < 1 else 1)) / 365
            assert abs(sim - theory) < 5 * daily_error, (shape, mttf_years, sim, theory)
    redundancy = faults.redundancy_panel()
    shown = redundancy.update(replicas=4).table
    assert shown.iloc[3, -1] != "" and shown.iloc[2, -1] == ""  # the simulated row follows
    shared = shown["with the shared fault, theory"].str.rstrip("%").astype(float)
    assert abs(shared[5] - shared[2]) < 0.2 * shared[2]  # replicas do not help against it
    independent = shown["independent faults only, theory"].str.rstrip("%").astype(float)
    assert independent[3] < independent[2] / 20  # but they do against independent faults


PANEL_MOVES = {
    welcome.breaker_panel: [{"failure_threshold": 2}, {"down_from": 12.0, "down_until": 30.0}],
    faults.fleet_panel: [{"disks": 50_000}, {"repair_days": 20.0}],
    faults.redundancy_panel: [{"replicas": 5}, {"shared_per_decade": 0.0}],
    retries.backoff_panel: [{"jitter": "none"}, {"retries": 10}],
    retries.herd_panel: [{"jitter": "full"}, {"clients": 500}],
    retries.contention_panel: [{"clients": 30, "repeats": 1}],
    retries.budget_panel: [{"budget": False}, {"burst": 3.0}],
    breakers.breaker_panel: [{"mode": "failure_rate"}, {"breaker": False}],
    breakers.timeout_panel: [{"timeout": 0.05}, {"shape": 2.0}],
    breakers.overload_panel: [{"max_concurrent": 0}, {"spike": 4.0}],
    breakers.storm_panel: [{"fix": "budget"}, {"drop_for": 25.0}],
    # notebook 03: the theory curves run off the fixed limits (a curve cut at its edge), the
    # legend and the suptitle follow workers and shape, the tail's x follows the slowest
    queueing.queueing_panel: [{"workers": 8, "service": "lognormal"}, {"utilisation": 0.95},
                              {"workers": 2, "service": "constant", "utilisation": 0.3}],
    tail.tail_panel: [{"width": 40, "slow_rate": 0.03}, {"percentile": 99.9},
                      {"width": 1, "slow_rate": 0.001, "percentile": 50.0}],
    # the second move takes the largest account (83.9k) far below DDIA's 30M line, and back
    load.load_panel: [{"tail_index": 2.5}, {"tail_index": 1.15, "log10_threshold": 8.0}],
    percentiles.recording_panel: [{"buckets": "reference card (Atlas service)"},
                                  {"mean_ms": 1000.0, "shape": 2.0, "significant_figures": 1}],
    omission.omission_panel: [{"stall": 0.1}, {"clients": 32, "rate": 200.0}],
}


#: Lines a panel's figure runs past its limits on purpose. The recording figure's left panel
#: shows the tail up to p99.95 (the exact line goes on to the slowest request's nines) and
#: response times up to 1.3 times the slowest (the buckets' line goes on to the last bound).
CLIPPED = {percentiles.recording_panel: {"axes 0: exact (every latency)",
                                         "axes 0: buckets, linear inside each"}}


@pytest.mark.parametrize("make", PANEL_MOVES, ids=lambda make: make.__module__.split(".")[-1]
                         + "." + make.__name__)
def test_every_panel_redraws_in_place_what_a_new_figure_would_show(make):
    from tests.analysis.test_figures import out_of_view, snapshot

    panel = make()
    figure = panel.update().figure
    for move in PANEL_MOVES[make]:
        view = panel.update(**move)
        assert view.figure is figure  # the panel's one figure, updated in place
        assert set(out_of_view(figure)) <= CLIPPED.get(make, set())  # limits from the data
        fresh = make()
        expected = fresh.update(**view.params).figure  # built anew for these values
        assert snapshot(view.figure) == snapshot(expected)


def test_the_contention_panel_reuses_each_seeds_runs_and_keeps_the_means(monkeypatch):
    from atlas_sim.sim.contention import compare_contention

    panel = retries.contention_panel(seed=5)
    three = panel.update(clients=30, repeats=3).results
    expected = compare_contention(30, seeds=range(5, 8)).rename(
        columns={"work": "write calls", "completion_time": "completion time (s)"})
    pd.testing.assert_frame_equal(three, expected)  # the very same numbers
    seeds_run: list[list[int]] = []

    def counting(clients, seeds, **options):
        seeds_run.append(list(seeds))
        return compare_contention(clients, seeds, **options)

    monkeypatch.setattr(retries, "compare_contention", counting)
    panel.update(repeats=4)  # one more seed: only its runs
    panel.update(repeats=2)  # fewer: nothing to run
    panel.update(clients=40)  # other clients: both seeds anew
    assert seeds_run == [[8], [5], [6]]
