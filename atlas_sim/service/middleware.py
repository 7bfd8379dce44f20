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

from starlette.types import ASGIApp, Receive, Scope, Send

from ..policies import ConcurrencyLimiter
from ..validation import check_int, check_real
from .errors import send_json_error
from .request_id import request_id_of
from .tracking import response_started, tracking_send

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

    How: the timeout is the same for every request, so deadlines come in arrival order. Requests
    in progress sit in an insertion-ordered dict, oldest first, and one sweeper task per event
    loop sleeps until the oldest deadline and cancels whatever has reached it. Per request that
    is a dict insert and delete instead of a timer scheduled and cancelled on the loop (measured:
    about 9 us of the stack's 42 us before this change).
    """

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = check_real("timeout", timeout, low=0, low_open=True)
        self._deadlines: dict[asyncio.Task, float] = {}  # in progress, oldest first
        self._expired: set[asyncio.Task] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = tracking_send(scope, send)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._start_sweeper(loop)
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        deadline = scope[DEADLINE_SCOPE_KEY] = loop.time() + self.timeout
        if not deadlines:
            self._wake.set()  # type: ignore[union-attr]
        deadlines[task] = deadline
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            expired = task in self._expired
            uncancel = getattr(task, "uncancel", None)  # 3.11+: was it only ours?
            if not expired or (uncancel is not None and uncancel() > 0):
                raise
            if not response_started(scope):
                await send_json_error(
                    send, 504, f"request timed out after {self.timeout:g} s", request_id_of(scope)
                )
        finally:
            deadlines.pop(task, None)
            self._expired.discard(task)

    def _start_sweeper(self, loop: asyncio.AbstractEventLoop) -> None:
        # One sweeper per event loop: an app served again on a new loop (a restarted server)
        # gets a new one; the old loop's sweeper went with its loop.
        self._loop = loop
        self._deadlines.clear()
        self._expired.clear()
        self._wake = asyncio.Event()
        loop.create_task(self._sweep(self._wake), name="atlas-timeout-sweeper")

    async def _sweep(self, wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        while True:
            if not deadlines:
                wake.clear()
                await wake.wait()
                continue
            task, deadline = next(iter(deadlines.items()))
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            del deadlines[task]
            self._expired.add(task)
            task.cancel()


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
        send = tracking_send(scope, send)
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            request_id = request_id_of(scope)
            started = response_started(scope)
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
_EXEMPT_PATHS = frozenset(SHEDDING_EXEMPT)
_EXEMPT_PREFIXES = tuple(prefix + "/" for prefix in SHEDDING_EXEMPT)


def _is_exempt(path: str) -> bool:
    return path in _EXEMPT_PATHS or path.startswith(_EXEMPT_PREFIXES)


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
