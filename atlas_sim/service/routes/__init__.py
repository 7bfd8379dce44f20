"""The service's routes, one module per concern; ``ROUTES`` lists them all, in matching order,
and ``create_app`` adds each to its app.

Every GET route also answers HEAD (the same status and headers, no body).

=================================  ===========================================================
``GET /health``                    liveness (never shed)                       ``health``
``GET /metrics``                   Prometheus text from this app's own          ``health``
                                   registry (never shed)
``GET /api/work``                  simulated work: ``servers`` slots, FIFO      ``work``
                                   queue, drawn service times
``GET /api/compose``               a call to the in-process dependency          ``work``
                                   through retry, budget, breaker
``POST /api/orders``               a write (an order stored after its work),    ``orders``
                                   deduplicated by an ``Idempotency-Key``
                                   (``idempotency``; 503 with ``Retry-After``
                                   when the key store is full or the store's
                                   pool has no connection to give)
``GET /admin/orders``              orders stored, idempotency keys kept         ``orders``
``GET /api/orders/{n}``            order n, read cache-aside (``cache``) when   ``reads``
                                   the service has a cache, else from the store
``GET /api/fanout``                ``width`` concurrent calls to the            ``fanout``
                                   dependency, each hedged when the fan-out's
                                   policy says so
``GET|PUT|POST /admin/fanout``     the fan-out's hedge delay, and its counts    ``fanout``
``GET|PUT|POST /admin/faults``     dependency faults, server capacity, a        ``admin``
                                   stall, and the share of inputs the handlers
                                   crash on (``bad_input_rate``)
``GET /admin/breaker``             the service breaker's state and transitions  ``admin``
``POST /admin/reset``              every fault off, every count and stream      ``admin``
                                   back to the start, the store emptied
``POST /api/posts``,               home timelines (DDIA's "Describing Load"):   ``timelines``
``GET /api/timeline/{user}``,      a post, a read under the configured
``GET|POST|PATCH /admin/timelines``  approach, the graph loaded, counts and
``GET /admin/timelines/delivery/   database work, a post's delivery
{post}``
=================================  ===========================================================

The endpoints are module-level functions, the same for every app, that find their app's
state through ``request.app`` (``base.state_of``), never closures over it: FastAPI keeps every
endpoint function it has seen in module-level caches (``fastapi.dependencies.models``, an
``lru_cache`` of 4096 entries), so a closure there would keep a stopped and dropped app's whole
state alive (``tests/service/test_app_memory.py``). A new route goes in the module of its
concern (or a new one listed here), registered with ``@ROUTES.add(path, methods)``.
"""

from __future__ import annotations

from . import admin, fanout, health, orders, reads, timelines, work
from .base import Route

__all__ = ["ROUTES"]

#: Every route of the service, in matching order: (path, methods, endpoint, options).
ROUTES: list[Route] = [*health.ROUTES, *work.ROUTES, *orders.ROUTES, *fanout.ROUTES,
                       *admin.ROUTES, *reads.ROUTES, *timelines.ROUTES]
