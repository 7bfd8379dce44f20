"""The exact fast path of ``simulate``: a FIFO queue without policies, by recursion, not events.

A scenario qualifies (``qualifies``) when nothing in it can refuse, cut off, retry or reorder a
request: an open-loop load on one instance (``instances=1``) with ``workers = c`` behind the
default FIFO queue (``Fifo()``), no admission limit, no server timeout, no deadline propagation,
no dependency (``path`` None or ``"/api/work"``), no faults, and a client without timeout,
retry, budget, breaker or hedging. Any service-time ``Distribution``, ``process``, ``steps``,
``round_trip`` and ``work_overhead`` are allowed: the plain M/M/c (and M/G/c, D/D/c) queue of
``scenarios.plain_queue``. ``simulate`` then computes the run with ``fifo_queue`` instead of
the event engine; every other scenario runs on the events.

In such a queue every request is served, in the order it arrived, by the worker that frees
first, so its start is ``s_n = max(x_n, F_n)``: ``x_n`` its arrival at the server, ``F_n`` the
earliest time a worker is free. For one worker that is Lindley's recursion (D. V. Lindley,
"The theory of queues with a single server", Proc. Cambridge Philos. Soc. 48, 1952:
``W_{n+1} = max(0, W_n + S_n - A_{n+1})``, written here in times rather than waits); for c
workers, the Kiefer-Wolfowitz recursion (J. Kiefer and J. Wolfowitz, "On the theory of queues
with many servers", Trans. Amer. Math. Soc. 78, 1955), whose workload vector is kept as a heap of
the workers' free times.

The same numbers as the event engine, bit for bit, not only in law: the same draws in the same
order (arrivals from ``Load.schedule(seed)``, service times from the ``"service"`` stream in
blocks as ``Distribution.sampler`` makes them, one per request in order of service start, which
FIFO makes the order of arrival; no other stream is read), and every time computed by the float
operations the engine does, in its order (a send instant is the previous one plus
``max(0, t - previous)``, as SimPy's clock adds a timeout's delay; a start is a ``max``; an end
is the start plus the work; the way there and back adds ``round_trip / 2``). The tables, their
row order and ``meta["server_log"]`` (in the order the work ended, ties in order of start, as
SimPy's event ids order them) are the engine's. ``tests/sim/test_fastpath.py`` checks that on
many scenarios against the event engine, and against the M/M/1 and Erlang C formulas.

The recursion is a loop over the requests in Python (about a microsecond each) rather than a
vectorised numpy scan: a scan of cumulative sums would round differently from the engine, and
the canonical scenarios' numbers are to stay what they are.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from ..policies import Fifo
from ..results import RunResult
from ..workload import Distribution, rng_streams
from .recorder import planned_events, run_result
from .scenario import Scenario

__all__ = ["fifo_queue", "qualifies"]

#: ``Distribution.sampler``'s block: the fast path draws the same blocks, so the same numbers.
SAMPLER_BLOCK = 4096


def qualifies(scenario: Scenario) -> bool:
    """True when ``scenario`` is a FIFO queue without policies (see the module docstring), so
    that ``fifo_queue`` gives exactly the event engine's result."""
    s = scenario
    if not s.load.open_loop or s.instances != 1 or s.faults or s.path not in (None, "/api/work"):
        return False
    config = s.configs[0]
    if (config.admission is not None or config.timeout is not None or config.drop_expired
            or type(config.queue) is not Fifo
            or (s.path is None and config.dependency is not None)):
        return False
    c = s.client
    return (c.timeout is None and c.retry is None and c.budget is None and c.breaker is None
            and c.hedge is None)


def service_draws(distribution: Distribution, rng: np.random.Generator, n: int) -> np.ndarray:
    """The first ``n`` numbers that ``distribution.sampler(rng)`` would hand out, shape
    ``(n,)``: drawn in the sampler's blocks, so that the sequence is the same."""
    if distribution.kind == "constant" or distribution.mean == 0:
        return np.full(n, float(distribution.mean))
    blocks = [distribution.sample(rng, SAMPLER_BLOCK) for _ in range(-(-n // SAMPLER_BLOCK))]
    return np.concatenate(blocks)[:n] if blocks else np.empty(0)


def send_instants(times: np.ndarray) -> np.ndarray:
    """When SimPy's clock reaches each of the schedule's ``times``: the open-loop process waits
    ``max(0, t - now)`` from the previous send, and the clock adds the delay to ``now``, which
    is not always ``t`` in floats. Computed at once where it is (almost always), else in a loop."""
    previous = np.concatenate(([0.0], times[:-1]))
    if np.array_equal(previous + np.maximum(0.0, times - previous), times):
        return times  # every sum is exact: by induction, each instant is its t
    instants = np.empty_like(times)
    now = 0.0
    for i, t in enumerate(times.tolist()):
        now = now + max(0.0, t - now)
        instants[i] = now
    return instants


def fifo_queue(scenario: Scenario) -> RunResult:
    """Run a qualifying ``scenario`` (``qualifies``) by the recursion of the module docstring:
    the ``RunResult`` that ``simulate`` would build from events, the same to the last bit.

    Raises ValueError if the scenario does not qualify.
    """
    if not qualifies(scenario):
        raise ValueError("fifo_queue needs a FIFO queue without policies (see "
                         f"sim.fastpath.qualifies), got {scenario!r}")
    s = scenario
    config = s.configs[0]
    times, duration = s.load.schedule(s.seed)
    sent = send_instants(np.asarray(times, dtype=np.float64))
    n = len(sent)
    half = s.round_trip / 2
    arrive = sent + half if half else sent  # at the server, after the way there
    # the engine's work: draw / capacity + added latency + overhead (capacity 1, no latency)
    work = service_draws(config.service_time, rng_streams(s.seed)["service"], n) / 1.0
    work = work + 0.0 + s.work_overhead
    starts: list[float] = []
    ends: list[float] = []
    start, end = starts.append, ends.append
    workers = config.workers
    if workers == 1:  # Lindley
        free = -math.inf
        for x, w in zip(arrive.tolist(), work.tolist(), strict=True):
            begin = x if x >= free else free
            free = begin + w
            start(begin)
            end(free)
    else:  # Kiefer-Wolfowitz: the workers' free times, earliest first
        heap = [-math.inf] * workers
        replace = heapq.heapreplace
        for x, w in zip(arrive.tolist(), work.tolist(), strict=True):
            earliest = heap[0]
            begin = x if x >= earliest else earliest
            done = begin + w
            replace(heap, done)
            start(begin)
            end(done)
    begins = np.asarray(starts, dtype=np.float64)
    done_at = np.asarray(ends, dtype=np.float64)
    answered = done_at + half if half else done_at  # back at the client
    ids = np.arange(n, dtype=np.int64)
    ones = np.ones(n, dtype=np.int64)
    status = np.full(n, 200, dtype=np.int64)
    latency = answered - sent
    completed = np.argsort(done_at, kind="stable")  # the server log, in the order work ended
    return run_result(
        s, duration,
        requests={"request_id": ids, "t_start": sent, "t_end": answered, "latency": latency,
                  "status": status, "attempts": ones, "ok": np.ones(n, dtype=bool)},
        attempts={"request_id": ids, "attempt": ones, "t_start": sent, "t_end": answered,
                  "latency": latency, "status": status, "queue_wait": begins - arrive,
                  "instance": np.zeros(n, dtype=np.int64)},
        events=planned_events(s),
        server_log={"request_id": ids[completed], "attempt": ones, "time": done_at[completed],
                    "instance": np.zeros(n, dtype=np.int64)},
    )
