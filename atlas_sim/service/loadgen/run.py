"""``run_load_async`` and ``run_load``: the generator's one entry point, in a coroutine and for
ordinary code and notebook cells; they check the arguments, plan the job, run it here or in
child processes, apply timed faults and return a ``RunResult``. ``blocking`` turns any such
coroutine function into a call for ordinary code and cells (two generators at once, say)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import httpx
import numpy as np

from ...policies import ClientPolicy
from ...results import RunResult
from ...validation import check_int, check_real
from ...workload import Fault, Load
from .children import drive_in_children
from .driver import Job, drive
from .result import to_result
from .timeline import (
    fault_events,
    fetch_server_breaker,
    inject_faults,
    plan_faults,
    switch_off,
)

__all__ = ["MAX_REQUESTS", "blocking", "expected_requests", "run_load", "run_load_async"]

#: The most requests one open-loop run may schedule. The generator keeps every request's record
#: until the run ends and then builds the result's tables from them; measured with tracemalloc
#: (1-attempt requests at 400/s, 500 against 2,500 requests, one process with the service in
#: it), that costs about 2.2 kB per request kept and 7 kB per request at the peak, so a
#: hundred thousand requests peak at about 0.7 GB: within any laptop's memory, where the tens of
#: millions once accepted ended in MemoryError after minutes. At the 300-500 requests/s one
#: process sends, it is also several minutes of load; split larger loads into several runs.
MAX_REQUESTS = 100_000
_BYTES_PER_REQUEST = 7_000  # at the peak, rounded up (above)

_NO_POLICY = ClientPolicy()  # one attempt, no timeout of its own, no budget, no breaker
P = ParamSpec("P")
T = TypeVar("T")


async def run_load_async(
    url: str,
    *,
    load: Load,
    client: ClientPolicy = _NO_POLICY,
    faults: Sequence[Fault] = (),
    seed: int = 0,
    path: str = "/api/work",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    max_connections: int = 512,
    drain_timeout: float | None = None,
    server_events: bool = True,
    processes: int = 0,
    warm_up: bool = True,
    idempotency_keys: bool = False,
    instances: Sequence[str] = (),
    progress: bool = True,
    start_at: float | None = None,
) -> RunResult:
    """Offer a load to ``url + path`` and return what every request saw.

    ``load``, ``client`` and ``faults`` are the very objects a ``Scenario`` holds
    (``Scenario.load``, ``Scenario.client``, ``Scenario.faults``), so a simulated and a live run
    are described once.

    Args:
        url: the service's base URL, e.g. ``LiveServer.url``.
        load: an open-loop ``Load`` (rate, duration or a count of requests, process, steps):
            its schedule for ``seed`` is the simulator's, and each request's latency counts
            from its scheduled time. At most ``MAX_REQUESTS`` (100,000) requests are
            scheduled per run (``rate`` x ``duration``, or ``requests``); more are refused at
            once. Or a closed-loop ``Load`` (``clients``, ``think_time``,
            ``synchronized``, ``duration``): each of ``clients`` clients (a connection each,
            as ``wrk -c``) sends a request, waits for its outcome (retries included), thinks
            for an exponential time of mean ``think_time`` (from the ``"think"`` stream, as in
            the simulator) and sends again, until ``duration``; latency counts from the actual
            send, as a closed-loop tester such as ``wrk`` measures it (see ``meta["loop"]``).
            A closed loop's count cannot be known in advance (clients x duration / think
            time is no bound: a fast service and short thinks send more, a think of 0 sends
            as fast as the service answers), so the clients stop starting requests once
            ``MAX_REQUESTS`` have been sent, and ``meta["max_requests_reached"]`` says so.
        client: the client's ``ClientPolicy``: ``timeout`` per attempt (past it the attempt
            ends 599; None: no limit but the drain deadline), ``retry``, ``budget`` (a refused
            retry ends the request 596) and ``breaker`` (a refused send ends it 597), or
            ``hedge`` (``HedgePolicy(delay=, max_extra=)``: a further copy of a request that
            has not answered after ``delay`` seconds, up to ``max_extra``, each to the
            instance ``client.routing`` picks, so with ``instances`` and ``NextInstance()``
            each hedge goes to the next instance; the first 2xx or fatal answer wins and the
            copies still out are cancelled, their connections closed). Each copy is a row of
            ``attempts`` (``attempt`` = copy number) with its own ``timeout``; a cancelled
            copy's status is 499 (``Status.CANCELLED``, as the fan-out model's), its
            ``t_end`` when it was cancelled. Open and closed loops alike.
        faults: ``Fault`` windows switched on in the service at ``start`` and off at ``end``
            through ``/admin/faults`` (capacity, stall, dependency error rate, added dependency
            latency, dependency outage; ``added_latency``, the server's handling, exists in the
            simulation only). Changes at time 0 are in force before the first request leaves;
            a window still open when the run ends (``end`` past the last send, or ``inf``) is
            closed then; a run that is interrupted (``KeyboardInterrupt``, cancellation) or
            fails switches off every fault it set before it ends. Each change is recorded in
            ``events`` (kind ``"fault"``).
        seed: one seed for the schedule (``"arrivals"``), the retry jitter (``"client"``) and
            the think times of a closed loop (``"think"``).
        path, method, headers: what each request asks for. ``path`` is a path on the
            service (one leading ``/``, an optional query: ``"/api/work?service_time=0.01"``);
            anything that would name another host or port is refused.
        max_connections: size of the client's connection pool. Requests beyond it wait for a
            connection inside the client; their latency still counts from the schedule, and
            ``meta["client_wait"]`` says how long each waited.
        drain_timeout: seconds to wait after the last send before giving up on the requests
            still open (recorded as 599). Default: enough for every attempt and backoff (every
            copy and hedge delay, hedged), bounded by ``client.timeout`` (30 s per attempt
            without one).
        server_events: fetch the service's breaker transitions from ``/admin/breaker`` into
            ``events`` (name ``"dependency"``), on the run's clock.
        processes: 0 runs the generator here (in a helper thread when called through
            ``run_load``); ``n >= 1`` splits the schedule round-robin between ``n`` child
            processes (see the module docstring): needed for high rates, above all against a
            service in this same process (on two cores, one child holds 500 requests/s; more
            processes than free cores slow each other down). Starting them costs about a
            second. A client breaker or budget is one shared state machine, so it needs
            ``processes`` 0 or 1; with more than one process each draws its retry jitter from
            its own part of the ``"client"`` stream. A closed loop runs here only (0).
        warm_up: before time 0, each generator opens up to 8 connections with a ``GET`` of
            ``url + "/health"`` on each (not counted in the result; any answer will do), so
            that the first scheduled requests do not pay for connecting and for the client's
            first-use imports.
        idempotency_keys: send each logical request with its own ``Idempotency-Key`` (the
            IETF draft "The Idempotency-Key HTTP Header Field"), the same on every attempt, so
            that a service that remembers keys (``POST /api/orders``) applies a retried write
            once. Keys are unique to the run.
        instances: the base URLs of the same service's other instances (``url`` is the
            first, instance 0). ``client.routing`` picks each attempt's instance
            (``NextInstance()``: attempt ``k`` of request ``i`` goes to ``(i + k - 1) % n``,
            first attempts round-robin and each retry to the next instance, as a client that
            retries elsewhere does); ``attempts["instance"]`` says which it was. ``faults``
            are played on every instance (the same version and settings run on all of them),
            except a ``Fault`` with ``instances``, played on those it names only (0 is
            ``url``, 1, 2, ... these; a larger index is refused); warm-up and
            ``server_events`` use ``url`` only.
            A ``Fault`` with a ``bad_input_rate`` makes every request carry its input
            (``workload.request_inputs`` for ``seed``, by schedule index) in an
            ``X-Atlas-Input`` header, on every attempt.
        progress: show how many requests have finished (``atlas_sim.progress``: a line of text
            rewritten in place in a notebook, a tqdm bar in a terminal; not shown with
            child processes).
        start_at: the run's time 0 as an instant on ``time.monotonic`` (after the warm-up),
            so that generators started together share one clock: two ``run_load_async``
            gathered with the same ``start_at`` (one of them playing the faults) measure the
            same fault at the same time of their runs. Default: as soon as it is warmed up.
            An instant already past is still time 0 (the first requests then leave late, as
            the send lag says).

    Raises ValueError for an argument out of range, naming it.

    Returns ``RunResult(source="live")``. ``meta`` holds the load, ``loop`` (``"open"`` or
    ``"closed"``, as a simulated run's), the client policy, the send lag (``send_lag``,
    seconds per request, and ``send_lag_p50/p99/max``: from a request's scheduled time to the
    start of its task; about 0 in a closed loop, which sends when it decides to),
    ``client_wait``: each attempt's wait inside the client, in seconds, in the order of the
    ``attempts`` table (from its start, the scheduled time for a first attempt, until its first
    byte was written, httpcore's ``send_request_headers`` trace event; this counts the send lag,
    the wait for a connection under ``max_connections`` and connecting; an attempt that never
    left counts until it ended), with ``client_wait_p50/p99/max`` over all attempts,
    ``pool_wait`` the part of it spent waiting for a free connection (from asking the pool
    until it got one, or until the attempt ended if it never got one; NaN only for an attempt
    that never asked, one cut off before it reached the pool) with ``pool_wait_p50/p99/max``
    (a simulated run has no client of this kind and none of these keys: its requests leave on
    time), ``server_work``: each attempt's work as the server reported it (``Server-Timing:
    work``; NaN if it did not), in the order of the ``attempts`` table, ``server_overrun``: in
    the same order, how far the server's timers overran what it drew for them, as it reported
    it (``Server-Timing: overrun``: ``/api/fanout``'s calls beyond their drawn latency; NaN
    where it did not), and ``origin_monotonic``: the run's
    time 0 on ``time.monotonic`` (to put what else was measured meanwhile, a scrape of
    ``/metrics`` say, on the run's clock).
    """
    _check_url("url", url)
    if isinstance(instances, str) or not isinstance(instances, Sequence):
        raise ValueError(f"instances must be a list of base URLs, got {instances!r}")
    for i, other in enumerate(instances):
        _check_url(f"instances[{i}]", other)
    if not isinstance(load, Load):
        raise ValueError(f"load must be a Load, got {load!r}")
    if not isinstance(client, ClientPolicy):
        raise ValueError(f"client must be a ClientPolicy, got {client!r}")
    seed = check_int("seed", seed, low=0)
    if not isinstance(idempotency_keys, bool):
        raise ValueError(f"idempotency_keys must be True or False, got {idempotency_keys!r}")
    max_connections = check_int("max_connections", max_connections, low=1, high=100_000)
    processes = check_int("processes", processes, low=0, high=64)
    if not load.open_loop and processes:
        raise ValueError(f"processes must be 0 for a closed-loop load (clients), got "
                         f"{processes}: its clients run in this process")
    if start_at is not None:
        start_at = check_real("start_at", start_at)
    if processes > 1 and (client.breaker is not None or client.budget is not None):
        raise ValueError(
            "processes must be 0 or 1 with a client breaker or budget: each is one shared "
            f"state machine, and {processes} processes would each keep their own")
    if load.open_loop:
        _check_schedule_size(load)
        times, length = load.schedule(seed)
    else:
        assert load.duration is not None and load.clients is not None  # Load checks both
        times, length = np.empty(0), load.duration
    plan_faults(faults)  # checks every fault (the plans per instance follow the URLs)
    retry, hedge = client.retry, client.hedge
    max_attempts = retry.max_attempts if retry is not None else 1
    if drain_timeout is None:
        per_attempt = client.timeout if client.timeout is not None else 30.0
        if hedge is not None:  # each copy may be sent once the one before it failed, at worst
            max_attempts = hedge.max_extra + 1
            waits = hedge.max_extra * hedge.delay
        else:
            waits = (max_attempts - 1) * (retry.backoff.cap if retry is not None else 0.0)
        drain_timeout = per_attempt * max_attempts + waits + 1.0
    drain_timeout = check_real("drain_timeout", drain_timeout, low=0, low_open=True)

    base = url.rstrip("/")
    bases = [base, *(other.rstrip("/") for other in instances)]
    for b in bases:
        _check_path(path, b)
    for i, fault in enumerate(faults):
        if fault.instances is not None and max(fault.instances) >= len(bases):
            raise ValueError(
                f"faults[{i}].instances must name instances of this run, 0 to {len(bases) - 1} "
                f"(0 is url, 1.. the instances), got {fault.instances!r}")
    # each instance plays the faults that name it (all of them, for a fault without instances)
    plans = [plan_faults(faults, instance=k) for k in range(len(bases))]
    job = Job(
        target=base + path, method=method, headers=dict(headers or {}), times=times,
        seed=seed, client=client, max_connections=max_connections, drain_timeout=drain_timeout,
        progress=progress and processes == 0,
        warm_up_url=base + "/health" if warm_up else None,
        idempotency_keys=idempotency_keys, run_id=secrets.token_hex(4),
        instance_targets=tuple(b + path for b in bases[1:]),
        inputs=any(f.bad_input_rate for f in faults),
        clients=0 if load.open_loop else int(load.clients or 0), think_time=load.think_time,
        duration=length, synchronized=load.synchronized, max_requests=MAX_REQUESTS,
    )
    start = None if start_at is None else _until(start_at)
    # per instance: planned time of a fault change -> when it took effect there
    noted: list[dict[float, float]] = [{} for _ in bases]
    at_start = [[change for change in plan if change[0] == 0] for plan in plans]
    later = [[change for change in plan if 0 < change[0] <= length] for plan in plans]
    after = [[change for change in plan if change[0] > length] for plan in plans]
    started: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    injector: asyncio.Future[Any] | None = None
    try:
        for k, b in enumerate(bases):  # in force before the first request leaves
            if at_start[k]:
                await inject_faults(b, at_start[k], None, noted[k])
        if any(later):
            injector = asyncio.ensure_future(asyncio.gather(
                *(inject_faults(b, later[k], started, noted[k])
                  for k, b in enumerate(bases) if later[k])))
        run = await (drive(job, start=start, on_start=started) if processes == 0
                     else drive_in_children(job, processes, on_start=started,
                                            start_at=start_at))
        if injector is not None:
            await injector
        for k, b in enumerate(bases):  # windows still open when the last request has left:
            if after[k]:  # closed now
                await inject_faults(b, after[k], None, noted[k], origin=run.origin_monotonic)
    except BaseException:  # interrupted or failed: leave no fault switched on behind
        # The fault player first: stopped and awaited before anything is switched off, so
        # that a change it was about to apply cannot land after the switch-off (issue 20,
        # item 16). Its own outcome (cancelled, or an error already raised) is not this
        # run's: the exception in flight is.
        if injector is not None:
            injector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await injector
        for k, b in enumerate(bases):
            if plans[k]:
                await switch_off(b, plans[k])
        raise
    # a change's time in the events: when it took effect on the first instance that played it
    applied: dict[float, float] = {}
    for times_here in noted:
        for when, took in times_here.items():
            applied.setdefault(when, took)
    records, events = run.records, run.events + fault_events(faults, applied)
    server_note = "not requested"
    if server_events:
        server_note = await fetch_server_breaker(base, run.origin_monotonic, events)

    lag = np.array([r.sent - r.scheduled for r in records], dtype=float)
    sent_lag = lag[~np.isnan(lag)]
    meta: dict[str, Any] = {
        "url": base, "instances": tuple(bases[1:]), "path": path, "method": method,
        "load": load, "loop": "open" if load.open_loop else "closed", "client": client,
        "faults": tuple(faults), "seed": seed,
        "scheduled": len(times) if load.open_loop else None,
        "drain_timeout": drain_timeout, "max_connections": max_connections, "warm_up": warm_up,
        "generator": f"{processes} child process(es)" if processes else "this process",
        "unfinished": run.unfinished, "server_events": server_note,
        "origin_monotonic": run.origin_monotonic,
        "max_requests_reached": not load.open_loop and len(records) >= MAX_REQUESTS,
        "send_lag": lag,
        "send_lag_p50": float(np.percentile(sent_lag, 50)) if sent_lag.size else math.nan,
        "send_lag_p99": float(np.percentile(sent_lag, 99)) if sent_lag.size else math.nan,
        "send_lag_max": float(sent_lag.max()) if sent_lag.size else math.nan,
    }
    result = to_result(records, events, length, meta)
    for key in ("client_wait", "pool_wait"):
        waited = result.meta[key]
        waited = waited[~np.isnan(waited)]
        for name, q in (("p50", 50), ("p99", 99), ("max", 100)):
            result.meta[f"{key}_{name}"] = (float(np.percentile(waited, q)) if waited.size
                                            else math.nan)
    return result


def expected_requests(load: Load) -> float:
    """How many requests an open-loop ``load``'s schedule holds on average: ``rate`` x
    ``duration`` (each step's rate times its span), or ``requests`` if that is fewer.

    Raises ValueError for a ``load`` that is not an open-loop ``Load``: a closed loop has no
    schedule, its count depends on the service's answers (at most ``MAX_REQUESTS`` are sent,
    see ``run_load_async``)."""
    if not isinstance(load, Load) or not load.open_loop:
        raise ValueError(f"load must be an open-loop Load (a rate), got {load!r}")
    assert load.rate is not None  # open_loop: a rate
    if load.duration is None:
        assert load.requests is not None  # Load checks that one of them is given
        return float(load.requests)
    edges = [0.0, *(t for t, _ in load.steps), load.duration]
    rates = [load.rate, *(r for _, r in load.steps)]
    mean = sum(r * (b - a) for a, b, r in zip(edges[:-1], edges[1:], rates, strict=True))
    return mean if load.requests is None else min(mean, float(load.requests))


def _check_schedule_size(load: Load) -> None:
    """Refuse at once a schedule too large to keep: before it is drawn, not after minutes."""
    expected = expected_requests(load)
    if expected > MAX_REQUESTS:
        raise ValueError(
            f"load must schedule at most {MAX_REQUESTS:,} requests per run (rate x duration, or "
            f"requests), got {expected:,.0f} (rate={load.rate!r}, duration={load.duration!r}"
            f"{'' if load.requests is None else f', requests={load.requests!r}'}): the "
            f"generator needs about {_BYTES_PER_REQUEST:,} bytes per request at its peak; "
            "split it into several runs")


def _check_path(path: object, base: str) -> None:
    """``path`` is an origin-form request target (RFC 9110, section 7.1: one ``/``, a path and
    an optional query) that, appended to ``base``, still names ``base``'s host and port; else a
    ValueError naming ``path``. Appended text such as ``@evil.example/x`` would otherwise turn
    the base's host into user information and send the whole load elsewhere."""
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"path must start with a single '/' (a path on the service, such as "
                         f"'/api/work'), got {path!r}")
    if any(c.isspace() or not c.isprintable() or c in "\\#" for c in path):
        raise ValueError(f"path must hold no spaces, control characters, '\\' or '#', got "
                         f"{path!r}")
    try:
        target, origin = httpx.URL(base + path), httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ValueError(f"path must make a valid URL with {base!r}, got {path!r}: {exc}") \
            from None
    if (target.scheme, target.host, target.port, target.userinfo) != (
            origin.scheme, origin.host, origin.port, origin.userinfo):
        raise ValueError(f"path must stay on the service {base!r}, got {path!r} (it names "
                         f"{target.scheme}://{target.netloc.decode()})")


def _check_url(name: str, url: object) -> None:
    """``url`` is an http(s) URL with a valid port, or a ValueError naming ``name``."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http:// or https:// URL, got {url!r}")
    try:
        port = httpx.URL(url).port
    except httpx.InvalidURL as exc:
        raise ValueError(f"{name} must be a valid URL, got {url!r}: {exc}") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{name}'s port must be in 1..65535, got {port} in {url!r}")


def _until(instant: float) -> Callable[[], Coroutine[Any, Any, float]]:
    """A ``drive`` start: wait until ``instant`` on ``time.monotonic``, then say it is time 0."""

    async def start() -> float:
        delay = instant - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return instant

    return start


def blocking(coroutine_function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The same call for ordinary code and Jupyter cells: same parameters, same types.

    A Jupyter cell's thread already runs an event loop, so the coroutine runs in a short-lived
    thread with an event loop of its own, and the call waits for it. Interrupting the wait
    (Ctrl-C, the kernel's stop button) cancels the run and re-raises ``KeyboardInterrupt``.
    """

    @functools.wraps(coroutine_function)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        outcome: dict[str, Any] = {}
        ready, done = threading.Event(), threading.Event()
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
                done.set()

        thread = threading.Thread(target=target, name="atlas-load", daemon=True)
        thread.start()
        # Wait on an Event in short steps, not with Thread.join: a KeyboardInterrupt that
        # lands inside join() marks a live thread as stopped (CPython's fix for bpo-45274), so
        # the clean-up below would not wait for it; and the stop button must act at once.
        try:
            while not done.wait(0.1):
                pass
        except KeyboardInterrupt:
            ready.wait(1.0)
            loop, task = holder.get("loop"), holder.get("task")
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the run may have just ended
                    loop.call_soon_threadsafe(task.cancel)
            done.wait(10.0)  # the run switches its faults off as it unwinds
            raise
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    return call


run_load = blocking(run_load_async)
run_load.__name__ = run_load.__qualname__ = "run_load"
run_load.__doc__ = (
    "``run_load_async`` for ordinary code and Jupyter cells (same arguments, same result).\n\n"
    "The load runs in a short-lived thread with an event loop of its own (a cell's thread\n"
    "already runs one); interrupting the wait (Ctrl-C, the kernel's stop button) cancels the\n"
    "run and re-raises ``KeyboardInterrupt``.\n\n" + (run_load_async.__doc__ or ""))
