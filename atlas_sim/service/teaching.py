"""The same five layers written with Starlette's ``BaseHTTPMiddleware``: for teaching only.

``BaseHTTPMiddleware`` lets a layer be written as one readable ``dispatch(request, call_next)``
function, which is why tutorials use it. The price: each layer runs the rest of the stack in a
separate task connected by a memory stream, so five of them cost a large share of throughput,
and a contextvar set inside a handler is not seen by the layers outside it.
``benchmarks/bench_service.py`` measures the difference against ``create_app``'s pure-ASGI stack;
the service never uses this module.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from ..config import Settings
from .metrics import ServiceMetrics, resolve_endpoint
from .request_id import is_valid_request_id, new_request_id

__all__ = ["add_base_http_middleware_stack"]


def add_base_http_middleware_stack(app: FastAPI, settings: Settings | None = None) -> FastAPI:
    """Add RequestID, Timeout, Metrics, ErrorHandling and LoadShedding as BaseHTTPMiddleware."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    limiter = settings.limiter()
    app.state.metrics = metrics

    async def load_shedding(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not limiter.try_acquire():
            return JSONResponse({"error": "overloaded"}, status_code=429,
                                headers={"Retry-After": "1"})
        try:
            return await call_next(request)
        finally:
            limiter.release()

    async def error_handling(request: Request, call_next: RequestResponseEndpoint) -> Response:
        try:
            return await call_next(request)
        except Exception:
            return JSONResponse({"error": "internal server error"}, status_code=500)

    async def record_metrics(request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        endpoint = resolve_endpoint(app.router.routes, request.scope)
        metrics.record(request.method, endpoint, response.status_code,
                       time.perf_counter() - start)
        return response

    async def timeout(request: Request, call_next: RequestResponseEndpoint) -> Response:
        try:
            return await asyncio.wait_for(call_next(request), settings.http_timeout)
        except TimeoutError:
            return JSONResponse({"error": "timeout"}, status_code=504)

    async def request_id(request: Request, call_next: RequestResponseEndpoint) -> Response:
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if is_valid_request_id(incoming) else new_request_id()
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    # Innermost first, as add_middleware wraps each new layer around the previous ones.
    for dispatch in (load_shedding, error_handling, record_metrics, timeout, request_id):
        app.add_middleware(BaseHTTPMiddleware, dispatch=dispatch)
    return app
