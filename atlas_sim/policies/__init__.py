"""The reliability policies, each a small pure state machine.

No I/O, no sleeping, no wall clock, no global randomness: time comes from an injected clock and
randomness from an injected ``numpy.random.Generator``. The SimPy model and the live FastAPI
service drive these same objects, one on simulated time and one on real time.
"""

from __future__ import annotations

from .backoff import JITTER_STRATEGIES, Backoff, Jitter
from .breaker import (
    BreakerConfig,
    BreakerListener,
    BreakerMode,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
)
from .call import ClientPolicy, Guard, GuardedCall, HedgePolicy, counts_as_breaker_failure
from .limiter import ConcurrencyLimiter
from .retry import BudgetConfig, RetryBudget, RetryPolicy
from .status import CLIENT_SIDE, DEFAULT_RETRYABLE, Status

__all__ = [
    "CLIENT_SIDE",
    "DEFAULT_RETRYABLE",
    "JITTER_STRATEGIES",
    "Backoff",
    "BreakerConfig",
    "BreakerListener",
    "BreakerMode",
    "BreakerState",
    "BreakerTransition",
    "BudgetConfig",
    "CircuitBreaker",
    "ClientPolicy",
    "ConcurrencyLimiter",
    "Guard",
    "GuardedCall",
    "HedgePolicy",
    "Jitter",
    "RetryBudget",
    "RetryPolicy",
    "Status",
    "counts_as_breaker_failure",
]
