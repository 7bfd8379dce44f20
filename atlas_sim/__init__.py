"""Atlas: reliability, scalability and maintainability (DDIA chapter 1), by experiment.

One implementation of each reliability policy (``atlas_sim.policies``) drives both a SimPy
simulation (``atlas_sim.sim``) and a live FastAPI service (``atlas_sim.service``), which take the
same ``ClientPolicy`` for the client and the same ``ServerConfig`` for the server; both return
the same ``RunResult`` tables, which ``atlas_sim.analysis`` summarises and plots.

The heavier layers are imported on first use, so ``import atlas_sim`` stays quick and the pure
policy core never drags in a web server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .policies import (
    JITTER_STRATEGIES,
    Backoff,
    BreakerConfig,
    BreakerState,
    BreakerTransition,
    BudgetConfig,
    CircuitBreaker,
    ClientPolicy,
    ConcurrencyLimiter,
    FixedLimit,
    HedgePolicy,
    RetryBudget,
    RetryPolicy,
    Status,
)
from .server_config import (
    CacheConfig,
    Dependency,
    EventLogConfig,
    ServerConfig,
    StoreConfig,
    TimelineConfig,
)
from .workload import Fault, Load

if TYPE_CHECKING:
    from .config import Settings as Settings
    from .results import RunResult as RunResult

__version__ = "0.1.0"

# Names served lazily from the heavier layers (pydantic, pandas): name -> module that defines
# it. ``import atlas_sim.policies`` then loads numpy and the standard library only.
_LAZY: dict[str, str] = {"RunResult": ".results", "Settings": ".config"}

__all__ = [
    "JITTER_STRATEGIES",
    "Backoff",
    "BreakerConfig",
    "BreakerState",
    "BreakerTransition",
    "BudgetConfig",
    "CacheConfig",
    "CircuitBreaker",
    "ClientPolicy",
    "ConcurrencyLimiter",
    "Dependency",
    "EventLogConfig",
    "Fault",
    "FixedLimit",
    "HedgePolicy",
    "Load",
    "RetryBudget",
    "RetryPolicy",
    "ServerConfig",
    "StoreConfig",
    "TimelineConfig",
    "Status",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atlas_sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
