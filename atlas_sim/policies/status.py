"""The outcome codes every layer speaks: HTTP statuses plus a few client-side ones.

A request can end without the server ever answering: the client stopped waiting, the connection
failed, the client's own circuit breaker refused to send, or the retry budget refused a retry.
Those outcomes get codes in 596..599, the corner of the status space that client libraries such as
Tornado (599 for a client-side timeout) already use for "no HTTP answer". Simulation and live runs
record the same codes, so one table, one plot and one SLO check serve both.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CLIENT_SIDE", "DEFAULT_RETRYABLE", "Status"]


class Status(IntEnum):
    """Outcome of one attempt or one request."""

    OK = 200
    BAD_REQUEST = 400
    NOT_FOUND = 404
    UNPROCESSABLE = 422
    TOO_MANY_REQUESTS = 429  # load shedding: the server refused work it could not do in time
    # a hedged copy the client cancelled because another copy won (nginx's 499, "client closed
    # request", which the service also counts for a client gone before its answer); the live
    # generator's attempt rows and the fan-out model's (sim.fanout.CANCELLED) say so alike
    CANCELLED = 499
    INTERNAL_ERROR = 500  # an unhandled exception in the handler
    SERVICE_UNAVAILABLE = 503  # a dependency failed, or the server is down
    GATEWAY_TIMEOUT = 504  # the server's own timeout (HTTP_TIMEOUT) fired; its work was dropped
    BUDGET_EXHAUSTED = 596  # client-side: the retry budget refused a retry
    BREAKER_OPEN = 597  # client-side: the client's circuit breaker refused to send
    CONNECTION_ERROR = 598  # client-side: no connection, or it broke before an answer
    CLIENT_TIMEOUT = 599  # client-side: the client stopped waiting for this attempt

    @property
    def label(self) -> str:
        """Short human name, e.g. ``'429 too many requests'`` or ``'599 client timeout'``."""
        return f"{int(self)} {self.name.lower().replace('_', ' ')}"


#: Codes that never come from a server: they are decided by the caller.
CLIENT_SIDE = frozenset(
    {Status.BUDGET_EXHAUSTED, Status.BREAKER_OPEN, Status.CONNECTION_ERROR, Status.CLIENT_TIMEOUT}
)

#: What a careful client retries by default: overload (429), server faults and timeouts, and
#: broken connections. Not other 4xx (the request itself is wrong: sending it again cannot help),
#: and not local refusals (breaker open, budget exhausted: they exist to stop retries).
DEFAULT_RETRYABLE = frozenset(
    {
        Status.TOO_MANY_REQUESTS,
        Status.INTERNAL_ERROR,
        502,
        Status.SERVICE_UNAVAILABLE,
        Status.GATEWAY_TIMEOUT,
        Status.CONNECTION_ERROR,
        Status.CLIENT_TIMEOUT,
    }
)
