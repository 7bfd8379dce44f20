"""The reliability layers of the request path, as pure ASGI middleware.

Order, outermost first (the reference card's): RequestID, Timeout, Metrics, ErrorHandling,
LoadShedding, then the handlers, with one layer of our own between Metrics and ErrorHandling:
LoopbackGuard (the Host and cross-site checks, counted by Metrics like any other answer). This
module holds Timeout, LoopbackGuard, ErrorHandling and LoadShedding; RequestID is in
``request_id.py`` and Metrics in ``metrics.py``.

Each layer is a plain class with ``__init__(self, app, **options)`` and
``__call__(scope, receive, send)`` returning an awaitable, that passes non-HTTP scopes straight
through (Starlette's ``TrustedHostMiddleware`` is the model). Most are coroutines; the two that
only decide at the door (LoopbackGuard, and LoadShedding for an exempt path) return the inner
app's own awaitable when they let a request pass, so they add no frame to its path.
Not ``BaseHTTPMiddleware``: that runs every layer in a task group with a memory stream between
them, which costs a large share of throughput with five layers and cuts contextvars off from
the handler (``benchmarks/bench_service.py --teaching`` measures it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import traceback
from collections.abc import Awaitable, Iterable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from ..policies import AdmissionLimiter
from ..validation import check_int, check_real
from .errors import send_json_error
from .request_id import request_id_of
from .tracking import (
    RESPONSE_STATUS,
    client_gone,
    mark_client_gone,
    response_started,
    tracking_send,
)

__all__ = [
    "DEADLINE_SCOPE_KEY",
    "SERVER_STOPPING",
    "SHEDDING_EXEMPT",
    "ErrorHandlingMiddleware",
    "LoadSheddingMiddleware",
    "LoopbackGuardMiddleware",
    "TimeoutMiddleware",
]

#: Where ``TimeoutMiddleware`` leaves the request's deadline (on the event loop's clock), so an
#: inner layer that sees a cancellation can tell a timeout (504) from a client that went away.
DEADLINE_SCOPE_KEY = "atlas.deadline"

#: The status of a request cut off because the server is stopping (see ``TimeoutMiddleware``).
SERVER_STOPPING = 503

logger = logging.getLogger("atlas.service")


class TimeoutMiddleware:
    """Cancel a request's work after ``timeout`` seconds and answer 504 if nothing was sent yet.

    ``timeout`` is the server's (``ServerConfig.timeout``; ``HTTP_TIMEOUT`` by default); None:
    no server timeout (a stopping server's cancellations are still answered, as below).

    The inner work is really cancelled (``CancelledError`` at its next ``await``), so a request
    nobody waits for any more stops using a worker: the card's rule ``if elapsed > HTTP_TIMEOUT:
    504``. If the response had already started, it cannot be replaced; the connection is closed
    by the server when the app returns without finishing it.

    How: the timeout is the same for every request, so deadlines come in arrival order. Requests
    in progress sit in an insertion-ordered dict, oldest first, and one sweeper task per event
    loop sleeps until the oldest deadline and cancels whatever has reached it. Per request that
    is a dict insert and delete instead of a timer scheduled and cancelled on the loop (measured:
    about 9 us of the stack's 42 us before this change).

    A cancellation that is not this layer's own comes from the server: uvicorn cancels the
    requests still running when a graceful stop runs out of time (it never cancels a request
    because its client left). Such a request is answered ``503`` with the JSON error shape and
    the request ID, if nothing was sent yet and the client is still there, and the cancellation
    ends here: the request is over, answered, and counted as 503 by Metrics, so the server has
    no exception to log.
    """

    def __init__(self, app: ASGIApp, *, timeout: float | None) -> None:
        self.app = app
        self.timeout = (None if timeout is None else
                        check_real("timeout", timeout, low=0, low_open=True))
        self._deadlines: dict[asyncio.Task, float] = {}  # in progress, oldest first
        self._expired: set[asyncio.Task] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if RESPONSE_STATUS not in scope:  # else an outer layer tracks the response
            send = tracking_send(scope, send, receive)
        if self.timeout is None:
            await self._without_deadline(scope, receive, send)
            return
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
            if expired and (uncancel is None or uncancel() == 0):
                if not response_started(scope):
                    await send_json_error(send, 504, f"request timed out after {self.timeout:g} s",
                                          request_id_of(scope))
                return
            # The server's: it is stopping (see the class docstring).
            if not response_started(scope) and not client_gone(scope):
                await send_json_error(send, SERVER_STOPPING, "service stopping; retry later",
                                      request_id_of(scope))
        finally:
            deadlines.pop(task, None)
            if self._expired:
                self._expired.discard(task)

    async def _without_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No server timeout: only a stopping server's cancellation is answered (503)."""
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not response_started(scope) and not client_gone(scope):
                await send_json_error(send, SERVER_STOPPING, "service stopping; retry later",
                                      request_id_of(scope))

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


#: Host names the service answers to by default: loopback only (see ``LoopbackGuardMiddleware``).
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_JSON = "application/json"


def _host_name(value: str) -> str:
    """The name in a ``Host`` header value, lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, colon, port = value.rpartition(":")
    return name if colon and port.isdigit() else value


def is_loopback_name(name: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_allowed_hosts(allowed_hosts: Iterable[str] | None) -> frozenset[str] | None:
    """The host names (lower case, no port) of ``allowed_hosts``; None stays None (loopback)."""
    if allowed_hosts is None:
        return None
    hosts = None if isinstance(allowed_hosts, (str, bytes)) else list(allowed_hosts)
    if not hosts or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ValueError(
            f"allowed_hosts must be a non-empty list of host names, got {allowed_hosts!r}")
    return frozenset(_host_name(h) for h in hosts)


class LoopbackGuardMiddleware:
    """Keep other web pages away from a service that has no authentication.

    The service runs on 127.0.0.1 next to a browser with a notebook open. Two ways in for any web
    page that browser shows, both refused here with the JSON error shape:

    * DNS rebinding: a page on ``evil.example`` makes its own name resolve to 127.0.0.1 and then
      talks to the service as "same origin". The browser still sends ``Host: evil.example``, so
      every request must name an allowed host: by default a loopback one (``localhost``,
      ``127.x.x.x``, ``[::1]``, any port). Otherwise 400.
    * Cross-site requests: a page may send a "simple" POST (a form, or ``fetch`` with
      ``text/plain``) anywhere, without asking first. A state-changing request (any method but
      GET, HEAD, OPTIONS, on any path: ``/admin/...`` and ``POST /api/orders`` alike) is
      refused with 403 if it carries an ``Origin`` other than the service's own (browsers send
      ``Origin`` on every POST), and with 415 unless its body is ``application/json``; a
      request without a body may omit ``Content-Type``, and one without ``Origin`` (a client
      that is not a browser: the load generator, httpx in a notebook) is not cross-site. A
      browser can send ``application/json`` cross-site only after a CORS preflight, which this
      service never grants.

    Args:
        allowed_hosts: the host names accepted in ``Host`` (None: loopback ones only).
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = check_allowed_hosts(allowed_hosts)
        self._accepted: set[bytes] = set()  # Host values seen and allowed (bounded below)

    def host_allowed(self, value: bytes) -> bool:
        if value in self._accepted:
            return True
        name = _host_name(value.decode("latin-1"))
        ok = is_loopback_name(name) if self.allowed_hosts is None else name in self.allowed_hosts
        if ok and len(self._accepted) < 256:
            self._accepted.add(value)
        return ok

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a request that passes is the inner app's own awaitable, so
        # this layer adds no frame to every request's path (only a refusal runs ``_refuse``).
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        if host is None or not self.host_allowed(host) or scope["method"] not in _SAFE_METHODS:
            return self._refuse(scope, receive, send, host)
        return self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send,
                      host: bytes | None) -> None:
        """Answer 400, 403 or 415 if the request must be refused; else pass it on (a
        state-changing request that is allowed)."""
        if host is None or not self.host_allowed(host):
            shown = "none" if host is None else repr(host.decode("latin-1")[:100])
            await send_json_error(
                send, 400,
                f"Host {shown} is not served here (allowed: "
                f"{self._describe_allowed()}); this guards against DNS rebinding",
                request_id_of(scope))
            return
        if scope["method"] not in _SAFE_METHODS:
            refusal = _write_refusal(scope, host)
            if refusal is not None:
                await send_json_error(send, refusal[0], refusal[1], request_id_of(scope))
                return
        await self.app(scope, receive, send)

    def _describe_allowed(self) -> str:
        if self.allowed_hosts is None:
            return "localhost, 127.0.0.1 and other loopback addresses, [::1]"
        return ", ".join(sorted(self.allowed_hosts))


def _write_refusal(scope: Scope, host: bytes) -> tuple[int, str] | None:
    """(status, message) if a state-changing request must be refused, else None."""
    origin = content_type = length = chunked = None
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value
        elif name == b"content-type":
            content_type = value
        elif name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = value
    if origin is not None and origin.lower() not in (b"http://" + host.lower(),
                                                     b"https://" + host.lower()):
        return 403, (f"cross-site request refused (Origin "
                     f"{origin.decode('latin-1')[:100]!r}): changes come from the notebook "
                     "or the load generator, not from a web page")
    if content_type is None:
        if chunked is None and (length is None or length.strip() == b"0"):
            return None  # no body at all, e.g. POST /admin/reset
        return 415, f"{scope['method']} requests with a body must have Content-Type: {_JSON}"
    media_type = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    if media_type != _JSON:
        return 415, (f"{scope['method']} requests must have Content-Type: {_JSON}, got "
                     f"{content_type.decode('latin-1')[:100]!r}")
    return None


class ErrorHandlingMiddleware:
    """Turn an unhandled exception into a 500 JSON answer and exactly one JSON log line.

    The client gets ``{"error": "internal server error", "request_id": ...}``, never a stack
    trace; the log line (logger ``atlas.service``) has the request ID, the route, the exception
    and its traceback, as one JSON object on one line, ready for a log pipeline.

    A client that left while its body was being read (Starlette's ``ClientDisconnect``) is not
    an error of the server's: no answer, no log line, and Metrics counts it as 499.
    """

    def __init__(self, app: ASGIApp, *, log: logging.Logger | None = None) -> None:
        self.app = app
        self.log = log or logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if RESPONSE_STATUS not in scope:  # else an outer layer tracks the response
            send = tracking_send(scope, send, receive)
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            # The client left while its body was being read: nothing to answer, nobody to
            # answer, no server fault to log. Metrics counts it as 499.
            mark_client_gone(scope)
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
    """Refuse a request its admission limiter will not take with 429 and Retry-After.

    The card's rule, ``if concurrent < max: process else: 429``, generalised: ``limiter`` is any
    ``AdmissionLimiter`` (``policies.admission``; the server's ``ServerConfig.admission``
    built), the very object the simulated server drives through the same two calls. Each
    admitted request is released once, with ``latency`` (seconds from admission to the end of
    its answer, on the event loop's clock) and ``dropped`` (True if it ended in a 5xx, was
    cancelled, a server timeout or a stop, or raised), which is what an adaptive limit learns
    from. Refusing at once is cheap and tells the client to back off; accepting everything
    would make every request late. ``/health``, ``/metrics`` and ``/admin/...`` are exempt
    (see ``SHEDDING_EXEMPT``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: AdmissionLimiter,
        retry_after: int = 1,
    ) -> None:
        if not isinstance(limiter, AdmissionLimiter):
            raise ValueError(f"limiter must be an AdmissionLimiter (try_acquire, release, limit, "
                             f"in_flight), got {limiter!r}")
        self.app = app
        self.limiter = limiter
        self.retry_after = check_int("retry_after", retry_after, low=0)
        self._retry_after_header = (b"retry-after", str(self.retry_after).encode())

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: an exempt request is the inner app's own awaitable (no frame).
        if scope["type"] != "http" or _is_exempt(scope["path"]):
            return self.app(scope, receive, send)
        return self._admit(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter
        if not limiter.try_acquire():
            await send_json_error(
                send,
                429,
                f"overloaded: {limiter.in_flight} requests in progress "
                f"(limit {limiter.limit}); retry later",
                request_id_of(scope),
                headers=[self._retry_after_header],
            )
            return
        if RESPONSE_STATUS not in scope:  # else an outer layer tracks the response
            send = tracking_send(scope, send, receive)  # the status, read back from the scope
        clock = asyncio.get_running_loop().time
        admitted = clock()
        dropped = True  # unless it ends with an answer below 500
        try:
            await self.app(scope, receive, send)
            status = scope.get(RESPONSE_STATUS)  # response_status(scope), inline
            dropped = status is None or status >= 500
        finally:
            limiter.release(latency=clock() - admitted, dropped=dropped)
