"""Notebook 01's live retry experiment over many seeds: does the live service fail as theory says?

The experiment: the dependency fails 30% of calls, the client makes up to ``attempts`` attempts
(full jitter, 50 ms base), 50 requests/s for 10 s against ``/api/compose`` (the handler does
not retry). Theory: a request fails when every attempt fails, with probability 0.3**attempts,
independently, so over n requests the failure count is binomial(n, 0.3**attempts).

For each seed the script runs the live service and its simulated twin and prints the failure
counts, then the totals against theory with the binomial standard error, and says whether the
live and the simulated totals each lie within two standard errors. It also reports how many
requests end the same way in both worlds (the call-for-call agreement) and the time of the
first request whose attempts differ: with one attempt the dependency's coin flips meet the same
requests in both worlds; with retries, which call draws which coin depends on the order in which
calls reach the dependency, and a retry's arrival moves with the real round trip.

    .venv/bin/python tools/live_retry_check.py                 # 10 seeds, 3 attempts
    .venv/bin/python tools/live_retry_check.py --attempts 1 --seeds 2024 1 2
    .venv/bin/python tools/live_retry_check.py --calibrate    # the model with the round trip

Takes about 12 s per seed.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from atlas_sim import Backoff, RetryPolicy, Settings
from atlas_sim.experiments import live
from atlas_sim.policies import ClientPolicy
from atlas_sim.workload import Fault, Load

ERROR_RATE = 0.3
DEFAULT_SEEDS = (2024, 1, 2, 3, 4, 5, 11, 12, 13, 14)


def first_divergence(simulated, measured) -> tuple[float, float]:
    """Share of requests with the same (status, attempts) in both worlds, and the scheduled time
    of the first one that differs (NaN if none)."""
    a, b = simulated.requests, measured.requests
    n = min(len(a), len(b))
    same = ((a["status"].to_numpy()[:n] == b["status"].to_numpy()[:n])
            & (a["attempts"].to_numpy()[:n] == b["attempts"].to_numpy()[:n]))
    differ = np.flatnonzero(~same)
    first = float(a["t_start"].to_numpy()[differ[0]]) if differ.size else math.nan
    return float(same.mean()), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--calibrate", action="store_true",
                        help="give the simulator the measured HTTP round trip (live.calibrate)")
    args = parser.parse_args()
    calibration = live.calibrate(workers=2) if args.calibrate else None
    if calibration is not None:
        print(calibration)

    settings = Settings(retry_max_attempts=1, circuit_breaker_failure_threshold=50,
                        circuit_breaker_recovery_timeout=2.0)
    policy = RetryPolicy(max_attempts=args.attempts,
                         backoff=Backoff(base=0.05, cap=1.0, jitter="full"))
    p = ERROR_RATE**args.attempts
    totals = {"requests": 0, "live": 0, "simulated": 0}
    server = live.start_service("atlas-retry-check", settings=settings, seed=args.seeds[0])
    try:
        print(f"{'seed':>6} {'requests':>8} {'expected':>8} {'simulated':>9} {'live':>5} "
              f"{'same end':>8} {'first differs (s)':>17}")
        for seed in args.seeds:
            server.stop()
            server = live.start_service("atlas-retry-check", settings=settings, seed=seed)
            runs = live.compose_experiment(
                server, settings, load=Load(rate=50.0, duration=10.0),
                client=ClientPolicy(timeout=2.0, retry=policy), calibration=calibration,
                faults=[Fault(start=0.0, dependency_error_rate=ERROR_RATE)], seed=seed,
                progress=False)
            n = len(runs["live"].requests)
            failed = {k: int((~runs[k].requests["ok"]).sum()) for k in ("simulated", "live")}
            same, first = first_divergence(runs["simulated"], runs["live"])
            totals["requests"] += n
            totals["live"] += failed["live"]
            totals["simulated"] += failed["simulated"]
            print(f"{seed:>6} {n:>8} {n * p:>8.1f} {failed['simulated']:>9} {failed['live']:>5} "
                  f"{same:>8.1%} {first:>17.3f}")
    finally:
        server.stop()
    n = totals["requests"]
    expected, se = n * p, math.sqrt(n * p * (1 - p))
    print(f"\n{len(args.seeds)} seeds, {n} requests, {args.attempts} attempt(s): theory "
          f"{expected:.1f} failures (binomial standard error {se:.1f})")
    for world in ("simulated", "live"):
        z = (totals[world] - expected) / se
        verdict = "agrees with theory" if abs(z) <= 2 else "DISAGREES with theory"
        print(f"  {world:>9}: {totals[world]} failures, {z:+.2f} standard errors: "
              f"{verdict} (within two standard errors)")


if __name__ == "__main__":
    main()
