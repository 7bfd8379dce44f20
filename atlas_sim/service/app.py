"""``create_app``: one instance of the Atlas API service, its state (``state.ServiceState``)
wired to the card's middleware stack and the routes (``routes.ROUTES``).

The parts, one concern each: ``state`` (``ServiceState``, ``app.state.atlas``), ``routes``
(the route handlers and their table), ``bodies`` (reading and parsing request bodies),
``fields`` (admin bodies' field tables), ``faults`` (``/admin/faults``'s fields, read and
set), ``inputs`` (``X-Atlas-Input``). Their public names are importable from here too.

State-changing requests (``/admin/...`` and ``POST /api/orders``) take ``application/json``
(or no body at all) and are refused when they come from a web page (``Origin``); every request
must name a loopback ``Host`` (``LoopbackGuardMiddleware``).

Everything stateful (work slots, dependency, policies, metrics, idempotency keys) belongs to one
app and is used only from the event loop that serves it.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI

from ..config import Settings
from ..validation import check_int
from ..workload import Distribution, rng_streams
from .bodies import MAX_JSON_DEPTH, MAX_NUMBER_CHARS, InvalidBody, parse_json_body
from .dependency import FaultyDependency
from .errors import install_error_handlers
from .faults import FAULT_FIELDS as FAULT_FIELDS
from .fields import parse_admin_update as parse_admin_update
from .inputs import INPUT_HEADER, BadInput, parse_input
from .metrics import MetricsMiddleware, ServiceMetrics
from .middleware import (
    ErrorHandlingMiddleware,
    LoadSheddingMiddleware,
    LoopbackGuardMiddleware,
    TimeoutMiddleware,
    check_allowed_hosts,
)
from .request_id import RequestIDMiddleware
from .resilience import ResilientCaller
from .routes import ROUTES as ROUTES
from .routes.base import ServiceTime as ServiceTime
from .routes.fanout import FANOUT_FIELDS as FANOUT_FIELDS
from .state import FanoutCounts as FanoutCounts
from .state import ServiceState
from .state import fanout_client as fanout_client
from .work import WorkStation

__all__ = ["INPUT_HEADER", "MAX_JSON_DEPTH", "MAX_NUMBER_CHARS", "BadInput", "InvalidBody",
           "ServiceState", "create_app", "parse_input", "parse_json_body"]

DEFAULT_SERVICE_TIME = Distribution(mean=0.02)
DEFAULT_DEPENDENCY_LATENCY = Distribution(mean=0.005)


def _check_distribution(name: str, value: object) -> Distribution:
    if not isinstance(value, Distribution):
        raise ValueError(f"{name} must be an atlas_sim.workload.Distribution, got {value!r}")
    return value


def create_app(
    settings: Settings | None = None,
    *,
    servers: int = 2,
    service_time: Distribution = DEFAULT_SERVICE_TIME,
    dependency_latency: Distribution = DEFAULT_DEPENDENCY_LATENCY,
    seed: int = 0,
    max_body_bytes: int = 64 * 1024,
    retry_after: int = 1,
    allowed_hosts: Iterable[str] | None = None,
    title: str = "Atlas API",
) -> FastAPI:
    """Build the Atlas service.

    Args:
        settings: timeouts, retry, breaker, budget and shedding limits (default: from the
            environment, ``Settings()``).
        servers: concurrent work slots for ``/api/work`` (1..10000); the c of M/M/c.
        service_time: how long one ``/api/work`` request works, at capacity 1.
        dependency_latency: how long one dependency call takes without faults.
        seed: the seed of every random stream (``rng_streams(seed)``), an integer >= 0.
        max_body_bytes: largest request body a route reads (``/admin/...``, ``/api/orders``;
            1..16 MiB); beyond: 413.
        retry_after: seconds in the ``Retry-After`` header of a 429 (0..3600).
        allowed_hosts: host names accepted in the ``Host`` header (default None: loopback
            names only); name the machine's own here if it is served beyond loopback.
    """
    settings = Settings() if settings is None else settings
    if not isinstance(settings, Settings):
        raise ValueError(f"settings must be an atlas_sim.Settings, got {settings!r}")
    servers = check_int("servers", servers, low=1, high=10_000)
    service_time = _check_distribution("service_time", service_time)
    dependency_latency = _check_distribution("dependency_latency", dependency_latency)
    seed = check_int("seed", seed, low=0)
    max_body_bytes = check_int("max_body_bytes", max_body_bytes, low=1, high=16 * 2**20)
    retry_after = check_int("retry_after", retry_after, low=0, high=3600)
    allowed_hosts = check_allowed_hosts(allowed_hosts)

    streams = rng_streams(seed)
    dependency = FaultyDependency(latency=dependency_latency, rng=streams["dependency"])
    state = ServiceState(
        settings=settings,
        seed=seed,
        metrics=ServiceMetrics(),
        limiter=settings.limiter(),
        work=WorkStation(servers=servers, service_time=service_time, rng=streams["service"]),
        dependency=dependency,
        caller=ResilientCaller(dependency, policy=settings.dependency_client(),
                               rng=streams["server"]),
        fanout=ResilientCaller(dependency, policy=fanout_client(settings),
                               rng=rng_streams(seed)["server"]),
        max_body_bytes=max_body_bytes,
    )

    app = FastAPI(title=title)
    app.state.atlas = state
    install_error_handlers(app)
    # add_middleware puts each layer outside the ones added before: add innermost first.
    app.add_middleware(LoadSheddingMiddleware, limiter=state.limiter, retry_after=retry_after)
    app.add_middleware(ErrorHandlingMiddleware)
    app.add_middleware(LoopbackGuardMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, router=app.router)
    app.add_middleware(TimeoutMiddleware, timeout=settings.http_timeout)
    app.add_middleware(RequestIDMiddleware)
    for path, methods, endpoint, options in ROUTES:
        app.add_api_route(path, endpoint, methods=methods, **options)
    return app
