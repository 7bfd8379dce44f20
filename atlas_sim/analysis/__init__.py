"""Reading results: summary tables, SLO checks, statistics, queueing theory and plots.

Everything here works on ``RunResult`` tables, whichever world (simulated or live) made them.
"""

from __future__ import annotations

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
from .slo import SLO, SLO_TIERS, SLOReport, slo_check, slo_table
from .stats import Interval, batch_means, proportion_interval, replications
from .tables import compare_runs, name_runs, summary_table

__all__ = [
    "SLO",
    "SLO_TIERS",
    "STATE_COLORS",
    "Interval",
    "MMc",
    "SLOReport",
    "batch_means",
    "compare_runs",
    "erlang_b",
    "erlang_c",
    "mark_faults",
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
