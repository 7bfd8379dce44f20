"""RED metrics (rate, errors, duration) in Prometheus form, one registry per app.

The names, labels and buckets are the reference card's::

    atlas_api_http_requests_total{method, endpoint, status}
    atlas_api_http_errors_total{method, endpoint, status_code}
    atlas_api_http_5xx_errors_total{method, endpoint}
    atlas_api_http_4xx_errors_total{method, endpoint}
    atlas_api_http_request_duration_seconds{method, endpoint}   (histogram)

and one more, for Little's law and dashboards::

    atlas_api_http_requests_in_progress{method, endpoint}       (gauge)

The data system behind the service, read when ``/metrics`` is scraped (``DataSystemCollector``)::

    atlas_api_db_pool_connections{state="in_use"|"idle"}        (gauge)
    atlas_api_db_pool_waiting                                   (gauge: clients waiting)
    atlas_api_db_pool_wait_seconds                              (histogram: granted waiters)
    atlas_api_db_pool_timeouts_total                            (counter: PoolTimeout)
    atlas_api_db_pool_refusals_total                            (counter: PoolRefused)
    atlas_api_db_pool_replaced_total                            (counter: broken, replaced)
    atlas_api_cache_requests_total{result="hit"|"miss"|"error"} (counter; with a cache only)
    atlas_api_cache_hit_ratio                                   (gauge; NaN before a request)
    atlas_api_event_consumer_lag{group, topic}                  (gauge; with consumers only;
                                                                 left out when its query fails)
    atlas_api_event_consumer_lag_failures_total                 (counter: such failures)
    atlas_api_db_queries_total{operation}                       (counter: statements run)
    atlas_api_db_rows_total{operation, direction="read"|"written"}  (counter: rows)

The database work is the store's own count per operation (``Store.work``: "timeline_read",
"post", "fanout", "rebuild"; the home timelines' statements), so each approach's cost to the
database shows on the page.

The pool's are its policy's counts (``policies.pool.ConnectionPool``, psycopg_pool's
``get_stats()``: ``pool_available``, ``requests_waiting``, ``requests_wait_ms``,
``requests_errors``); a new pool (the store reopened) starts them again from 0, which Prometheus
reads as a counter reset.

The status counted is what the request came to, not only what it began with: the response's
status once it has been sent completely; 499 whenever the client went away before that (mid-body,
mid-response, or while its work was still running: never a 5xx, never a 200); 504 for a request
cut off by the Timeout layer; 503 for one cut off because the server is stopping; 500 for a
response that failed after it had started, or never started.

Every app gets its own ``CollectorRegistry``, so two services in one Jupyter kernel never
collide on a metric name (prometheus_client's default global registry would refuse the second).

The ``endpoint`` label is the route template (``/api/work``), never the raw path: one label value
per raw path would let any client create unlimited time series (``/x1``, ``/x2``, ...). Every path
that matches no route shares the single value ``UNMATCHED``; unknown HTTP methods share
``OTHER``. The template is the first route that matches, found
by asking the app's routes in order, as the router would. The label is fixed when the request
arrives (the in-progress gauge needs it then): the app's routes are asked in order, as the router
will. Only answers for routes without path parameters (whose template is the path itself) are
cached, by method and path, so the cache is bounded by the routes and never by what clients send.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from .middleware import DEADLINE_SCOPE_KEY, SERVER_STOPPING
from .request_id import HEAD_SCOPE_KEY
from .tracking import RESPONSE_COMPLETE, RESPONSE_STATUS, client_gone, tracking_send

__all__ = [
    "BUCKETS",
    "CLIENT_CLOSED",
    "METHODS",
    "OTHER",
    "UNMATCHED",
    "DataSystemCollector",
    "MetricsMiddleware",
    "RequestCollector",
    "ServiceMetrics",
    "final_status",
]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                     "CONNECT"})
UNMATCHED = "<unmatched>"
OTHER = "OTHER"
#: Status recorded for a request whose client went away before the answer (nginx's convention).
CLIENT_CLOSED = 499


class ServiceMetrics:
    """The card's five metrics, and the in-progress gauge, in a registry of their own.

    A request is counted in two plain cells, read when the registry is collected
    (``RequestCollector``): its count under (method, endpoint, status) and its duration in the
    histogram's buckets under (method, endpoint). The error counters are those counts with
    status >= 400, summed by status or class when collected, so an answer costs two list
    updates on the event loop instead of three or four locked updates of prometheus_client
    children (measured: about 1.5 us of the stack's 11 us). The names, labels, buckets and
    ``_created`` series are prometheus_client's own (``tests/service/test_app.py``). Only the
    serving loop's thread writes the cells (one app, one server); a scrape from another thread
    reads them (each value one int or float, read under the GIL).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        #: (method, endpoint, status) -> [count, created]
        self.counts: dict[tuple[str, str, int], list[float]] = {}
        #: (method, endpoint) -> [per-bucket counts (last: +Inf, not cumulative)..., sum,
        #: created]
        self.durations: dict[tuple[str, str], list[float]] = {}
        r.register(RequestCollector(self))
        self.in_progress = Gauge("atlas_api_http_requests_in_progress",
                                 "HTTP requests received and not yet finished",
                                 ["method", "endpoint"], registry=r)
        self._in_progress_cells: dict[tuple[str, str], list[int]] = {}
        self.data_system: DataSystemCollector | None = None

    def watch(self, state: Any) -> None:
        """Show ``state``'s pool, cache and event consumers in this registry
        (``DataSystemCollector``; ``state`` is held weakly)."""
        if self.data_system is None:
            self.data_system = DataSystemCollector(state)
            self.registry.register(self.data_system)

    async def refresh(self) -> None:
        """Before a scrape, on the serving loop: read what only a coroutine can (the event
        consumers' lag)."""
        if self.data_system is not None:
            await self.data_system.refresh()

    def in_progress_cell(self, method: str, endpoint: str) -> list[int]:
        """The count behind the gauge child for these labels: ``cell[0] += 1`` on arrival,
        ``-= 1`` when finished.

        The gauge child reads the cell when ``/metrics`` is scraped (``set_function``): a
        request costs two integer updates on the event loop instead of two locked gauge
        updates (measured: about 2 us of the stack's 13 us). Only the serving loop's thread
        writes the cells (one app, one server); a scrape from another thread reads an int.
        """
        key = (method, endpoint)
        cell = self._in_progress_cells.get(key)
        if cell is None:
            cell = self._in_progress_cells[key] = [0]
            self.in_progress.labels(method, endpoint).set_function(lambda: cell[0])
        return cell

    def cells(self, method: str, endpoint: str, status: int) -> tuple[list[float], list[float]]:
        """(count cell, duration cell) for these labels, made on first use."""
        count = self.counts.get((method, endpoint, status))
        if count is None:
            count = self.counts[(method, endpoint, status)] = [0, time.time()]
        duration = self.durations.get((method, endpoint))
        if duration is None:
            duration = self.durations[(method, endpoint)] = [0] * (len(BUCKETS) + 1) + [
                0.0, time.time()]
        return count, duration

    def record(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request (``seconds``: its duration)."""
        count = self.counts.get((method, endpoint, status))
        duration = self.durations.get((method, endpoint))
        if count is None or duration is None:
            count, duration = self.cells(method, endpoint, status)
        count[0] += 1
        duration[bisect.bisect_left(BUCKETS, seconds)] += 1  # le: seconds <= bound
        duration[-2] += seconds


class RequestCollector(Collector):
    """The card's five request metrics, from ``ServiceMetrics``' cells, in prometheus_client's
    exposition (counters with ``_total`` and ``_created``, a histogram with cumulative
    ``_bucket``, ``_count``, ``_sum`` and ``_created``)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = weakref.ref(metrics)

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics()
        counts = list(metrics.counts.items()) if metrics is not None else []
        durations = list(metrics.durations.items()) if metrics is not None else []
        requests = Metric("atlas_api_http_requests", "HTTP requests answered", "counter")
        errors = Metric("atlas_api_http_errors", "HTTP answers with status >= 400", "counter")
        by_class: dict[str, dict[tuple[str, str], list[float]]] = {"5xx": {}, "4xx": {}}
        for (method, endpoint, status), (count, created) in counts:
            labels = {"method": method, "endpoint": endpoint, "status": str(status)}
            _add_counter(requests, labels, count, created)
            if status >= 400:
                _add_counter(errors, {"method": method, "endpoint": endpoint,
                                      "status_code": str(status)}, count, created)
                group = by_class["4xx" if status < 500 else "5xx"]
                total = group.setdefault((method, endpoint), [0, created])
                total[0] += count
                total[1] = min(total[1], created)
        yield requests
        yield errors
        for name in ("5xx", "4xx"):
            family = Metric(f"atlas_api_http_{name}_errors", f"HTTP {name} answers", "counter")
            for (method, endpoint), (count, created) in by_class[name].items():
                _add_counter(family, {"method": method, "endpoint": endpoint}, count, created)
            yield family
        name = "atlas_api_http_request_duration_seconds"
        histogram = Metric(name, "Time from request to the end of the answer", "histogram")
        for (method, endpoint), cell in durations:
            cell = list(cell)
            labels = {"method": method, "endpoint": endpoint}
            cumulative = 0.0
            for bound, n in zip(_BOUNDS, cell[:-2], strict=True):
                cumulative += n
                histogram.add_sample(f"{name}_bucket", {**labels, "le": bound}, cumulative)
            histogram.add_sample(f"{name}_count", labels, cumulative)
            histogram.add_sample(f"{name}_sum", labels, cell[-2])
            if _use_created():
                histogram.add_sample(f"{name}_created", labels, cell[-1])
        yield histogram


_BOUNDS = [floatToGoString(b) for b in (*BUCKETS, math.inf)]


def _use_created() -> bool:
    """Whether prometheus_client shows ``_created`` series now: not after
    ``disable_created_metrics()`` or with ``PROMETHEUS_DISABLE_CREATED_SERIES=true``, which its
    own ``Counter`` and ``Histogram`` obey (read from the same flag, at scrape time)."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


def _add_counter(family: Metric, labels: dict[str, str], count: float, created: float) -> None:
    """One counter child: its ``_total`` and ``_created`` samples (the exposition shows the
    second as a gauge family of its own, as for prometheus_client's ``Counter``)."""
    family.add_sample(f"{family.name}_total", labels, count)
    if _use_created():
        family.add_sample(f"{family.name}_created", labels, created)


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


def final_status(scope: Scope, cancelled: bool) -> int:
    """The status a finished request is counted as (see the module docstring)."""
    if client_gone(scope):
        return CLIENT_CLOSED
    status = scope.get(RESPONSE_STATUS)
    if status is not None and scope.get(RESPONSE_COMPLETE):
        return status
    if cancelled:
        deadline = scope.get(DEADLINE_SCOPE_KEY)
        timed_out = deadline is not None and asyncio.get_running_loop().time() >= deadline
        return 504 if timed_out else SERVER_STOPPING
    return 500  # never answered, or the answer broke off after it started


class MetricsMiddleware:
    """Record every HTTP request in ``metrics`` (pure ASGI).

    ``router`` is the app's router (``app.router``); its routes are read when they change, so
    routes added after the app was built are labelled too. The in-progress gauge goes up when a
    request arrives and down when it is finished, whatever way it ends (``finally``).
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, router: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router
        # (method label, path) -> (endpoint, in-progress cell), for paths that are the template
        # of a route without parameters: bounded by the routes, never by what clients send.
        self._static: dict[tuple[str, str], tuple[str, list[int]]] = {}
        self._routes_seen = -1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if RESPONSE_STATUS not in scope:  # else an outer layer tracks the response
            send = tracking_send(scope, send, receive)
        method = scope["method"]
        if method == "GET" and HEAD_SCOPE_KEY in scope:
            method = "HEAD"
        elif method not in METHODS:
            method = OTHER
        routes = self.router.routes
        if len(routes) != self._routes_seen:  # routes added: forget what they may change
            self._static.clear()
            self._routes_seen = len(routes)
        key = (method, scope["path"])
        labels = self._static.get(key)
        if labels is None:
            endpoint = resolve_endpoint(routes, scope)
            labels = (endpoint, self.metrics.in_progress_cell(method, endpoint))
            if endpoint == key[1] and method != OTHER:
                self._static[key] = labels
        endpoint, in_progress = labels
        in_progress[0] += 1
        cancelled = False
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            try:
                self.metrics.record(method, endpoint, final_status(scope, cancelled),
                                    time.perf_counter() - start)
            finally:
                in_progress[0] -= 1  # after recording: a gauge at 0 means all are counted


#: Seconds a scrape waits for the consumers' lag (a query) before leaving it out.
LAG_TIMEOUT = 1.0


class DataSystemCollector(Collector):
    """The pool, cache and event-log metrics (module docstring), read from a ``ServiceState``
    when the registry is collected: the pool from ``state.store.pool.policy`` (none before the
    store opens: connections 0), the cache from ``state.cache`` (int attributes ``hits``,
    ``misses``, ``errors``; None: no cache metrics), the lag from the last ``refresh()``
    (``await state.events.lag()`` -> ``{(group, topic): events behind}``; None: no lag metric).

    The wait histogram is filled from ``pool.take_wait_times()`` at each collection (the waits
    since the last one), in the card's ``BUCKETS``.
    """

    def __init__(self, state: Any) -> None:
        self._state = weakref.ref(state)
        self._pool: Any = None
        self._buckets = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative; last: +Inf
        self._wait_sum = 0.0
        self._lag: dict[tuple[str, str], int] = {}
        #: Scrapes whose lag query failed or took longer than ``LAG_TIMEOUT``.
        self.lag_failures = 0

    def _consumers(self, state: Any) -> list[Any]:
        """The running event consumers: the app's (``state.events``) and the home timelines'
        own fan-out consumers (``state.timelines.own_consumers``)."""
        found = [getattr(state, "events", None)]
        found.append(getattr(getattr(state, "timelines", None), "own_consumers", None))
        return [c for c in found if c is not None]

    async def refresh(self) -> None:
        state = self._state()
        consumers = self._consumers(state)
        if not consumers:
            self._lag = {}
            return
        lags: dict[tuple[str, str], int] = {}
        for events in consumers:
            try:
                lag = await asyncio.wait_for(events.lag(), LAG_TIMEOUT)
            except (TimeoutError, Exception):
                # no number rather than an old one: a stuck consumer must not show its last,
                # perhaps small, lag; the failure is counted instead
                self._lag = {}
                self.lag_failures += 1
                return
            lags.update({(str(g), str(t)): int(v) for (g, t), v in dict(lag).items()})
        self._lag = lags

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        if state is None:
            return
        yield from self._pool_metrics(getattr(state.store, "pool", None))
        yield CounterMetricFamily("atlas_api_db_pool_replaced",
                                  "Pooled database connections found broken and replaced",
                                  value=getattr(state.store, "replaced", 0))
        cache = getattr(state, "cache", None)
        if cache is not None:
            yield from self._cache_metrics(cache)
        work = getattr(getattr(state, "store", None), "work", None)
        if work is not None:
            yield from self._work_metrics(work)
        if self._consumers(state):
            lag = GaugeMetricFamily("atlas_api_event_consumer_lag",
                                    "Events in the log not yet processed by a consumer group "
                                    "(end offset minus committed offset)",
                                    labels=["group", "topic"])
            for (group, topic), value in sorted(self._lag.items()):
                lag.add_metric([group, topic], value)
            yield lag
            yield CounterMetricFamily("atlas_api_event_consumer_lag_failures",
                                      "Scrapes whose consumer-lag query failed or timed out "
                                      "(the lag is then left out, not shown stale)",
                                      value=self.lag_failures)

    def _pool_metrics(self, pool: Any) -> Iterator[Metric]:
        policy = getattr(pool, "policy", None)
        if pool is not self._pool:  # a new pool: its waits start from nothing
            self._pool = pool
            self._buckets = [0] * (len(BUCKETS) + 1)
            self._wait_sum = 0.0
        if policy is not None:
            for wait in pool.take_wait_times():
                self._buckets[bisect.bisect_left(BUCKETS, wait)] += 1
                self._wait_sum += wait
        connections = GaugeMetricFamily("atlas_api_db_pool_connections",
                                        "Database pool connections by state",
                                        labels=["state"])
        connections.add_metric(["in_use"], policy.in_use if policy is not None else 0)
        connections.add_metric(["idle"], policy.idle if policy is not None else 0)
        yield connections
        yield GaugeMetricFamily("atlas_api_db_pool_waiting",
                                "Clients waiting for a database connection",
                                value=policy.waiting if policy is not None else 0)
        cumulative, running = [], 0
        for bound, count in zip((*map(_bound, BUCKETS), "+Inf"), self._buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        wait = HistogramMetricFamily("atlas_api_db_pool_wait_seconds",
                                     "Time a client waited for a database connection it got")
        wait.add_metric([], cumulative, sum_value=self._wait_sum)
        yield wait
        yield CounterMetricFamily("atlas_api_db_pool_timeouts",
                                  "Clients that got no database connection within the pool's "
                                  "timeout", value=policy.timeouts if policy is not None else 0)
        yield CounterMetricFamily("atlas_api_db_pool_refusals",
                                  "Clients refused a database connection at once (max_waiting "
                                  "already waiting)",
                                  value=policy.refusals if policy is not None else 0)

    @staticmethod
    def _work_metrics(work: Any) -> Iterator[Metric]:
        counts = {op: tuple(cell) for op, cell in work.counts.items()}
        queries = CounterMetricFamily("atlas_api_db_queries",
                                      "Database statements run, per operation",
                                      labels=["operation"])
        rows = CounterMetricFamily("atlas_api_db_rows",
                                   "Database rows read and written, per operation",
                                   labels=["operation", "direction"])
        for op, (q, r, w) in sorted(counts.items()):
            queries.add_metric([op], q)
            rows.add_metric([op, "read"], r)
            rows.add_metric([op, "written"], w)
        yield queries
        yield rows

    @staticmethod
    def _cache_metrics(cache: Any) -> Iterator[Metric]:
        counts = {"hit": int(cache.hits), "miss": int(cache.misses), "error": int(cache.errors)}
        requests = CounterMetricFamily("atlas_api_cache_requests",
                                       "Cache lookups by result", labels=["result"])
        for result, count in counts.items():
            requests.add_metric([result], count)
        yield requests
        total = sum(counts.values())
        yield GaugeMetricFamily("atlas_api_cache_hit_ratio",
                                "Share of cache lookups answered from the cache (NaN before "
                                "the first)", value=counts["hit"] / total if total else math.nan)


def _bound(value: float) -> str:
    """A bucket's ``le`` label as prometheus_client writes it (``0.005``, ``1.0``)."""
    return repr(float(value))
