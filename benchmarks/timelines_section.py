"""Notebook 03b's home-timeline section, its calls timed one by one (issue 22: under 30 s).

Runs what the section's cells run, on the parts the notebook starts (PostgreSQL and Redis where
installed), and prints the seconds of each step and the total::

    .venv/bin/python benchmarks/timelines_section.py

An absolute time on one machine, not a ratio: run it with nothing else on the machine.
"""

from __future__ import annotations

import itertools
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from atlas_sim.experiments import datasystem_panel, timelines

SEED = 2024


def main() -> None:
    parts = datasystem_panel.start_parts()
    try:
        marks = [time.perf_counter()]
        run = timelines.compare_approaches(accounts=2000, mean_followers=20, threshold=100,
                                           seed=SEED, store_url=parts.store("timelines"))
        run.table()
        marks.append(time.perf_counter())
        timelines.plot_approaches(run)
        plt.close("all")
        run.p99_pairs()
        marks.append(time.perf_counter())
        datasystem_panel.cold_cache_or_why_not(parts, seed=SEED, reads=100)
        marks.append(time.perf_counter())
        timelines.consistency_demo(store_url=parts.store("outbox"), cache_url=parts.cache_url,
                                   seed=SEED)
        marks.append(time.perf_counter())
    finally:
        parts.stop()
    steps = ("compare", "figure and pairs", "cold cache", "outbox", "total")
    seconds = [b - a for a, b in itertools.pairwise(marks)] + [marks[-1] - marks[0]]
    print(", ".join(f"{name} {s:.1f} s" for name, s in zip(steps, seconds, strict=True)))


if __name__ == "__main__":
    main()
