"""Service-level objectives: the reference card's three tiers, and a check of a run against them.

=============  ===========  ==========  ============  ===================
tier           latency p95  error rate  availability  for
=============  ===========  ==========  ============  ===================
critical       100 ms       0.1%        99.99%        auth, payments
default        200 ms       1%          99.9%         API endpoints
non_critical   500 ms       5%          99%           analytics, reports
=============  ===========  ==========  ============  ===================

The three numbers measure different things, and a run can meet one and miss another:

* latency p95: over all requests of the run, failed ones included (what users waited for);
* error rate: failed requests over all requests, for the whole run;
* availability: the share of time the service was up, counted in windows (``window`` seconds,
  10 s by default for these short runs; a month of minutes in production): a window is "up"
  when its own error rate meets the tier's error-rate objective. A few bad windows can break
  availability while the run's overall error rate still looks fine.

Each objective is met at its boundary: an error rate equal to the objective passes (``<=``),
an availability equal to the objective passes (``>=``), a p95 equal to the target passes
(``<=``). Rates are compared as counts, exactly, with the objective read as the decimal that
was typed: 10 failures in 1000 requests meet a 1% objective (``10 * 100 <= 1 * 1000``), where
the floating-point ``1 - 990/1000 <= 0.01`` says they do not (``0.010000000000000009``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..results import RunResult
from ..validation import check_choice, check_real, decimal_fraction
from .tables import RunsLike, name_runs

__all__ = ["SLO", "SLO_TIERS", "SLOReport", "slo_check", "slo_table"]


@dataclass(frozen=True, kw_only=True)
class SLO:
    """One tier of objectives."""

    name: str
    latency_p95: float
    error_rate: float
    availability: float

    def __post_init__(self) -> None:
        check_real("latency_p95", self.latency_p95, low=0, low_open=True)
        check_real("error_rate", self.error_rate, low=0, high=1)
        check_real("availability", self.availability, low=0, high=1)


SLO_TIERS: dict[str, SLO] = {
    "critical": SLO(name="critical", latency_p95=0.100, error_rate=0.001, availability=0.9999),
    "default": SLO(name="default", latency_p95=0.200, error_rate=0.01, availability=0.999),
    "non_critical": SLO(name="non_critical", latency_p95=0.500, error_rate=0.05,
                        availability=0.99),
}


@dataclass(frozen=True)
class SLOReport:
    """The measured numbers of one run against one tier, and which objectives hold."""

    tier: str
    latency_p95: float
    error_rate: float
    availability: float
    latency_ok: bool
    errors_ok: bool
    availability_ok: bool

    @property
    def met(self) -> bool:
        return self.latency_ok and self.errors_ok and self.availability_ok

    def __repr__(self) -> str:
        def mark(ok: bool) -> str:
            return "ok" if ok else "MISSED"

        return (f"SLO {self.tier}: {'met' if self.met else 'missed'} "
                f"(p95 {1000 * self.latency_p95:.0f} ms {mark(self.latency_ok)}, "
                f"errors {self.error_rate:.2%} {mark(self.errors_ok)}, "
                f"availability {self.availability:.2%} {mark(self.availability_ok)})")


def slo_check(run: RunResult, tier: str | SLO = "default", *, window: float = 10.0) -> SLOReport:
    """Check ``run`` against a tier (a name from ``SLO_TIERS`` or an ``SLO``)."""
    slo = tier if isinstance(tier, SLO) else SLO_TIERS[check_choice("tier", tier, SLO_TIERS)]
    check_real("window", window, low=0, low_open=True)
    summary = run.summary()
    p95, errors = summary["p95"], summary["error_rate"]
    error_objective = decimal_fraction(slo.error_rate)
    n = len(run.requests)
    failed = n - int(run.requests["ok"].to_numpy().sum())

    def errors_meet(failed: int, n: int) -> bool:  # failed / n <= objective, in integers
        return failed * error_objective.denominator <= error_objective.numerator * n

    done, good = run.finished_counts(window)
    served = [(int(d), int(d - g)) for d, g in zip(done, good, strict=True) if d > 0]
    up = sum(errors_meet(f, d) for d, f in served)
    availability = up / len(served) if served else float("nan")
    objective = decimal_fraction(slo.availability)  # up / served >= objective, in integers
    return SLOReport(
        tier=slo.name,
        latency_p95=p95,
        error_rate=errors,
        availability=availability,
        latency_ok=bool(p95 <= slo.latency_p95),
        errors_ok=n > 0 and errors_meet(failed, n),
        availability_ok=bool(served)
        and up * objective.denominator >= objective.numerator * len(served),
    )


def slo_table(runs: RunsLike, *, window: float = 10.0) -> pd.DataFrame:
    """Which tiers each run meets: one row per run, one column per tier (True/False)."""
    named = name_runs(runs)
    return pd.DataFrame(
        {name: {tier: slo_check(run, tier, window=window).met for tier in SLO_TIERS}
         for name, run in named.items()}
    ).T.rename_axis("run")
