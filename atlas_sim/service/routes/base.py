"""What every route module shares: its table of routes (``RouteTable``), the app's state
(``state_of``), the ``?service_time=`` parameter, and the admin write (``admin_update``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from ..bodies import InvalidBody, read_body
from ..errors import error_body
from ..fields import FieldTable, parse_admin_update
from ..request_id import current_request_id
from ..state import ServiceState

__all__ = ["Route", "RouteTable", "ServiceTime", "admin_update", "state_of"]

#: (path, methods, endpoint, options), as ``FastAPI.add_api_route`` takes them.
Route = tuple[str, list[str], Callable[..., Any], dict[str, Any]]


class RouteTable(list[Route]):
    """A module's routes, in matching order; ``@table.add(path, methods)`` adds a module-level
    endpoint (never a closure: see ``routes``)."""

    def add(self, path: str, methods: list[str], **options: Any
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            self.append((path, methods, endpoint, options))
            return endpoint
        return register


def state_of(request: Request) -> ServiceState:
    """The state of the app serving ``request``."""
    state: ServiceState = request.app.state.atlas
    return state


#: ``?service_time=``, taken by every route that does work.
ServiceTime = Annotated[float | None, Query(
    ge=0, le=60, allow_inf_nan=False,
    description="seconds of work instead of a drawn one (the draw is still made)")]


async def admin_update(
    request: Request, fields: FieldTable, what: str,
    apply: Callable[[ServiceState, dict[str, Any]], dict[str, Any]],
) -> JSONResponse:
    """An admin write: the body's ``fields`` (``parse_admin_update``) handed to ``apply``,
    whose view of the new state is the answer; or 422 naming every wrong field, with nothing
    applied (every field is checked before any is used)."""
    state = state_of(request)
    raw = await read_body(request, state.max_body_bytes)
    try:
        changes = parse_admin_update(raw, fields)
    except InvalidBody as exc:
        return JSONResponse(
            error_body(f"invalid {what}: {exc}", current_request_id(), detail=exc.problems),
            status_code=422)
    return JSONResponse(apply(state, changes))
