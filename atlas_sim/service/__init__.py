"""The live Atlas service: a FastAPI app with the card's middleware stack, served from a
background thread of the notebook's own process, and a load generator (open loop, or closed
loop when asked) that returns the same ``RunResult`` tables as the simulation.

>>> from atlas_sim.service import LiveServer, create_app, run_load
>>> with LiveServer(create_app()) as server:                      # doctest: +SKIP
...     result = run_load(server.url, load=Load(rate=100, duration=5))  # atlas_sim.Load
"""

from __future__ import annotations

from .app import ServiceState, create_app
from .cluster import Cluster
from .dependency import Faults, FaultyDependency
from .errors import error_body
from .loadgen import parse_retry_after, parse_server_timing, run_load, run_load_async
from .metrics import BUCKETS, UNMATCHED, MetricsMiddleware, ServiceMetrics
from .middleware import (
    SHEDDING_EXEMPT,
    ErrorHandlingMiddleware,
    LoadSheddingMiddleware,
    LoopbackGuardMiddleware,
    TimeoutMiddleware,
)
from .programs import (
    PostgresServer,
    ProgramFailed,
    ProgramMissing,
    RedisServer,
    ServiceProcess,
    check_metrics,
    find_program,
    running_programs,
    stop_programs,
)
from .request_id import REQUEST_ID_HEADER, RequestIDMiddleware, current_request_id
from .server import LiveServer, leftovers, running_servers, stop_all

__all__ = [
    "BUCKETS",
    "REQUEST_ID_HEADER",
    "SHEDDING_EXEMPT",
    "UNMATCHED",
    "Cluster",
    "ErrorHandlingMiddleware",
    "Faults",
    "FaultyDependency",
    "LiveServer",
    "LoadSheddingMiddleware",
    "LoopbackGuardMiddleware",
    "MetricsMiddleware",
    "PostgresServer",
    "ProgramFailed",
    "ProgramMissing",
    "RedisServer",
    "RequestIDMiddleware",
    "ServiceMetrics",
    "ServiceProcess",
    "ServiceState",
    "TimeoutMiddleware",
    "check_metrics",
    "create_app",
    "current_request_id",
    "error_body",
    "find_program",
    "leftovers",
    "parse_retry_after",
    "parse_server_timing",
    "run_load",
    "run_load_async",
    "running_programs",
    "running_servers",
    "stop_all",
    "stop_programs",
]
