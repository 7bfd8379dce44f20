"""One look at each response, shared by every layer that needs to know how it started.

Timeout (may it still answer 504?), Metrics (which status to count) and ErrorHandling (may it
still answer 500?) all need the status of the response once it has started. Each wrapping
``send`` to watch for it costs an extra coroutine hop per message per layer; instead the
outermost layer records the status in the request's ``scope`` as the message passes, and the
inner layers read it there. A layer used on its own (no tracker outside it) wraps ``send``
itself, so every layer stays correct in any stack.
"""

from __future__ import annotations

from starlette.types import Message, Scope, Send

__all__ = ["RESPONSE_STATUS", "response_started", "response_status", "tracking_send"]

#: Scope key: the response's status once ``http.response.start`` has been sent, else None.
RESPONSE_STATUS = "atlas.response_status"


def response_status(scope: Scope) -> int | None:
    """The status sent for this request so far (None: the response has not started)."""
    return scope.get(RESPONSE_STATUS)


def response_started(scope: Scope) -> bool:
    return scope.get(RESPONSE_STATUS) is not None


def tracking_send(scope: Scope, send: Send) -> Send:
    """``send`` itself if an outer layer already tracks the response; else a wrapper that
    records the status in ``scope``."""
    if RESPONSE_STATUS in scope:
        return send
    scope[RESPONSE_STATUS] = None

    async def send_tracked(message: Message) -> None:
        if message["type"] == "http.response.start":
            scope[RESPONSE_STATUS] = message["status"]
        await send(message)

    return send_tracked
