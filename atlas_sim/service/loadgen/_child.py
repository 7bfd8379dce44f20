"""One part of an open-loop load run, in a child process:
``python -m atlas_sim.service.loadgen._child``.

The parent (``run_load(..., processes=n)``) starts ``n`` of these. Each reads a pickled
``(job, part, parts)`` from stdin, imports what it needs and warms its client up, writes
``ready`` on stdout and waits for one line on stdin: the shared start instant (on
``time.monotonic``). It then sends its share of the schedule and writes back the pickled records
(or the exception). A plain subprocess rather than ``multiprocessing``: it needs no
``if __name__ == "__main__"`` guard in the caller's script and never forks a process that has
server threads running.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import sys


async def _ready_then_start() -> float:
    """Tell the parent this part is ready; return the start instant it answers with.

    Everything made so far (imports, the warmed clients) lives until the process ends: freeze
    it, so the collector's passes during the run scan only the run's own objects. Fewer and
    shorter pauses in the event loop, so fewer late sends (measured: median p99 send lag
    8.5 ms -> 4.3 ms with one process at 500 requests/s). The collector stays on.
    """
    gc.collect()
    gc.freeze()
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.readline)
    return float(line)


def main() -> None:
    job, part, parts = pickle.load(sys.stdin.buffer)
    from .driver import drive

    try:
        outcome: object = asyncio.run(drive(job, part=part, parts=parts,
                                             start=_ready_then_start))
    except Exception as exc:  # sent to the parent, which raises it
        outcome = exc
    pickle.dump(outcome, sys.stdout.buffer)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
