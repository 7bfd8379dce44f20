"""The reliability policies, each a small pure state machine.

No I/O, no sleeping, no wall clock, no global randomness: time comes from an injected clock and
randomness from an injected ``numpy.random.Generator``. The SimPy model and the live FastAPI
service drive these same objects, one on simulated time and one on real time.
"""

from __future__ import annotations

from .admission import AdmissionConfig, AdmissionLimiter, FixedLimit
from .backoff import JITTER_STRATEGIES, Backoff, Jitter
from .breaker import (
    BreakerConfig,
    BreakerListener,
    BreakerMode,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
)
from .call import (
    CallAction,
    Cancel,
    ClientPolicy,
    Done,
    Guard,
    GuardedCall,
    HedgePolicy,
    Send,
    Wait,
    counts_as_breaker_failure,
)
from .limiter import ConcurrencyLimiter
from .pool import ConnectionPool, Granted, PoolConfig, PoolDecision, Queued, Refused, TimedOut
from .queues import Fifo, FifoQueue, QueueConfig, QueueDiscipline
from .retry import BudgetConfig, RetryBudget, RetryPolicy
from .routing import NextInstance, Router, RoutingConfig
from .status import CLIENT_SIDE, DEFAULT_RETRYABLE, Status

__all__ = [
    "CLIENT_SIDE",
    "DEFAULT_RETRYABLE",
    "JITTER_STRATEGIES",
    "AdmissionConfig",
    "AdmissionLimiter",
    "Backoff",
    "BreakerConfig",
    "BreakerListener",
    "BreakerMode",
    "BreakerState",
    "BreakerTransition",
    "BudgetConfig",
    "CallAction",
    "Cancel",
    "CircuitBreaker",
    "ClientPolicy",
    "ConcurrencyLimiter",
    "ConnectionPool",
    "Done",
    "Fifo",
    "FifoQueue",
    "FixedLimit",
    "Granted",
    "Guard",
    "GuardedCall",
    "HedgePolicy",
    "Jitter",
    "NextInstance",
    "PoolConfig",
    "PoolDecision",
    "QueueConfig",
    "QueueDiscipline",
    "Queued",
    "Refused",
    "RetryBudget",
    "RetryPolicy",
    "Router",
    "RoutingConfig",
    "Send",
    "Status",
    "TimedOut",
    "Wait",
    "counts_as_breaker_failure",
]
