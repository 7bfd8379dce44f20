"""``GET /health`` (liveness) and ``GET /metrics`` (Prometheus text from the app's own
registry): what an operator reads, never shed."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .base import RouteTable, state_of

__all__ = ["ROUTES"]

ROUTES = RouteTable()


@ROUTES.add("/health", ["GET"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@ROUTES.add("/metrics", ["GET"], include_in_schema=False)
async def metrics(request: Request) -> Response:
    metrics = state_of(request).metrics
    await metrics.refresh()  # what only a coroutine reads (the consumers' lag)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
