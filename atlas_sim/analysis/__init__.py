"""Reading results: statistics, queueing theory, SLO checks and plots.

Works on ``RunResult`` tables, whichever world (simulated or live) produced them.
"""

from __future__ import annotations

from .plots import STATE_COLORS, plot_breaker_trace, shade_breaker_states

__all__ = [
    "STATE_COLORS",
    "plot_breaker_trace",
    "shade_breaker_states",
]
