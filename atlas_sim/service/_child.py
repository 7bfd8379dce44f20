"""Run the load generator in a child process: ``python -m atlas_sim.service._child``.

Reads a pickled ``(url, options)`` from stdin, runs ``run_load_async(url, **options)`` and writes
the pickled ``RunResult`` (or the exception) to stdout. A plain subprocess rather than
``multiprocessing``: it needs no ``if __name__ == "__main__"`` guard in the caller's script and
never forks a process that has server threads running.
"""

from __future__ import annotations

import asyncio
import pickle
import sys


def main() -> None:
    url, options = pickle.load(sys.stdin.buffer)
    from .loadgen import run_load_async

    try:
        outcome: object = asyncio.run(run_load_async(url, **options))
    except Exception as exc:  # sent to the parent, which raises it
        outcome = exc
    pickle.dump(outcome, sys.stdout.buffer)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
