"""One generator's loop: send each request of its share at its time, through the client's
guarded call (``policies.GuardedCall``: breaker, retries, budget and backoff decided there, as
in the simulator), and keep what every attempt saw.

Open loop (a schedule of send times): each request leaves at its time whatever became of the
others, and its latency counts from that time. Closed loop (``Job.clients``): each client sends,
waits for the outcome, thinks (exponential, mean ``think_time``, from the ``"think"`` stream, as
the simulator's clients), and sends again while the run lasts; its latency counts from the
actual send, as a closed-loop tester (``wrk``) measures it.

A hedged client (``ClientPolicy(hedge=...)``) has several copies of a request in flight: its
requests take a path of their own, a loop over the guarded call's actions (``Send``, ``Wait``,
``Cancel``, ``Done``: ``policies.call``) with each copy a task and the call's one timer the
``asyncio.wait`` timeout, as ``service.resilience``'s hedged dependency call; a copy that lost
is cancelled (its connection closed: the service counts it 499, though it finishes the work it
started, as uvicorn does not cancel a request whose client left) and recorded with status 499
(``Status.CANCELLED``, as the fan-out model's). Unhedged clients keep the one-attempt loop,
and its cost per request."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from ...policies import BreakerTransition, ClientPolicy, Status
from ...progress import Progress, ending_for
from ...workload import RequestInputs, rng_streams
from .._timeouts import run_with_timeout
from ..actions import drive_actions
from .pool import ClientPool
from .timeline import EventRow

__all__ = ["Copy", "Job", "LoadGenerator", "Request", "Run", "drive", "parse_retry_after",
           "parse_server_timing"]

# Connections each generator opens before time 0, and how long it waits for them (seconds).
WARM_UP_CONNECTIONS = 8
_WARM_UP_TIMEOUT = 5.0
# Each request's task is made this long (seconds) before its time and sleeps until then, so
# that at its time it starts at once: made at its time, it started one turn of the event loop
# later, after whatever response handling had queued up meanwhile (measured at 500 requests/s,
# two processes: median p99 send lag 4.2 ms against 5.2, four runs each).
_LEAD = 0.03
# httpcore's trace event as the first byte of a request is about to be written: the moment the
# request leaves the client (after any wait for its task to start, for a connection of the pool,
# and for connecting).
_LEAVES = "http11.send_request_headers.started"
# The request whose attempt is in flight in this task, for the trace hook to note when it left
# (``Request.left_at``); a context variable, since the hook is on a request object that every
# attempt of a client shares.
# One attempt's (or copy's) row, as ``Request.rows`` keeps it.
AttemptRow = tuple[int, float, float, int, float, float, float, float, float, int]
_IN_FLIGHT: contextvars.ContextVar[Request | Copy] = contextvars.ContextVar("atlas_in_flight")


def parse_retry_after(header: str | None) -> float | None:
    """Seconds in a ``Retry-After`` header given as delay-seconds (RFC 9110, section 10.2.3), or
    None if it is missing or an HTTP date (Atlas's service always sends seconds)."""
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def parse_server_timing(header: str | None, metric: str = "queue") -> float:
    """Seconds of ``metric`` in a ``Server-Timing`` header (``queue;dur=1.5, ...``), or NaN."""
    if not header:
        return math.nan
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        if name.strip() != metric:
            continue
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                try:
                    return float(value.strip('"')) / 1e3
                except ValueError:
                    return math.nan
    return math.nan


@dataclass
class Request:
    """The client's record of one logical request while the run goes on."""

    scheduled: float
    sent: float = math.nan  # when its first attempt started, on the run's clock
    end: float = math.nan
    status: int = 0
    attempts: int = 0
    in_flight_since: float | None = None  # start of the attempt on the wire, if any
    instance: int = 0  # the instance the attempt in flight (or the last one) was sent to
    left_at: float = math.nan  # when the attempt in flight left the client (first byte written)
    asked_at: float = math.nan  # when the attempt in flight asked the pool for a connection
    admitted_at: float = math.nan  # and when it got one
    # attempt, start, end, status, queue wait and work as the server reported them, the client
    # wait (from the attempt's start, its scheduled time for the first, until it left the
    # client, its first byte written, or until it ended if it never left) and the part of it
    # spent waiting for a free connection of the pool (until it ended, if it never got one;
    # NaN if it never asked), and the overrun the server reported (Server-Timing: overrun)
    rows: list[tuple[int, float, float, int, float, float, float, float, float, int]] = field(
        default_factory=list)


@dataclass(slots=True)
class Copy:
    """One copy of a hedged request while it is in flight: which copy (1 for the first), when
    it started on the run's clock (the request's scheduled time for the first), the instance it
    went to, and the client-side instants ``Request`` keeps for an attempt (``left_at``,
    ``asked_at``, ``admitted_at``)."""

    copy: int
    start: float
    instance: int
    left_at: float = math.nan
    asked_at: float = math.nan
    admitted_at: float = math.nan


@dataclass
class Run:
    records: list[Request]
    events: list[EventRow]
    unfinished: int  # requests still open at the drain deadline (recorded as 599)
    origin_monotonic: float  # the run's time 0 on time.monotonic


@dataclass(frozen=True)
class Job:
    """Everything a generator (here or in a child process) needs to run its share."""

    target: str
    method: str
    headers: dict[str, str]
    times: np.ndarray
    seed: int
    client: ClientPolicy
    max_connections: int
    drain_timeout: float
    progress: bool
    warm_up_url: str | None  # None: no warm-up
    idempotency_keys: bool = False  # send an Idempotency-Key per logical request
    run_id: str = ""  # makes the keys of two runs differ
    # The same path on the service's other instances: the client policy's router
    # (``ClientPolicy.routing``; ``NextInstance()``: attempt k of request i goes to
    # (target, *instance_targets)[(i + k - 1) % n], so each retry goes to the next instance).
    instance_targets: tuple[str, ...] = ()
    # Send what each request carries (workload.request_inputs, by its index in the run) in
    # the X-Atlas-Input header on every attempt; False: no such header.
    inputs: bool = False
    # Closed loop: ``clients`` > 0 clients instead of ``times`` (which is then empty), each
    # thinking ``think_time`` seconds on average between requests, sending new ones until
    # ``duration``; ``synchronized``: all send their first request at time 0.
    clients: int = 0
    think_time: float = 0.0
    duration: float = 0.0
    synchronized: bool = False
    # Closed loop: the clients start no request once this many have been sent (the bound on
    # what a closed loop keeps in memory, whatever its clients, thinks and service).
    max_requests: int = 100_000


async def drive(job: Job, *, part: int = 0, parts: int = 1,
                start: Callable[[], Awaitable[float]] | None = None,
                on_start: asyncio.Future[float] | None = None) -> Run:
    """Send requests ``part, part + parts, ...`` of ``job``'s schedule, or run its closed-loop
    clients (``job.clients``; one part only).

    First the client warms up (``job.warm_up_url``); then time 0 is the instant on
    ``time.monotonic`` that ``start()`` returns (default: now), so that parts in several
    processes (or generators in one) align, and it is told to ``on_start``.
    """
    return await LoadGenerator(job, part=part, parts=parts).run(start=start, on_start=on_start)


class LoadGenerator:
    """One generator's share of a job: part ``part`` of ``parts`` of its schedule (or its
    closed-loop clients), the client's guard they all go through, and what every attempt saw.

    Made in the event loop that runs it, and run once (``run``). Each method is one step:
    ``run`` (warm up, time 0, start the requests, drain), ``_open_loop`` and ``_client`` (start
    requests on a schedule, or as a closed-loop client), ``request`` (one request: its attempts
    through the guarded call), ``_attempt`` (one attempt, sent and recorded), ``_exchange`` (its
    HTTP exchange, read), ``_send``.
    """

    def __init__(self, job: Job, *, part: int = 0, parts: int = 1) -> None:
        self.job, self.part, self.parts = job, part, parts
        self.loop = asyncio.get_running_loop()
        self.targets = (job.target, *job.instance_targets)
        # Attempts in flight per instance (by index in ``targets``): the client's view of its
        # outstanding requests, for a routing rule to read.
        self.outstanding = [0] * len(self.targets)
        # What each request carries, by its index in the run (a closed loop: in the order sent).
        self.inputs = RequestInputs(job.seed) if job.inputs else None
        streams = rng_streams(job.seed)
        jitter, routing = streams["client"], streams["routing"]
        if parts > 1:
            jitter = jitter.spawn(parts)[part]
            routing = routing.spawn(parts)[part]
        self.closed = job.clients > 0
        if self.closed and parts != 1:
            raise ValueError("a closed-loop job runs in one part")
        self.records = [Request(scheduled=float(t)) for t in job.times[part::parts]]
        self.events: list[EventRow] = []
        self.t0 = 0.0  # on the loop's clock; set just before the first send
        self.guard = job.client.guard(clock=self.clock, rng=jitter,
                                      on_transition=self._on_transition, routing_rng=routing)
        self.bar = Progress(None if self.closed else len(self.records), desc="requests",
                            unit="req", enabled=job.progress)
        self.think_rng = streams["think"]
        # Every attempt asks for the same thing, so each client builds its request once and
        # sends that object again (a GET has an empty, re-readable body): no URL parsing and
        # header merging per attempt. Measured at 500 requests/s: median p99 send lag 3.5 ms
        # against 6.4.
        self._prepared: dict[tuple[httpx.AsyncClient, str], httpx.Request] = {}
        self._traced = {"trace": self._trace}
        self.hedged = job.client.hedge is not None
        self._stopping: set[asyncio.Task[tuple[int, float | None]]] = set()  # losers unwinding

    def clock(self) -> float:
        """Seconds on the run's clock (0 at the first send)."""
        return self.loop.time() - self.t0

    def _on_transition(self, change: BreakerTransition) -> None:
        self.events.append((change.time, "breaker", "client", change.new.value, change.reason))

    async def run(self, *, start: Callable[[], Awaitable[float]] | None = None,
                  on_start: asyncio.Future[float] | None = None) -> Run:
        """Warm up, set time 0 (``start()``, default now; told to ``on_start``), send every
        request, wait for them until the drain deadline and give up on the rest (``drive``)."""
        job, loop = self.job, self.loop
        tasks: list[asyncio.Task[None]] = []
        unfinished = 0
        t0_monotonic = math.nan
        pool = ClientPool(job.max_connections,
                          plain_tcp=all(t.startswith("http://") for t in self.targets))
        try:
            if job.warm_up_url is not None:
                await pool.warm_up(job.warm_up_url, WARM_UP_CONNECTIONS,
                                   timeout=min(_WARM_UP_TIMEOUT, job.client.timeout or math.inf))
            t0_monotonic = await self._time_zero(start)
            if on_start is not None:
                on_start.set_result(t0_monotonic)
            if self.closed:
                tasks = [loop.create_task(self._client(pool)) for _ in range(job.clients)]
                drain_at = self.t0 + job.duration + job.drain_timeout
            else:
                await self._open_loop(pool, tasks)
                drain_at = loop.time() + job.drain_timeout
            if tasks:
                unfinished = await self._drain(tasks, drain_at)
        except BaseException as exc:
            self.bar.close(ending_for(exc))  # "interrupted" when cancelled, not "done"
            raise
        finally:
            for task in tasks:
                task.cancel()
            # the cancelled tasks awaited, so that none is left for the loop's shutdown
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*self._stopping, return_exceptions=True)  # hedges' losers
            await pool.aclose()
        self.bar.close("done")
        return Run(self.records, self.events, unfinished, t0_monotonic)

    async def _time_zero(self, start: Callable[[], Awaitable[float]] | None) -> float:
        """Set time 0 (``self.t0``, on the loop's clock) to the instant ``start()`` returns on
        ``time.monotonic`` (default: now); return that instant."""
        start_at = await start() if start is not None else None
        loop = self.loop
        self.t0 = loop.time()
        if start_at is None:
            return time.monotonic() + (self.t0 - loop.time())
        self.t0 += start_at - time.monotonic()  # the loop's clock may not be time.monotonic
        return start_at

    async def _open_loop(self, pool: ClientPool, tasks: list[asyncio.Task[None]]) -> None:
        """Start each request's task (into ``tasks``) ``_LEAD`` seconds before its time."""
        loop, t0, part, parts = self.loop, self.t0, self.part, self.parts
        for i, rec in enumerate(self.records):
            due = t0 + rec.scheduled
            wait = due - _LEAD - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(loop.create_task(self.request(pool, rec, due, part + i * parts)))

    async def _client(self, pool: ClientPool) -> None:
        """One closed-loop client: think, send, wait for the outcome, again until the end."""
        job, records, think_rng = self.job, self.records, self.think_rng
        think_time = job.think_time
        if not job.synchronized and think_time > 0:
            await asyncio.sleep(float(think_rng.exponential(think_time)))
        while self.clock() < job.duration and len(records) < job.max_requests:
            rec = Request(scheduled=self.clock())  # counted from the actual send
            records.append(rec)
            await self.request(pool, rec, self.loop.time(), len(records) - 1)  # in order sent
            if think_time > 0:
                await asyncio.sleep(float(think_rng.exponential(think_time)))

    async def _drain(self, tasks: list[asyncio.Task[None]], drain_at: float) -> int:
        """Wait for ``tasks`` until ``drain_at`` (on the loop's clock), then cancel the rest and
        give up on the requests still open; return how many."""
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, drain_at - self.loop.time()))
        if not pending:
            return 0
        gave_up = self.clock()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        unfinished = 0
        for rec in self.records:
            if math.isnan(rec.end):
                unfinished += 1
                _give_up(rec, gave_up)
        return unfinished

    async def request(self, pool: ClientPool, rec: Request, due: float, index: int) -> None:
        """Request ``index`` of the run, at ``due`` on the loop's clock: its attempts, as the
        guarded call decides them (each retry after the delay it gives), until it is done.
        Every action of the call (attempt, wait, done) is taken in this loop; a hedged client's
        requests go through ``_hedged_request`` instead."""
        if self.hedged:
            return await self._hedged_request(pool, rec, due, index)
        extra = self._own_headers(index)
        wait = due - self.loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        rec.sent = self.clock()
        guarded = self.guard.call(request=index)
        _IN_FLIGHT.set(rec)  # this task's (or this closed-loop client's) request
        outstanding = self.outstanding
        while guarded.before_attempt():
            rec.attempts = attempt = guarded.attempts
            instance = guarded.route(outstanding)  # the client policy's router decides
            status, retry_after = await self._attempt(pool, rec, attempt, instance, extra)
            delay = guarded.after_attempt(status, retry_after=retry_after)
            if delay is None:
                break
            await asyncio.sleep(delay)
        rec.status = guarded.status
        rec.end = self.clock()
        self.bar.update()

    async def _hedged_request(self, pool: ClientPool, rec: Request, due: float,
                              index: int) -> None:
        """``request`` for a hedged client: the guarded call's action loop
        (``actions.drive_actions``), each copy a task (``_copy``) sent to
        ``route(outstanding)``'s instance, the call's one timer the ``asyncio.wait`` timeout. The
        losers (``Cancel``) are cancelled, which closes their connections, and recorded 499
        (``Status.CANCELLED``), ending when they were cancelled; every copy's row is kept in
        copy order. Cancelled from outside (the drain deadline, an interrupted run), the copies
        still out are cancelled and recorded 599, as ``_give_up`` records an attempt."""
        extra = self._own_headers(index)
        loop = self.loop
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        rec.sent = self.clock()
        guarded = self.guard.call(request=index)
        outstanding = self.outstanding
        copies: dict[asyncio.Task[tuple[int, float | None]], int] = {}
        sent: dict[int, Copy] = {}
        rows: dict[int, AttemptRow] = {}

        def send(copy: int) -> Coroutine[Any, Any, tuple[int, float | None]]:
            rec.attempts = copy
            instance = guarded.route(outstanding)  # the client policy's router decides
            outstanding[instance] += 1
            one = sent[copy] = Copy(copy, rec.scheduled if copy == 1 else self.clock(), instance)
            return self._copy(pool, one, extra, rows)

        def answer(copy: int, result: tuple[int, float | None]) -> tuple[int, float | None]:
            outstanding[sent[copy].instance] -= 1
            return result

        try:
            await drive_actions(guarded, send, answer, copies)
        except asyncio.CancelledError:  # cut off from outside: every copy out is a timeout
            self._stop_copies(copies, sent, rows, Status.CLIENT_TIMEOUT)
            raise
        finally:
            if copies:  # the losers (a copy that answered as the call ended lost too)
                self._stop_copies(copies, sent, rows, Status.CANCELLED)
            rec.rows.extend(rows[k] for k in sorted(rows))
        rec.status = guarded.status
        rec.end = self.clock()
        self.bar.update()

    def _stop_copies(self, copies: dict[asyncio.Task[tuple[int, float | None]], int],
                     sent: dict[int, Copy], rows: dict[int, AttemptRow], status: int) -> None:
        """Cancel every copy in ``copies`` (httpcore closes a connection cut off mid-exchange)
        and record each with ``status``, ending now; empties ``copies``."""
        end = self.clock()
        outstanding = self.outstanding
        for task, copy in copies.items():
            one = sent[copy]
            task.cancel()
            self._stopping.add(task)  # awaited before the pool closes (run)
            task.add_done_callback(self._stopping.discard)
            outstanding[one.instance] -= 1
            rows[copy] = (copy, one.start, end, int(status), math.nan, math.nan,
                          *_client_waits(one, one.start, end), math.nan, one.instance)
        copies.clear()

    async def _copy(self, pool: ClientPool, one: Copy, extra: dict[str, str] | None,
                    rows: dict[int, AttemptRow]) -> tuple[int, float | None]:
        """Send copy ``one`` of a hedged request to its instance and record what it saw (into
        ``rows``, by copy); return its status and Retry-After (``_attempt``'s, for a copy)."""
        _IN_FLIGHT.set(one)  # this task's own copy, for _send and the trace hook
        status, queue_wait, work, overrun, retry_after = await self._exchange(
            pool, self.targets[one.instance], extra)
        end = self.clock()
        rows[one.copy] = (one.copy, one.start, end, status, queue_wait, work,
                          *_client_waits(one, one.start, end), overrun, one.instance)
        return status, retry_after

    def _own_headers(self, index: int) -> dict[str, str] | None:
        """The headers of request ``index`` alone, the same on every attempt (None: none)."""
        job, extra = self.job, None
        if job.idempotency_keys:
            extra = {"Idempotency-Key": f'"atlas-{job.seed}-{job.run_id}-{index}"'}
        if self.inputs is not None:
            extra = {**(extra or {}), "X-Atlas-Input": repr(self.inputs[index])}
        return extra

    async def _attempt(self, pool: ClientPool, rec: Request, attempt: int, instance: int,
                       extra: dict[str, str] | None) -> tuple[int, float | None]:
        """Send attempt ``attempt`` of ``rec`` to instance ``instance`` and record what it saw
        (``rec.rows``); return its status and Retry-After."""
        start = rec.scheduled if attempt == 1 else self.clock()
        rec.in_flight_since = start
        rec.instance = instance
        rec.left_at = rec.asked_at = rec.admitted_at = math.nan
        outstanding = self.outstanding
        outstanding[instance] += 1
        try:
            status, queue_wait, work, overrun, retry_after = await self._exchange(
                pool, self.targets[instance], extra)
        finally:
            outstanding[instance] -= 1
        rec.in_flight_since = None
        end = self.clock()
        rec.rows.append((attempt, start, end, status, queue_wait, work,
                         *_client_waits(rec, start, end), overrun, instance))
        return status, retry_after

    async def _exchange(self, pool: ClientPool, target: str, extra: dict[str, str] | None
                        ) -> tuple[int, float, float, float, float | None]:
        """One HTTP exchange within the client's timeout: its status, the server's queue wait,
        work and overrun, and Retry-After."""
        timeout = self.job.client.timeout
        try:
            if timeout is None:
                response = await self._send(pool, target, extra)
            else:
                response = await run_with_timeout(self._send(pool, target, extra), timeout)
        except (TimeoutError, httpx.TimeoutException):
            return Status.CLIENT_TIMEOUT, math.nan, math.nan, math.nan, None
        except httpx.RequestError:
            return Status.CONNECTION_ERROR, math.nan, math.nan, math.nan, None
        headers = response.headers
        status = response.status_code
        timing = headers.get("server-timing")
        retry_after = (parse_retry_after(headers.get("retry-after"))
                       if status == 429 or status == 503 else None)
        return (status, parse_server_timing(timing, "queue"), parse_server_timing(timing, "work"),
                parse_server_timing(timing, "overrun"), retry_after)

    async def _send(self, pool: ClientPool, target: str,
                    extra: dict[str, str] | None) -> httpx.Response:
        """Send the request to ``target`` on a client of ``pool``, once it has a connection."""
        client, gate = pool.pick()
        job = self.job
        if extra is not None:  # this logical request's own headers, the same on every attempt
            request = client.build_request(job.method, target, headers={**job.headers, **extra},
                                           extensions=self._traced)
        else:
            cached = self._prepared.get((client, target))  # one lookup on the hot path
            if cached is None:
                cached = self._prepared[client, target] = client.build_request(
                    job.method, target, headers=job.headers, extensions=self._traced)
            request = cached
        rec = _IN_FLIGHT.get(None)
        if rec is not None:
            rec.asked_at = self.clock()
        async with gate:
            if rec is not None:
                rec.admitted_at = self.clock()
            return await client.send(request)

    async def _trace(self, event: str, info: object) -> None:
        """httpcore's trace hook: note when the attempt's request headers start to go out."""
        if event == _LEAVES:
            rec = _IN_FLIGHT.get(None)
            if rec is not None:
                rec.left_at = self.clock()


def _give_up(rec: Request, when: float) -> None:
    """The client stops waiting for ``rec`` at ``when``: 599, like an attempt that timed out."""
    if rec.in_flight_since is not None:
        rec.rows.append((rec.attempts, rec.in_flight_since, when, Status.CLIENT_TIMEOUT, math.nan,
                         math.nan, *_client_waits(rec, rec.in_flight_since, when), math.nan,
                         rec.instance))
        rec.in_flight_since = None
    if math.isnan(rec.sent):
        rec.sent = when
    rec.status = Status.CLIENT_TIMEOUT
    rec.end = when


def _client_waits(rec: Request | Copy, start: float, end: float) -> tuple[float, float]:
    """Seconds the attempt that started at ``start`` waited before it left the client (until
    its first byte was written, or, if it never left, until it ended at ``end``), and the part
    of it spent waiting for a connection of the pool (until it got one or ended; NaN if it
    never asked for one)."""
    left, admitted = rec.left_at, rec.admitted_at
    pool = (end if math.isnan(admitted) else admitted) - rec.asked_at
    return (end if math.isnan(left) else left) - start, pool
