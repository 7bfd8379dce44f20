"""Notebook 01's first section: hardware faults at fleet scale, and what redundancy does against
independent faults and against a fault the replicas share."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.reliability import down_at_once, failures_per_unit_time, loss_probability
from ..analysis.stats import proportion_interval
from ..sim.fleet import fleet, replica_loss
from ..widgets import Control, Panel
from ..workload import rng_streams

__all__ = ["fleet_panel", "fleet_table", "redundancy_panel", "redundancy_table"]

YEAR = 365.0  # days


def fleet_table(disks: int, mttf_years: float, repair_days: float, *, shape: float = 1.0,
                seed: int = 0) -> pd.DataFrame:
    """One simulated year of ``disks`` disks (Weibull lifetimes of shape ``shape``, 1 being
    exponential) beside the closed forms: failures per day, and how many are down at once."""
    mttf = mttf_years * YEAR
    run = fleet(disks, mttf, repair_days, 2 * YEAR, rng=rng_streams(seed)["server"],
                lifetime="exponential" if shape == 1.0 else "weibull", shape=shape)
    second_year = np.arange(YEAR, 2 * YEAR, 1.0)  # a sample a day, past the start
    pmf = down_at_once(disks, mttf, repair_days)
    mean_down = float((np.arange(disks + 1) * pmf).sum())
    down = run.down_at(second_year)
    return pd.DataFrame({
        "simulated (2nd year)": {
            "failures per day": f"{run.failures_per_unit_time(after=YEAR):.2f}",
            "down at once, mean": f"{down.mean():.2f}",
            "down at once, most in a year": f"{down.max()}"},
        "theory (long run)": {
            "failures per day": f"{failures_per_unit_time(disks, mttf, repair_days):.2f}",
            "down at once, mean": f"{mean_down:.2f}",
            "down at once, most in a year":
                f"{np.searchsorted(np.cumsum(pmf), 1 - 1 / YEAR)} (the 1-in-365 level)"},
    })


def fleet_panel(*, seed: int = 0) -> Panel:
    """Sliders for the fleet size, the MTTF, the repair time and the wear-out shape."""

    def run(disks: int, mttf_years: float, repair_days: float, shape: float) -> pd.DataFrame:
        return fleet_table(disks, mttf_years, repair_days, shape=shape, seed=seed)

    def plot(table: pd.DataFrame) -> Any:
        fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
        numbers = table.loc[["failures per day", "down at once, mean"]].astype(float)
        numbers.T.plot.bar(ax=ax, rot=0)
        ax.set_ylabel("disks")
        ax.set_title("A year of a fleet: simulated against theory")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        plt.close(fig)
        return fig

    return Panel(
        run,
        [Control.slider("disks", 1000, 100_000, 10_000, step=1000),
         Control.slider("mttf_years", 1.0, 100.0, 30.0, step=1.0, label="MTTF (years)"),
         Control.slider("repair_days", 0.5, 30.0, 1.0, step=0.5, label="repair (days)"),
         Control.slider("shape", 0.5, 4.0, 1.0, step=0.5, label="Weibull shape")],
        plot, table=lambda t: t, title="Hardware faults at fleet scale",
    )


def redundancy_table(replicas: int, mttf_days: float, repair_days: float,
                     shared_per_decade: float, *, trials: int = 4000,
                     seed: int = 0) -> pd.DataFrame:
    """The chance of losing every replica within a year, 1 to 5 replicas: independent faults
    alone, and with a shared fault (``shared_per_decade`` times per ten years, hitting every
    replica at once); theory for each count, and a simulation of ``replicas``."""
    shock = shared_per_decade / (10 * YEAR)
    rows = {}
    for r in range(1, 6):
        rows[r] = {"independent faults only": loss_probability(r, mttf_days, repair_days, YEAR),
                   "with the shared fault": loss_probability(r, mttf_days, repair_days, YEAR,
                                                             shock_rate=shock)}
    table = pd.DataFrame(rows).T.rename_axis("replicas")
    seen = replica_loss(replicas, mttf_days, repair_days, YEAR, shock_rate=shock,
                        trials=trials, rng=rng_streams(seed)["server"])
    low, high = proportion_interval(round(seen * trials), trials)
    shown = table.map(_percent)
    shown.columns = [f"{c}, theory" for c in table.columns]
    shown["with the shared fault, simulated (95% interval)"] = ""
    shown.loc[replicas, "with the shared fault, simulated (95% interval)"] = (
        f"{_percent(seen)} ({_percent(low)} to {_percent(high)}), {trials} sets")
    return shown


def _percent(p: float) -> str:
    """A probability as a percentage with three significant digits: 51.8%, 0.0207%."""
    return f"{100 * p:.3g}%"


def redundancy_panel(*, seed: int = 0) -> Panel:
    """Sliders for the replica count, the MTTF, the repair time and the shared fault's rate."""

    def run(replicas: int, mttf_days: float, repair_days: float,
            shared_per_decade: float) -> pd.DataFrame:
        return redundancy_table(replicas, mttf_days, repair_days, shared_per_decade, seed=seed)

    def plot(table: pd.DataFrame) -> Any:
        fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
        for column, style in (("independent faults only, theory", "o-"),
                              ("with the shared fault, theory", "s--")):
            values = table[column].str.rstrip("%").astype(float) / 100
            ax.semilogy(table.index, values.clip(lower=1e-12), style, label=column)
        chosen = table.index[table.iloc[:, -1] != ""][0]  # the count that was simulated
        ax.axvline(chosen, color="0.6", lw=1, ls=":", label=f"simulated: {chosen} replicas")
        ax.set_xlabel("replicas")
        ax.set_ylabel("P(lose every replica in a year)")
        ax.set_xticks(list(table.index))
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        plt.close(fig)
        return fig

    return Panel(
        run,
        [Control.slider("replicas", 1, 5, 3),
         Control.slider("mttf_days", 50.0, 2000.0, 500.0, step=50.0, label="MTTF (days)"),
         Control.slider("repair_days", 0.5, 30.0, 5.0, step=0.5, label="repair (days)"),
         Control.slider("shared_per_decade", 0.0, 5.0, 1.0, step=0.5,
                        label="shared faults per decade")],
        plot, table=lambda t: t, title="Redundancy against independent and shared faults",
    )
