"""Running a job's parts in child processes (``python -m atlas_sim.service.loadgen._child``).

Each child gets its part, imports, warms up, says it is ready, and waits; once all are ready
the parent sends them one shared start instant on ``time.monotonic``, so that request ``i``
leaves at ``times[i]`` whichever process sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sys
import time

from .driver import Job, Request, Run

__all__ = ["drive_in_children"]


async def drive_in_children(job: Job, processes: int,
                             on_start: asyncio.Future[float] | None = None,
                             start_at: float | None = None) -> Run:
    """Split ``job`` round-robin between ``processes`` children; merge what they saw.

    Each child gets its part, imports, warms up, says it is ready, and waits; once all are
    ready the parent sends them one shared start instant (``start_at`` on ``time.monotonic``
    if given, else just after the last is ready), so that request ``i`` leaves at ``times[i]``
    whichever process sends it.
    """
    children = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "atlas_sim.service.loadgen._child",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE) for _ in range(processes)]
    try:
        for part, child in enumerate(children):
            try:  # a child that died at start closes the pipe; one that hangs never reads
                child.stdin.write(pickle.dumps((job, part, processes)))  # type: ignore[union-attr]
                await asyncio.wait_for(child.stdin.drain(), 60)  # type: ignore[union-attr]
            except (TimeoutError, ConnectionError):
                raise RuntimeError(await _failure(child, "did not start")) from None
        for child in children:
            ready = await asyncio.wait_for(child.stdout.readline(), 60)  # type: ignore[union-attr]
            if ready != b"ready\n":
                await _raise_its_error(child, ready)
        if start_at is None:
            start_at = time.monotonic() + 0.05
        if on_start is not None:
            on_start.set_result(start_at)
        outputs = await asyncio.gather(*(child.communicate(f"{start_at!r}\n".encode())
                                         for child in children))
    except BaseException:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        raise
    runs = []
    for child, (out, err) in zip(children, outputs, strict=True):
        if child.returncode != 0 or not out:
            raise RuntimeError(f"a load generator's child process failed (exit "
                               f"{child.returncode}): {err.decode(errors='replace')[-2000:]}")
        outcome = pickle.loads(out)
        if isinstance(outcome, BaseException):
            raise outcome
        runs.append(outcome)
    records: list[Request] = [None] * len(job.times)  # type: ignore[list-item]
    for part, run in enumerate(runs):
        records[part::processes] = run.records
    events = sorted(e for run in runs for e in run.events)
    return Run(records, events, sum(r.unfinished for r in runs), start_at)


async def _raise_its_error(child: asyncio.subprocess.Process, first: bytes) -> None:
    """A child that failed before it was ready wrote its pickled exception, not ``ready``:
    raise that exception here, or say the child did not start if it wrote nothing usable."""
    outcome: object = None
    with contextlib.suppress(Exception):
        rest = await asyncio.wait_for(child.stdout.read(), 10)  # type: ignore[union-attr]
        outcome = pickle.loads(first + rest)
    if isinstance(outcome, BaseException):
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        raise outcome
    raise RuntimeError(await _failure(child, "did not start"))


async def _failure(child: asyncio.subprocess.Process, what: str) -> str:
    child.kill()
    _, err = await child.communicate()
    return f"a load generator's child process {what}: {err.decode(errors='replace')[-2000:]}"
