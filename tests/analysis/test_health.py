"""Measurement health (``analysis.health``): a live run that the host's own load spoiled says
so, with the figure, its limit and the reason; a healthy one says that, with its figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_sim.analysis.health import LIMITS, health_table, measurement_health
from tests.helpers import live_shaped_run

#: A live-shaped run of ``n`` requests, one attempt each, with the given send lags (s) and
#: the service's reported work per attempt (s).
live_run = live_shaped_run


def test_a_healthy_run_is_healthy_and_shows_its_figures_within_their_limits():
    health = measurement_health(live_run(), scale=0.02, expected_work=0.02)
    assert not health.spoiled and health.reasons == ()
    assert health.verdict == "healthy"
    assert health.figures == pytest.approx({"send lag mean": 0.0002, "send lag p99": 0.0002,
                                            "work overshoot": 0.0005})
    assert health.limits == pytest.approx({"send lag mean": 0.002, "send lag p99": 0.01,
                                           "work overshoot": 0.002})
    assert health.note.startswith("measurement healthy (send lag mean 0.2 ms <= 2.0 ms")
    assert "WARNING" not in str(health)


def test_large_send_lags_spoil_a_run_and_the_reason_names_figure_and_limit():
    lag = np.full(100, 0.0003)
    lag[-5:] = 0.2  # five requests held back 200 ms: a busy host's burst
    health = measurement_health(live_run(send_lag=lag), scale=0.02)
    assert health.spoiled and health.verdict == "spoiled by the host's load"
    assert health.reasons == ("send lag mean 10.3 ms > 2.0 ms (10% of 20.0 ms)",
                              "send lag p99 200.0 ms > 10.0 ms (50% of 20.0 ms)")
    assert str(health).startswith("WARNING: measurement spoiled by the host's load "
                                  "(send lag mean 10.3 ms > 2.0 ms")
    assert "work overshoot" not in health.figures  # no work asked for: not judged


def test_a_late_event_loop_spoils_a_run_whose_generator_kept_time():
    # The service held each slot 28 ms for 20 ms of work: a loop that wakes 8 ms late, which
    # is how a measured utilisation above 1 comes about at an offered 0.85.
    health = measurement_health(live_run(work=0.028), scale=0.02, expected_work=0.02)
    assert health.spoiled
    assert health.reasons == ("work overshoot 8.0 ms > 2.0 ms (10% of 20.0 ms)",)


def test_a_closed_loop_is_not_judged_by_its_send_lag_and_limits_can_be_changed():
    closed = measurement_health(live_run(send_lag=0.5, loop="closed"), scale=0.02)
    assert not closed.spoiled and closed.figures == {}
    assert closed.note == "measurement healthy (no figure the host could spoil)"
    loose = measurement_health(live_run(send_lag=0.004), scale=0.02,
                               limits={"send lag mean": 0.5})
    assert not loose.spoiled and loose.limits["send lag mean"] == pytest.approx(0.01)
    assert loose.limits["send lag p99"] == pytest.approx(LIMITS["send lag p99"] * 0.02)


def test_sends_that_never_left_are_left_out_of_the_lag():
    lag = np.full(100, np.nan)
    lag[:10] = 0.0001
    health = measurement_health(live_run(send_lag=lag), scale=0.02)
    assert health.figures["send lag p99"] == pytest.approx(0.0001) and not health.spoiled


def test_bad_input_is_refused_with_the_parameter_named():
    run = live_run()
    with pytest.raises(ValueError, match="scale must be a number > 0"):
        measurement_health(run, scale=0.0)
    with pytest.raises(ValueError, match="expected_work must be a number >= 0"):
        measurement_health(run, scale=0.02, expected_work=-1.0)
    with pytest.raises(ValueError, match="limits may name"):
        measurement_health(run, scale=0.02, limits={"round trip": 0.1})
    with pytest.raises(ValueError, match=r"limits\['send lag p99'\] must be a number > 0"):
        measurement_health(run, scale=0.02, limits={"send lag p99": 0.0})
    with pytest.raises(ValueError, match="run must be a RunResult"):
        measurement_health({"send_lag": [0.1]}, scale=0.02)  # type: ignore[arg-type]


def test_the_health_table_gives_each_figure_its_limit_and_the_verdict():
    table = health_table({
        "quiet": measurement_health(live_run(), scale=0.02),
        "busy": measurement_health(live_run(send_lag=0.05), scale=0.02)})
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["quiet", "busy"]
    assert list(table["measurement"]) == ["healthy", "spoiled by the host's load"]
    assert table.loc["busy", "send lag p99 (ms)"] == 50.0
    assert table.loc["busy", "send lag p99 limit (ms)"] == 10.0
    assert table.loc["quiet", "why"] == "every figure within its limit"
    assert "send lag p99 50.0 ms > 10.0 ms" in table.loc["busy", "why"]


# -- one rule for the client: measurement_health and live.generator_note ---------------------

def test_a_wait_at_the_clients_own_connection_limit_spoils_the_run():
    # the send lag is small, but requests queued at the client's single connection (the
    # client wait, its pool part): invisible to the send lag alone

    run = live_shaped_run(send_lag=0.0002, client_wait=0.3, pool_wait=0.29, max_connections=1)
    health = measurement_health(run, scale=0.02)
    assert health.spoiled and health.behind_schedule
    assert health.reasons == ("client wait p99 300.0 ms > 10.0 ms (50% of 20.0 ms)",)
    assert health.waited.startswith("requests waited at the client for a connection "
                                    "(max_connections=1)")
    assert "for a connection (max_connections=1)" in health.note


def test_the_generator_note_and_the_health_verdict_cannot_contradict():
    """The reviewer's case (scale 20 ms, send-lag p99 8 ms) and a grid around it: for the same
    run and scale, the note says "behind schedule" exactly when the health verdict has a client
    figure over its limit (so the run is spoiled), with the same where."""
    from atlas_sim.experiments import live

    lag = np.full(100, 0.0003)
    lag[-2:] = 0.008
    case = live_shaped_run(send_lag=lag)
    assert measurement_health(case, scale=0.02).verdict == "healthy"
    assert live.generator_note(case, scale=0.02).endswith(", on schedule")
    assert "behind schedule" in live.generator_note(case, scale=0.01)
    assert measurement_health(case, scale=0.01).spoiled
    for tail_lag in (0.0003, 0.003, 0.008, 0.03):
        for wait in (None, 0.001, 0.008, 0.05):
            for pool in (0.0, 0.04):
                lag = np.full(100, 0.0003)
                lag[-2:] = tail_lag
                run = live_shaped_run(send_lag=lag, client_wait=wait,
                                      pool_wait=None if wait is None else min(pool, wait),
                                      max_connections=2)
                for scale in (None, 0.005, 0.02, 0.1):
                    note = live.generator_note(run, scale=scale)
                    health = measurement_health(
                        run, scale=scale if scale is not None else
                        live.GENERATOR_TOLERANCE / LIMITS["client wait p99"])
                    behind = "behind schedule" in note
                    assert behind == health.behind_schedule, (tail_lag, wait, pool, scale)
                    assert behind <= health.spoiled  # behind schedule is always spoiled
                    assert note.endswith(f"behind schedule: {health.waited}" if behind
                                         else ", on schedule")


def test_the_service_reported_overrun_is_judged_as_the_work_overshoot():
    from atlas_sim.analysis.health import work_overshoot

    late = live_shaped_run(overrun=np.r_[np.full(50, 0.004), np.full(50, np.nan)])
    health = measurement_health(late, scale=0.01)
    assert health.figures["work overshoot"] == pytest.approx(0.004)  # NaN left out
    assert health.reasons == ("work overshoot 4.0 ms > 1.0 ms (10% of 10.0 ms)",)
    assert not health.behind_schedule  # the service's lateness, not the client's
    quiet = measurement_health(live_shaped_run(overrun=0.0003), scale=0.01)
    assert not quiet.spoiled and quiet.figures["work overshoot"] == pytest.approx(0.0003)
    # given the work asked for, the slot time beyond it is judged instead
    assert work_overshoot(late, 0.02) == pytest.approx(0.0005)
    assert work_overshoot(live_shaped_run()) is None
