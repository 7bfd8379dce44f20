"""How fast is the simulator? Simulated requests per wall-clock second, as ratios.

Three workloads, measured interleaved, several rounds each (medians):

  (a) a plain SimPy M/M/1 written the textbook way, here: one process per request, a
      ``simpy.Resource`` for the server, ``random.expovariate`` for the draws;
  (b) ``atlas_sim.sim.simulate`` on the same M/M/1 (utilisation 0.8), tables included (a FIFO
      queue without policies: ``simulate`` takes the exact fast path of ``sim.fastpath``);
  (c) ``simulate`` on ``scenarios.full_stack`` (retries with jitter, budget, breaker, shedding,
      timeouts, a dependency with its own retry and breaker, faults), tables included.

It prints b/a and c/a (targets: >= 2.0 and >= 1.0), and the median wall time of
``simulate(full_stack(10_000)).summary()``. Absolute numbers depend on the machine; the ratios
are what to compare.

Run:
  .venv/bin/python benchmarks/bench_sim.py [--rounds N]          this checkout, in-process
  .venv/bin/python benchmarks/bench_sim.py --base ../base        A/B: this checkout against
      another one (say, main), each in a worker process of its own (PYTHONPATH set to the
      checkout), the two asked in turn for every round and workload (who goes first
      alternates), so that a busy machine slows both alike; also prints head/base speed-ups
  .venv/bin/python benchmarks/bench_sim.py --json                 the rounds as JSON
  ... --cpu                                                         rates per CPU second (a
      busy machine: waiting for a core is not counted; the quiet figures are wall time)
  .venv/bin/python benchmarks/bench_sim.py --base ../base --scenarios   the canonical
      scenarios' tables (every scenario of ``sim.scenarios`` and a few plain-queue variants),
      digested in both checkouts and compared: the numbers must not change
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import simpy

MM1_REQUESTS = 50_000
FULL_STACK_REQUESTS = 30_000
UTILISATION = 0.8
TARGETS = {"b": 2.0, "c": 1.0}
HERE = Path(__file__).resolve().parent.parent  # this checkout


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
    from atlas_sim.server_config import ServerConfig
    from atlas_sim.sim import Scenario, simulate
    from atlas_sim.workload import Distribution, Load

    scenario = Scenario(load=Load(rate=UTILISATION, duration=n / UTILISATION),
                        server=ServerConfig(service_time=Distribution(mean=1.0)), seed=seed)
    return len(simulate(scenario).requests)


def engine_full_stack(n: int, seed: int) -> int:
    from atlas_sim.sim import simulate
    from atlas_sim.sim.scenarios import full_stack

    return len(simulate(full_stack(n, seed=seed)).requests)


def full_stack_wall(seed: int) -> float:
    """Seconds for ``simulate(full_stack(10_000)).summary()``."""
    from atlas_sim.sim import simulate
    from atlas_sim.sim.scenarios import full_stack

    started = time.perf_counter()
    simulate(full_stack(10_000, seed=seed)).summary()
    return time.perf_counter() - started


WORKLOADS: dict[str, tuple[Callable[[int, int], int], int]] = {
    "a": (textbook_mm1, MM1_REQUESTS),
    "b": (engine_mm1, MM1_REQUESTS),
    "c": (engine_full_stack, FULL_STACK_REQUESTS),
}


#: the clock of ``measure``: wall time, or with ``--cpu`` the process's CPU time (steadier on a
#: shared machine, where waiting for a core is not the simulator's cost)
CLOCK = time.perf_counter
CPU = time.process_time


def measure(task: str, seed: int) -> float:
    """One measurement: requests per second of workload ``task`` (a, b, c), or the seconds of
    ``full_stack_wall`` (``wall``, always wall time)."""
    if task == "wall":
        return full_stack_wall(seed)
    fn, n = WORKLOADS[task]
    started = CLOCK()
    done = fn(n, seed)
    return done / (CLOCK() - started)


# -- the canonical scenarios, digested -------------------------------------------------------

def _scenarios() -> Iterator[tuple[str, Any]]:
    from atlas_sim.policies import ClientPolicy, HedgePolicy, PoolConfig, RetryPolicy
    from atlas_sim.server_config import Dependency, ServerConfig, StoreConfig
    from atlas_sim.sim import Fault, Scenario
    from atlas_sim.sim import scenarios as sc
    from atlas_sim.workload import Distribution, Load

    for seed in (0, 1, 2):
        for u in (0.5, 0.8, 0.95):
            for w in (1, 2, 4):
                yield f"plain_queue({u}, {w}, seed={seed})", sc.plain_queue(u, w, seed=seed)
        yield f"full_stack(10_000, seed={seed})", sc.full_stack(10_000, seed=seed)
    for jitter in ("none", "full", "equal"):
        yield f"thundering_herd(jitter={jitter!r})", sc.thundering_herd(jitter=jitter)
    for on in (True, False):
        yield f"dependency_outage({on})", sc.dependency_outage(on)
        yield f"overload_spike({on})", sc.overload_spike(on)
    for fix in sc.RETRY_STORM_FIXES:
        yield f"retry_storm({fix!r})", sc.retry_storm(fix)
    plain = sc.plain_queue(0.8, 2)
    yield "plain_queue, round trip and overhead", plain.replace(round_trip=0.01,
                                                                work_overhead=0.002)
    yield "plain_queue, 3 instances", plain.replace(instances=3)
    yield "D/D/1, ties", Scenario(
        load=Load(rate=10.0, duration=20.0, process="constant"),
        server=ServerConfig(service_time=Distribution(mean=0.1, kind="constant")))
    yield "D/D/2 with a step, ties", Scenario(
        load=Load(rate=20.0, duration=20.0, process="constant", steps=((5.0, 40.0),)),
        server=ServerConfig(workers=2, service_time=Distribution(mean=0.1, kind="constant")))
    # beyond the canonical ones: every other path of the engine
    yield "hedged, 2 instances", plain.replace(
        instances=2, client=ClientPolicy(timeout=1.0, hedge=HedgePolicy(delay=0.05)))
    yield "retry_storm, round trip", sc.retry_storm("budget").replace(round_trip=0.02)
    yield "full_stack, stall, bad inputs, drop_expired", sc.full_stack(3000, seed=4).replace(
        {"faults": (Fault(start=2.0, end=3.0, stall=True, name="stall"),
                    Fault(start=5.0, end=6.0, bad_input_rate=0.3, name="bad inputs")),
         "server.drop_expired": True})
    yield "/api/orders with a pool", Scenario(
        load=Load(rate=40.0, duration=20.0), path="/api/orders", seed=3,
        server=ServerConfig(workers=4, service_time=Distribution(mean=0.02), timeout=2.0,
                            store=StoreConfig(query_time=Distribution(mean=0.05)),
                            pool=PoolConfig(size=2, timeout=0.5)))
    yield "/api/compose", Scenario(
        load=Load(rate=40.0, duration=20.0), path="/api/compose", seed=2,
        server=ServerConfig(dependency=Dependency(latency=Distribution(mean=0.02),
                                                  error_rate=0.05)))
    yield "closed loop, thinking", Scenario(
        load=Load(clients=20, think_time=0.1, duration=20.0),
        server=ServerConfig(workers=2, service_time=Distribution(mean=0.01)),
        client=ClientPolicy(timeout=0.5, retry=RetryPolicy(max_attempts=3)), seed=7)
    yield "M/G/3 lognormal with a step", Scenario(
        load=Load(rate=50.0, duration=30.0, steps=((10.0, 70.0),)),
        server=ServerConfig(workers=3, service_time=Distribution(mean=0.05, kind="lognormal",
                                                                 shape=1.2)), seed=5)


def _digest(table: Any) -> str:
    import hashlib

    h = hashlib.sha256(repr([list(table.columns), [str(t) for t in table.dtypes]]).encode())
    for name in table.columns:
        column = table[name].to_numpy()
        h.update(repr(column.tolist()).encode() if column.dtype == object
                 else column.tobytes())
    return h.hexdigest()[:16]


def scenario_digests() -> dict[str, dict[str, Any]]:
    """Every canonical scenario's tables as digests of their exact bytes, and its summary."""
    from atlas_sim.sim import scenarios as sc
    from atlas_sim.sim import simulate

    out: dict[str, dict[str, Any]] = {}
    for name, scenario in _scenarios():
        run = simulate(scenario)
        out[name] = {"requests": _digest(run.requests), "attempts": _digest(run.attempts),
                     "events": _digest(run.events),
                     "server_log": _digest(run.meta["server_log"]),
                     "summary": {k: repr(v) for k, v in run.summary().items()}}
    out["compare_contention(seeds=range(3))"] = {
        "table": _digest(sc.compare_contention(seeds=range(3)))}
    fan = sc.fanout()
    out["fanout()"] = {"requests": _digest(fan.requests), "attempts": _digest(fan.attempts)}
    return out


# -- running here, or in two workers ---------------------------------------------------------

def worker() -> None:
    """Answer one measurement per line read: ``<task> <seed>`` -> a number; ``digests`` -> the
    scenario digests as one line of JSON."""
    for line in sys.stdin:
        task, *rest = line.split()
        if task == "digests":
            print(json.dumps(scenario_digests()), flush=True)
        else:
            print(repr(measure(task, int(rest[0]))), flush=True)


class Worker:
    """This script in ``--worker`` mode, importing ``atlas_sim`` from ``checkout``."""

    def __init__(self, checkout: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.checkout = checkout
        command = [sys.executable, __file__, "--worker"] + (["--cpu"] if CLOCK is CPU else [])
        self.process = subprocess.Popen(command, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=checkout)

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the worker for {self.checkout} stopped")
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def rounds_here(rounds: int, walls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"a": [], "b": [], "c": [], "wall": []}
    for r in range(rounds):
        for task in "abc":
            out[task].append(measure(task, r))
    for r in range(walls):
        out["wall"].append(measure("wall", r))
    return out


def rounds_ab(workers: dict[str, Worker], rounds: int,
              walls: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {
        name: {"a": [], "b": [], "c": [], "wall": []} for name in workers}
    names = list(workers)
    for r in range(max(rounds, walls)):
        order = names if r % 2 == 0 else names[::-1]
        tasks = [t for t in "abc" if r < rounds] + (["wall"] if r < walls else [])
        for task in tasks:
            for name in order:
                out[name][task].append(float(workers[name].ask(f"{task} {r}")))
    return out


def report(name: str, rates: dict[str, list[float]]) -> dict[str, float]:
    a, b, c = (statistics.median(rates[k]) for k in "abc")
    walls = rates["wall"]
    mark = {k: "ok" if v >= TARGETS[k] else "BELOW TARGET" for k, v in
            (("b", b / a), ("c", c / a))}
    print(f"[{name}]")
    print(f"(a) textbook SimPy M/M/1        {a:>10,.0f} requests/s")
    print(f"(b) engine, same M/M/1          {b:>10,.0f} requests/s   b/a = {b / a:.2f} "
          f"(target >= {TARGETS['b']:.1f}: {mark['b']})")
    print(f"(c) engine, full stack          {c:>10,.0f} requests/s   c/a = {c / a:.2f} "
          f"(target >= {TARGETS['c']:.1f}: {mark['c']})")
    if walls:
        print(f"simulate + summary, full stack, 10,000 requests: median "
              f"{1000 * statistics.median(walls):.0f} ms (min {1000 * min(walls):.0f}, "
              f"max {1000 * max(walls):.0f}, {len(walls)} runs)")
    return {"a": a, "b": b, "c": c, "wall": statistics.median(walls) if walls else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--walls", type=int, default=15,
                        help="runs of simulate(full_stack(10_000)).summary() to time")
    parser.add_argument("--base", type=Path, help="another checkout to compare with (A/B)")
    parser.add_argument("--head", type=Path, default=HERE,
                        help="the checkout measured against --base (default: this one)")
    parser.add_argument("--json", action="store_true", help="print the rounds as JSON")
    parser.add_argument("--scenarios", action="store_true",
                        help="with --base: compare the canonical scenarios' tables")
    parser.add_argument("--cpu", action="store_true",
                        help="rates per second of process CPU time, not wall time")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = CPU
    if args.worker:
        worker()
        return
    header = (f"python {platform.python_version()}, simpy {simpy.__version__}, "
              f"{platform.machine()}, {os.cpu_count()} cpus, {args.rounds} rounds (medians), "
              f"{'CPU' if args.cpu else 'wall'} time")
    if args.base is None:
        if args.scenarios:
            parser.error("--scenarios compares two checkouts: give --base")
        rates = rounds_here(args.rounds, args.walls)
        if args.json:
            print(json.dumps({"checkout": str(HERE), "rates": rates}))
            return
        print(header)
        report(str(HERE), rates)
        return
    workers = {"head": Worker(args.head.resolve()), "base": Worker(args.base.resolve())}
    try:
        if args.scenarios:
            digests = {name: json.loads(w.ask("digests")) for name, w in workers.items()}
            changed = [k for k in digests["base"] if digests["head"].get(k) != digests["base"][k]]
            print(f"{len(digests['base'])} scenarios compared, {len(changed)} changed")
            for key in changed:
                print(f"  CHANGED {key}: base {digests['base'][key]}, "
                      f"head {digests['head'].get(key)}")
            sys.exit(1 if changed else 0)
        rates_ab = rounds_ab(workers, args.rounds, args.walls)
    finally:
        for w in workers.values():
            w.close()
    if args.json:
        print(json.dumps({"head": str(args.head), "base": str(args.base), "rates": rates_ab}))
        return
    print(header + ", A/B interleaved")
    medians = {name: report(f"{name}: {workers[name].checkout}", rates_ab[name])
               for name in workers}
    head, base = medians["head"], medians["base"]
    wall = f", full-stack wall x{base['wall'] / head['wall']:.2f}" if args.walls else ""
    print(f"head/base: (b) x{head['b'] / base['b']:.2f}, (c) x{head['c'] / base['c']:.2f}"
          f"{wall} (a: x{head['a'] / base['a']:.2f}, the same code on both: ~1 when the "
          f"machine is quiet)")


if __name__ == "__main__":
    main()
