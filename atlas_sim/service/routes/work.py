"""The two ways a request works: ``GET /api/work`` (a slot of the work station for a drawn
service time: the M/M/c queue) and ``GET /api/compose`` (a call to the dependency through
retry, budget and breaker)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..errors import error_body
from ..request_id import current_request_id
from ..work import ServerDown
from .base import RouteTable, ServiceTime, state_of

__all__ = ["ROUTES"]

ROUTES = RouteTable()


@ROUTES.add("/api/work", ["GET"])
async def work(request: Request, service_time: ServiceTime = None) -> Response:
    state = state_of(request)
    state.check_input(request)
    try:
        receipt = await state.work.serve(service_time)
    except ServerDown:
        return JSONResponse(
            error_body("server down (capacity 0)", current_request_id()), status_code=503)
    return JSONResponse(
        {"request_id": current_request_id(), "queue": receipt.queue, "work": receipt.work},
        headers={"Server-Timing": receipt.server_timing()},
    )


@ROUTES.add("/api/compose", ["GET"])
async def compose(request: Request) -> JSONResponse:
    state = state_of(request)
    state.check_input(request)
    outcome = await state.caller.call()
    body: dict[str, Any] = {
        "request_id": current_request_id(),
        "attempts": len(outcome.attempts),
        "attempt_log": [
            {"attempt": a.attempt, "outcome": a.outcome, "seconds": a.seconds}
            for a in outcome.attempts
        ],
        "breaker": (state.caller.breaker.state.value if state.caller.breaker is not None
                    else None),
    }
    if not outcome.ok:
        body = {**error_body(outcome.reason, current_request_id()), **body}
    return JSONResponse(body, status_code=outcome.status)
