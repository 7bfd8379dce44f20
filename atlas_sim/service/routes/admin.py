"""The operator's controls over one instance: ``GET|PUT|POST /admin/faults`` (its faults, as
``faults`` spells them), ``GET /admin/breaker`` (the dependency breaker's state and
transitions) and ``POST /admin/reset`` (faults off, capacity 1, no stall, fresh breaker and
budget, random streams rewound to the seed, an empty store: no orders, no idempotency keys, no
events; the cache flushed and its counts at 0; no hedging and fan-out counts at 0). A store
shared by several instances is emptied for all of them."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ..faults import FAULT_FIELDS, apply_faults, clear_faults, faults_view
from .base import RouteTable, admin_update, state_of

__all__ = ["ROUTES"]

ROUTES = RouteTable()


@ROUTES.add("/admin/faults", ["GET"])
async def get_faults(request: Request) -> dict[str, Any]:
    return faults_view(state_of(request))


@ROUTES.add("/admin/faults", ["PUT", "POST"])
async def set_faults(request: Request) -> JSONResponse:
    return await admin_update(request, FAULT_FIELDS, "faults", apply_faults)


@ROUTES.add("/admin/breaker", ["GET"])
async def breaker(request: Request) -> dict[str, Any]:
    caller = state_of(request).caller
    b = caller.breaker
    tokens = caller.budget.tokens if caller.budget is not None else None
    if b is None:  # a dependency client without a breaker (ServerConfig's dependency)
        return {"state": None, "generation": None, "clock": "time.monotonic",
                "now": caller.clock(), "budget_tokens": tokens, "config": None,
                "transitions": []}
    return {
        "state": b.state.value,
        "generation": b.generation,
        "clock": "time.monotonic",
        "now": caller.clock(),
        "budget_tokens": tokens,
        "config": {
            "failure_threshold": b.config.failure_threshold,
            "recovery_timeout": b.config.recovery_timeout,
            "half_open_max_calls": b.config.half_open_max_calls,
            "success_threshold": b.config.success_threshold,
        },
        "transitions": [
            {"time": t.time, "old": t.old.value, "new": t.new.value, "reason": t.reason}
            for t in caller.transitions
        ],
    }


@ROUTES.add("/admin/reset", ["POST"])
async def reset(request: Request) -> dict[str, Any]:
    state = state_of(request)
    clear_faults(state)
    state.caller.reset()
    state.set_hedge(None)
    state.rewind()  # the "store" stream (query times) included
    store = await state.open_store()
    await store.clear()  # keys, orders, events and committed offsets
    state.receipted.clear()
    if state.cache is not None:  # after the store: order 1 may now be another order
        await state.cache.flush()
        state.cache.reset_counts()
    if state.idempotency is not store:
        await state.idempotency.clear()
    return faults_view(state)
