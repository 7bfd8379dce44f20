"""Writes: ``POST /api/orders`` (an order applied after its work, once per
``Idempotency-Key``: see ``idempotency``) and ``GET /admin/orders`` (how many were applied, how
many keys are kept)."""

from __future__ import annotations

import hashlib
import math

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..bodies import InvalidBody, parse_json_body, read_body
from ..errors import error_body
from ..idempotency import (
    IDEMPOTENCY_KEY_HEADER,
    REPLAYED_HEADER,
    Begun,
    Stored,
    StoreFull,
    parse_idempotency_keys,
)
from ..request_id import current_request_id
from ..state import ServiceState
from ..work import ServerDown
from .base import RouteTable, ServiceTime, state_of

__all__ = ["ROUTES"]

ROUTES = RouteTable()


@ROUTES.add("/api/orders", ["POST"])
async def order(request: Request, service_time: ServiceTime = None) -> Response:
    """A write: place an order (one work slot for a drawn service time, then one more order
    applied). The body, if any, is JSON (``parse_json_body``; its content is the client's and
    is kept as sent). With an ``Idempotency-Key``, a repeat (same method, path, query string and
    body) is answered from memory and applies nothing (see ``idempotency``); when the key store
    is full, a new key gets 503 with ``Retry-After``."""
    state = state_of(request)
    request_id = current_request_id()
    state.check_input(request)
    try:
        key = parse_idempotency_keys(request.headers.getlist(IDEMPOTENCY_KEY_HEADER))
    except ValueError as exc:
        return JSONResponse(error_body(str(exc), request_id), status_code=400)
    body = await read_body(request, state.max_body_bytes)
    if body:
        try:
            parse_json_body(body)
        except InvalidBody as exc:
            return JSONResponse(error_body(f"invalid order: {exc}", request_id,
                                           detail=exc.problems), status_code=422)
    if key is None:
        return await _place_order(state, service_time, request_id)
    fingerprint = " ".join((request.method, request.url.path,
                            request.scope.get("query_string", b"").decode("latin-1"),
                            hashlib.sha256(body).hexdigest()))
    store = state.idempotency
    verdict = await store.begin(key, fingerprint)
    if isinstance(verdict, Stored):
        return Response(verdict.body, status_code=verdict.status,
                        media_type=verdict.media_type, headers={REPLAYED_HEADER: "true"})
    if isinstance(verdict, StoreFull):
        wait = 1 if verdict.retry_after is None else max(1, math.ceil(verdict.retry_after))
        return JSONResponse(error_body(
            f"the idempotency key store is full ({verdict.capacity} keys, each kept "
            f"{store.retention:g} s after its answer); a new key cannot be accepted "
            f"without forgetting a promised one: retry after {wait} s", request_id,
            capacity=verdict.capacity, retry_after=wait),
            status_code=503, headers={"Retry-After": str(wait)})
    if verdict == "in progress":
        return JSONResponse(error_body(
            "a request with this Idempotency-Key is still being processed; retry "
            "later", request_id), status_code=409)
    if verdict == "mismatch":
        return JSONResponse(error_body(
            "this Idempotency-Key was used for a different request (method, path, query "
            "string or body)", request_id), status_code=422)
    assert isinstance(verdict, Begun)
    try:
        response = await _place_order(state, service_time, request_id)
    except BaseException:
        # Cancelled by the request's timeout, or a crash: nothing was applied, and the key
        # leaves the in-flight set so that a retry may apply it.
        await store.abandon(verdict)
        raise
    # kept with a 2xx answer, forgotten with any other (a write that failed may be retried)
    await store.complete(verdict, Stored(fingerprint, response.status_code, bytes(response.body),
                                     "application/json"))
    return response


async def _place_order(state: ServiceState, service_time: float | None,
                       request_id: str | None) -> JSONResponse:
    try:
        receipt = await state.work.serve(service_time)
    except ServerDown:
        return JSONResponse(error_body("server down (capacity 0)", request_id), status_code=503)
    state.orders_applied += 1
    return JSONResponse({"request_id": request_id, "order": state.orders_applied},
                        headers={"Server-Timing": receipt.server_timing()})


@ROUTES.add("/admin/orders", ["GET"])
async def orders(request: Request) -> dict[str, int]:
    state = state_of(request)
    return {"applied": state.orders_applied, "keys": await state.idempotency.count()}
