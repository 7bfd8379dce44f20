"""Reads: ``GET /api/orders/{n}``, order ``n`` read cache-aside (``cache.Cache``) when the
service has a cache, straight from the store when it has none."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import JSONResponse, Response

from ..errors import error_body
from ..request_id import current_request_id
from .base import RouteTable, state_of

__all__ = ["ROUTES", "order_key"]

ROUTES = RouteTable()

#: An order's number: 1, 2, ... (the store's row id, a signed 64-bit integer).
OrderNumber = Annotated[int, Path(ge=1, le=2**63 - 1, description="the order's number")]


def order_key(n: int) -> str:
    """The cache key of order ``n``: ``"order:<n>"``."""
    return f"order:{n}"


@ROUTES.add("/api/orders/{n}", ["GET"])
async def read_order(request: Request, n: OrderNumber) -> Response:
    """Order ``n`` as the store keeps it (``{"order": n, "request_id": ..., "key": ...}``):
    from the cache when it holds it, else from the store (then cached for the cache's TTL);
    404 with the JSON error body when there is no such order (nothing is cached for it). The
    body is the same bytes whichever answered. A store without a free pooled connection is
    the app's 503 (``app.pool_unavailable``); a cache that fails is never an error here."""
    state = state_of(request)
    store = await state.open_store()  # opened by the lifespan, or here on first use

    async def load() -> str | None:
        found = await store.get_order(n)
        return None if found is None else json.dumps(found)

    cache = state.cache
    body = await (load() if cache is None else cache.get_or_load(order_key(n), load))
    if body is None:
        return JSONResponse(error_body(f"no order {n}", current_request_id()), status_code=404)
    return Response(body, media_type="application/json")
