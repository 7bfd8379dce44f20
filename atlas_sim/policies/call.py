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
  ``time.monotonic``, waiting with ``asyncio.sleep``);
* the hedging drivers, each a loop over the actions below: the simulated client of a
  ``Scenario`` whose ``ClientPolicy`` hedges (``sim.client``), the fan-out model
  (``sim.fanout``), the live load generator's hedged requests (``run_load``) and the live
  service's hedged dependency caller (``/api/fanout``).

A driver that keeps one attempt at a time can loop over the step-by-step methods::

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

Hedged calls
------------
With ``ClientPolicy(hedge=HedgePolicy(delay=d))`` a call sends a second copy of itself when the
first has not answered after ``d`` seconds, takes whichever answers first and cancels the other
(Dean and Barroso, "The Tail at Scale", CACM 2013, "hedged requests"). The rule follows gRPC's
hedging policy (gRFC A6, "gRPC Retry Design", "Hedging Policy" and "Throttling Retry Attempts and
Hedged RPCs"):

========================  ======================================================================
retry or hedge            one or the other, never both: a ``ClientPolicy`` with both is refused
                          (in gRPC's service config "only one of retryPolicy or hedgingPolicy may
                          be set"). When every copy has failed, no retry follows: hedging "can be
                          seen as retrying the original RPC before a failure is even received".
when a copy is sent       the first at once; each further copy ``delay`` seconds after the latest
                          one if no copy has answered by then (gRPC's ``hedgingDelay``), up to
                          ``max_extra`` copies beyond the first (gRPC's ``maxAttempts`` - 1); and
                          at once, without waiting for the delay, after a copy fails with a
                          ``non_fatal`` status (gRPC: "the next hedged request in line is sent
                          immediately, shortcutting its hedging delay").
who wins                  the first copy to answer 2xx, or with a status that is not
                          ``non_fatal`` (a fatal one: 404, say, which another copy would only
                          repeat). The call ends with that status; every copy still in flight
                          is the driver's to cancel (``cancelled``).
the losers                recorded nowhere: a cancelled copy is neither a breaker failure nor a
                          success (``CircuitBreaker.release`` gives back a half-open probe's
                          slot, as Resilience4j's ``releasePermission``), costs no budget token
                          and is not a retry. Only answers are counted; a late answer from a
                          copy already cancelled is ignored.
breaker and budget        every copy is admitted by the breaker, and each answer is recorded in
                          the breaker and the budget as an attempt's is (above; a ``non_fatal``
                          failure costs a token, as a retryable one does). A copy after the
                          first is sent only while the budget has more than half its tokens:
                          gRPC throttles hedges with the very token bucket that throttles
                          retries ("subsequent hedged RPCs will only be sent if token_count is
                          greater than the threshold"). A copy refused by the budget or the
                          breaker stops the hedging of that call.
all copies failed         the status of the last answer, or 596 (budget) or 597 (breaker) if a
                          further copy was refused, as for a refused retry.
========================  ======================================================================

Driving a call by its actions
-----------------------------
Every call, retried or hedged, can also be driven by the actions it returns (tenacity's
``iter`` returning ``DoAttempt`` or ``DoSleep``; here four frozen classes): ``Send(copy)``
(send attempt or copy number ``copy`` now; ``route()`` says where), ``Wait(seconds)`` (call
``on_timer(that wait)`` after ``seconds`` unless an answer comes first: the next hedge, or a
retry's backoff), ``Cancel(copies)`` (the losers: stop them, count them nowhere) and
``Done(status)`` (the call's final status; always the last action). One loop drives a plain
call, a retried call and a hedged call alike::

    actions = call.start()                  # (Send(1), Wait(d)) hedged; (Done(597),) refused
    while True:
        perform(actions)                    # Send: start a copy; Wait: (re)arm the one timer;
                                            # Cancel: stop those copies; Done: finish, leave
        event = first of (an answer from copy k, the timer)   # an answer wins a tie
        actions = (call.on_answer(k, status, retry_after=...) if event is an answer
                   else call.on_timer(wait))

The call keeps its own staleness: a driver keeps at most one timer, the latest ``Wait``, and
one that fires after the state moved on (another copy went out, the call ended) gets ``()``,
as does an answer from a copy already cancelled or already answered, so a driver that cannot
cancel its timers (SimPy's ``Timeout``) need not. An empty tuple means: nothing to do now, keep
waiting. At most one ``Send`` comes per tuple, so ``route()`` (which reads ``attempts``) is
right when the ``Send`` is performed. A driver cut off from outside (the caller's deadline)
calls ``abandon()`` and stops every copy it has out itself; the call then ignores what follows.

The actions are a view of the same state as the step-by-step methods below
(``before_attempt``/``after_attempt`` for one attempt at a time, and ``hedge_delay``,
``before_hedge`` and ``after_attempt(status, attempt=k)`` for hedged copies, with the
driver keeping the timers and their staleness itself): both take the same decisions and leave
the breaker and the budget in the same state (a property test in
``tests/policies/test_call_actions.py``). ``hedge_delay()`` is None when no further copy will be
sent, so without hedging a call has one copy and no hedge timer.

Breaker outcomes carry the breaker's ``generation`` read at admission, so a late answer from
before a state change is never mistaken for a probe's (see ``CircuitBreaker``).

Not thread-safe: one event loop or one simulation owns a ``Guard`` and its calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import numpy as np

from ..validation import check_config, check_int, check_real
from .breaker import BreakerConfig, BreakerListener, CircuitBreaker
from .retry import BudgetConfig, RetryBudget, RetryPolicy
from .routing import NextInstance, Router, RoutingConfig
from .status import DEFAULT_RETRYABLE, Status

__all__ = ["CallAction", "Cancel", "ClientPolicy", "Done", "Guard", "GuardedCall", "HedgePolicy",
           "Send", "Wait", "counts_as_breaker_failure"]

_BREAKER_OPEN: Final = int(Status.BREAKER_OPEN)
_BUDGET_EXHAUSTED: Final = int(Status.BUDGET_EXHAUSTED)
_CLIENT_TIMEOUT: Final = int(Status.CLIENT_TIMEOUT)
_NO_RETRY: Final = frozenset[int]()
# Shared by every call without hedging, which never changes them.
_NO_COPIES: Final[set[int]] = set()
_NO_GENS: Final[list[int]] = []


@dataclass(frozen=True, slots=True)
class Send:
    """Send attempt (or hedged copy) number ``copy`` (1 for the first) now; its answer goes to
    ``GuardedCall.on_answer(copy, status)``. ``GuardedCall.route`` says which instance."""

    copy: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Call ``GuardedCall.on_timer(this)`` ``seconds`` from now unless an answer comes first:
    the next hedged copy is due then, or a retry's backoff ends. It replaces the call's earlier
    ``Wait``; ``timer`` numbers the call's waits (1, 2, ...), so that a stale one is known."""

    seconds: float
    timer: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop these copies (numbers, ascending): another copy won. They count for nothing (no
    breaker outcome, no budget token) and their late answers are ignored."""

    copies: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Done:
    """The call is over with ``status`` (its ``GuardedCall.status``); always the last action."""

    status: int


#: What a guarded call asks its driver to do (see the module docstring's loop).
CallAction: TypeAlias = Send | Wait | Cancel | Done
_NOTHING: Final[tuple[CallAction, ...]] = ()
# Actions are values: the common ones are made once (a driver runs one per call on the hot path).
_SENDS: Final = tuple((Send(k),) for k in range(17))
_DONES: dict[int, tuple[Done]] = {}


def _done(status: int) -> tuple[Done]:
    done = _DONES.get(status)
    if done is None:
        done = _DONES[status] = (Done(status),)
    return done


def counts_as_breaker_failure(status: int) -> bool:
    """True for the outcomes a circuit breaker counts as failures: 5xx server statuses, 598
    (connection error) and 599 (client timeout). 596 and 597 are local refusals and are never
    recorded at all; every other status is a success (see the module docstring)."""
    return 500 <= status <= 599 and status != _BUDGET_EXHAUSTED and status != _BREAKER_OPEN


@dataclass(frozen=True, kw_only=True)
class HedgePolicy:
    """Hedged requests: send another copy of a call that has not answered after ``delay``
    seconds, keep the first answer, cancel the rest (Dean and Barroso, "The Tail at Scale",
    CACM 2013; gRPC's ``hedgingPolicy``, gRFC A6). See the module docstring for the rule.

    Args:
        delay: seconds to wait for an answer before the next copy (gRPC's ``hedgingDelay``),
            0..3600. Dean and Barroso suggest the 95th percentile of the call's latency: at
            most about 5% more calls. 0 sends every copy at once.
        max_extra: copies beyond the first, 1..4 (gRPC's ``maxAttempts`` counts the first
            copy too, and is capped at 5 by default).
        non_fatal: statuses after which another copy is worth sending at once (gRPC's
            ``nonFatalStatusCodes``). Default: the statuses ``RetryPolicy`` retries (429, 5xx
            faults, timeouts, broken connections); any other failure ends the call.
    """

    delay: float
    max_extra: int = 1
    non_fatal: frozenset[int] = DEFAULT_RETRYABLE

    def __post_init__(self) -> None:
        object.__setattr__(self, "delay", check_real("delay", self.delay, low=0, high=3600))
        check_int("max_extra", self.max_extra, low=1, high=4)
        codes = self.non_fatal
        if isinstance(codes, (str, bytes)) or not isinstance(codes, Iterable):
            raise ValueError(f"non_fatal must be a set of status codes, got {codes!r}")
        codes = frozenset(check_int("non_fatal", c, low=300, high=599) for c in codes)
        object.__setattr__(self, "non_fatal", codes)


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
        hedge: hedged requests (None: one copy at a time). Not with ``retry``: as in gRPC, a
            call is retried or hedged, never both. Driven by ``Scenario``'s clients, the
            fan-out model (``sim.fanout``), ``run_load`` and the service's ``ResilientCaller``
            (``/api/fanout``); the engine's dependency call (``Dependency.client``), which keeps
            one attempt in flight, refuses it.
        routing: which instance each attempt goes to when there are several
            (``policies.routing``; default ``NextInstance()``: request ``i`` to instance
            ``i mod n``, each retry to the next).

    Configs only, never live state: ``guard(clock=..., rng=...)`` builds the state machines.
    """

    timeout: float | None = None
    retry: RetryPolicy | None = None
    budget: BudgetConfig | None = None
    breaker: BreakerConfig | None = None
    hedge: HedgePolicy | None = None
    routing: RoutingConfig = field(default_factory=NextInstance)

    def __post_init__(self) -> None:
        check_config("routing", self.routing, "a routing config such as NextInstance()")
        if self.timeout is not None:
            object.__setattr__(self, "timeout",
                               check_real("timeout", self.timeout, low=0, low_open=True))
        for name, value, kind in (("retry", self.retry, RetryPolicy),
                                  ("budget", self.budget, BudgetConfig),
                                  ("breaker", self.breaker, BreakerConfig),
                                  ("hedge", self.hedge, HedgePolicy)):
            if value is not None and not isinstance(value, kind):
                settings = getattr(value, "config", None)  # a live RetryBudget, CircuitBreaker
                hint = (f" (a {type(value).__name__} is live state; a policy takes its settings: "
                        f"{settings!r})" if isinstance(settings, kind) else "")
                raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}"
                                 + hint)
        if self.retry is not None and self.hedge is not None:
            raise ValueError("retry and hedge cannot both be set: a call is retried or hedged, "
                             "never both (gRFC A6: only one of retryPolicy or hedgingPolicy)")

    def guard(self, *, clock: Callable[[], float], rng: np.random.Generator | None,
              on_transition: BreakerListener | None = None,
              routing_rng: np.random.Generator | None = None) -> Guard:
        """Fresh state machines for these settings: a full budget, a CLOSED breaker on
        ``clock`` (reporting its changes to ``on_transition``), jitter from ``rng``, a router
        drawing from ``routing_rng`` (the ``"routing"`` stream)."""
        breaker = self.breaker.build(clock) if self.breaker is not None else None
        if breaker is not None and on_transition is not None:
            breaker.add_listener(on_transition)
        return Guard(retry=self.retry, breaker=breaker, rng=rng, hedge=self.hedge,
                     budget=self.budget.build() if self.budget is not None else None,
                     router=self.routing.build(routing_rng))


class Guard:
    """One client's policies: a retry policy and, optionally, a budget and a breaker shared by
    all of its calls. ``call()`` starts a logical call.

    Args:
        retry: the retry policy (None: one attempt per call).
        budget: the client's retry budget (None: no throttling of retries).
        breaker: the client's circuit breaker (None: every attempt is sent).
        rng: where backoff jitter comes from (required when ``retry`` jitters).
        hedge: hedged requests (None: none); not with ``retry``.
        router: which instance each attempt goes to (default: ``NextInstance``'s).
    """

    __slots__ = ("_hedge_steps", "_retry_on", "breaker", "budget", "hedge", "retry", "rng",
                 "router")

    def __init__(self, *, retry: RetryPolicy | None = None, budget: RetryBudget | None = None,
                 breaker: CircuitBreaker | None = None,
                 rng: np.random.Generator | None = None,
                 hedge: HedgePolicy | None = None, router: Router | None = None) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ValueError(f"retry must be a RetryPolicy or None, got {retry!r}")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ValueError(f"budget must be a RetryBudget or None, got {budget!r}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ValueError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")
        if rng is None and retry is not None and retry.backoff.jitter != "none":
            raise ValueError(f"rng is required for jitter={retry.backoff.jitter!r}")
        if hedge is not None and not isinstance(hedge, HedgePolicy):
            raise ValueError(f"hedge must be a HedgePolicy or None, got {hedge!r}")
        if hedge is not None and retry is not None:
            raise ValueError("retry and hedge cannot both be set (see ClientPolicy)")
        self.hedge = hedge
        self.retry = retry
        self.budget = budget
        self.breaker = breaker
        self.rng = rng
        self._retry_on = retry.retry_on if retry is not None else _NO_RETRY
        # a hedged call's k-th copy comes with its k-th Wait, the same for every call: made once
        self._hedge_steps: tuple[tuple[Send, Wait], ...] = (
            tuple((Send(k), Wait(hedge.delay, k)) for k in range(hedge.max_extra + 1))
            if hedge is not None else ())
        self.router: Router = router if router is not None else NextInstance().build()

    def call(self, request: int = 0) -> GuardedCall:
        """A new logical call, before its first attempt; ``request`` is its index among the
        client's calls (0, 1, ...), which a router may read."""
        return GuardedCall(self, request)

    def __repr__(self) -> str:
        hedge = f", hedge={self.hedge!r}" if self.hedge is not None else ""
        return (f"Guard(retry={self.retry!r}, budget={self.budget!r}, "
                f"breaker={self.breaker!r}{hedge})")


def _record(guard: Guard, status: int, generation: int, *, spends_token: bool) -> None:
    """Record one answer, once, by the module's rule: the breaker counts a failure for 5xx,
    598 and 599 and a success otherwise; the budget earns credit for a 2xx and spends a token
    for a failure the caller would try again (``spends_token``: a retryable status, or a
    hedge's non-fatal one)."""
    breaker = guard.breaker
    if breaker is not None:
        # counts_as_breaker_failure(status), inline: this runs once per attempt
        if 500 <= status <= 599 and status != _BUDGET_EXHAUSTED and status != _BREAKER_OPEN:
            breaker.record_failure(generation)
        else:
            breaker.record_success(generation)
    budget = guard.budget
    if budget is not None:
        if 200 <= status < 300:
            budget.record_success()
        elif spends_token:
            budget.record_failure()


class GuardedCall:
    """One logical call's decisions; see the module docstring for the loops and the rules.

    Attributes:
        attempts: attempts (copies, when hedged) admitted so far, the first included.
        status: the final status once the call is done (0 before).
        winner: the copy whose answer ended a hedged call (0 if none did).
    """

    __slots__ = ("_answered", "_delays", "_generation", "_gens", "_guard", "_hedge",
                 "_in_flight", "_refused", "_timer", "_timer_sent", "_waits", "attempts",
                 "cancelled", "request", "status", "winner")

    def __init__(self, guard: Guard, request: int = 0) -> None:
        self._guard = guard
        self.request = request
        hedge = self._hedge = guard.hedge
        self._delays: Iterator[float] | None = None
        # _refused, hedged: 596 or 597 once a further copy was refused
        self._generation = self._refused = self.attempts = self.status = self.winner = 0
        self.cancelled: tuple[int, ...] = ()
        # hedged: each copy's breaker generation (by copy - 1), the copies not yet answered
        if hedge is None:
            self._gens: list[int] = _NO_GENS
            self._in_flight: set[int] = _NO_COPIES
        else:
            self._gens = []
            self._in_flight = set()

    @property
    def done(self) -> bool:
        """True once the call has its final ``status``."""
        return self.status != 0

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Hedged calls: the copies sent and not yet answered, in order (empty otherwise)."""
        return tuple(sorted(self._in_flight))

    # -- the actions (see the module docstring's loop) -------------------------------------

    def start(self) -> tuple[CallAction, ...]:
        """The call's first actions: ``(Send(1),)``, ``(Send(1), Wait(delay))`` when hedged, or
        ``(Done(597),)`` when the breaker refuses the first attempt (nothing is sent)."""
        if self.attempts or self.status:
            raise RuntimeError(f"{self!r} has started already")
        # the action API's own bookkeeping, set here so the step methods' drivers (the engine's
        # hot path) do not pay for it: the Waits given, the live one's number (0: none) and the
        # copies out when it was given; the last attempt answered (without hedging)
        self._waits = self._timer = self._timer_sent = self._answered = 0
        if not (self._admit_copy() if self._hedge is not None else self.before_attempt()):
            return _done(self.status or self._refused)
        return self._sent()

    def on_answer(self, copy: int, status: int, *,
                  retry_after: float | None = None) -> tuple[CallAction, ...]:
        """Attempt or copy ``copy`` answered ``status`` (an HTTP status, or a client-side 598 or
        599; ``retry_after``: seconds from its ``Retry-After``, if any). Records it once and
        returns what to do: ``()`` (keep waiting; also for an answer from a copy cancelled or
        answered already, which counts for nothing), ``(Wait(backoff),)`` before a retry,
        ``(Send(k), Wait(delay))`` or ``(Send(k),)`` after a hedged copy's non-fatal failure,
        or ``(Cancel(losers), Done(status))`` / ``(Done(status),)`` when the call is over."""
        if self.status:
            return _NOTHING
        if self._hedge is None:
            if copy != self.attempts or self._answered >= copy:
                return _NOTHING  # not the attempt in flight
            self._answered = copy
            delay = self.after_attempt(status, retry_after=retry_after)
            if delay is None:
                return self._end()
            return (self._wait(delay, 0),)
        if copy not in self._in_flight:
            return _NOTHING
        if self._after_copy(status, copy) == 0.0 and self.before_hedge(self.attempts):
            return self._sent()
        if not self.status:
            return _NOTHING
        if self.cancelled:
            return self._end()
        self._timer = 0
        return _done(self.status)

    def on_timer(self, wait: Wait) -> tuple[CallAction, ...]:
        """The timer of ``wait`` (a ``Wait`` this call returned) fired. ``()`` if it is stale
        (a later ``Wait`` replaced it, or the call moved on); else the next copy or attempt:
        ``(Send(k), ...)``, or what a refusal leaves (``(Done(596),)``, ``(Done(597),)``, or
        ``()`` while hedged copies are still out)."""
        if self.status or wait.timer != self._timer or self._timer == 0:
            return _NOTHING
        self._timer = 0
        if self._hedge is None:
            admitted = self.before_attempt()
        else:
            admitted = self.before_hedge(self._timer_sent)
        if admitted:
            return self._sent()
        return self._end() if self.status else _NOTHING

    def _sent(self) -> tuple[CallAction, ...]:
        """Copy ``attempts`` was just admitted: send it, and the next hedge's timer if any."""
        copy = self.attempts
        hedge = self._hedge
        if hedge is None or self._refused or copy > hedge.max_extra:  # no further copy
            self._timer = 0  # any earlier timer is stale now
            return _SENDS[copy] if copy < 17 else (Send(copy),)
        # the k-th Wait of a hedged call comes with its k-th copy: (Send(k), Wait(delay, k))
        self._waits = self._timer = self._timer_sent = copy
        return self._guard._hedge_steps[copy]

    def _wait(self, seconds: float, sent: int) -> Wait:
        self._waits += 1
        self._timer = self._waits
        self._timer_sent = sent
        return Wait(seconds, self._waits)

    def _end(self) -> tuple[CallAction, ...]:
        self._timer = 0
        done = _done(self.status)
        return (Cancel(self.cancelled), done[0]) if self.cancelled else done

    def route(self, outstanding: Sequence[int]) -> int:
        """Which instance the attempt just admitted (``attempts``, 1 for the first: after
        ``before_attempt``/``before_hedge`` said True, or while performing a ``Send``) goes to:
        the router's choice among ``len(outstanding)`` instances, given the client's attempts
        in flight to each (``outstanding``); 0 when there is one."""
        if len(outstanding) == 1:
            return 0
        return self._guard.router.choose(request=self.request, attempt=self.attempts,
                                         outstanding=outstanding)

    def before_attempt(self) -> bool:
        """May the next attempt be sent now? False: the breaker refused it and the call is done
        with ``status`` 597. True: send it, then call ``after_attempt`` exactly once (or
        ``abandon``). For a hedged call this admits the first copy; later copies go through
        ``before_hedge``."""
        if self._hedge is not None:
            if self.attempts:
                raise RuntimeError("a hedged call's further copies are admitted by before_hedge")
            return self._admit_copy()
        breaker = self._guard.breaker
        if breaker is not None:
            if not breaker.allow():
                self.status = _BREAKER_OPEN
                return False
            # breaker.generation, read directly: allow() said True, so the breaker is not OPEN
            # and the property would not _refresh (a call saved per attempt)
            self._generation = breaker._generation
        self.attempts += 1
        return True

    def hedge_delay(self) -> float | None:
        """Seconds from the latest copy's send until the next copy is due, if no copy has
        answered by then; None when no further copy will be sent (no hedging, the call is done,
        every copy allowed is out, or a copy was refused)."""
        hedge = self._hedge
        if (hedge is None or self.status or self._refused
                or self.attempts > hedge.max_extra):
            return None
        return hedge.delay

    def before_hedge(self, sent: int) -> bool:
        """The hedge timer armed when ``sent`` copies were out has fired (or, with ``sent ==
        attempts``, a non-fatal failure asked for the next copy at once): may a copy be sent
        now? False when the timer is stale (a copy left since), the call is done, no copy is
        left, or the budget (at or below half its tokens: 596) or the breaker (597) refuses it;
        a refusal stops the call's hedging, and ends the call if no copy is still out. True:
        send copy number ``attempts``, and arm the next timer with ``hedge_delay()``."""
        hedge = self._hedge
        if (hedge is None or self.status or self._refused or sent != self.attempts
                or self.attempts > hedge.max_extra):
            return False
        budget = self._guard.budget
        if budget is not None and not budget.can_retry():
            return self._refuse(_BUDGET_EXHAUSTED)
        return self._admit_copy()

    def _admit_copy(self) -> bool:
        breaker = self._guard.breaker
        generation = 0
        if breaker is not None:
            if not breaker.allow():
                return self._refuse(_BREAKER_OPEN)
            generation = breaker.generation
        self.attempts += 1
        self._gens.append(generation)
        self._in_flight.add(self.attempts)
        return True

    def _refuse(self, status: int) -> bool:
        self._refused = status
        if not self._in_flight:  # nothing left to wait for
            self.status = status
        return False

    def after_attempt(self, status: int, *, retry_after: float | None = None,
                      attempt: int | None = None) -> float | None:
        """Record the attempt's outcome once and decide.

        Args:
            status: the attempt's HTTP status, or a client-side code (598, 599).
            retry_after: seconds from the answer's ``Retry-After``, if it had one.
            attempt: which copy answered (hedged calls; default the latest).

        Returns the seconds to wait before the next attempt (then call ``before_attempt``), or
        None when the call is done; its final status is then in ``status``: the attempt's own,
        or 596 when the budget refused a retry.

        Hedged calls: None means nothing to send now; if the call is ``done``, its copies in
        ``cancelled`` are to be cancelled, else other copies are still out. 0.0 means a
        non-fatal failure asks for the next copy at once (``before_hedge(attempts)``). An
        answer from a copy not in flight (cancelled already) is ignored.
        """
        if self._hedge is not None:
            return self._after_copy(status, self.attempts if attempt is None else attempt)
        guard = self._guard
        ok = 200 <= status < 300
        retryable = status in guard._retry_on
        # _record(guard, status, self._generation, spends_token=retryable), inline: the engine
        # calls this once per attempt
        breaker = guard.breaker
        if breaker is not None:
            if 500 <= status <= 599 and status != _BUDGET_EXHAUSTED and status != _BREAKER_OPEN:
                breaker.record_failure(self._generation)
            else:
                breaker.record_success(self._generation)
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

    def _after_copy(self, status: int, copy: int) -> float | None:
        hedge = self._hedge
        assert hedge is not None
        if self.status or copy not in self._in_flight:
            return None  # a loser's late answer: it was cancelled, it counts for nothing
        self._in_flight.discard(copy)
        ok = 200 <= status < 300
        non_fatal = status in hedge.non_fatal
        _record(self._guard, status, self._gens[copy - 1], spends_token=non_fatal)
        if ok or not non_fatal:  # the winner, or a fatal answer: the call ends here
            self.status = status
            self.winner = copy
            if self._in_flight:
                self._cancel_rest()
            return None
        if not self._refused and self.attempts <= hedge.max_extra:
            return 0.0  # another copy may still succeed: send it now
        if not self._in_flight:
            self.status = self._refused or status
        return None

    def _cancel_rest(self) -> None:
        """The copies still out lose: the driver cancels them; they count for nothing."""
        if not self._in_flight:
            return
        breaker = self._guard.breaker
        losers = tuple(sorted(self._in_flight))
        if breaker is not None:
            for copy in losers:
                breaker.release(self._gens[copy - 1])
        self._in_flight.clear()
        self.cancelled = losers

    def abandon(self) -> None:
        """The attempt in flight (every copy in flight, when hedged) was cut off from outside
        (the caller's own deadline): record each as a client timeout (599) and end the call
        without a retry."""
        guard = self._guard
        if self._hedge is not None:
            costs_token = _CLIENT_TIMEOUT in self._hedge.non_fatal
            for copy in sorted(self._in_flight):
                if guard.breaker is not None:
                    guard.breaker.record_failure(self._gens[copy - 1])
                if guard.budget is not None and costs_token:
                    guard.budget.record_failure()
            self._in_flight.clear()
            self.status = _CLIENT_TIMEOUT
            return
        if guard.breaker is not None:
            guard.breaker.record_failure(self._generation)
        if guard.budget is not None and _CLIENT_TIMEOUT in guard._retry_on:
            guard.budget.record_failure()
        self.status = _CLIENT_TIMEOUT

    def __repr__(self) -> str:
        if self._hedge is not None:
            return (f"GuardedCall(attempts={self.attempts}, status={self.status}, "
                    f"winner={self.winner}, in_flight={self.in_flight})")
        return f"GuardedCall(attempts={self.attempts}, status={self.status})"
