"""The experiments of notebook 01 (faults, retries, backoff and jitter), and their panels.

Each ``*_panel`` returns a ``Panel`` whose ``run`` is a pure function of its sliders; the
notebook shows it, the tests and benchmarks drive it with ``panel.update(**values)``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.figures import (
    CallTimelineFigure,
    ComparisonFigure,
    InPlaceFigure,
    TimeseriesFigure,
    autoscale,
)
from ..analysis.plots import plot_call_timeline
from ..analysis.tables import summary_table
from ..policies import JITTER_STRATEGIES, Backoff, BudgetConfig, ClientPolicy, Jitter, RetryPolicy
from ..results import RunResult
from ..server_config import Dependency, ServerConfig
from ..sim import Fault, Scenario, simulate
from ..sim.contention import CONTENTION_STRATEGIES, compare_contention, contention
from ..sim.scenarios import thundering_herd
from ..validation import check_int
from ..widgets import Control, Panel
from ..workload import Distribution, Load

__all__ = [
    "HERD_BIN",
    "POST_CONTENTION",
    "BackoffFigure",
    "backoff_panel",
    "backoff_waits",
    "budget_panel",
    "contention_panel",
    "contention_timelines",
    "contention_vs_post",
    "error_burst",
    "executions_per_request",
    "herd_panel",
    "herd_table",
    "peak_after_faults",
    "plot_backoff_waits",
    "plot_herd",
    "retry_amplification",
    "transient_errors",
]


# -- why retry -------------------------------------------------------------------------------

def transient_errors(error_rate: float = 0.1, max_attempts: int = 3, *, seed: int = 0,
                     duration: float = 60.0) -> RunResult:
    """A healthy server whose handler fails ``error_rate`` of the time, transiently (a flaky
    network, a dependency hiccup); clients retry up to ``max_attempts`` with 10 ms backoff.

    With independent faults, a request fails only if every attempt does: ``error_rate **
    max_attempts``. The price is extra attempts: about ``1 + p + p**2 + ...`` per request.
    """
    return simulate(Scenario(
        load=Load(rate=50.0, duration=duration),
        server=ServerConfig(workers=4, service_time=Distribution(mean=0.01),
                            dependency=Dependency(latency=Distribution(mean=0.005),
                                                  error_rate=error_rate)),
        client=ClientPolicy(retry=RetryPolicy(
            max_attempts=max_attempts, backoff=Backoff(base=0.01, cap=0.1, jitter="full"))),
        seed=seed,
    ))


# -- backoff and jitter ----------------------------------------------------------------------

def backoff_waits(backoff: Backoff, *, retries: int = 6, clients: int = 200,
                  seed: int = 0) -> pd.DataFrame:
    """The waits ``clients`` clients draw before each of ``retries`` retries.

    Columns: ``client, retry, wait, ceiling, start`` where ``start`` is when the retry goes
    out if every client failed at t = 0 and each attempt fails at once.
    """
    check_int("retries", retries, low=1, high=30)
    check_int("clients", clients, low=1, high=10_000)
    rng = np.random.default_rng(seed)
    rows = []
    for client in range(clients):
        waits = backoff.delays(rng)
        start = 0.0
        for n in range(retries):
            wait = float(next(waits))
            start += wait
            rows.append((client, n + 1, wait, backoff.ceiling(n), start))
    return pd.DataFrame(rows, columns=["client", "retry", "wait", "ceiling", "start"])


def plot_backoff_waits(waits: pd.DataFrame) -> Any:
    """Left: each retry's waits across clients (dots) under the exponential ceiling.
    Right: when the retries of all clients go out, as a histogram over time."""
    return BackoffFigure(pyplot=True).draw(waits)


class BackoffFigure(InPlaceFigure):
    """``plot_backoff_waits``'s figure, updated in place by the backoff panel."""

    def build(self, waits: pd.DataFrame) -> Any:
        figure, (left, right) = self.subplots(1, 2, figsize=(10, 3.6))
        self.left, self.right = left, right
        self.dots = left.scatter(np.empty(0), np.empty(0), s=4, alpha=0.35, color="#5c6bc0")
        (self.ceiling,) = left.step([], [], where="mid", color="#c62828", label="ceiling")
        left.set_xlabel("retry number")
        left.set_ylabel("wait before it (s)")
        left.legend(fontsize="small")
        left.set_title("Waits per retry", fontsize="medium")
        self.sent = right.stairs([0.0], [0.0, 1.0], fill=True, color="#5c6bc0")
        right.set_xlabel("time the retry is sent (s)")
        right.set_ylabel("retries")
        right.set_title("All clients' retries over time", fontsize="medium")
        return figure

    def update(self, waits: pd.DataFrame) -> None:
        jitter = np.random.default_rng(1).uniform(-0.25, 0.25, len(waits))
        dots = np.column_stack([waits["retry"].to_numpy() + jitter, waits["wait"].to_numpy()])
        self.dots.set_offsets(dots)
        ceilings = waits.groupby("retry")["ceiling"].first()
        self.ceiling.set_data(ceilings.index.to_numpy(), ceilings.to_numpy())
        end = float(waits["start"].max()) or 1.0
        counts, edges = np.histogram(waits["start"], bins=np.linspace(0, end * 1.01, 80))
        self.sent.set_data(counts, edges)
        autoscale(self.left, points=dots)
        autoscale(self.right)


def _waits_table(waits: pd.DataFrame) -> pd.DataFrame:
    per_retry = waits.groupby("retry")["wait"].agg(["mean", "min", "max"])
    per_retry["ceiling"] = waits.groupby("retry")["ceiling"].first()
    return per_retry.round(4).rename(columns=lambda c: f"{c} wait (s)" if c != "ceiling"
                                     else "ceiling (s)")


def backoff_panel(*, seed: int = 0) -> Panel:
    """Sliders for base, multiplier, cap, retries and jitter; the waits they produce."""

    def run(base: float, multiplier: float, cap: float, retries: int, jitter: Jitter) -> Any:
        backoff = Backoff(base=base, multiplier=multiplier, cap=max(cap, base), jitter=jitter)
        return backoff_waits(backoff, retries=retries, seed=seed)

    return Panel(
        run,
        [Control.slider("base", 0.01, 1.0, 0.1, step=0.01, label="base (s)"),
         Control.slider("multiplier", 1.0, 4.0, 2.0, step=0.25),
         Control.slider("cap", 0.1, 20.0, 2.0, step=0.1, label="cap (s)"),
         Control.slider("retries", 1, 10, 6),
         Control.dropdown("jitter", JITTER_STRATEGIES, "full")],
        BackoffFigure(), table=_waits_table, title="Backoff and jitter: 200 clients",
    )


# -- the thundering herd ---------------------------------------------------------------------

#: The bins, in seconds, of the herd's timeline and of its table's peak rate: the peak in the
#: table is the highest bar of the plot after the outage.
HERD_BIN = 0.1


def plot_herd(results: dict[str, RunResult]) -> Any:
    """Attempts per second in ``HERD_BIN`` bins over the first 15 s, the outage shaded."""
    return plot_call_timeline(results, bin_width=HERD_BIN, until=15.0, what="attempts")


def herd_panel(*, seed: int = 0) -> Panel:
    """The thundering herd after an outage (``scenarios.thundering_herd``), with sliders for
    clients, outage length, jitter, base delay, multiplier, cap and max attempts."""

    def run(clients: int, outage: float, jitter: Jitter, base: float, multiplier: float,
            cap: float, max_attempts: int) -> dict[str, RunResult]:
        scenario = thundering_herd(clients, jitter, outage, seed=seed).replace({
            "client.retry": RetryPolicy(max_attempts=max_attempts, backoff=Backoff(
                base=base, multiplier=multiplier, cap=max(cap, base), jitter=jitter)),
        })
        return {f"jitter={jitter}": simulate(scenario)}

    return Panel(
        run,
        [Control.slider("clients", 10, 500, 200, step=10),
         Control.slider("outage", 0.5, 8.0, 2.0, step=0.5, label="outage (s)"),
         Control.dropdown("jitter", JITTER_STRATEGIES, "none"),
         Control.slider("base", 0.02, 1.0, 0.1, step=0.02, label="base (s)"),
         Control.slider("multiplier", 1.0, 4.0, 2.0, step=0.25),
         Control.slider("cap", 0.5, 10.0, 5.0, step=0.5, label="cap (s)"),
         Control.slider("max_attempts", 1, 10, 8)],
        CallTimelineFigure(bin_width=HERD_BIN, until=15.0, what="attempts"), table=herd_table,
        title="Thundering herd after an outage",
    )


def herd_table(results: dict[str, RunResult]) -> pd.DataFrame:
    """Requests, p50, p99, error rate, amplification, the peak attempt rate once the server is
    back (in ``HERD_BIN`` bins, as ``plot_herd`` draws them), and how many attempts were
    shed."""
    out = summary_table(results, digits=3, units=True,
                        columns=["requests", "p50", "p99", "error_rate", "amplification"])
    out["peak attempts/s after"] = [int(peak_after_faults(r)) for r in results.values()]
    out["shed (429)"] = [int((r.attempts["status"] == 429).sum()) for r in results.values()]
    return out


def peak_after_faults(run: RunResult, window: float = HERD_BIN) -> float:
    """The highest attempt rate (per second, in ``window``-second bins) once every fault
    window of the run has ended: the herd arriving at a server that is back."""
    ends = run.events.loc[(run.events["kind"] == "fault") & (run.events["detail"] == "end"),
                          "time"]
    after = float(ends.max()) if len(ends) else 0.0
    series = run.timeseries(window)
    return float(series.loc[series["t"] >= after, "attempts"].max())


# -- the AWS contention experiment -----------------------------------------------------------

#: The contention experiment at 100 clients as the post's own simulator measures it
#: (``aws-samples/aws-arch-backoff-simulator``, its model unchanged, mean of 5000 runs per
#: strategy; ``tests/reference/contention_aws.csv`` has the spreads and how they were made).
POST_CONTENTION = pd.DataFrame(
    {"work": {"no_backoff": 2423.5, "none": 1856.1, "equal": 812.3, "full": 795.9,
              "decorrelated": 1002.1},
     "completion_time": {"no_backoff": 2.029, "none": 63.483, "equal": 6.622, "full": 4.905,
                         "decorrelated": 4.584}}).rename_axis("strategy")


def contention_vs_post(seeds: Any = range(20)) -> pd.DataFrame:
    """Atlas's mean work and completion time at 100 clients over ``seeds``, each beside the
    post simulator's (``POST_CONTENTION``)."""
    ours = compare_contention(100, seeds=seeds)
    post = POST_CONTENTION.loc[ours.index]
    return pd.DataFrame({"write calls": ours["work"], "write calls (post)": post["work"],
                         "completion time (s)": ours["completion_time"],
                         "completion time (s, post)": post["completion_time"]})


def _contention_units(table: pd.DataFrame) -> pd.DataFrame:
    return table.rename(columns={"work": "write calls", "completion_time": "completion time (s)"})


def contention_panel(*, seed: int = 0) -> Panel:
    """Work and completion time per strategy in the AWS contention experiment.

    Each seed's runs are kept (per number of clients): more repeats run only the new seeds,
    fewer run nothing. The means are those of ``compare_contention`` over the same seeds,
    summed in the same order.
    """

    @functools.lru_cache(maxsize=256)
    def one_seed(clients: int, run_seed: int) -> pd.DataFrame:
        return compare_contention(clients, seeds=[run_seed])

    def run(clients: int, repeats: int) -> pd.DataFrame:
        runs = pd.concat([one_seed(clients, s) for s in range(seed, seed + repeats)])
        return _contention_units(runs.groupby(level="strategy", sort=False).mean())

    plot = ComparisonFigure(["write calls", "completion time (s)"],
                            title="Optimistic concurrency: calls and time to finish")
    return Panel(run,
                 [Control.slider("clients", 10, 200, 100, step=10),
                  Control.slider("repeats", 1, 10, 3)],
                 plot, table=lambda t: t.round(2),
                 title="AWS contention experiment (mean over repeats)")


def contention_timelines(clients: int = 100, *, seed: int = 0,
                         strategies: tuple[str, ...] = ("none", "full")) -> dict[str, RunResult]:
    """One contention run per strategy, for comparing their call timelines."""
    for s in strategies:
        if s not in CONTENTION_STRATEGIES:
            raise ValueError(f"strategies must be among {CONTENTION_STRATEGIES}, got {s!r}")
    return {s: contention(clients, s, seed) for s in strategies}  # type: ignore[arg-type]


# -- amplification and budgets ---------------------------------------------------------------

def retry_amplification(attempts_per_layer: int, layers: int) -> int:
    """Worst-case calls reaching the bottom layer when every layer retries:
    ``attempts_per_layer ** layers`` (the SRE book: 4 attempts over 3 layers = 64)."""
    check_int("attempts_per_layer", attempts_per_layer, low=1, high=100)
    check_int("layers", layers, low=1, high=20)
    return attempts_per_layer ** layers


def error_burst(*, budget: bool, max_attempts: int = 4, max_tokens: float = 10.0,
                token_ratio: float = 0.1, burst: float = 10.0, error_rate: float = 0.9,
                seed: int = 0) -> RunResult:
    """60% utilisation; for ``burst`` seconds from t = 10 s the handler's dependency fails
    ``error_rate`` of calls. Clients retry up to ``max_attempts``, with or without a budget."""
    scenario = Scenario(
        load=Load(rate=60.0, duration=40.0),
        server=ServerConfig(workers=4, service_time=Distribution(mean=0.04),
                            dependency=Dependency(latency=Distribution(mean=0.005))),
        client=ClientPolicy(
            retry=RetryPolicy(max_attempts=max_attempts,
                              backoff=Backoff(base=0.05, cap=1.0, jitter="full")),
            budget=(BudgetConfig(max_tokens=max_tokens, token_ratio=token_ratio) if budget
                    else None)),
        faults=(Fault(start=10.0, end=10.0 + burst, dependency_error_rate=error_rate,
                      name="dependency errors"),),
        seed=seed,
    )
    return simulate(scenario)


def budget_panel(*, seed: int = 0) -> Panel:
    """Retries during an error burst, with and without a gRPC-style retry budget."""

    def run(budget: bool, max_attempts: int, max_tokens: float, token_ratio: float,
            burst: float, error_rate: float) -> dict[str, RunResult]:
        name = "with budget" if budget else "no budget"
        return {name: error_burst(budget=budget, max_attempts=max_attempts,
                                  max_tokens=max_tokens, token_ratio=token_ratio, burst=burst,
                                  error_rate=error_rate, seed=seed)}

    def table(results: dict[str, RunResult]) -> pd.DataFrame:
        return summary_table(results, digits=3, units=True)

    return Panel(
        run,
        [Control.checkbox("budget", True, label="retry budget"),
         Control.slider("max_attempts", 1, 8, 4),
         Control.slider("max_tokens", 1.0, 50.0, 10.0, step=1.0),
         Control.slider("token_ratio", 0.01, 1.0, 0.1, step=0.01),
         Control.slider("burst", 1.0, 20.0, 10.0, step=1.0, label="burst (s)"),
         Control.slider("error_rate", 0.1, 1.0, 0.9, step=0.05, label="errors during burst")],
        TimeseriesFigure(0.5, title="Error burst, {name}"), table=table,
        title="Retry budget during an error burst",
    )


# -- idempotency -----------------------------------------------------------------------------

def executions_per_request(run: RunResult) -> pd.Series:
    """How many times the server completed each request's work (from ``meta["server_log"]``).

    More than once means a retry re-did work whose first answer never reached the client: for
    a non-idempotent operation (charge a card, append a row) that is a duplicate effect.
    """
    log = run.meta.get("server_log")
    if log is None:
        raise ValueError("executions_per_request needs a simulated run (meta['server_log'])")
    counts = log.groupby("request_id").size()
    return counts.reindex(run.requests["request_id"], fill_value=0).rename("executions")
