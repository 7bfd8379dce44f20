"""Reading results: summary tables, SLO checks, statistics, queueing theory, percentiles and
latency recording, the home-timeline load model, coordinated omission in closed form, and plots.

What reads runs works on ``RunResult`` tables, whichever world (simulated or live) made them.

SciPy is imported where it is used, inside the function, never at module level (here, in
``social`` and in ``experiments``): ``scipy.stats``, ``scipy.optimize``, ``scipy.linalg`` and
``scipy.special`` together cost a notebook's kernel about 60 MiB of resident memory, and a
notebook that calls none of them (00, 02) need not pay it (issue 23;
``benchmarks/kernel_memory.py``). The first call pays the import once (about 0.3-1 s). The
notebooks need no ``scipy.stats`` and, but for 03b's calibration, no ``scipy.optimize``:
``stats`` computes the distribution functions from ``scipy.special`` as ``scipy.stats`` does
(equal to the last bit), and ``queueing.crossing`` inverts the closed-form CDFs by bisection.
"""

from __future__ import annotations

from .figures import (
    BreakerTraceFigure,
    CallTimelineFigure,
    ComparisonFigure,
    InPlaceFigure,
    TimeseriesFigure,
)
from .omission import (
    closed_loop_percentile,
    closed_loop_stalled,
    open_loop_percentile,
    open_loop_stalled,
    stalled_share_over,
)
from .percentiles import (
    PROMETHEUS_DEFAULT_BUCKETS,
    HdrRecorder,
    averaged_vs_merged,
    bucket_counts,
    bucket_quantile,
    exact_percentiles,
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
from .queueing import MGc, MMc, erlang_b, erlang_c, squared_cv, time_average_in_system
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
from .tail import TailModel, hedge_delay_at
from .timeline import FollowerDistribution, HomeTimeline, TimelineCosts

__all__ = [
    "PROMETHEUS_DEFAULT_BUCKETS",
    "SLO",
    "SLO_TIERS",
    "STATE_COLORS",
    "BreakerTraceFigure",
    "CallTimelineFigure",
    "ComparisonFigure",
    "FollowerDistribution",
    "HdrRecorder",
    "HomeTimeline",
    "InPlaceFigure",
    "Interval",
    "MGc",
    "MMc",
    "SLOReport",
    "TailModel",
    "TimelineCosts",
    "TimeseriesFigure",
    "annualised_failure_rate",
    "averaged_vs_merged",
    "batch_means",
    "bucket_counts",
    "bucket_quantile",
    "closed_loop_percentile",
    "closed_loop_stalled",
    "compare_runs",
    "down_at_once",
    "erlang_b",
    "erlang_c",
    "exact_percentiles",
    "failures_per_unit_time",
    "hedge_delay_at",
    "loss_probability",
    "mark_faults",
    "mttf_from_afr",
    "name_runs",
    "open_loop_percentile",
    "open_loop_stalled",
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
    "squared_cv",
    "stalled_share_over",
    "summary_table",
    "time_average_in_system",
]
