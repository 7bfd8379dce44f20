"""Calling the dependency the careful way: timeout, retry with backoff, budget, circuit breaker.

The same ``RetryPolicy``, ``RetryBudget`` and ``CircuitBreaker`` objects as in the simulation,
on the real clock (``time.monotonic``), waiting with ``asyncio.sleep``, driven by the same
decision object (``policies.GuardedCall``): this module supplies only the attempt (a call
bounded by ``DATABASE_TIMEOUT``: ok, an error answered as 503, or a timeout recorded as 599) and
the wait. Which outcome the breaker counts, which costs a budget token and when to retry are
decided there, once for both worlds. A call cut off because the whole request timed out
(``HTTP_TIMEOUT``) is recorded as abandoned (a failure) before the cancellation goes on:
otherwise a half-open probe's slot would never be freed.

With a hedging policy (``ClientPolicy(hedge=...)``, used by ``/api/fanout``) the copies of a
call run as concurrent tasks: the first at once, the next when the guarded call's hedge delay
passes without an answer (or at once after a non-fatal failure), and when the call is decided
the copies still out are cancelled (their ``asyncio.sleep`` ends there: a loser costs no more
time) and recorded as ``"cancelled"``, counted nowhere else.

All of this runs on the service's own event loop: the policies are not thread-safe.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..policies import (
    BreakerTransition,
    CircuitBreaker,
    ClientPolicy,
    RetryBudget,
    Status,
)
from ._timeouts import run_with_timeout
from .actions import drive_actions
from .dependency import DependencyError, FaultyDependency

__all__ = ["AttemptRecord", "CallOutcome", "ResilientCaller"]


@dataclass(frozen=True)
class AttemptRecord:
    """One call to the dependency: ``outcome`` is ``"ok"``, ``"error"`` or ``"timeout"``, or
    ``"cancelled"`` for a hedged call's copy that lost (``seconds``: until it was cancelled).
    ``drawn``: the latency the dependency drew for an ``"ok"`` call (seconds; NaN for the
    others, which did not wait it out)."""

    attempt: int
    outcome: str
    seconds: float
    drawn: float = math.nan

    @property
    def overrun(self) -> float:
        """Seconds the call took beyond its drawn latency (NaN if none was drawn): how late
        the service's event loop woke its timer, plus the call's own bookkeeping. On an idle
        machine a fraction of a millisecond; on a busy host the lateness that turns fast
        calls into hedges."""
        return self.seconds - self.drawn


@dataclass(frozen=True)
class CallOutcome:
    """The result of one logical call: HTTP status to answer, why, and the attempts made."""

    status: int
    reason: str
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


class ResilientCaller:
    """Retry policy, retry budget and circuit breaker around a ``FaultyDependency``.

    ``transitions`` keeps the breaker's recent changes of state (times on ``clock``, by default
    ``time.monotonic``) for ``/admin/breaker``.
    """

    def __init__(
        self,
        dependency: FaultyDependency,
        *,
        policy: ClientPolicy,
        rng: np.random.Generator,
        clock: Callable[[], float] = time.monotonic,
        keep_transitions: int = 10_000,
    ) -> None:
        timeout = policy.timeout if isinstance(policy, ClientPolicy) else None
        if timeout is None:
            raise ValueError("policy must be a ClientPolicy with a timeout (DATABASE_TIMEOUT; "
                             f"its retry, budget and breaker may be None), got {policy!r}")
        self.dependency = dependency
        self.policy = policy
        self.call_timeout = timeout
        self.clock = clock
        self._rng = rng
        self.transitions: deque[BreakerTransition] = deque(maxlen=keep_transitions)
        self.reset()

    def use_stream(self, rng: np.random.Generator) -> None:
        """Draw backoff jitter from ``rng`` from now on."""
        self._rng = rng
        self._guard.rng = rng

    def reset(self) -> None:
        """A fresh breaker (CLOSED) and a full budget; the transition history is cleared."""
        self.transitions.clear()
        self._guard = self.policy.guard(clock=self.clock, rng=self._rng,
                                        on_transition=self.transitions.append)

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker in use (replaced by ``reset``); None when the policy has none."""
        return self._guard.breaker

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget in use (replaced by ``reset``); None when the policy has none."""
        return self._guard.budget

    async def _attempt(self, number: int) -> AttemptRecord:
        start = time.perf_counter()
        drawn = math.nan
        try:
            drawn = await run_with_timeout(self.dependency.call(), self.call_timeout)
            outcome = "ok"
        except DependencyError:
            outcome = "error"
        except TimeoutError:
            outcome = "timeout"
        return AttemptRecord(number, outcome, time.perf_counter() - start, drawn)

    async def call(self) -> CallOutcome:
        """One logical call, with as many attempts (or hedged copies) as the policies allow."""
        if self.policy.hedge is not None:
            return await self._hedged_call()
        guarded = self._guard.call()
        attempts: list[AttemptRecord] = []
        while guarded.before_attempt():
            try:
                record = await self._attempt(guarded.attempts)
            except asyncio.CancelledError:
                # The request's own timeout (HTTP_TIMEOUT) cut the call off: a failure from
                # the caller's side, recorded before the cancellation goes on.
                guarded.abandon()
                raise
            attempts.append(record)
            delay = guarded.after_attempt(_STATUS[record.outcome])
            if delay is None:
                break
            await asyncio.sleep(delay)
        status = guarded.status
        if status == Status.OK:
            return CallOutcome(Status.OK, "ok", attempts)
        return CallOutcome(Status.SERVICE_UNAVAILABLE, _reason(status, attempts), attempts)


    async def _hedged_call(self) -> CallOutcome:
        """The guarded call's action loop (``actions.drive_actions``): each copy a task, the
        call's one timer the ``asyncio.wait`` timeout; the losers cancelled and recorded
        ``"cancelled"``."""
        guarded = self._guard.call()
        copies: dict[asyncio.Task[AttemptRecord], int] = {}
        started: dict[int, float] = {}
        records: dict[int, AttemptRecord] = {}

        def send(copy: int) -> Coroutine[Any, Any, AttemptRecord]:
            started[copy] = time.perf_counter()
            return self._attempt(copy)

        def answer(copy: int, record: AttemptRecord) -> tuple[int, float | None]:
            records[copy] = record
            return _STATUS[record.outcome], None

        try:
            await drive_actions(guarded, send, answer, copies)
        finally:
            now = time.perf_counter()
            for task, copy in copies.items():  # the losers (or, when cut off, every copy out)
                task.cancel()
                records.setdefault(copy, AttemptRecord(copy, "cancelled", now - started[copy]))
        attempts = [records[k] for k in sorted(records)]
        status = guarded.status
        if status == Status.OK:
            return CallOutcome(Status.OK, "ok", attempts)
        answered = [a for a in attempts if a.outcome != "cancelled"]
        return CallOutcome(Status.SERVICE_UNAVAILABLE, _reason(status, answered), attempts)


#: What each kind of attempt counts as: an error the dependency answered is a 503 from it; a
#: call that outlived DATABASE_TIMEOUT is a client timeout (599) from the caller's side.
_STATUS = {"ok": int(Status.OK), "error": int(Status.SERVICE_UNAVAILABLE),
           "timeout": int(Status.CLIENT_TIMEOUT)}


def _reason(status: int, attempts: list[AttemptRecord]) -> str:
    if status == Status.BREAKER_OPEN and not attempts:
        return "circuit breaker open"
    last = attempts[-1].outcome if attempts else "refused"
    if status == Status.BREAKER_OPEN:
        return f"dependency {last}; circuit breaker open"
    if status == Status.BUDGET_EXHAUSTED:
        return f"dependency {last}; retry budget exhausted"
    return f"dependency {last}; retries exhausted"
