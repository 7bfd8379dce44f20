"""Fan-out: ``GET /api/fanout?width=N`` (N concurrent calls to the dependency, each hedged
when the fan-out's policy says so: the tail at scale) and ``GET|PUT|POST /admin/fanout`` (the
hedge delay, ``FANOUT_FIELDS``, and the counts of calls, copies, hedges and cancelled copies).
The calls go through ``ServiceState.fanout`` (``state.fanout_client``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from ..errors import error_body
from ..fields import FieldTable
from ..request_id import current_request_id
from ..state import ServiceState
from .base import RouteTable, admin_update, state_of

__all__ = ["FANOUT_FIELDS", "ROUTES"]

ROUTES = RouteTable()

#: The fields of ``PUT/POST /admin/fanout``: the hedge delay in seconds, null for none.
FANOUT_FIELDS: FieldTable = {
    "hedge_delay": ("number or null", 0, 60),
}


@ROUTES.add("/api/fanout", ["GET"])
async def fan_out(
    request: Request,
    width: int = Query(10, ge=1, le=100,
                       description="backend calls made concurrently; the answer waits "
                                   "for all of them"),
) -> JSONResponse:
    """``width`` calls to the dependency at once, each through the fan-out's guarded call
    (hedged if ``/admin/fanout`` set a delay). The answer counts what was sent, and says how
    far the calls overran their drawn latency: ``overrun``, the mean over the copies that
    answered ok of the time taken beyond the latency drawn for them (seconds; null if none
    answered), also as ``Server-Timing: overrun;dur=<ms>`` (the event loop's lateness, which
    ``analysis.health`` judges: a loop that wakes late turns fast calls into hedges)."""
    state = state_of(request)
    state.check_input(request)
    outcomes = await asyncio.gather(*(state.fanout.call() for _ in range(width)))
    copies, hedges, cancelled = state.fanout_counts.add(outcomes)
    overruns = [a.overrun for o in outcomes for a in o.attempts if a.outcome == "ok"]
    overrun = sum(overruns) / len(overruns) if overruns else None
    body: dict[str, Any] = {
        "request_id": current_request_id(), "width": width, "calls": width,
        "copies": copies, "hedges": hedges, "cancelled": cancelled,
        "slowest": max(max((a.seconds for a in o.attempts), default=0.0)
                       for o in outcomes),
        "overrun": overrun,
    }
    headers = ({"Server-Timing": f"overrun;dur={overrun * 1e3:.3f}"} if overrun is not None
               else None)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        body = {**error_body(f"{len(failed)} of {width} calls failed: {failed[0].reason}",
                             current_request_id()), **body}
        return JSONResponse(body, status_code=failed[0].status, headers=headers)
    return JSONResponse(body, headers=headers)


@ROUTES.add("/admin/fanout", ["GET"])
async def get_fanout(request: Request) -> dict[str, Any]:
    return state_of(request).fanout_view()


@ROUTES.add("/admin/fanout", ["PUT", "POST"])
async def set_fanout(request: Request) -> JSONResponse:
    return await admin_update(request, FANOUT_FIELDS, "fan-out settings", _apply_fanout)


def _apply_fanout(state: ServiceState, changes: dict[str, Any]) -> dict[str, Any]:
    if "hedge_delay" in changes:
        state.set_hedge(changes["hedge_delay"])
    return state.fanout_view()
