"""The engine's time on two canonical scenarios, for an A/B between two checkouts.

Run it alternately in each tree, with nothing else on the machine (the minimum of 15 runs after
a warm-up is the steadiest figure a shared machine gives)::

    (cd /tmp/base && PYTHONPATH=/tmp/base python benchmarks/ab_engine.py old)
    python benchmarks/ab_engine.py new

Prints one line: ``simulate`` of ``scenarios.full_stack(10_000)`` and of
``scenarios.plain_queue(0.8)``, in ms.
"""

from __future__ import annotations

import sys
import time

from atlas_sim.sim import scenarios, simulate


def fastest(scenario: object, runs: int = 15) -> float:
    """The minimum over ``runs`` of one ``simulate(scenario)``, in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        simulate(scenario)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    full, plain = scenarios.full_stack(10_000), scenarios.plain_queue(0.8)
    simulate(full)
    simulate(plain)
    print(f"{label}: full stack {fastest(full):.1f} ms, plain queue {fastest(plain):.1f} ms")


if __name__ == "__main__":
    main()
