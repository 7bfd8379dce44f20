"""Notebook 01's first section: hardware faults at fleet scale, and what redundancy does against
independent faults and against a fault the replicas share."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.figures import InPlaceFigure, autoscale
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
    exponential) beside the closed forms: failures per day, and how many are down at once.

    The fleet has run for a long time before the year starts: its disks are of every age, each
    in the state the alternating renewal process settles into (``fleet(start="stationary")``),
    so the long-run formulas hold for this year whatever the shape. (A fleet bought in one
    batch would not match them for years: with wear-out, a shape above 1, it fails far less
    than the long-run rate at first, then in a wave.)"""
    mttf = mttf_years * YEAR
    run = fleet(disks, mttf, repair_days, YEAR, rng=rng_streams(seed)["server"],
                lifetime="exponential" if shape == 1.0 else "weibull", shape=shape,
                start="stationary")
    days = np.arange(0.0, YEAR, 1.0)  # a sample a day
    pmf = down_at_once(disks, mttf, repair_days)
    mean_down = float((np.arange(disks + 1) * pmf).sum())
    down = run.down_at(days)
    return pd.DataFrame({
        "simulated (a year)": {
            "failures per day": _figures(run.failures_per_unit_time()),
            "down at once, mean": f"{down.mean():.2f}",
            "down at once, most in a year": f"{down.max()}"},
        "theory (long run)": {
            "failures per day": _figures(failures_per_unit_time(disks, mttf, repair_days)),
            "down at once, mean": f"{mean_down:.2f}",
            "down at once, most in a year":
                f"{np.searchsorted(np.cumsum(pmf), 1 - 1 / YEAR)} (the 1-in-365 level)"},
    })


def _figures(x: float) -> str:
    """A rate with three significant figures (more for numbers of four digits or more),
    never in scientific notation: 0.970, 0.913, 27.4, 274, 7595."""
    if x <= 0:
        return "0"
    return f"{x:.{max(0, 2 - math.floor(math.log10(x)))}f}"


def fleet_panel(*, seed: int = 0) -> Panel:
    """Sliders for the fleet size, the MTTF, the repair time and the wear-out shape."""

    def run(disks: int, mttf_years: float, repair_days: float, shape: float) -> pd.DataFrame:
        return fleet_table(disks, mttf_years, repair_days, shape=shape, seed=seed)

    return Panel(
        run,
        [Control.slider("disks", 1000, 100_000, 10_000, step=1000),
         Control.slider("mttf_years", 1.0, 100.0, 30.0, step=1.0, label="MTTF (years)"),
         Control.slider("repair_days", 0.5, 30.0, 1.0, step=0.5, label="repair (days)"),
         Control.slider("shape", 0.5, 4.0, 1.0, step=0.5, label="Weibull shape")],
        _FleetFigure(), table=lambda t: t, title="Hardware faults at fleet scale",
    )


class _FleetFigure(InPlaceFigure):
    """The fleet table's two numbers as bars, simulated beside theory."""

    ROWS = ("failures per day", "down at once, mean")

    def build(self, table: pd.DataFrame) -> Any:
        figure, ax = self.subplots(figsize=(7, 3))
        self.ax = ax
        table.loc[list(self.ROWS)].astype(float).T.plot.bar(ax=ax, rot=0)
        ax.set_ylabel("disks")
        ax.set_title("A year of a fleet: simulated against theory")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        return figure

    def update(self, table: pd.DataFrame) -> None:
        heights = table.loc[list(self.ROWS)].astype(float).T.to_numpy()  # runs x numbers
        for j, bars in enumerate(self.ax.containers):
            for i, bar in enumerate(bars):
                bar.set_height(heights[i, j])
        autoscale(self.ax, scalex=False)


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


class _RedundancyFigure(InPlaceFigure):
    """P(lose every replica in a year) against the replica count, theory with and without
    the shared fault on a log scale, and a dotted line at the count that was simulated."""

    COLUMNS = (("independent faults only, theory", "o-"),
               ("with the shared fault, theory", "s--"))

    def build(self, table: pd.DataFrame) -> Any:
        figure, ax = self.subplots(figsize=(7, 3))
        self.ax = ax
        self.lines = [ax.semilogy(table.index, np.ones(len(table)), style, label=column)[0]
                      for column, style in self.COLUMNS]
        self.chosen = ax.axvline(table.index[0], color="0.6", lw=1, ls=":")
        ax.set_xlabel("replicas")
        ax.set_ylabel("P(lose every replica in a year)")
        ax.set_xticks(list(table.index))
        return figure

    def update(self, table: pd.DataFrame) -> None:
        for line, (column, _) in zip(self.lines, self.COLUMNS, strict=True):
            values = table[column].str.rstrip("%").astype(float) / 100
            line.set_data(table.index, values.clip(lower=1e-12))
        chosen = table.index[table.iloc[:, -1] != ""][0]  # the count that was simulated
        self.chosen.set_xdata([chosen, chosen])
        label = f"simulated: {chosen} replicas"
        if self.chosen.get_label() != label or self.ax.get_legend() is None:
            self.chosen.set_label(label)
            self.ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        autoscale(self.ax)


def redundancy_panel(*, seed: int = 0) -> Panel:
    """Sliders for the replica count, the MTTF, the repair time and the shared fault's rate."""

    def run(replicas: int, mttf_days: float, repair_days: float,
            shared_per_decade: float) -> pd.DataFrame:
        return redundancy_table(replicas, mttf_days, repair_days, shared_per_decade, seed=seed)

    return Panel(
        run,
        [Control.slider("replicas", 1, 5, 3),
         Control.slider("mttf_days", 50.0, 2000.0, 500.0, step=50.0, label="MTTF (days)"),
         Control.slider("repair_days", 0.5, 30.0, 5.0, step=0.5, label="repair (days)"),
         Control.slider("shared_per_decade", 0.0, 5.0, 1.0, step=0.5,
                        label="shared faults per decade")],
        _RedundancyFigure(), table=lambda t: t,
        title="Redundancy against independent and shared faults",
    )
