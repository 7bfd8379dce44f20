"""Writes: ``POST /api/orders`` (an order stored after its work, once per
``Idempotency-Key``: see ``idempotency``) and ``GET /admin/orders`` (how many were stored, how
many keys are kept), both on the instance's store (``state.store``)."""

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
from ..store import KeyLost
from ..work import ServerDown
from .base import RouteTable, ServiceTime, state_of

__all__ = ["ROUTES"]

ROUTES = RouteTable()


@ROUTES.add("/api/orders", ["POST"])
async def order(request: Request, service_time: ServiceTime = None) -> Response:
    """A write: place an order (one work slot for a drawn service time, then one order stored
    in the instance's store, ``store.place_order``). The body, if any, is JSON
    (``parse_json_body``; its content is the client's and is kept as sent). With an
    ``Idempotency-Key``, a repeat (same method, path, query string and body) is answered from
    the store and applies nothing (see ``idempotency``); the order and its key's answer are
    stored in one transaction, so neither is kept without the other. Errors: 503 with
    ``Retry-After`` when the key store is full, or when no database connection comes within the
    pool's timeout or too many already wait (``app.pool_unavailable``); 409 when the key's hold
    was lost while the order was at work (cleared by ``/admin/reset``, or begun again by a
    retry after its lease): nothing was applied, and a retry replays or applies once."""
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
    await state.open_store()
    if key is None:
        return await _place_order(state, service_time, request_id, "", None)
    fingerprint = " ".join((request.method, request.url.path,
                            request.scope.get("query_string", b"").decode("latin-1"),
                            hashlib.sha256(body).hexdigest()))
    keys = state.idempotency
    verdict = await keys.begin(key, fingerprint)
    if isinstance(verdict, Stored):
        return Response(verdict.body, status_code=verdict.status,
                        media_type=verdict.media_type, headers={REPLAYED_HEADER: "true"})
    if isinstance(verdict, StoreFull):
        wait = 1 if verdict.retry_after is None else max(1, math.ceil(verdict.retry_after))
        return JSONResponse(error_body(
            f"the idempotency key store is full ({verdict.capacity} keys, each kept "
            f"{keys.retention:g} s after its answer); a new key cannot be accepted "
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
        response = await _place_order(state, service_time, request_id, fingerprint, verdict)
    except KeyLost:
        # place_order rolled back: nothing applied, nothing kept, the hold already gone
        return JSONResponse(error_body(
            "this request's Idempotency-Key was cleared (/admin/reset) or begun again by a "
            "retry after its lease while the order was at work; nothing was applied: retry "
            "later (the retry replays the other request's answer, or applies once)",
            request_id), status_code=409)
    except BaseException:
        # Cancelled by the request's timeout, a crash, no database connection: nothing was
        # applied, and the key leaves the in-flight set so that a retry may apply it.
        await keys.abandon(verdict)
        raise
    if keys is not state.store or response.status_code >= 300:
        # a key store of its own (or a failed write, whose key is forgotten): the answer is
        # kept there, after the order (a 2xx under the store's own key was kept with it)
        await keys.complete(verdict, Stored(fingerprint, response.status_code,
                                            bytes(response.body), "application/json"))
    return response


async def _place_order(state: ServiceState, service_time: float | None,
                       request_id: str | None, fingerprint: str,
                       begun: Begun | None) -> Response:
    try:
        receipt = await state.work.serve(service_time)
    except ServerDown:
        return JSONResponse(error_body("server down (capacity 0)", request_id), status_code=503)

    def answer(n: int) -> Stored:
        body = JSONResponse({"request_id": request_id, "order": n}).body
        return Stored(fingerprint, 200, bytes(body), "application/json")

    store = state.store
    stored = await store.place_order(
        request_id=request_id, begun=begun if state.idempotency is store else None,
        answer=answer, hold=state.draw_hold())
    return Response(stored.body, status_code=stored.status, media_type=stored.media_type,
                    headers={"Server-Timing": receipt.server_timing()})


@ROUTES.add("/admin/orders", ["GET"])
async def orders(request: Request) -> dict[str, int]:
    """Orders stored (by every instance sharing the store) and idempotency keys held."""
    state = state_of(request)
    store = await state.open_store()
    view = {"applied": await store.orders(), "keys": await state.idempotency.count()}
    if state.server.events is not None:  # orders the "receipts" consumer group has seen
        view["receipted"] = len(state.receipted)
    return view
