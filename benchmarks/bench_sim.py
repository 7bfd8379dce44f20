"""How fast is the simulator? Simulated requests per wall-clock second, as ratios.

Three workloads, measured in the same process, interleaved, several rounds each (medians):

  (a) a plain SimPy M/M/1 written the textbook way, here: one process per request, a
      ``simpy.Resource`` for the server, ``random.expovariate`` for the draws;
  (b) ``atlas_sim.sim.simulate`` on the same M/M/1 (utilisation 0.8), tables included;
  (c) ``simulate`` on ``scenarios.full_stack`` (retries with jitter, budget, breaker, shedding,
      timeouts, a dependency with its own retry and breaker, faults).

It prints b/a and c/a (targets: >= 1.0 and >= 0.5), and the median wall time of
``simulate(full_stack(10_000)).summary()`` (target: < 250 ms on a 2-core machine).
Absolute numbers depend on the machine; the ratios are what to compare.

Run: .venv/bin/python benchmarks/bench_sim.py [--rounds N]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import simpy

from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Scenario, simulate
from atlas_sim.sim.scenarios import full_stack
from atlas_sim.workload import Distribution, Load

MM1_REQUESTS = 50_000
UTILISATION = 0.8


def textbook_mm1(n: int, seed: int) -> int:
    """The SimPy tutorial's way: a process per customer, a Resource for the server."""
    rnd = random.Random(seed)
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=1)
    latencies: list[float] = []

    def customer(env: simpy.Environment):
        arrived = env.now
        with server.request() as request:
            yield request
            yield env.timeout(rnd.expovariate(1.0))
        latencies.append(env.now - arrived)

    def source(env: simpy.Environment):
        for _ in range(n):
            env.process(customer(env))
            yield env.timeout(rnd.expovariate(UTILISATION))

    env.process(source(env))
    env.run()
    return len(latencies)


def engine_mm1(n: int, seed: int) -> int:
    scenario = Scenario(load=Load(rate=UTILISATION, duration=n / UTILISATION),
                        server=ServerConfig(service_time=Distribution(mean=1.0)), seed=seed)
    return len(simulate(scenario).requests)


def engine_full_stack(n: int, seed: int) -> int:
    return len(simulate(full_stack(n, seed=seed)).requests)


def rate(fn, n: int, seed: int) -> float:
    started = time.perf_counter()
    done = fn(n, seed)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    for r in range(args.rounds):
        rates["a"].append(rate(textbook_mm1, MM1_REQUESTS, r))
        rates["b"].append(rate(engine_mm1, MM1_REQUESTS, r))
        rates["c"].append(rate(engine_full_stack, 30_000, r))
    a, b, c = (statistics.median(rates[k]) for k in "abc")
    walls = []
    for r in range(15):
        started = time.perf_counter()
        simulate(full_stack(10_000, seed=r)).summary()
        walls.append(time.perf_counter() - started)
    print(f"python {platform.python_version()}, simpy {simpy.__version__}, "
          f"{platform.machine()}, {args.rounds} rounds (medians)")
    print(f"(a) textbook SimPy M/M/1        {a:>10,.0f} requests/s")
    print(f"(b) engine, same M/M/1          {b:>10,.0f} requests/s   b/a = {b / a:.2f}")
    print(f"(c) engine, full stack          {c:>10,.0f} requests/s   c/a = {c / a:.2f}")
    print(f"simulate + summary, full stack, 10,000 requests: median "
          f"{1000 * statistics.median(walls):.0f} ms (min {1000 * min(walls):.0f}, "
          f"max {1000 * max(walls):.0f}, 15 runs)")


if __name__ == "__main__":
    main()
