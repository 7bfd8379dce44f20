"""One look at each response, shared by every layer that needs to know how it went.

Timeout (may it still answer 504?), Metrics (which status to count) and ErrorHandling (may it
still answer 500?) all need the status of the response once it has started, and Metrics needs
to know whether it finished and whether the client was still there. Each wrapping ``send`` to
watch for it costs an extra coroutine hop per message per layer; instead the outermost layer
records it in the request's ``scope`` as the messages pass, and the inner layers read it there.
A layer used on its own (no tracker outside it) wraps ``send`` itself, so every layer stays
correct in any stack.

Whether the client went away: a server may not tell the app. uvicorn neither cancels the
request nor raises from ``send`` when the client disconnects; it drops what is sent and sets
``disconnected`` on the request's cycle, whose bound method ``receive`` is (Starlette wraps
``send`` but passes ``receive`` through). ``client_gone`` reads that flag when the server has
one, and also a mark set by a layer that saw the client leave (``http.disconnect`` while
reading the body: ``mark_client_gone``).
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "CLIENT_GONE",
    "RESPONSE_COMPLETE",
    "RESPONSE_STATUS",
    "SERVER_RECEIVE",
    "client_gone",
    "mark_client_gone",
    "response_complete",
    "response_started",
    "response_status",
    "tracking_send",
]

#: Scope key: the response's status once ``http.response.start`` has been sent, else None.
RESPONSE_STATUS = "atlas.response_status"
#: Scope key: True once the last body message (``more_body`` false) has been sent.
RESPONSE_COMPLETE = "atlas.response_complete"
#: Scope key: the server's own ``receive`` (for ``client_gone``).
SERVER_RECEIVE = "atlas.server_receive"
#: Scope key: True once a layer saw the client leave.
CLIENT_GONE = "atlas.client_gone"


def response_status(scope: Scope) -> int | None:
    """The status sent for this request so far (None: the response has not started)."""
    return scope.get(RESPONSE_STATUS)


def response_started(scope: Scope) -> bool:
    return scope.get(RESPONSE_STATUS) is not None


def response_complete(scope: Scope) -> bool:
    """True once the whole response has been handed to the server."""
    return scope.get(RESPONSE_COMPLETE, False)


def mark_client_gone(scope: Scope) -> None:
    scope[CLIENT_GONE] = True


def client_gone(scope: Scope) -> bool:
    """True if the client went away before the response was complete (as far as we can tell:
    a mark from a layer, or the server's own ``disconnected`` flag behind its ``receive``)."""
    if scope.get(CLIENT_GONE):
        return True
    owner = getattr(scope.get(SERVER_RECEIVE), "__self__", None)
    return getattr(owner, "disconnected", False) is True


def tracking_send(scope: Scope, send: Send, receive: Receive | None = None) -> Send:
    """``send`` itself if an outer layer already tracks the response; else a wrapper that
    records the status and completion in ``scope`` (and ``receive``, for ``client_gone``)."""
    if RESPONSE_STATUS in scope:
        return send
    scope[RESPONSE_STATUS] = None
    scope[SERVER_RECEIVE] = receive

    async def send_tracked(message: Message) -> None:
        if message["type"] == "http.response.start":
            scope[RESPONSE_STATUS] = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            scope[RESPONSE_COMPLETE] = True
        await send(message)

    return send_tracked
