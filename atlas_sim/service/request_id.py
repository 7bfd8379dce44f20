"""Request IDs: one name per request, kept from the caller when it is safe, returned on every
response.

A request ID ties together what a client saw, what the server logged and what the metrics
counted. The outermost layer keeps an incoming ``X-Request-ID`` when it is a short token of safe
characters (at most 128 of ``[A-Za-z0-9._-]``: nothing that could smuggle a newline into a log
line or a header) and otherwise makes a fresh one. Inner layers and handlers read it from
``current_request_id()`` (a contextvar, which follows the request into any task it starts) or
from ``scope["state"]["request_id"]``.
"""

from __future__ import annotations

import itertools
import os
import re
from contextvars import ContextVar
from typing import TypeGuard

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .tracking import RESPONSE_COMPLETE, RESPONSE_STATUS, SERVER_RECEIVE

__all__ = [
    "HEAD_SCOPE_KEY",
    "REQUEST_ID_HEADER",
    "RequestIDMiddleware",
    "current_request_id",
    "is_valid_request_id",
    "new_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
_VALID = re.compile(rb"[A-Za-z0-9._-]{1,128}")

#: Scope key, True on a ``HEAD`` request: the layers and routes inside see it as ``GET``.
HEAD_SCOPE_KEY = "atlas.head"

_request_id: ContextVar[str | None] = ContextVar("atlas_request_id", default=None)


# A fresh ID is this process's random 64-bit prefix and a counter: unique across processes and
# restarts (the prefix) and within one (the counter), in about 0.3 us. uuid4() measured about
# 10 us per request inside the service, a quarter of the whole middleware stack's cost.
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count()


def new_request_id() -> str:
    """A new request ID: 16 random hex digits fixed per process, a dash, a hex counter."""
    return f"{_PREFIX}-{next(_COUNTER):x}"


def current_request_id() -> str | None:
    """The ID of the request being handled in this context (None outside a request)."""
    return _request_id.get()


def is_valid_request_id(value: str | bytes) -> bool:
    """True for 1 to 128 characters of ``[A-Za-z0-9._-]``."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    return _VALID.fullmatch(raw) is not None


def request_id_of(scope: Scope) -> str | None:
    """The request ID stored in ``scope`` by ``RequestIDMiddleware`` (None if it did not run)."""
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


def _plain_headers(headers: object) -> TypeGuard[list[tuple[bytes, bytes]]]:
    """True for a list of headers without ``X-Request-ID`` (one loop, no generator: this runs
    on every response)."""
    if type(headers) is not list:
        return False
    for header in headers:  # noqa: SIM110 (a loop: all() over a generator costs more here)
        if header[0].lower() == _HEADER:
            return False
    return True


class RequestIDMiddleware:
    """Keep or create ``X-Request-ID`` and return it on every response (pure ASGI).

    As the outermost layer it also tracks the response for the inner ones (``tracking.py``),
    and serves ``HEAD`` as ``GET`` (RFC 9110 9.3.2: a general-purpose server supports HEAD on
    every GET resource; health checkers send it). The inner layers and the router get a copy
    of the scope that says ``GET`` (and ``HEAD_SCOPE_KEY``); the server keeps its own scope
    that says ``HEAD``, so it sends the GET answer's status and headers without the body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET", HEAD_SCOPE_KEY: True}
        incoming = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                incoming = value
                break
        rid = incoming.decode("latin-1") if incoming and _VALID.fullmatch(incoming) else None
        if rid is None:
            rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        scope[RESPONSE_STATUS] = None  # this layer tracks the response for the inner ones
        scope[SERVER_RECEIVE] = receive
        header = (_HEADER, rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                if not message.get("more_body", False):
                    scope[RESPONSE_COMPLETE] = True
            elif kind == "http.response.start":
                scope[RESPONSE_STATUS] = message["status"]
                headers = message.get("headers")
                if not _plain_headers(headers):
                    # a tuple, or a handler set its own ID: build a fresh list without it
                    headers = [h for h in headers or () if h[0].lower() != _HEADER]
                    message["headers"] = headers
                headers.append(header)  # in place, as Starlette's own middleware does
            await send(message)

        token = _request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
