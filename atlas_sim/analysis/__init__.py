"""Reading results: summary tables, SLO checks, statistics, queueing theory and plots.

Everything here works on ``RunResult`` tables, whichever world (simulated or live) made them.
"""

from __future__ import annotations

from .figures import (
    BreakerTraceFigure,
    CallTimelineFigure,
    ComparisonFigure,
    InPlaceFigure,
    TimeseriesFigure,
)
from .plots import (
    STATE_COLORS,
    mark_faults,
    plot_breaker_timelines,
    plot_breaker_trace,
    plot_call_timeline,
    plot_comparison,
    plot_in_flight,
    plot_latency_cdf,
    plot_latency_histogram,
    plot_sim_vs_live,
    plot_timeseries,
    shade_breaker_states,
)
from .queueing import MMc, erlang_b, erlang_c
from .reliability import (
    annualised_failure_rate,
    down_at_once,
    failures_per_unit_time,
    loss_probability,
    mttf_from_afr,
)
from .slo import SLO, SLO_TIERS, SLOReport, slo_check, slo_table
from .stats import Interval, batch_means, proportion_interval, replications
from .tables import compare_runs, name_runs, summary_table

__all__ = [
    "SLO",
    "SLO_TIERS",
    "STATE_COLORS",
    "BreakerTraceFigure",
    "CallTimelineFigure",
    "ComparisonFigure",
    "InPlaceFigure",
    "Interval",
    "MMc",
    "SLOReport",
    "TimeseriesFigure",
    "annualised_failure_rate",
    "batch_means",
    "compare_runs",
    "down_at_once",
    "erlang_b",
    "erlang_c",
    "failures_per_unit_time",
    "loss_probability",
    "mark_faults",
    "mttf_from_afr",
    "name_runs",
    "plot_breaker_timelines",
    "plot_breaker_trace",
    "plot_call_timeline",
    "plot_comparison",
    "plot_in_flight",
    "plot_latency_cdf",
    "plot_latency_histogram",
    "plot_sim_vs_live",
    "plot_timeseries",
    "proportion_interval",
    "replications",
    "shade_breaker_states",
    "slo_check",
    "slo_table",
    "summary_table",
]
