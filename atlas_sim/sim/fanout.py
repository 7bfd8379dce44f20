"""Fan-out: one request calls ``width`` backends in parallel and waits for all of them.

DDIA's "tail latency amplification": even if only 1% of backend calls are slow, a request that
needs 100 of them is slow whenever *any* one is, with probability ``1 - (1 - p)**n`` (63% for
p = 1%, n = 100; Dean and Barroso, "The Tail at Scale", CACM 2013). The request's latency is the
maximum of its calls' latencies.

There is no queueing here (every backend has room), so the model is plain numpy, not SimPy: it
draws every call at once. It returns a ``RunResult`` with one request per user request and one
attempt row per call on the wire.

With a client policy (``client=ClientPolicy(...)``), each backend call is a logical call driven
through the client's ``GuardedCall``, the same decisions the simulated and live clients take
(``policies.call``): hedged requests (``HedgePolicy``: a second copy after a delay, the first
answer wins, the loser is cancelled), a per-attempt timeout (599), retries with backoff, a retry
budget. This module supplies only the send (a latency drawn for each copy) and the wait (the
call's own clock). Calls are independent, so each is driven on its own clock from its send,
one call after another in the order they were sent; a budget shared by the client's calls
therefore sees their outcomes in send order rather than in answer order. That is exact when the
budget never falls to half (no failures, as with slow backends and no timeout); a breaker,
whose state depends on the time, is refused here (use the event engine, ``sim.engine``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..policies import Cancel, ClientPolicy, Done, GuardedCall, Send, Status, Wait
from ..results import RunResult
from ..validation import check_int, check_real
from ..workload import Distribution, rng_streams

__all__ = ["CANCELLED", "FAST_BACKEND", "fanout", "fanout_latency", "slow_request_probability"]

#: A healthy backend call: 10 ms on average, exponential.
FAST_BACKEND = Distribution(mean=0.01, kind="exponential")

#: The status of a copy cancelled because another copy won: nginx's 499 ("client closed
#: request"), which the live service also counts when a client leaves before its answer.
CANCELLED = int(Status.CANCELLED)

_OK = int(Status.OK)
_CLIENT_TIMEOUT = int(Status.CLIENT_TIMEOUT)
_INF = math.inf


def slow_request_probability(width: int, slow_rate: float) -> float:
    """Chance that at least one of ``width`` calls is slow: ``1 - (1 - slow_rate)**width``."""
    check_int("width", width, low=1)
    check_real("slow_rate", slow_rate, low=0, high=1)
    return 1.0 - (1.0 - slow_rate) ** width


def fanout(
    width: int = 10,
    slow_rate: float = 0.01,
    *,
    requests: int = 2000,
    rate: float = 100.0,
    fast: Distribution = FAST_BACKEND,
    slow_latency: float = 1.0,
    client: ClientPolicy | None = None,
    seed: int = 0,
) -> RunResult:
    """Simulate ``requests`` user requests, each fanning out to ``width`` calls.

    Each call is slow with probability ``slow_rate`` (it then takes ``max(x, slow_latency)``
    seconds for its draw ``x``), else it takes ``x``, drawn from ``fast``. Requests are sent
    every ``1 / rate`` seconds, only to give the run a time axis.

    Args:
        client: how each backend call is made (see the module docstring); None: one attempt
            per call, no timeout (the first copies' draws are the same either way, so a policy
            changes only what it decides). Not with a ``breaker``.

    Returns a ``RunResult``: ``requests`` (latency: the slowest call's; status: the worst
    call's, 200 if all succeeded; attempts: copies sent for the request) and ``attempts`` (one
    row per copy on the wire; a copy cancelled because another won has status 499), and in
    ``meta`` the counts ``calls``, ``copies``, ``hedges`` (copies sent beyond the first of each
    call) and ``cancelled``, and ``call_latency`` (each call's latency, requests x width).

    Raises:
        ValueError: a parameter out of range (named), or a client policy with a breaker.
    """
    check_real("rate", rate, low=0, low_open=True)
    if client is not None and not isinstance(client, ClientPolicy):
        raise ValueError(f"client must be a ClientPolicy or None, got {client!r}")
    if client is not None and client.breaker is not None:
        raise ValueError("client.breaker must be None here: the fan-out model drives each call "
                         "on its own clock (use the event engine for a breaker)")
    streams, latency, slow = _draw_calls(width, slow_rate, requests, fast, slow_latency, seed)
    t_start = np.arange(requests) / rate
    meta = {"model": "fanout", "width": width, "slow_rate": slow_rate, "seed": seed,
            "slow_calls": int(slow.sum()), "slow_requests": int(slow.any(axis=1).sum())}
    if client is None:
        return _plain(latency, t_start, requests / rate, meta)
    # Copies after the first (hedges, retries) draw from streams of their own, in the order
    # they are sent: the first copies' draws never shift.
    draw_fast = fast.sampler(streams["dependency"].spawn(1)[0])
    coins = streams["server"].spawn(1)[0]
    coin_buffer: list[float] = []

    def draw() -> float:
        if not coin_buffer:
            coin_buffer.extend(reversed(coins.random(4096).tolist()))
        x = draw_fast()
        return max(x, slow_latency) if coin_buffer.pop() < slow_rate else x

    return _guarded(latency, t_start, requests / rate, meta, client, draw, seed)


def fanout_latency(width: int = 10, slow_rate: float = 0.01, *, requests: int = 2000,
                   fast: Distribution = FAST_BACKEND, slow_latency: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """Each user request's latency, shape ``(requests,)`` in seconds: the very numbers of
    ``fanout(...).requests["latency"]`` without a client policy (the same draws), without
    building the run's tables. A width-100 run of 4,000 requests has 400,000 attempt rows,
    about 50 MiB while its table is built; this needs the calls' latencies only (3 MiB).
    Raises ValueError as ``fanout`` does."""
    _, latency, _ = _draw_calls(width, slow_rate, requests, fast, slow_latency, seed)
    return latency.max(axis=1)


def _draw_calls(width: int, slow_rate: float, requests: int, fast: Distribution,
                slow_latency: float, seed: int,
                ) -> tuple[dict[str, np.random.Generator], np.ndarray, np.ndarray]:
    """The run's streams, each call's latency and whether it was slow, ``(requests, width)``:
    the first copies' draws, the same with or without a client policy."""
    check_int("width", width, low=1, high=1000)
    check_real("slow_rate", slow_rate, low=0, high=1)
    check_int("requests", requests, low=1, high=1_000_000)
    check_real("slow_latency", slow_latency, low=0)
    if not isinstance(fast, Distribution):
        raise ValueError(f"fast must be a Distribution, got {fast!r}")
    streams = rng_streams(seed)
    shape = (requests, width)
    latency = fast.sample(streams["dependency"], requests * width).reshape(shape)
    slow = streams["server"].random(shape) < slow_rate
    return streams, np.where(slow, np.maximum(latency, slow_latency), latency), slow


def _plain(latency: np.ndarray, t_start: np.ndarray, duration: float,
           meta: dict[str, object]) -> RunResult:
    requests, width = latency.shape
    total = latency.max(axis=1)
    calls = requests * width
    return RunResult.from_columns(
        requests={"request_id": np.arange(requests), "t_start": t_start,
                  "t_end": t_start + total, "latency": total,
                  "status": np.full(requests, 200), "attempts": np.full(requests, width),
                  "ok": np.ones(requests, dtype=bool)},
        attempts={"request_id": np.repeat(np.arange(requests), width),
                  "attempt": np.tile(np.arange(1, width + 1), requests),
                  "t_start": np.repeat(t_start, width),
                  "t_end": (t_start[:, None] + latency).ravel(),
                  "latency": latency.ravel(), "status": np.full(calls, 200),
                  "queue_wait": np.full(calls, np.nan),
                  "instance": np.tile(np.arange(width), requests)},  # the backend called
        duration=duration,
        source="sim",
        meta={**meta, "calls": calls, "copies": calls, "hedges": 0, "cancelled": 0,
              "call_latency": latency},
    )


def _guarded(latency: np.ndarray, t_start: np.ndarray, duration: float,
             meta: dict[str, object], client: ClientPolicy, draw: Callable[[], float],
             seed: int) -> RunResult:
    requests, width = latency.shape
    calls = requests * width
    guard = client.guard(clock=lambda: 0.0, rng=rng_streams(seed)["client"])
    timeout = client.timeout if client.timeout is not None else _INF
    hedged = client.hedge is not None
    call_end = np.empty(calls)
    call_status = np.empty(calls, dtype=np.int64)
    call_copies = np.empty(calls, dtype=np.int64)
    # one row per copy, in send order: send and end (seconds after the request's start), status
    rows_send: list[float] = []
    rows_end: list[float] = []
    rows_status: list[int] = []
    for i, x in enumerate(latency.ravel().tolist()):
        call = guard.call()
        end, copies = _drive(call, x, draw, timeout, rows_send, rows_end, rows_status)
        call_end[i] = end
        call_status[i] = call.status
        call_copies[i] = copies
    ends = call_end.reshape(requests, width)
    statuses = call_status.reshape(requests, width)
    total = ends.max(axis=1)
    ok_calls = (statuses >= 200) & (statuses < 300)
    ok = np.asarray(ok_calls.all(axis=1), dtype=bool)
    worst = np.where(ok_calls, 0, statuses).max(axis=1)
    request_ids = np.repeat(np.arange(calls) // width, call_copies)
    sends = np.asarray(rows_send)
    end_times = np.asarray(rows_end)
    row_status = np.asarray(rows_status, dtype=np.int64)
    copies_per_request = call_copies.reshape(requests, width).sum(axis=1)
    return RunResult.from_columns(
        requests={"request_id": np.arange(requests), "t_start": t_start,
                  "t_end": t_start + total, "latency": total,
                  "status": np.where(ok, _OK, worst), "attempts": copies_per_request,
                  "ok": ok},
        attempts={"request_id": request_ids,
                  "attempt": _numbering(request_ids),
                  "t_start": t_start[request_ids] + sends,
                  "t_end": t_start[request_ids] + end_times,
                  "latency": end_times - sends, "status": row_status,
                  "queue_wait": np.full(len(request_ids), np.nan),
                  "instance": np.repeat(np.arange(calls) % width, call_copies)},  # backend
        duration=duration,
        source="sim",
        meta={**meta, "calls": calls, "copies": len(request_ids),
              "hedges": int((call_copies - 1).clip(min=0).sum()) if hedged else 0,
              "cancelled": int((row_status == CANCELLED).sum()), "call_latency": ends},
    )


def _numbering(request_ids: np.ndarray) -> np.ndarray:
    """1, 2, ... within each request (rows are grouped by request, in send order)."""
    n = len(request_ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, request_ids[1:] != request_ids[:-1]])
    counts = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, counts) + 1


def _drive(call: GuardedCall, first: float, draw: Callable[[], float], timeout: float,
           rows_send: list[float], rows_end: list[float],
           rows_status: list[int]) -> tuple[float, int]:
    """Drive one backend call through ``call``'s actions on its own clock (0 at its send): the
    next event is the first of a copy's answer and the call's timer (a tie goes to the answer:
    a copy is sent only when the call is slower than the delay, P(X > d), as in
    ``analysis.tail``). Appends one row per copy sent (the first copy's latency is ``first``,
    later ones come from ``draw``); returns when the call ended and the copies sent."""
    row0 = len(rows_send)
    out: list[tuple[float, int, int]] = []  # copies out: (when it answers, copy, status)
    now, timer, wait = 0.0, _INF, None
    actions = call.start()
    if (type(actions[0]) is Send and first <= timeout
            and (len(actions) == 1 or first <= actions[1].seconds)):  # type: ignore[union-attr]
        # The usual case: copy 1 answers 200 before any timer, which ends the call (a 2xx
        # always does). The loop's first turn, unrolled: most calls end here, and going round
        # the loop would make the fan-out model a third slower.
        rows_send.append(0.0)
        rows_end.append(first)
        rows_status.append(_OK)
        actions = call.on_answer(1, _OK)
        assert type(actions[-1]) is Done, actions
        return first, 1
    while True:
        for action in actions:
            kind = type(action)
            if kind is Send:
                copy = action.copy  # type: ignore[union-attr]
                x = first if copy == 1 else draw()
                t, status = (now + x, _OK) if x <= timeout else (now + timeout, _CLIENT_TIMEOUT)
                out.append((t, copy, status))
                rows_send.append(now)
                rows_end.append(t)
                rows_status.append(status)
            elif kind is Wait:
                wait = action
                timer = now + action.seconds  # type: ignore[union-attr]
            elif kind is Cancel:  # the losers: cut off now
                for copy in action.copies:  # type: ignore[union-attr]
                    rows_end[row0 + copy - 1] = now
                    rows_status[row0 + copy - 1] = CANCELLED
            else:  # Done
                return now, len(rows_send) - row0
        if out:
            answer = min(out)  # the earliest (the lowest copy of a tie)
            if answer[0] <= timer:
                out.remove(answer)
                now, copy, status = answer
                actions = call.on_answer(copy, status)
                continue
        if timer == _INF:
            raise RuntimeError(f"{call!r} waits for nothing")  # a driver bug, never data
        now, timer = timer, _INF
        actions = call.on_timer(wait)  # type: ignore[arg-type]
