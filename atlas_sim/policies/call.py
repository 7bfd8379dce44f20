"""The guarded call: the sequence that drives retry, backoff, budget and breaker, written once.

A logical call (what a user waits for) is a series of attempts. Before each attempt the
client's circuit breaker may refuse it; after each attempt its outcome is recorded once, in
the breaker and in the retry budget, and the retry policy, the budget and the backoff decide
whether to try again and after how long. ``GuardedCall`` is that sequence as a pure decision
object, in the spirit of tenacity's ``BaseRetrying.iter`` (which returns "attempt" or "sleep"
and is driven by both a blocking and an asyncio retrier): it never sends, sleeps or reads a
clock of its own. Every driver in Atlas is a short loop over it that supplies only the send
and the wait:

* the simulated client and the simulated handler's dependency call (``atlas_sim.sim``, on
  SimPy's clock, waiting with a timeout event);
* the live load generator and the live service's dependency caller (``atlas_sim.service``, on
  ``time.monotonic``, waiting with ``asyncio.sleep``).

A driver's loop::

    call = guard.call()
    while call.before_attempt():          # False: refused (597 breaker open)
        status, retry_after = send()      # one attempt on the wire
        delay = call.after_attempt(status, retry_after=retry_after)
        if delay is None:                 # done: call.status is the final status
            break
        wait(delay)
    finish(call.status)

The rule, in one place (each line is tested in ``tests/policies/test_call.py``):

========================  ======================================================================
breaker failure           a 5xx status, a broken connection (598) or a client timeout (599): the
                          server or the path to it is unhealthy. Any other answer, 429 and other
                          4xx included, is a success to the breaker: the server is up and
                          answering. (Envoy's outlier detection ejects on consecutive 5xx and
                          local connection failures; Polly's transient HTTP errors are 5xx.)
                          Load shedding exists to keep a server healthy; a breaker that counted
                          its 429s would turn a partial refusal into a total one.
budget token spent        an attempt that failed with a status the retry policy retries
                          (``retry_on``), on any attempt, the last included. A failure the policy
                          would never retry costs nothing: gRPC retry throttling (gRFC A6,
                          "gRPC Retry Design") decrements the token count only for retryable
                          status codes.
budget credit earned      every 2xx attempt earns ``token_ratio`` (gRFC A6).
retry                     the status is in ``retry_on`` and attempts are left (``RetryPolicy``);
                          then the budget must have more than half its tokens, else the call ends
                          596 (budget exhausted).
wait before a retry       the next backoff delay. With ``RetryPolicy(honor_retry_after=True)``, a
                          ``Retry-After`` from the server (429 or 503, RFC 9110 section 10.2.3)
                          is a floor: ``max(backoff, retry_after)``, as gRPC's server pushback
                          replaces the computed backoff. By default it is ignored, so that a
                          simulated and a live client wait alike whatever the server says.
breaker refusal           before any attempt, the first included: the call ends 597 (breaker
                          open) and nothing is sent.
abandoned attempt         an attempt cut off from outside (the caller's own deadline) is recorded
                          as a client timeout (599), without a retry.
========================  ======================================================================

Breaker outcomes carry the breaker's ``generation`` read at admission, so a late answer from
before a state change is never mistaken for a probe's (see ``CircuitBreaker``).

Not thread-safe: one event loop or one simulation owns a ``Guard`` and its calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np

from ..validation import check_real
from .breaker import BreakerConfig, BreakerListener, CircuitBreaker
from .retry import BudgetConfig, RetryBudget, RetryPolicy
from .status import Status

__all__ = ["ClientPolicy", "Guard", "GuardedCall", "counts_as_breaker_failure"]

_BREAKER_OPEN: Final = int(Status.BREAKER_OPEN)
_BUDGET_EXHAUSTED: Final = int(Status.BUDGET_EXHAUSTED)
_CLIENT_TIMEOUT: Final = int(Status.CLIENT_TIMEOUT)
_NO_RETRY: Final = frozenset[int]()


def counts_as_breaker_failure(status: int) -> bool:
    """True for the outcomes a circuit breaker counts as failures: 5xx server statuses, 598
    (connection error) and 599 (client timeout). 596 and 597 are local refusals and are never
    recorded at all; every other status is a success (see the module docstring)."""
    return 500 <= status <= 599 and status != _BUDGET_EXHAUSTED and status != _BREAKER_OPEN


@dataclass(frozen=True, kw_only=True)
class ClientPolicy:
    """How a client calls: the one config object that ``Scenario.client``, ``run_load(client=)``
    and a dependency's caller (``Dependency.client``, ``Settings.dependency_client()``) take.

    Args:
        timeout: seconds the client waits for one attempt before it gives up (599); None: no
            limit of its own.
        retry: the retry policy (None: one attempt per request).
        budget: a retry budget shared by all of the client's calls (None: none).
        breaker: a circuit breaker shared by all of the client's calls (None: none).

    Configs only, never live state: ``guard(clock=..., rng=...)`` builds the state machines.
    """

    timeout: float | None = None
    retry: RetryPolicy | None = None
    budget: BudgetConfig | None = None
    breaker: BreakerConfig | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None:
            object.__setattr__(self, "timeout",
                               check_real("timeout", self.timeout, low=0, low_open=True))
        for name, value, kind in (("retry", self.retry, RetryPolicy),
                                  ("budget", self.budget, BudgetConfig),
                                  ("breaker", self.breaker, BreakerConfig)):
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")

    def guard(self, *, clock: Callable[[], float], rng: np.random.Generator | None,
              on_transition: BreakerListener | None = None) -> Guard:
        """Fresh state machines for these settings: a full budget, a CLOSED breaker on
        ``clock`` (reporting its changes to ``on_transition``), jitter from ``rng``."""
        breaker = self.breaker.build(clock) if self.breaker is not None else None
        if breaker is not None and on_transition is not None:
            breaker.add_listener(on_transition)
        return Guard(retry=self.retry, breaker=breaker, rng=rng,
                     budget=self.budget.build() if self.budget is not None else None)


class Guard:
    """One client's policies: a retry policy and, optionally, a budget and a breaker shared by
    all of its calls. ``call()`` starts a logical call.

    Args:
        retry: the retry policy (None: one attempt per call).
        budget: the client's retry budget (None: no throttling of retries).
        breaker: the client's circuit breaker (None: every attempt is sent).
        rng: where backoff jitter comes from (required when ``retry`` jitters).
    """

    __slots__ = ("_retry_on", "breaker", "budget", "retry", "rng")

    def __init__(self, *, retry: RetryPolicy | None = None, budget: RetryBudget | None = None,
                 breaker: CircuitBreaker | None = None,
                 rng: np.random.Generator | None = None) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ValueError(f"retry must be a RetryPolicy or None, got {retry!r}")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ValueError(f"budget must be a RetryBudget or None, got {budget!r}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ValueError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")
        if rng is None and retry is not None and retry.backoff.jitter != "none":
            raise ValueError(f"rng is required for jitter={retry.backoff.jitter!r}")
        self.retry = retry
        self.budget = budget
        self.breaker = breaker
        self.rng = rng
        self._retry_on = retry.retry_on if retry is not None else _NO_RETRY

    def call(self) -> GuardedCall:
        """A new logical call, before its first attempt."""
        return GuardedCall(self)

    def __repr__(self) -> str:
        return f"Guard(retry={self.retry!r}, budget={self.budget!r}, breaker={self.breaker!r})"


class GuardedCall:
    """One logical call's decisions; see the module docstring for the loop and the rule.

    Attributes:
        attempts: attempts admitted so far (the first included).
        status: the final status once the call is done (0 before).
    """

    __slots__ = ("_delays", "_generation", "_guard", "attempts", "status")

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._delays: Iterator[float] | None = None
        self._generation = 0
        self.attempts = 0
        self.status = 0

    def before_attempt(self) -> bool:
        """May the next attempt be sent now? False: the breaker refused it and the call is done
        with ``status`` 597. True: send it, then call ``after_attempt`` exactly once (or
        ``abandon``)."""
        breaker = self._guard.breaker
        if breaker is not None:
            if not breaker.allow():
                self.status = _BREAKER_OPEN
                return False
            self._generation = breaker.generation
        self.attempts += 1
        return True

    def after_attempt(self, status: int, *, retry_after: float | None = None) -> float | None:
        """Record the attempt's outcome once and decide.

        Args:
            status: the attempt's HTTP status, or a client-side code (598, 599).
            retry_after: seconds from the answer's ``Retry-After``, if it had one.

        Returns the seconds to wait before the next attempt (then call ``before_attempt``), or
        None when the call is done; its final status is then in ``status``: the attempt's own,
        or 596 when the budget refused a retry.
        """
        guard = self._guard
        ok = 200 <= status < 300
        breaker = guard.breaker
        if breaker is not None:
            if counts_as_breaker_failure(status):
                breaker.record_failure(self._generation)
            else:
                breaker.record_success(self._generation)
        retryable = status in guard._retry_on
        budget = guard.budget
        if budget is not None:
            if ok:
                budget.record_success()
            elif retryable:
                budget.record_failure()
        retry = guard.retry
        if ok or not retryable or retry is None or self.attempts >= retry.max_attempts:
            self.status = status
            return None
        if budget is not None and not budget.can_retry():
            self.status = _BUDGET_EXHAUSTED
            return None
        if self._delays is None:
            self._delays = retry.delays(guard.rng)
        delay = next(self._delays)
        if retry_after is not None and retry.honor_retry_after and retry_after > delay:
            return retry_after
        return delay

    def abandon(self) -> None:
        """The attempt in flight was cut off from outside (the caller's own deadline): record
        it as a client timeout (599) and end the call without a retry."""
        guard = self._guard
        if guard.breaker is not None:
            guard.breaker.record_failure(self._generation)
        if guard.budget is not None and _CLIENT_TIMEOUT in guard._retry_on:
            guard.budget.record_failure()
        self.status = _CLIENT_TIMEOUT

    def __repr__(self) -> str:
        return f"GuardedCall(attempts={self.attempts}, status={self.status})"
