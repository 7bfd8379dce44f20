"""Retries: when to try again (``RetryPolicy``) and when to stop trying for everybody's sake
(``RetryBudget``).

A retry turns a transient fault into a success, but every retry is extra load. When a server is
down because it is overloaded, retries make it worse: with three attempts per call, a failing
system receives up to three times its normal load. The budget caps that amplification.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..validation import check_int, check_real
from .backoff import Backoff
from .status import DEFAULT_RETRYABLE

__all__ = ["BudgetConfig", "RetryBudget", "RetryPolicy"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Whether to retry a failed attempt, and how long to wait first. Settings only: the one
    rule that applies them, with the budget and the breaker, is ``GuardedCall`` (``call.py``).

    Args:
        max_attempts: attempts in all, the first call included (>= 1; 1 means never retry).
            This is how gRPC (``maxAttempts``), Resilience4j (``maxAttempts``) and tenacity
            (``stop_after_attempt``) count. Polly counts differently: its ``MaxRetryAttempts``
            excludes the first call, so Polly's 3 is ``max_attempts=4`` here.
        backoff: the waits between attempts.
        retry_on: the outcome codes worth retrying (see ``Status``). The default retries 429,
            5xx server faults, timeouts and broken connections, and never other 4xx: a request
            the server found wrong stays wrong however often it is sent.
        honor_retry_after: if true, a server's ``Retry-After`` (on a 429 or 503) is a floor on
            the wait before the retry: ``max(backoff, retry_after)`` (RFC 9110, section
            10.2.3; gRPC's server pushback). Off by default, so that simulated and live
            clients wait alike.
    """

    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    retry_on: frozenset[int] = DEFAULT_RETRYABLE
    honor_retry_after: bool = False

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts, low=1, high=100)
        if not isinstance(self.backoff, Backoff):
            raise ValueError(f"backoff must be a Backoff, got {self.backoff!r}")
        codes = self.retry_on
        if isinstance(codes, (str, bytes)) or not isinstance(codes, Iterable):
            raise ValueError(f"retry_on must be a set of status codes, got {codes!r}")
        codes = frozenset(check_int("retry_on", c, low=100, high=599) for c in codes)
        object.__setattr__(self, "retry_on", codes)
        if not isinstance(self.honor_retry_after, bool):
            raise ValueError(f"honor_retry_after must be True or False, "
                             f"got {self.honor_retry_after!r}")

    def delays(self, rng: np.random.Generator | None = None) -> Iterator[float]:
        """The waits before the second, third, ... attempt (see ``Backoff.delays``)."""
        return self.backoff.delays(rng)


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    """Settings of a retry budget (gRPC retry throttling); ``build()`` makes a fresh budget.

    As in gRPC, ``token_ratio`` is kept to three decimals (0.001 <= token_ratio <= max_tokens)
    and ``max_tokens`` is at most 1000.
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        max_tokens = check_real("max_tokens", self.max_tokens, low=0.001, high=1000)
        ratio = check_real("token_ratio", self.token_ratio, low=0.001, high=max_tokens)
        object.__setattr__(self, "max_tokens", max_tokens)
        object.__setattr__(self, "token_ratio", ratio)

    def build(self) -> RetryBudget:
        """A new budget with full tokens."""
        return RetryBudget(max_tokens=self.max_tokens, token_ratio=self.token_ratio)


class RetryBudget:
    """gRPC-style retry throttling: retries are allowed only while recent calls mostly succeed.

    Tokens start at ``max_tokens``. Each failed attempt costs one token, each success earns
    ``token_ratio`` back (never above ``max_tokens``). Retries are allowed only while
    ``tokens > max_tokens / 2``, strictly: at exactly half, retries stop. This is gRPC's rule
    (gRFC A6, "gRPC Retry Design", retry throttling: "If token_count is less than or equal to
    maxTokens / 2, then RPCs will not be retried"). First attempts are never throttled: the
    budget limits the *extra* load that retries add. Every attempt, first or not, moves the
    tokens by ``token_ratio`` on success and -1 on failure, so when failures outweigh
    ``token_ratio`` times the successes (a failure rate above ``r / (1 + r)``, as in a sustained
    outage) the tokens sink below half and stay there: retries stop altogether, instead of
    multiplying the load, until successes refill the tokens. Below that rate the tokens stay
    up and every retry is allowed (``analysis.retries.retry_theory`` gives both regimes).

    Tokens are counted in integer thousandths, as gRPC does (both settings have at most three
    decimals), and the threshold is compared in integers, ``2 * milli_tokens > max_milli``: many
    small refunds add up exactly and the half-way point is never missed by a rounding error.

    Not thread-safe: one event loop or one simulation owns it.
    """

    __slots__ = ("_max", "_milli", "_ratio", "config")

    def __init__(self, *, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        self.config = BudgetConfig(max_tokens=max_tokens, token_ratio=token_ratio)
        self._max = round(self.config.max_tokens * 1000)
        self._ratio = round(self.config.token_ratio * 1000)
        self._milli = self._max

    @property
    def tokens(self) -> float:
        """Tokens left, between 0 and ``max_tokens``."""
        return self._milli / 1000

    def record_success(self) -> None:
        """An attempt succeeded: earn ``token_ratio`` tokens back."""
        milli = self._milli + self._ratio  # min(max, milli), without the builtin's call
        self._milli = milli if milli < self._max else self._max

    def record_failure(self) -> None:
        """An attempt failed: spend one token (never below zero)."""
        self._milli = max(0, self._milli - 1000)

    def can_retry(self) -> bool:
        """True while more than half the tokens are left (exactly half is not enough)."""
        return 2 * self._milli > self._max

    def __repr__(self) -> str:
        c = self.config
        return (
            f"RetryBudget(max_tokens={c.max_tokens:g}, token_ratio={c.token_ratio:g}, "
            f"tokens={self.tokens:g})"
        )
