"""An open-loop HTTP load generator that returns the simulation's ``RunResult`` tables.

Open loop: request ``i`` is sent at its scheduled time whatever happened to the requests before
it, and its latency is counted from that scheduled time. A closed-loop tester (send, wait for
the answer, send the next) slows down exactly when the server does, and so never measures the
queue that real users, who do not wait for each other, would build: coordinated omission.
The generator runs that way too when asked (a closed-loop ``Load``: ``clients`` that think
between requests, latency from the actual send, as ``wrk`` measures), so that the two can be
compared on the same service at the same time (``start_at``; ``meta["loop"]`` says which).

The schedule is ``load.schedule(seed)`` (``workload.Load``), the one the simulator uses for the
same load and seed. Optional client-side policies are the same objects as
everywhere else: a ``RetryPolicy`` (jitter from the ``"client"`` stream), a ``RetryBudget`` and a
``CircuitBreaker`` (on the run's clock: seconds since its start). Outcomes that never got an
HTTP answer get the client-side codes of ``Status``: 599 client timeout, 598 connection error,
597 refused by the client's breaker, 596 retry refused by the budget.

The generator itself can be late: it shares the CPU, and when the service runs in the same
process (``LiveServer``), the GIL too; and a request may wait for one of the client's own
``max_connections``. How late each request's task started against its schedule (the send lag),
and how long each attempt waited inside the client before its first byte was written (the
client wait, which includes the send lag and any wait for a connection), are reported in
``meta``; if the client wait's p99 is not small against the latencies measured, the generator,
not the service, was the bottleneck (``experiments.live.generator_note`` says so).

Measured on a 2-core machine (BENCHMARKS.md): httpx costs about 1.2 ms of CPU per request; with
the service in the same process (about 0.8 ms more, under the same GIL) the generator keeps its
schedule up to about 300 requests/s and collapses at 500. Lowering the interpreter's switch
interval did not help, nor did pausing the garbage collector: the process is simply out of CPU.
The remedy is ``processes=n``: the schedule is split round-robin between ``n`` child processes
(``python -m atlas_sim.service._child``), each with its own interpreter and GIL, which start
together on a shared ``time.monotonic`` instant and send their records back.

Three more things keep the schedule (each measured in BENCHMARKS.md): every generator warms its
client up before time 0 (``warm_up``); each request's task exists shortly before its time, so it
starts at its time rather than one turn of the event loop later; and for ``http://`` targets the
connections are asyncio protocols (``_asyncio_stream``) rather than anyio streams, so httpcore's
check of each idle connection looks at a buffer instead of making a system call. With all three,
one child process kept the p99 send lag at 500 requests/s against a service in the same process
at 2.8-6.3 ms (median 3.6, ten runs on two cores; 17-120 ms before); two children, which then
compete with the service for the two cores, 3.8-8.3 ms (BENCHMARKS.md).
"""

from __future__ import annotations

from .driver import parse_retry_after, parse_server_timing
from .run import blocking, run_load, run_load_async

__all__ = ["blocking", "parse_retry_after", "parse_server_timing", "run_load", "run_load_async"]
