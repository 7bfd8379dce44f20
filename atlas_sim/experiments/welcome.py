"""The experiment of notebook 00: a circuit breaker driven through a scripted outage."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..analysis.figures import BreakerTraceFigure
from ..policies import BreakerConfig
from ..scripted import BreakerTrace, drive_breaker, outage_script
from ..widgets import Control, Panel

__all__ = ["breaker_panel"]


def breaker_panel() -> Panel:
    """A call a second for 40 s, the dependency down for a while: sliders for the breaker's
    threshold and recovery timeout, and for when the dependency is down."""

    def run(failure_threshold: int, recovery_timeout: float, down_from: float,
            down_until: float) -> BreakerTrace:
        script = outage_script(every=1.0, until=40.0, down_from=down_from,
                               down_until=max(down_until, down_from))
        config = BreakerConfig(failure_threshold=failure_threshold,
                               recovery_timeout=recovery_timeout)
        return drive_breaker(config, script)

    def table(trace: BreakerTrace) -> pd.DataFrame:
        # Counts of calls by outcome, and when the breaker first opened and last closed: a
        # shifted outage moves the times even when it leaves the counts as they were.
        counts = trace.calls["outcome"].value_counts()
        row: dict[str, Any] = {f"{outcome} calls": int(counts.get(outcome, 0))
                               for outcome in ("success", "failure", "rejected")}
        opened, closed = trace.first("open"), trace.last("closed")
        row["first opened (s)"] = "never" if opened is None else opened
        row["last closed (s)"] = "never" if closed is None else closed
        return pd.DataFrame([row], index=["this run"])

    return Panel(
        run,
        [Control.slider("failure_threshold", 1, 10, 5, label="failures to open"),
         Control.slider("recovery_timeout", 1.0, 20.0, 10.0, step=1.0,
                        label="recovery timeout (s)"),
         Control.slider("down_from", 0.0, 40.0, 5.0, step=1.0, label="down from (s)"),
         Control.slider("down_until", 0.0, 40.0, 20.0, step=1.0, label="down until (s)")],
        BreakerTraceFigure(), table=table, title="A circuit breaker and a scripted outage",
    )
