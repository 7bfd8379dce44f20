"""How fast do the notebooks' slider panels answer?

For every panel of notebooks 01, 02 and 03, at its default values: the median wall time of
``panel.update()`` with an empty cache (simulation + figure + table: what a slider release
costs before anything is drawn), and of update plus rendering the figure to PNG as the notebook
displays it (``atlas_sim.widgets.render_png``, 90 dpi). A cached update (a value seen before)
skips the simulation. Target: update under 300 ms median on a 2-core machine.

Run: .venv/bin/python benchmarks/bench_widgets.py [--repeats N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from atlas_sim.experiments import breakers, retries, tail, welcome
from atlas_sim.widgets import render_png

PANELS = {
    "00 breaker": welcome.breaker_panel,
    "01 backoff": retries.backoff_panel,
    "01 thundering herd": retries.herd_panel,
    "01 contention": retries.contention_panel,
    "01 retry budget": retries.budget_panel,
    "02 circuit breaker": breakers.breaker_panel,
    "02 timeout": breakers.timeout_panel,
    "02 overload": breakers.overload_panel,
    "02 retry storm": breakers.storm_panel,
    "03 tail at scale": tail.tail_panel,
}


def measure(make, repeats: int) -> tuple[float, float, float]:
    update, rendered, cached = [], [], []
    for _ in range(repeats):
        panel = make()
        started = time.perf_counter()
        view = panel.update()
        update.append(time.perf_counter() - started)
        render_png(view.figure)
        rendered.append(time.perf_counter() - started)
        started = time.perf_counter()
        panel.update()
        cached.append(time.perf_counter() - started)
        plt.close("all")
    return (statistics.median(update), statistics.median(rendered), statistics.median(cached))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, matplotlib {matplotlib.__version__}, "
          f"{platform.machine()}, median of {args.repeats}")
    print(f"{'panel':<22}{'update':>10}{'+ render':>11}{'cached':>10}")
    for name, make in PANELS.items():
        update, rendered, cached = measure(make, args.repeats)
        print(f"{name:<22}{1000 * update:>8.0f} ms{1000 * rendered:>8.0f} ms"
              f"{1000 * cached:>7.0f} ms")


if __name__ == "__main__":
    main()
