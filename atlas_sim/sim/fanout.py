"""Fan-out: one request calls ``backends`` services in parallel and waits for all of them.

DDIA's "tail latency amplification": even if only 1% of backend calls are slow, a request that
needs 100 of them is slow whenever *any* one is, with probability ``1 - (1 - p)**n`` (63% for
p = 1%, n = 100). The request's latency is the maximum of its calls' latencies.

There is no queueing here (every backend has room), so the model is plain numpy, not SimPy: it
draws every call at once. It returns a ``RunResult`` with one request per user request and one
attempt row per backend call.
"""

from __future__ import annotations

import numpy as np

from ..results import RunResult
from ..validation import check_int, check_real
from ..workload import Distribution, rng_streams

__all__ = ["FAST_BACKEND", "fanout", "slow_request_probability"]

#: A healthy backend call: 10 ms on average, exponential.
FAST_BACKEND = Distribution(mean=0.01, kind="exponential")


def slow_request_probability(backends: int, p_slow: float) -> float:
    """Chance that at least one of ``backends`` calls is slow: ``1 - (1 - p_slow)**backends``."""
    check_int("backends", backends, low=1)
    check_real("p_slow", p_slow, low=0, high=1)
    return 1.0 - (1.0 - p_slow) ** backends


def fanout(
    backends: int = 10,
    p_slow: float = 0.01,
    *,
    requests: int = 2000,
    rate: float = 100.0,
    fast: Distribution = FAST_BACKEND,
    slow_latency: float = 1.0,
    seed: int = 0,
) -> RunResult:
    """Simulate ``requests`` user requests, each fanning out to ``backends`` calls.

    Each call is slow (``slow_latency`` seconds) with probability ``p_slow``, else drawn from
    ``fast``. Requests are sent every ``1 / rate`` seconds, only to give the run a
    time axis.
    """
    check_int("backends", backends, low=1, high=1000)
    check_real("p_slow", p_slow, low=0, high=1)
    check_int("requests", requests, low=1, high=1_000_000)
    check_real("rate", rate, low=0, low_open=True)
    check_real("slow_latency", slow_latency, low=0)
    if not isinstance(fast, Distribution):
        raise ValueError(f"fast must be a Distribution, got {fast!r}")
    streams = rng_streams(seed)
    shape = (requests, backends)
    latency = fast.sample(streams["dependency"], requests * backends).reshape(shape)
    slow = streams["server"].random(shape) < p_slow
    latency = np.where(slow, np.maximum(latency, slow_latency), latency)
    t_start = np.arange(requests) / rate
    total = latency.max(axis=1)
    calls = requests * backends
    return RunResult.from_columns(
        requests={"request_id": np.arange(requests), "t_start": t_start,
                  "t_end": t_start + total, "latency": total,
                  "status": np.full(requests, 200), "attempts": np.full(requests, backends),
                  "ok": np.ones(requests, dtype=bool)},
        attempts={"request_id": np.repeat(np.arange(requests), backends),
                  "attempt": np.tile(np.arange(1, backends + 1), requests),
                  "t_start": np.repeat(t_start, backends),
                  "t_end": (t_start[:, None] + latency).ravel(),
                  "latency": latency.ravel(), "status": np.full(calls, 200),
                  "queue_wait": np.full(calls, np.nan)},
        duration=requests / rate,
        source="sim",
        meta={"model": "fanout", "backends": backends, "p_slow": p_slow, "seed": seed,
              "slow_calls": int(slow.sum()), "slow_requests": int(slow.any(axis=1).sum())},
    )
