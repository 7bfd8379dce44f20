"""The reliability layers of the request path, as pure ASGI middleware.

Order, outermost first (the reference card's): RequestID, Timeout, Metrics, ErrorHandling,
LoadShedding, then the handlers. This module holds Timeout, ErrorHandling and LoadShedding;
RequestID is in ``request_id.py`` and Metrics in ``metrics.py``.

Each layer is a plain class with ``__init__(self, app, **options)`` and
``async __call__(scope, receive, send)`` that passes non-HTTP scopes straight through (Starlette's
``TrustedHostMiddleware`` is the model). Not ``BaseHTTPMiddleware``: that runs every layer in a
task group with a memory stream between them, which costs a large share of throughput with five
layers and cuts contextvars off from the handler (``benchmarks/bench_service.py`` measures it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..policies import ConcurrencyLimiter
from ..policies._validate import check_int, check_real
from .errors import send_json_error
from .request_id import request_id_of

__all__ = [
    "DEADLINE_SCOPE_KEY",
    "SHEDDING_EXEMPT",
    "ErrorHandlingMiddleware",
    "LoadSheddingMiddleware",
    "TimeoutMiddleware",
]

#: Where ``TimeoutMiddleware`` leaves the request's deadline (on the event loop's clock), so an
#: inner layer that sees a cancellation can tell a timeout (504) from a client that went away.
DEADLINE_SCOPE_KEY = "atlas.deadline"

logger = logging.getLogger("atlas.service")


class TimeoutMiddleware:
    """Cancel a request's work after ``timeout`` seconds and answer 504 if nothing was sent yet.

    The inner work is really cancelled (``CancelledError`` at its next ``await``), so a request
    nobody waits for any more stops using a worker: the card's rule ``if elapsed > HTTP_TIMEOUT:
    504``. If the response had already started, it cannot be replaced; the connection is closed
    by the server when the app returns without finishing it.
    """

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = check_real("timeout", timeout, low=0, low_open=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # A timer that cancels this task at the deadline: what asyncio.timeout() does, with
        # less bookkeeping (this runs on every request). uncancel() (3.11+) tells our
        # cancellation apart from anyone else's, which must propagate.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = scope[DEADLINE_SCOPE_KEY] = loop.time() + self.timeout
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_at(deadline, expire)
        try:
            await self.app(scope, receive, watch_send)
        except asyncio.CancelledError:
            uncancel = getattr(task, "uncancel", None)
            if not expired or (uncancel is not None and uncancel() > 0):
                raise
            if not started:
                await send_json_error(
                    send, 504, f"request timed out after {self.timeout:g} s", request_id_of(scope)
                )
        finally:
            timer.cancel()


class ErrorHandlingMiddleware:
    """Turn an unhandled exception into a 500 JSON answer and exactly one JSON log line.

    The client gets ``{"error": "internal server error", "request_id": ...}``, never a stack
    trace; the log line (logger ``atlas.service``) has the request ID, the route, the exception
    and its traceback, as one JSON object on one line, ready for a log pipeline.
    """

    def __init__(self, app: ASGIApp, *, log: logging.Logger | None = None) -> None:
        self.app = app
        self.log = log or logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch_send)
        except Exception as exc:
            request_id = request_id_of(scope)
            self.log.error(
                json.dumps(
                    {
                        "event": "unhandled_exception",
                        "request_id": request_id,
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "exception": type(exc).__name__,
                        "message": str(exc),
                        "response_started": started,
                        "traceback": "".join(traceback.format_exception(exc)),
                    }
                )
            )
            if not started:
                await send_json_error(send, 500, "internal server error", request_id)


#: Paths never shed: an operator must be able to see (``/health``, ``/metrics``) and steer
#: (``/admin/...``: faults, capacity, breaker) a service precisely when it is overloaded.
SHEDDING_EXEMPT: tuple[str, ...] = ("/health", "/metrics", "/admin")


def _is_exempt(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in SHEDDING_EXEMPT)


class LoadSheddingMiddleware:
    """Refuse requests beyond ``limiter.max_concurrent`` in progress with 429 and Retry-After.

    The card's rule, ``if concurrent < max: process else: 429``, with the same
    ``ConcurrencyLimiter`` the simulation uses. Refusing at once is cheap and tells the client
    to back off; accepting everything would make every request late. ``/health``, ``/metrics``
    and ``/admin/...`` are exempt (see ``SHEDDING_EXEMPT``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: ConcurrencyLimiter,
        retry_after: int = 1,
    ) -> None:
        if not isinstance(limiter, ConcurrencyLimiter):
            raise ValueError(f"limiter must be a ConcurrencyLimiter, got {limiter!r}")
        self.app = app
        self.limiter = limiter
        self.retry_after = check_int("retry_after", retry_after, low=0)
        self._retry_after_header = (b"retry-after", str(self.retry_after).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        if not limiter.try_acquire():
            await send_json_error(
                send,
                429,
                f"overloaded: {limiter.in_flight} requests in progress "
                f"(limit {limiter.max_concurrent}); retry later",
                request_id_of(scope),
                headers=[self._retry_after_header],
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limiter.release()
