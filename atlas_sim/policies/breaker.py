"""The circuit breaker: stop calling a dependency that keeps failing, and test it gently later.

Without a breaker, every request to a dead dependency waits for its timeout, holding a worker,
and the caller's own capacity drains away (a fault in one component becomes a failure of the
whole system). With one, after enough failures calls fail at once (OPEN); after
``recovery_timeout`` a few probe calls are let through (HALF_OPEN); if they succeed the circuit
closes again, if one fails it re-opens and the timer restarts.

Two ways to decide to open, as Resilience4j offers:

* ``mode="consecutive"``: ``failure_threshold`` failures in a row (a success resets the count);
* ``mode="failure_rate"``: the failure rate over the last ``window_size`` calls reaches
  ``failure_rate_threshold``, once at least ``minimum_calls`` calls have been seen.

"Reaches" means equal or greater (``>=``), as in Resilience4j's ``failureRateThreshold`` ("If
the failure rate is equal or greater than the threshold the CircuitBreaker transitions to open"):
with a threshold of 0.55, 55 failures in 100 calls open the circuit. The comparison is exact:
the threshold is read as the decimal that was typed (0.55 is 11/20) and compared with the
counts in integers, ``failures * 20 >= 11 * calls``, never as ``failures >= 0.55 * calls`` in
floating point (which is ``55 >= 55.00000000000001``, false).

The breaker never reads a clock of its own: it is handed one (``env.now`` in a simulation,
``time.monotonic`` in the live service), so the same object runs in both worlds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal, get_args

from ..validation import check_choice, check_int, check_real, decimal_fraction

__all__ = [
    "BreakerConfig",
    "BreakerListener",
    "BreakerMode",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
]

Clock = Callable[[], float]
BreakerMode = Literal["consecutive", "failure_rate"]


class BreakerState(str, Enum):  # noqa: UP042 (StrEnum would change str() in tables)
    """The three states; the value is a lower-case name, handy in tables and plots."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerTransition:
    """One change of state, at ``time`` on the breaker's clock, and why it happened."""

    time: float
    old: BreakerState
    new: BreakerState
    reason: str


BreakerListener = Callable[[BreakerTransition], None]


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    """Settings of a circuit breaker; ``build(clock)`` makes a fresh one, CLOSED.

    Args:
        failure_threshold: consecutive failures that open the circuit (>= 1).
        recovery_timeout: seconds OPEN before probing (>= 0).
        half_open_max_calls: probes allowed in flight at once while HALF_OPEN (>= 1).
        success_threshold: probe successes needed to close again (>= 1).
        mode: ``"consecutive"`` or ``"failure_rate"``.
        window_size: calls in the sliding window (failure-rate mode, >= 1).
        failure_rate_threshold: fraction of failures in the window that opens (0 < x <= 1):
            the circuit opens when ``failures / calls >= failure_rate_threshold``, exactly, with
            the threshold read as the decimal that was typed.
        minimum_calls: calls needed in the window before the rate counts (1..window_size).
    """

    failure_threshold: int = 5
    recovery_timeout: float = 60.0
    half_open_max_calls: int = 1
    success_threshold: int = 1
    mode: BreakerMode = "consecutive"
    window_size: int = 20
    failure_rate_threshold: float = 0.5
    minimum_calls: int = 10

    def __post_init__(self) -> None:
        check_int("failure_threshold", self.failure_threshold, low=1)
        timeout = check_real("recovery_timeout", self.recovery_timeout, low=0)
        object.__setattr__(self, "recovery_timeout", timeout)
        check_int("half_open_max_calls", self.half_open_max_calls, low=1)
        check_int("success_threshold", self.success_threshold, low=1)
        check_choice("mode", self.mode, get_args(BreakerMode))
        window = check_int("window_size", self.window_size, low=1)
        rate = check_real("failure_rate_threshold", self.failure_rate_threshold, low=0,
                          low_open=True, high=1)
        object.__setattr__(self, "failure_rate_threshold", rate)
        check_int("minimum_calls", self.minimum_calls, low=1, high=window)

    def build(self, clock: Clock) -> CircuitBreaker:
        """A new breaker with these settings, CLOSED, reading time from ``clock``."""
        return CircuitBreaker.from_config(self, clock=clock)


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN


class CircuitBreaker:
    """A circuit breaker driven by an injected clock.

    Use::

        if breaker.allow():
            gen = breaker.generation
            ok = call()
            breaker.record_success(gen) if ok else breaker.record_failure(gen)
        else:
            fail fast

    Every call that ``allow()`` admitted must report exactly one outcome, or be ``release``d
    if it was cancelled without one. Passing the
    ``generation`` read just after ``allow()`` is optional but exact: an outcome from an earlier
    generation (a call admitted before the breaker last changed state) is ignored, so a slow
    answer sent before the circuit opened is never mistaken for a probe's. Without it, an outcome
    counts against the current state. (The same idea as sony/gobreaker's generations.)

    The OPEN -> HALF_OPEN change happens when the breaker is next asked (``allow()``, ``state``),
    and is reported with the time the recovery timeout actually ran out.

    Not thread-safe: one event loop or one simulation owns it.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        mode: BreakerMode = "consecutive",
        window_size: int = 20,
        failure_rate_threshold: float = 0.5,
        minimum_calls: int = 10,
    ) -> None:
        if not callable(clock):
            raise ValueError(f"clock must be a callable returning the time, got {clock!r}")
        self.config = BreakerConfig(
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            half_open_max_calls=half_open_max_calls,
            success_threshold=success_threshold,
            mode=mode,
            window_size=window_size,
            failure_rate_threshold=failure_rate_threshold,
            minimum_calls=minimum_calls,
        )
        self._clock = clock
        self._listeners: list[BreakerListener] = []
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._window: deque[bool] = deque(maxlen=self.config.window_size)
        self._window_failures = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        # the threshold as a ratio of integers, once: failures/n >= num/den iff
        # failures * den >= num * n, exact however large the window
        rate = decimal_fraction(self.config.failure_rate_threshold)
        self._rate_num, self._rate_den = rate.numerator, rate.denominator
        self._rate_mode = self.config.mode == "failure_rate"

    @classmethod
    def from_config(cls, config: BreakerConfig, *, clock: Clock) -> CircuitBreaker:
        """A new breaker with the settings of ``config``."""
        c = config
        return cls(
            clock=clock,
            failure_threshold=c.failure_threshold,
            recovery_timeout=c.recovery_timeout,
            half_open_max_calls=c.half_open_max_calls,
            success_threshold=c.success_threshold,
            mode=c.mode,
            window_size=c.window_size,
            failure_rate_threshold=c.failure_rate_threshold,
            minimum_calls=c.minimum_calls,
        )

    # -- observing -----------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (moves OPEN -> HALF_OPEN if the recovery timeout has run out)."""
        self._refresh()
        return self._state

    @property
    def generation(self) -> int:
        """A number that changes with every state change (see the class docstring)."""
        if self._state is _OPEN:  # only an open circuit can change by itself (_refresh)
            self._refresh()
        return self._generation

    @property
    def probes_in_flight(self) -> int:
        """Probe calls admitted in HALF_OPEN that have not reported yet."""
        return self._probes_in_flight

    @property
    def failure_rate(self) -> float:
        """Failure rate over the sliding window (failure-rate mode; 0 when empty)."""
        return self._window_failures / len(self._window) if self._window else 0.0

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener(transition)`` on every change of state."""
        self._listeners.append(listener)

    # -- deciding ------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go through now? In HALF_OPEN, admitting a call makes it a probe."""
        if self._state is _CLOSED:  # the common case; _refresh changes only an OPEN state
            return True
        self._refresh()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        if self._probes_in_flight < self.config.half_open_max_calls:
            self._probes_in_flight += 1
            return True
        return False

    def record_success(self, generation: int | None = None) -> None:
        """An admitted call succeeded."""
        state = self._state
        if state is _OPEN:
            self._refresh()
            state = self._state
        if generation is not None and generation != self._generation:
            return  # from before the last change of state: it says nothing now
        if state is _CLOSED:
            self._consecutive_failures = 0
            if self._rate_mode:
                self._push(False)
                self._check_failure_rate()
        elif state is BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.config.success_threshold:
                self._transition(BreakerState.CLOSED, self._clock(), "probes succeeded")
        # OPEN: a late answer to a call admitted before the circuit opened says nothing new.

    def record_failure(self, generation: int | None = None) -> None:
        """An admitted call failed (an error or a timeout)."""
        state = self._state
        if state is _OPEN:
            self._refresh()
            state = self._state
        if generation is not None and generation != self._generation:
            return
        if state is _CLOSED:
            c = self.config
            if not self._rate_mode:
                self._consecutive_failures += 1
                if self._consecutive_failures >= c.failure_threshold:
                    self._open(f"{self._consecutive_failures} consecutive failures")
            else:
                self._push(True)
                self._check_failure_rate()
        elif state is BreakerState.HALF_OPEN:
            self._open("probe failed")

    def release(self, generation: int | None = None) -> None:
        """An admitted call was cancelled before it had an outcome (a hedged call's losing
        copy): it counts as neither a success nor a failure, and a half-open probe's slot is
        given back (Resilience4j's ``releasePermission``)."""
        if not self._current(generation):
            return
        if self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)

    # -- internals -----------------------------------------------------------------------

    def _current(self, generation: int | None) -> bool:
        self._refresh()
        return generation is None or generation == self._generation

    def _push(self, failed: bool) -> None:
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._window_failures -= 1
        window.append(failed)
        self._window_failures += failed

    def _check_failure_rate(self) -> None:
        # Checked after every call, successes included, as Resilience4j does: the call that
        # completes ``minimum_calls`` may be a success and still leave the rate too high.
        # Exact: failures / n >= threshold, as integers (see the module docstring).
        n = len(self._window)
        if n >= self.config.minimum_calls and (
            self._window_failures * self._rate_den >= self._rate_num * n
        ):
            self._open(f"failure rate {self._window_failures}/{n}")

    def _refresh(self) -> None:
        if self._state is BreakerState.OPEN:
            ready_at = self._opened_at + self.config.recovery_timeout
            if self._clock() >= ready_at:
                self._transition(BreakerState.HALF_OPEN, ready_at, "recovery timeout elapsed")

    def _open(self, reason: str) -> None:
        now = self._clock()
        self._opened_at = now
        self._transition(BreakerState.OPEN, now, reason)

    def _transition(self, new: BreakerState, time: float, reason: str) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._consecutive_failures = 0
        self._window.clear()
        self._window_failures = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        if self._listeners:
            change = BreakerTransition(time=time, old=old, new=new, reason=reason)
            for listener in self._listeners:
                listener(change)

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self._state.value}, {self.config!r})"
