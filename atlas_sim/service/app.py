"""``create_app``: one instance of the Atlas API service, its state (``state.ServiceState``)
wired to the card's middleware stack and the routes (``routes.ROUTES``).

The parts, one concern each: ``state`` (``ServiceState``, ``app.state.atlas``), ``routes``
(the route handlers and their table), ``bodies`` (reading and parsing request bodies),
``fields`` (admin bodies' field tables), ``faults`` (``/admin/faults``'s fields, read and
set), ``inputs`` (``X-Atlas-Input``). Their public names are importable from here too.

State-changing requests (``/admin/...`` and ``POST /api/orders``) take ``application/json``
(or no body at all) and are refused when they come from a web page (``Origin``); every request
must name a loopback ``Host`` (``LoopbackGuardMiddleware``).

Everything stateful (work slots, dependency, policies, metrics, the store) belongs to one app
and is used only from the event loop that serves it. The store is opened by the app's ASGI
lifespan on that loop and closed there when the server stops (``LiveServer`` runs the lifespan);
an app used without a lifespan (an ASGI transport) opens it on first use
(``ServiceState.open_store``): with ``server.store=None`` that is a store in the app's memory,
which holds nothing to close.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..config import Settings
from ..server_config import ServerConfig
from ..validation import check_int, refuse_renamed
from .bodies import MAX_JSON_DEPTH, MAX_NUMBER_CHARS, InvalidBody, parse_json_body
from .dependency import FaultyDependency
from .errors import error_body, install_error_handlers
from .eventlog import RECEIPTS, EventConsumers, order_receipts
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
from .request_id import RequestIDMiddleware, current_request_id
from .resilience import ResilientCaller
from .routes import ROUTES as ROUTES
from .routes.base import ServiceTime as ServiceTime
from .routes.fanout import FANOUT_FIELDS as FANOUT_FIELDS
from .state import FanoutCounts as FanoutCounts
from .state import ServiceState, instance_streams
from .state import fanout_client as fanout_client
from .store import PoolRefused, PoolTimeout
from .timelines import FANOUT, fanout_handler, start_fanout
from .work import WorkStation

__all__ = ["INPUT_HEADER", "MAX_JSON_DEPTH", "MAX_NUMBER_CHARS", "RENAMED", "BadInput",
           "InvalidBody", "ServiceState", "create_app", "parse_input", "parse_json_body",
           "pool_unavailable"]

#: Old ``create_app`` parameters and what to write instead (``validation.refuse_renamed``).
RENAMED = {
    "servers": "server=ServerConfig(workers=...) (the c of M/M/c)",
    "service_time": "server=ServerConfig(service_time=...)",
    "dependency_latency": "server=ServerConfig(dependency=Dependency(latency=...))",
    "retry_after": "server=ServerConfig(retry_after=...)",
}


def create_app(
    settings: Settings | None = None,
    *,
    server: ServerConfig | None = None,
    seed: int = 0,
    instance: int = 0,
    max_body_bytes: int = 64 * 1024,
    allowed_hosts: Iterable[str] | None = None,
    title: str = "Atlas API",
    store_url: str | None = None,
    **renamed: object,
) -> FastAPI:
    """Build one instance of the Atlas service from a ``ServerConfig``.

    Args:
        settings: the service's settings: its dependency client's timeouts, retry, breaker and
            budget, ``/api/fanout``'s, and the defaults of ``settings.server_config()``
            (default: from the environment, ``Settings()``).
        server: what the instance is (``ServerConfig``): ``workers`` work slots for
            ``/api/work`` and ``/api/orders`` with its ``queue`` discipline in front, their
            ``service_time``, the ``admission`` limit (429 with ``retry_after`` seconds in
            ``Retry-After``; None: no shedding), the server ``timeout`` (504; None: none), and
            the ``dependency`` that ``/api/compose`` and ``/api/fanout`` call (its ``latency``
            and its ``client`` policy, which must have a budget and a breaker; None:
            ``settings.server_config()``'s). The same object a
            simulated ``Scenario(server=...)`` takes; it is kept as ``app.state.atlas.server``.
            Default None: ``settings.server_config()`` (2 workers, 20 ms service time,
            ``HTTP_TIMEOUT``, ``LOAD_SHEDDING_MAX_CONCURRENT``, a 5 ms dependency).
            ``drop_expired`` and ``dependency.share`` are the simulator's only (live, the route
            chooses: ``/api/work`` never calls the dependency, ``/api/compose`` always does).
        seed: the seed of every random stream, an integer >= 0.
        instance: this instance's index in a cluster (0..1000): its random streams are
            ``rng_streams(seed, instance=instance)`` (instance 0: ``rng_streams(seed)``).
        max_body_bytes: largest request body a route reads (``/admin/...``, ``/api/orders``;
            1..16 MiB); beyond: 413.
        allowed_hosts: host names accepted in the ``Host`` header (default None: loopback
            names only); name the machine's own here if it is served beyond loopback.
        title: the OpenAPI title.
        store_url: where a ``StoreConfig(url=None)`` keeps its SQLite file, a
            ``"sqlite:///<absolute path>"`` (``Cluster`` gives its instances one temporary
            file to share); None: a temporary directory of the app's own, made when the store
            opens and removed when it closes. Ignored when ``server.store`` is None or names
            its own url (``server`` stays the very object given).

    Raises ``ValueError`` naming the parameter: a renamed one (``servers``, ``service_time``,
    ``dependency_latency``, ``retry_after``) says what to write instead; a ``server`` that is
    not a ``ServerConfig``, or whose dependency has an ``error_rate`` (live, a failing
    dependency is a fault: ``Fault(dependency_error_rate=...)``); out-of-range numbers.
    """
    if renamed:
        refuse_renamed("create_app", renamed, RENAMED)
    settings = Settings() if settings is None else settings
    if not isinstance(settings, Settings):
        raise ValueError(f"settings must be an atlas_sim.Settings, got {settings!r}")
    server = settings.server_config() if server is None else server
    if not isinstance(server, ServerConfig):
        raise ValueError(f"server must be an atlas_sim.ServerConfig, got {server!r}")
    dependency_config = server.dependency
    if dependency_config is None:  # the routes that call one still have one: the default
        dependency_config = settings.server_config().dependency
        assert dependency_config is not None
    if dependency_config.error_rate:
        raise ValueError("server.dependency.error_rate must be 0 live, got "
                         f"{dependency_config.error_rate!r}: play "
                         "Fault(dependency_error_rate=...) instead")
    seed = check_int("seed", seed, low=0)
    instance = check_int("instance", instance, low=0, high=1000)
    max_body_bytes = check_int("max_body_bytes", max_body_bytes, low=1, high=16 * 2**20)
    allowed_hosts = check_allowed_hosts(allowed_hosts)
    if store_url is not None and (not isinstance(store_url, str)
                                  or not store_url.startswith("sqlite:///")):
        raise ValueError(f"store_url must be None or a 'sqlite:///<absolute path>' URL, "
                         f"got {store_url!r}")

    streams = instance_streams(seed, instance)
    dependency = FaultyDependency(latency=dependency_config.latency, rng=streams["dependency"])
    limiter = server.admission.build() if server.admission is not None else None
    state = ServiceState(
        settings=settings,
        server=server,
        seed=seed,
        instance=instance,
        metrics=ServiceMetrics(),
        limiter=limiter,
        work=WorkStation(workers=server.workers, service_time=server.service_time,
                         rng=streams["service"], queue=server.queue),
        dependency=dependency,
        caller=ResilientCaller(dependency, policy=dependency_config.client,
                               rng=streams["server"]),
        fanout=ResilientCaller(dependency, policy=fanout_client(settings),
                               rng=streams["fanout"]),
        max_body_bytes=max_body_bytes,
        store_url=store_url,
    )
    state.metrics.watch(state)

    app = FastAPI(title=title, lifespan=_lifespan, **native_telemetry())
    app.state.atlas = state
    install_error_handlers(app)
    app.add_exception_handler(PoolTimeout, pool_unavailable)
    app.add_exception_handler(PoolRefused, pool_unavailable)
    # add_middleware puts each layer outside the ones added before: add innermost first.
    if limiter is not None:
        app.add_middleware(LoadSheddingMiddleware, limiter=limiter,
                           retry_after=server.retry_after)
    app.add_middleware(ErrorHandlingMiddleware)
    app.add_middleware(LoopbackGuardMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, router=app.router)
    app.add_middleware(TimeoutMiddleware, timeout=server.timeout)
    app.add_middleware(RequestIDMiddleware)
    own = list(app.router.routes)  # FastAPI's: /openapi.json, /docs, /redoc
    for path, methods, endpoint, options in ROUTES:
        app.add_api_route(path, endpoint, methods=methods, **options)
    # Ours first: the router tries routes in order, and /health, /metrics and /api/work come
    # before FastAPI's own pages (no path of ours matches one of theirs, so no answer changes).
    app.router.routes[:] = [r for r in app.router.routes if r not in own] + own
    return app


#: FastAPI's native OpenTelemetry hook, switched off (``native_telemetry``).
TELEMETRY_OFF: dict[str, Any] = {"tracing": False, "metrics": False, "logs": False}
_HAS_TELEMETRY = "telemetry" in inspect.signature(FastAPI.__init__).parameters  # >= 0.165


def native_telemetry() -> dict[str, Any]:
    """The ``FastAPI(...)`` keywords for a new app's native OpenTelemetry hook: none (FastAPI's
    default) when OpenTelemetry is set up in this process when the app is built (a global
    tracer, meter or logger provider, or ``FASTAPI_OTEL_AUTO_CONFIGURE=true``) or when this
    FastAPI has no such hook; else ``telemetry=TELEMETRY_OFF``.

    Why: with the default, FastAPI asks OpenTelemetry for its three global providers on every
    request to learn that none is configured (measured: about 8 us of a ``/health`` answer's
    70 in process; a bare FastAPI app pays it too). Atlas's own observability is Prometheus
    (``metrics``), request IDs and JSON log lines; an OpenTelemetry set up before
    ``create_app`` still gets FastAPI's spans, one set up after it does not.
    """
    if not _HAS_TELEMETRY or os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    try:
        from opentelemetry import _logs, metrics, trace
    except ImportError:
        return {}
    proxies = {"ProxyTracerProvider", "_ProxyMeterProvider", "ProxyLoggerProvider"}
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(),
                 _logs.get_logger_provider())
    if all(type(p).__name__ in proxies for p in providers):
        return {"telemetry": TELEMETRY_OFF}
    return {}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store, the cache and the event consumers on the loop that serves the app; close
    them there when serving ends."""
    state: ServiceState = app.state.atlas
    state.startup_error = None
    try:
        await state.open_store()
    except BaseException as exc:  # LiveServer's start() names it
        state.startup_error = exc
        raise
    if state.server.cache is not None:  # redis-py is imported only for a cache: ~7 MiB of
        # every notebook kernel that runs a service without one (issue 23)
        from .cache import open_cache

        state.cache = await open_cache(state.server.cache)  # None: Redis not reached (logged)
    if state.server.events is not None:
        handlers = {RECEIPTS: order_receipts(state)}
        if state.server.timelines is not None and state.timelines.fans_out:
            handlers[FANOUT] = fanout_handler(state)  # the home timelines' fan-out on write
        state.events = EventConsumers(state.store, state.server.events, handlers)
        state.events.start()
    if state.server.timelines is not None:
        start_fanout(state)  # consumers of the timelines' own when the app's don't fan out
    state.serving = True
    try:
        yield
    finally:
        state.serving = False
        own = state.timelines.own_consumers
        if own is not None:
            await own.stop()  # before the store closes
            state.timelines.own_consumers = None
        if state.events is not None:
            await state.events.stop()  # before the store closes
            state.events = None
        if state.cache is not None:
            await state.cache.close()
            state.cache = None
        await state.close_store()


async def pool_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 for a database call that got no pooled connection: ``PoolTimeout`` (none within the
    pool's timeout, the card's ``DATABASE_TIMEOUT``) or ``PoolRefused`` (``max_waiting``
    clients already wait), with ``Retry-After: server.retry_after`` and the pool's ``size``,
    ``timeout``, ``max_waiting`` and ``waiting`` count in the body. Nothing was applied: a 503
    is retryable (psycopg_pool raises ``PoolTimeout`` / ``TooManyRequests`` here)."""
    state: ServiceState = request.app.state.atlas
    config = state.store.pool.policy.config
    waiting = state.store.pool.policy.waiting
    if isinstance(exc, PoolTimeout):
        why = (f"no database connection within {exc.timeout:g} s (waited {exc.waited:.3f} s; "
               f"a pool of {config.size}, {waiting} clients waiting)")
    else:
        assert isinstance(exc, PoolRefused)
        why = (f"no database connection: {exc.waiting} clients already wait for the pool's "
               f"{config.size} connections (max_waiting {config.max_waiting})")
    wait = state.server.retry_after
    return JSONResponse(
        error_body(f"{why}; retry after {wait} s", current_request_id(),
                   pool={"size": config.size, "timeout": config.timeout,
                         "max_waiting": config.max_waiting, "waiting": waiting},
                   retry_after=wait),
        status_code=503, headers={"Retry-After": str(wait)})
