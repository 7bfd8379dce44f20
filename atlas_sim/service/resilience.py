"""Calling the dependency the careful way: timeout, retry with backoff, budget, circuit breaker.

The same ``RetryPolicy``, ``RetryBudget`` and ``CircuitBreaker`` objects as in the simulation,
on the real clock (``time.monotonic``), waiting with ``asyncio.sleep``. For each call:

1. ask the breaker; if OPEN, fail fast (503) without touching the dependency;
2. call, bounded by ``DATABASE_TIMEOUT``; report the outcome to the breaker (with the
   ``generation`` read right after ``allow()``, so a late answer from before a state change is
   not mistaken for a probe's) and to the budget; a call cut off because the whole request
   timed out (``HTTP_TIMEOUT``) is reported as a failure before the cancellation goes on;
3. on failure, retry if the policy allows another attempt and the budget has tokens left,
   after a jittered backoff; else give up with 503.

All of this runs on the service's own event loop: the policies are not thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..policies import (
    BreakerConfig,
    BreakerTransition,
    BudgetConfig,
    CircuitBreaker,
    RetryBudget,
    RetryPolicy,
    Status,
)
from ..policies._validate import check_real
from ._timeouts import run_with_timeout
from .dependency import DependencyError, FaultyDependency

__all__ = ["AttemptRecord", "CallOutcome", "ResilientCaller"]


@dataclass(frozen=True)
class AttemptRecord:
    """One call to the dependency: ``outcome`` is ``"ok"``, ``"error"`` or ``"timeout"``."""

    attempt: int
    outcome: str
    seconds: float


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
        retry: RetryPolicy,
        budget: BudgetConfig,
        breaker: BreakerConfig,
        call_timeout: float,
        rng: np.random.Generator,
        clock: Callable[[], float] = time.monotonic,
        keep_transitions: int = 10_000,
    ) -> None:
        self.dependency = dependency
        self.retry = retry
        self.budget_config = budget
        self.breaker_config = breaker
        self.call_timeout = check_real("call_timeout", call_timeout, low=0, low_open=True)
        self.clock = clock
        self._rng = rng
        self.transitions: deque[BreakerTransition] = deque(maxlen=keep_transitions)
        self.reset()

    def use_stream(self, rng: np.random.Generator) -> None:
        """Draw backoff jitter from ``rng`` from now on."""
        self._rng = rng

    def reset(self) -> None:
        """A fresh breaker (CLOSED) and a full budget; the transition history is cleared."""
        self.transitions.clear()
        self.budget: RetryBudget = self.budget_config.build()
        self.breaker: CircuitBreaker = self.breaker_config.build(self.clock)
        self.breaker.add_listener(self.transitions.append)

    async def _attempt(self, number: int) -> AttemptRecord:
        start = time.perf_counter()
        try:
            await run_with_timeout(self.dependency.call(), self.call_timeout)
            outcome = "ok"
        except DependencyError:
            outcome = "error"
        except TimeoutError:
            outcome = "timeout"
        return AttemptRecord(number, outcome, time.perf_counter() - start)

    async def call(self) -> CallOutcome:
        """One logical call, with as many attempts as the policies allow."""
        breaker, budget = self.breaker, self.budget
        delays = self.retry.delays(self._rng)
        attempts: list[AttemptRecord] = []
        while True:
            if not breaker.allow():
                return CallOutcome(Status.SERVICE_UNAVAILABLE, "circuit breaker open", attempts)
            generation = breaker.generation
            try:
                record = await self._attempt(len(attempts) + 1)
            except asyncio.CancelledError:
                # The request's own timeout (HTTP_TIMEOUT) cut the call off: from the caller's
                # side that is a failure, and it must be reported, or a half-open probe's slot
                # would stay taken for ever and the breaker would refuse every call after it.
                breaker.record_failure(generation)
                budget.record_failure()
                raise
            attempts.append(record)
            if record.outcome == "ok":
                breaker.record_success(generation)
                budget.record_success()
                return CallOutcome(Status.OK, "ok", attempts)
            breaker.record_failure(generation)
            budget.record_failure()
            failed_as = (Status.GATEWAY_TIMEOUT if record.outcome == "timeout"
                         else Status.SERVICE_UNAVAILABLE)
            if not self.retry.should_retry(len(attempts), failed_as):
                return CallOutcome(Status.SERVICE_UNAVAILABLE,
                                   f"dependency {record.outcome}; retries exhausted", attempts)
            if not budget.can_retry():
                return CallOutcome(Status.SERVICE_UNAVAILABLE,
                                   f"dependency {record.outcome}; retry budget exhausted",
                                   attempts)
            await asyncio.sleep(next(delays))
