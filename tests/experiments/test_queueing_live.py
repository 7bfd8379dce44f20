"""Notebook 03's live hockey stick: every point is kept and drawn, a saturated one (measured
utilisation >= 1) labelled as having no steady state, and a point the host's load spoiled
marked as such in the table and the figure. Offline: the sweeps are built by hand in the
shape ``live_sweep`` returns."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.lines import Line2D

from atlas_sim.experiments import queueing
from atlas_sim.results import RunResult
from atlas_sim.server_config import ServerConfig
from atlas_sim.workload import Distribution, Load, rng_streams
from tests.helpers import recording_progress

SERVICE = Distribution(mean=0.02)
SEED = 11


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def point(utilisation: float, *, requests: int, late: float = 0.0005,
          send_lag: float = 0.0002) -> queueing.LivePoint:
    """A live point of ``requests`` requests in 1 s on one slot: each holds its slot for the
    service time drawn for it plus ``late`` (the event loop's lateness), queues behind the
    one before it (FIFO, back to back), and left ``send_lag`` after its schedule."""
    work = SERVICE.sample(rng_streams(SEED)["service"], requests) + late
    sent = np.arange(requests) / requests
    start = np.empty(requests)
    free = 0.0
    for i, t in enumerate(sent):
        start[i] = max(t, free)
        free = start[i] + work[i]
    queue = start - sent
    latency = queue + work + 0.002  # and a 2 ms round trip
    lag = np.full(requests, send_lag)
    run = RunResult.from_columns(
        requests={"request_id": np.arange(requests), "t_start": sent, "t_end": sent + latency,
                  "latency": latency, "status": np.full(requests, 200),
                  "attempts": np.ones(requests), "ok": np.ones(requests, dtype=bool)},
        attempts={"request_id": np.arange(requests), "attempt": np.ones(requests),
                  "t_start": sent, "t_end": sent + latency, "latency": latency,
                  "status": np.full(requests, 200), "queue_wait": queue,
                  "instance": np.zeros(requests, dtype=int)},
        duration=1.0, source="live",
        meta={"loop": "open", "load": Load(rate=float(requests), duration=1.0),
              "server_work": work, "send_lag": lag,
              "send_lag_p99": float(np.percentile(lag, 99)), "origin_monotonic": 0.0})
    return queueing.LivePoint(utilisation=utilisation, run=run, gauge=np.empty((0, 2)),
                              before={}, after={200: requests})


def sweep(*points: queueing.LivePoint) -> queueing.LiveSweep:
    return queueing.LiveSweep(server=ServerConfig(workers=1, service_time=SERVICE), seed=SEED,
                              seconds=1.0, points=points)


def test_the_twin_is_the_services_own_server_config_on_the_work_route(monkeypatch):
    """No field mapping between the worlds: the simulated twin of a live point runs the very
    ``ServerConfig`` the service was built from, on ``/api/work``'s path, with the point's
    load and the service's seed."""
    config = ServerConfig(workers=1, service_time=SERVICE, timeout=30.0)
    scenarios = []
    real_simulate = queueing.simulate

    def simulate(scenario):
        scenarios.append(scenario)
        return real_simulate(scenario)

    monkeypatch.setattr(queueing, "simulate", simulate)
    live = point(0.5, requests=25)
    table = queueing.live_table(queueing.LiveSweep(server=config, seed=SEED, seconds=1.0,
                                                   points=(live,)))
    (twin,) = scenarios
    assert twin.configs == (config,) and twin.configs[0] is config
    assert twin.path == "/api/work" and twin.seed == SEED
    assert twin.load is live.run.meta["load"]
    assert twin.round_trip == pytest.approx(0.002)  # the measured round trip
    assert table.loc[0, "workers"] == 1 and np.isfinite(table.loc[0, "W/S twin"])


def test_a_saturated_point_is_kept_labelled_and_drawn_at_the_edge():
    # 25 requests of 20 ms in 1 s on one slot: rho about 0.5; 60 of them: rho above 1
    table = queueing.live_table(sweep(point(0.5, requests=25), point(1.2, requests=60)))
    assert list(table["utilisation (offered)"]) == [0.5, 1.2]  # both rows kept
    calm, saturated = table.iloc[0], table.iloc[1]
    assert calm["utilisation (measured)"] < 1 <= saturated["utilisation (measured)"]
    assert calm["steady state"] == "yes"
    assert saturated["steady state"] == queueing.SATURATED
    assert "no steady state" in saturated["steady state"]
    assert saturated["W/S Erlang C"] == math.inf and np.isfinite(saturated["W/S live"])
    assert list(table["measurement"]) == ["healthy", "healthy"]

    fig = queueing.plot_hockey_stick(queueing.hockey_stick(workers=(1,), utilisations=(0.5,),
                                                           customers=1000), table)
    mean_ax = fig.axes[0]
    edge = [line for line in mean_ax.lines if line.get_marker() == ">"]
    assert len(edge) == 1 and list(edge[0].get_xdata()) == [mean_ax.get_xlim()[1]]
    assert not edge[0].get_clip_on()
    notes = [t.get_text() for t in mean_ax.texts]
    assert any(n.startswith(f"ρ = {saturated['utilisation (measured)']:.2f} ≥ 1: saturated")
               and "no steady state" in n for n in notes), notes
    legend = [t.get_text() for t in mean_ax.get_legend().get_texts()]
    assert legend == ["c = 1, live (1 s per point)", "live, saturated: at the right edge"]
    assert mean_ax.get_title() == "Mean"  # nothing spoiled


def test_a_point_the_host_spoiled_says_so_in_the_table_and_the_figure():
    late_loop = point(0.5, requests=25, late=0.008)  # the service's loop woke 8 ms late
    lagging = point(0.6, requests=30, send_lag=0.03)  # the generator sent 30 ms late
    table = queueing.live_table(sweep(point(0.3, requests=15), late_loop, lagging))
    verdicts = list(table["measurement"])
    assert verdicts[0] == "healthy"
    assert verdicts[1].startswith("spoiled by the host's load: work overshoot 8.0 ms > 2.0 ms")
    assert verdicts[2].startswith("spoiled by the host's load: send lag mean 30.0 ms > 2.0 ms")
    fig = queueing.plot_hockey_stick(queueing.hockey_stick(workers=(1,), utilisations=(0.5,),
                                                           customers=1000), table)
    mean_ax = fig.axes[0]
    assert "2 of 3 points spoiled by the host's load" in mean_ax.get_title()
    live: list[Line2D] = [line for line in mean_ax.lines if line.get_marker() == "D"]
    hollow = [line for line in live if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and len(hollow[0].get_xdata()) == 2


def test_a_point_above_the_axis_is_drawn_on_its_top_edge_with_its_value():
    table = queueing.live_table(sweep(point(0.5, requests=25)))
    table.loc[0, "W/S live"] = 40.0  # far above the mean axis's 16
    fig = queueing.plot_hockey_stick(queueing.hockey_stick(workers=(1,), utilisations=(0.5,),
                                                           customers=1000), table)
    mean_ax = fig.axes[0]
    top = [line for line in mean_ax.lines if line.get_marker() == "^"]
    assert len(top) == 1 and list(top[0].get_ydata()) == [mean_ax.get_ylim()[1]]
    assert "W/S = 40.0" in [t.get_text() for t in mean_ax.texts]


def test_the_twins_work_overhead_is_the_health_checks_work_overshoot(monkeypatch):
    """One overshoot, one count: with shed requests (no work reported) in the point, the twin's
    Calibration.work_overhead is the health's work overshoot, both over the attempts that did
    work (the old calibration averaged the service times drawn for every request, shed ones
    included)."""
    p = point(0.5, requests=40, late=0.001)
    work = p.run.meta["server_work"].copy()
    work[20:] = np.nan  # the last half shed: no slot, no work reported, no service time drawn
    shed = queueing.LivePoint(utilisation=0.5, run=RunResult(
        requests=p.run.requests, attempts=p.run.attempts, events=p.run.events,
        duration=p.run.duration, source="live", meta={**p.run.meta, "server_work": work}),
        gauge=p.gauge, before=p.before, after=p.after)
    seen = []
    real_simulate = queueing.simulate

    def simulate(scenario):
        seen.append(scenario.work_overhead)
        return real_simulate(scenario)

    monkeypatch.setattr(queueing, "simulate", simulate)
    table = queueing.live_table(sweep(shed))
    worked = np.count_nonzero(~np.isnan(work))
    expected = np.nanmean(work) - SERVICE.sample(rng_streams(SEED)["service"], worked).mean()
    assert seen == [pytest.approx(expected)] and expected == pytest.approx(0.001)  # the late
    assert table.loc[0, "measurement"] == "healthy"


def test_a_failed_live_sweep_ends_its_progress_line_failed_not_done(monkeypatch):
    from types import SimpleNamespace

    endings: list = []
    Recorded = recording_progress(endings)

    def reset(server):
        raise RuntimeError("the service went away")

    monkeypatch.setattr(queueing, "Progress", Recorded)
    monkeypatch.setattr(queueing, "reset", reset)
    state = SimpleNamespace(server=ServerConfig(workers=1, service_time=SERVICE), seed=SEED)
    server = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(atlas=state)),
                             url="http://127.0.0.1:9", name="fake")
    with pytest.raises(RuntimeError, match="went away"):
        queueing.live_sweep(server, utilisations=(0.3,), seconds=0.5, progress=False)
    assert endings == ["failed"]


def test_run_length_refuses_a_bad_warmup_or_scv():
    from atlas_sim.analysis.queueing import MMc

    run = point(0.5, requests=10).run
    queue = MMc(arrival_rate=0.5, service_rate=1.0, workers=1)
    assert queueing.run_length(run, 0.0, queue) > 0
    for warmup in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"^warmup must be a"):
            queueing.run_length(run, warmup, queue)
    for scv in (-1.0, float("inf")):
        with pytest.raises(ValueError, match=r"^scv must be a"):
            queueing.run_length(run, 0.1, queue, scv=scv)
