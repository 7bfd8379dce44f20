"""``run_load_async`` and ``run_load``: the generator's one entry point, in a coroutine and for
ordinary code and notebook cells; they check the arguments, plan the job, run it here or in
child processes, apply timed faults and return a ``RunResult``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import httpx
import numpy as np

from ...policies import BreakerConfig, BudgetConfig, RetryPolicy
from ...results import RunResult
from ...validation import check_choice, check_int, check_real
from .children import drive_in_children
from .driver import Job, drive
from .result import to_result
from .schedule import Process, schedule
from .timeline import EventRow, check_faults, fetch_server_breaker, inject_faults

__all__ = ["run_load", "run_load_async"]

P = ParamSpec("P")
T = TypeVar("T")


async def run_load_async(
    url: str,
    *,
    rate: float,
    duration: float | None = None,
    requests: int | None = None,
    process: Process = "poisson",
    steps: Sequence[tuple[float, float]] = (),
    seed: int = 0,
    path: str = "/api/work",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    client_timeout: float | None = None,
    retry: RetryPolicy | None = None,
    budget: BudgetConfig | None = None,
    breaker: BreakerConfig | None = None,
    max_connections: int = 512,
    drain_timeout: float | None = None,
    server_events: bool = True,
    processes: int = 0,
    faults: Sequence[tuple[float, Mapping[str, Any]]] = (),
    warm_up: bool = True,
    progress: bool = True,
) -> RunResult:
    """Offer an open-loop load to ``url + path`` and return what every request saw.

    Args:
        url: the service's base URL, e.g. ``LiveServer.url``.
        rate: requests per second (before any ``steps``).
        duration: seconds of offered load. requests: at most this many (see ``schedule``).
        process: ``"poisson"`` (random arrivals) or ``"constant"`` (evenly spaced).
        steps: rate changes, ``[(time, new_rate), ...]``, as in ``arrival_times``.
        seed: one seed for the schedule (``"arrivals"``) and the retry jitter (``"client"``).
        path, method, headers: what each request asks for.
        client_timeout: seconds the client waits for one attempt (None: no limit but the
            drain deadline); past it the attempt ends with 599.
        retry: client-side retries (None: one attempt per request).
        budget: a client-side retry budget; a retry it refuses ends the request with 596.
        breaker: a client-side circuit breaker; a send it refuses ends the request with 597.
        max_connections: size of the client's connection pool. Requests beyond it wait for a
            connection inside the client; their latency still counts from the schedule.
        drain_timeout: seconds to wait after the last send before giving up on the requests
            still open (recorded as 599). Default: enough for every attempt and backoff,
            bounded by ``client_timeout`` (30 s per attempt without one).
        server_events: fetch the service's breaker transitions from ``/admin/breaker`` into
            ``events`` (name ``"dependency"``), on the run's clock.
        processes: 0 runs the generator here (in a helper thread when called through
            ``run_load``); ``n >= 1`` splits the schedule round-robin between ``n`` child
            processes (see the module docstring): needed for high rates, above all against a
            service in this same process (on two cores, one child holds 500 requests/s; more
            processes than free cores slow each other down). Starting them costs about a
            second. A client breaker or budget is one shared state machine, so it needs
            ``processes`` 0 or 1; with more than one process each draws its retry jitter from
            its own part of the ``"client"`` stream.
        faults: timed changes to the service's faults, ``[(5.0, {"outage": True}),
            (20.0, {"outage": False})]``: each mapping is sent to ``/admin/faults`` at its time
            on the run's clock and recorded in ``events`` (kind ``"fault"``, ``detail`` start or
            end). Changes at time 0 are applied before the first request leaves. The last
            change stays in effect after the run.
        warm_up: before time 0, each generator opens up to 8 connections with a ``GET`` of
            ``url + "/health"`` on each (not counted in the result; any answer will do), so
            that the first scheduled requests do not pay for connecting and for the client's
            first-use imports.
        progress: show a tqdm progress bar (not shown with child processes).

    Returns ``RunResult(source="live")``. ``meta`` holds the schedule's parameters, the send
    lag (``send_lag``, seconds per request, and ``send_lag_p50/p99/max``) and ``server_work``:
    each attempt's work as the server reported it (``Server-Timing``; NaN if it did not), in the
    order of the ``attempts`` table.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
    try:
        port = httpx.URL(url).port
    except httpx.InvalidURL as exc:
        raise ValueError(f"url must be a valid URL, got {url!r}: {exc}") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"url's port must be in 1..65535, got {port} in {url!r}")
    check_choice("process", process, ("poisson", "constant"))
    seed = check_int("seed", seed, low=0)
    if client_timeout is not None:
        client_timeout = check_real("client_timeout", client_timeout, low=0, low_open=True)
    max_connections = check_int("max_connections", max_connections, low=1, high=100_000)
    for name, value, kind in (("retry", retry, RetryPolicy), ("budget", budget, BudgetConfig),
                              ("breaker", breaker, BreakerConfig)):
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")
    processes = check_int("processes", processes, low=0, high=64)
    if processes > 1 and (breaker is not None or budget is not None):
        raise ValueError(
            "processes must be 0 or 1 with a client breaker or budget: each is one shared "
            f"state machine, and {processes} processes would each keep their own")
    times, length = schedule(rate, duration=duration, requests=requests, process=process,
                             steps=steps, seed=seed)
    fault_plan = check_faults(faults, length)
    max_attempts = retry.max_attempts if retry is not None else 1
    if drain_timeout is None:
        per_attempt = client_timeout if client_timeout is not None else 30.0
        waits = (max_attempts - 1) * (retry.backoff.cap if retry is not None else 0.0)
        drain_timeout = per_attempt * max_attempts + waits + 1.0
    drain_timeout = check_real("drain_timeout", drain_timeout, low=0, low_open=True)

    base = url.rstrip("/")
    job = Job(
        target=base + path, method=method, headers=dict(headers or {}), times=times,
        seed=seed, client_timeout=client_timeout, retry=retry, budget=budget,
        breaker=breaker, max_connections=max_connections, drain_timeout=drain_timeout,
        progress=progress and processes == 0,
        warm_up_url=base + "/health" if warm_up else None,
    )
    fault_events: list[EventRow] = []
    at_start = [change for change in fault_plan if change[0] == 0]
    later = [change for change in fault_plan if change[0] > 0]
    if at_start:  # in force before the first request leaves
        await inject_faults(base, at_start, None, fault_events)
    started: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    driver = (drive(job, on_start=started) if processes == 0
              else drive_in_children(job, processes, on_start=started))
    injector = (asyncio.ensure_future(inject_faults(base, later, started, fault_events))
                if later else None)
    try:
        run = await driver
        if injector is not None:
            await injector
    finally:  # a run that failed must not leave the injector waiting for a start
        if injector is not None and not injector.done():
            injector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await injector
    records, events = run.records, run.events + fault_events
    server_note = "not requested"
    if server_events:
        server_note = await fetch_server_breaker(base, run.origin_monotonic, events)

    lag = np.array([r.sent - r.scheduled for r in records], dtype=float)
    sent_lag = lag[~np.isnan(lag)]
    meta: dict[str, Any] = {
        "url": base, "path": path, "method": method, "rate": rate, "process": process,
        "steps": list(steps), "seed": seed, "scheduled": len(times),
        "client_timeout": client_timeout, "drain_timeout": drain_timeout,
        "max_connections": max_connections, "warm_up": warm_up,
        "generator": f"{processes} child process(es)" if processes else "this process",
        "retry": retry, "budget": budget, "breaker": breaker,
        "unfinished": run.unfinished, "server_events": server_note,
        "send_lag": lag,
        "send_lag_p50": float(np.percentile(sent_lag, 50)) if sent_lag.size else math.nan,
        "send_lag_p99": float(np.percentile(sent_lag, 99)) if sent_lag.size else math.nan,
        "send_lag_max": float(sent_lag.max()) if sent_lag.size else math.nan,
    }
    return to_result(records, events, length, meta)


def _blocking(coroutine_function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The same call for ordinary code and Jupyter cells: same parameters, same types.

    A Jupyter cell's thread already runs an event loop, so the coroutine runs in a short-lived
    thread with an event loop of its own, and the call waits for it. Interrupting the wait
    (Ctrl-C, the kernel's stop button) cancels the run and re-raises ``KeyboardInterrupt``.
    """

    @functools.wraps(coroutine_function)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        outcome: dict[str, Any] = {}
        ready = threading.Event()
        holder: dict[str, Any] = {}

        async def main() -> T:
            holder["loop"] = asyncio.get_running_loop()
            holder["task"] = asyncio.current_task()
            ready.set()
            return await coroutine_function(*args, **kwargs)

        def target() -> None:
            try:
                outcome["result"] = asyncio.run(main())
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc
            finally:
                ready.set()

        thread = threading.Thread(target=target, name="atlas-load", daemon=True)
        thread.start()
        try:
            thread.join()
        except KeyboardInterrupt:
            ready.wait(1.0)
            loop, task = holder.get("loop"), holder.get("task")
            if loop is not None and task is not None:
                loop.call_soon_threadsafe(task.cancel)
            thread.join(10.0)
            raise
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    return call


run_load = _blocking(run_load_async)
run_load.__name__ = run_load.__qualname__ = "run_load"
run_load.__doc__ = (
    "``run_load_async`` for ordinary code and Jupyter cells (same arguments, same result).\n\n"
    "The load runs in a short-lived thread with an event loop of its own (a cell's thread\n"
    "already runs one); interrupting the wait (Ctrl-C, the kernel's stop button) cancels the\n"
    "run and re-raises ``KeyboardInterrupt``.\n\n" + (run_load_async.__doc__ or ""))
