"""One JSON shape for every error the service answers: ``{"error": ..., "request_id": ...}``.

Whoever produces the error (a middleware layer refusing work, an unhandled exception, FastAPI's
own 404/405/422), the client gets the same small JSON document with the request ID in it, so a
user's bug report can be matched with the server's log line. Never a stack trace: that goes to
the log, not to the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import Send

from .request_id import current_request_id

__all__ = ["error_body", "install_error_handlers", "send_json_error"]


def error_body(message: str, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """The error document: ``error`` and ``request_id`` first, then any ``extra`` fields."""
    return {"error": message, "request_id": request_id, **extra}


async def send_json_error(
    send: Send,
    status: int,
    message: str,
    request_id: str | None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete JSON error response through a raw ASGI ``send`` (for middleware)."""
    body = json.dumps(error_body(message, request_id)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    message = detail if isinstance(detail, str) else json.dumps(jsonable_encoder(detail))
    return JSONResponse(
        error_body(message, current_request_id()),
        status_code=exc.status_code,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Without "input": the offending value may be large, and it is the client's own anyway.
    detail = [
        {k: v for k, v in error.items() if k in ("type", "loc", "msg")} for error in exc.errors()
    ]
    return JSONResponse(
        error_body("invalid request", current_request_id(), detail=jsonable_encoder(detail)),
        status_code=422,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make FastAPI's own 4xx answers (404, 405, 422, ``HTTPException``) use the JSON shape.

    The handlers are coroutines: Starlette runs plain-function handlers in a worker thread.
    """
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
