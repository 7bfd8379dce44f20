"""RED metrics (rate, errors, duration) in Prometheus form, one registry per app.

The names, labels and buckets are the reference card's::

    atlas_api_http_requests_total{method, endpoint, status}
    atlas_api_http_errors_total{method, endpoint, status_code}
    atlas_api_http_5xx_errors_total{method, endpoint}
    atlas_api_http_4xx_errors_total{method, endpoint}
    atlas_api_http_request_duration_seconds{method, endpoint}   (histogram)

Every app gets its own ``CollectorRegistry``, so two services in one Jupyter kernel never
collide on a metric name (prometheus_client's default global registry would refuse the second).

The ``endpoint`` label is the route template (``/api/work``), never the raw path: one label value
per raw path would let any client create unlimited time series (``/x1``, ``/x2``, ...). Every path
that matches no route shares the single value ``UNMATCHED``; unknown HTTP methods share
``OTHER``. The template is the route the router picked (``scope["route"]``) or, for requests that
never reached the router (shed with 429 by an inner layer), the first route that matches, found
by asking the app's routes in order, as the router would. Nothing is cached by raw path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from .middleware import DEADLINE_SCOPE_KEY
from .tracking import response_status, tracking_send

__all__ = ["BUCKETS", "METHODS", "OTHER", "UNMATCHED", "MetricsMiddleware", "ServiceMetrics"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                     "CONNECT"})
UNMATCHED = "<unmatched>"
OTHER = "OTHER"
#: Status recorded for a request whose client went away before the answer (nginx's convention).
CLIENT_CLOSED = 499


class ServiceMetrics:
    """The card's five metrics in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("atlas_api_http_requests_total", "HTTP requests answered",
                                ["method", "endpoint", "status"], registry=r)
        self.errors = Counter("atlas_api_http_errors_total", "HTTP answers with status >= 400",
                              ["method", "endpoint", "status_code"], registry=r)
        self.errors_5xx = Counter("atlas_api_http_5xx_errors_total", "HTTP 5xx answers",
                                  ["method", "endpoint"], registry=r)
        self.errors_4xx = Counter("atlas_api_http_4xx_errors_total", "HTTP 4xx answers",
                                  ["method", "endpoint"], registry=r)
        self.duration = Histogram("atlas_api_http_request_duration_seconds",
                                  "Time from request to the end of the answer",
                                  ["method", "endpoint"], buckets=BUCKETS, registry=r)
        # Label children, looked up once: the keys are bounded (methods x routes x statuses).
        self._children: dict[tuple[str, str, int], tuple[Any, ...]] = {}

    def record(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (method, endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._make_children(method, endpoint, status)
        requests, duration, errors, by_class = children
        requests.inc()
        duration.observe(seconds)
        if errors is not None:
            errors.inc()
        if by_class is not None:
            by_class.inc()

    def _make_children(self, method: str, endpoint: str, status: int) -> tuple[Any, ...]:
        errors = by_class = None
        if status >= 400:
            errors = self.errors.labels(method, endpoint, str(status))
        if 400 <= status < 500:
            by_class = self.errors_4xx.labels(method, endpoint)
        elif status >= 500:
            by_class = self.errors_5xx.labels(method, endpoint)
        return (self.requests.labels(method, endpoint, str(status)),
                self.duration.labels(method, endpoint), errors, by_class)


def route_template(route: Any) -> str | None:
    """The path template of a Starlette/FastAPI route or mount, e.g. ``/items/{item_id}``."""
    return getattr(route, "path_format", None) or getattr(route, "path", None)


def resolve_endpoint(routes: Any, scope: Scope) -> str:
    """The template of the route the router would pick for ``scope`` (``UNMATCHED`` if none).

    A full match wins; else the first partial match (a known path with another method: 405).
    """
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route_template(route) or UNMATCHED
        if match is Match.PARTIAL and partial is None:
            partial = route
    return (route_template(partial) or UNMATCHED) if partial is not None else UNMATCHED


class MetricsMiddleware:
    """Record every HTTP request in ``metrics`` (pure ASGI).

    ``router`` is the app's router (``app.router``); its routes are read at each call, so routes
    added after the app was built are labelled too. A request cancelled by the outer Timeout is
    recorded as 504 (the answer the client gets); one cancelled because its client went away,
    as 499.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, router: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        send = tracking_send(scope, send)
        cancelled_as: int | None = None
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            deadline = scope.get(DEADLINE_SCOPE_KEY)
            timed_out = deadline is not None and asyncio.get_running_loop().time() >= deadline
            cancelled_as = 504 if timed_out else CLIENT_CLOSED
            raise
        finally:
            status = response_status(scope)
            if status is None:
                # Not answered: cut off (504, or 499 if the client left), or an app that
                # returned or raised without answering, which the server turns into a 500.
                status = cancelled_as if cancelled_as is not None else 500
            self._record(scope, status, time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = route_template(route) if route is not None else None
        if endpoint is None:
            endpoint = resolve_endpoint(self.router.routes, scope)
        method = scope["method"]
        if method not in METHODS:
            method = OTHER
        self.metrics.record(method, endpoint, status, seconds)
