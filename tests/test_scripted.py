"""A scripted breaker run, read back through its transitions."""

from __future__ import annotations

import pandas as pd

from atlas_sim.policies import BreakerConfig
from atlas_sim.results import EVENT_COLUMNS, transition_times
from atlas_sim.scripted import drive_breaker, outage_script


def test_the_welcome_outage_opens_twice_and_closes_once_after_it():
    # a call a second, failing from 5 s to 20 s: five failures open it at 9 s, the probe at
    # 19 s still fails, the probe at 29 s succeeds
    trace = drive_breaker(BreakerConfig(failure_threshold=5, recovery_timeout=10.0),
                          outage_script())
    assert list(transition_times(trace.events, "open")) == [9.0, 19.0]
    assert trace.first("open") == 9.0 and trace.last("open") == 19.0
    assert trace.first("closed") == trace.last("closed") == 29.0
    healthy = drive_breaker(BreakerConfig(), outage_script(down_from=50.0, down_until=50.0))
    assert healthy.first("open") is None and healthy.last("closed") is None


def test_transition_times_can_pick_one_breaker_by_name():
    events = pd.DataFrame(
        [(1.0, "breaker", "client", "open", ""), (2.0, "breaker", "dependency", "open", ""),
         (3.0, "fault", "dependency", "start", ""), (4.0, "breaker", "client", "closed", "")],
        columns=EVENT_COLUMNS)
    assert list(transition_times(events, "open")) == [1.0, 2.0]
    assert list(transition_times(events, "open", name="dependency")) == [2.0]
    assert len(transition_times(events, "half_open")) == 0
