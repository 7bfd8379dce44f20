"""The client: each logical request (``Call``) and its attempts on the wire (``Attempt``),
driven by the client's ``GuardedCall`` on simulated time.

A call sends an attempt to the instance its guarded call routes it to, waits for its answer or
its own timeout, and asks the guarded call what next (retry after a wait, or done); every
decision is the policy's. An attempt is answered once: by the server, after the way back on the
wire, or by the client giving up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..policies import GuardedCall, Status

if TYPE_CHECKING:
    from .engine import Run
    from .server import Server

__all__ = ["Attempt", "Call"]

_OK = int(Status.OK)
_SHED = int(Status.TOO_MANY_REQUESTS)
_CLIENT_TIMEOUT = int(Status.CLIENT_TIMEOUT)
_NAN = math.nan


class Call:
    """One logical request: a driver of ``GuardedCall`` on simulated time (it sends attempts
    and waits; the guarded call decides)."""

    __slots__ = ("guarded", "on_end", "request_id", "run", "t_start")

    def __init__(self, run: Run, on_end: Callable[[], None] | None = None) -> None:
        self.run = run
        self.on_end = on_end
        self.request_id = run.next_request_id
        run.next_request_id += 1
        self.guarded: GuardedCall = run.client_guard.call(request=self.request_id)
        self.t_start = 0.0

    def start(self) -> None:
        self.t_start = self.run.env.now
        self.send()

    def send(self, _event: Any = None) -> None:
        run = self.run
        now = run.env.now
        guarded = self.guarded
        if not guarded.before_attempt():
            self.end(guarded.status)
            return
        outstanding = run.outstanding
        if outstanding is None:  # one instance: nothing to choose, nothing to count
            server = run.server
        else:
            index = guarded.route(outstanding)
            outstanding[index] += 1
            server = run.servers[index]
        attempt = Attempt(self, guarded.attempts, now, server)
        if run.client_timeout is not None:
            attempt.deadline = now + run.client_timeout
            run.client_deadlines.add(attempt.deadline, attempt)
        if run.half_trip:
            run.later(run.half_trip, server.arrive, attempt)  # on the wire to the server
        else:
            server.submit(attempt)

    def attempt_done(self, attempt: Attempt, status: int) -> None:
        """Called once per attempt: with the server's answer, or 599 if the client gave up."""
        run = self.run
        now = run.env.now
        server = attempt.server
        if run.outstanding is not None:
            run.outstanding[server.index] -= 1
        run.recorder.attempt_rows.append((self.request_id, attempt.number, attempt.t_send, now,
                                          now - attempt.t_send, status, attempt.queue_wait,
                                          server.index))
        retry_after = server.retry_after if status == _SHED else None
        delay = self.guarded.after_attempt(status, retry_after=retry_after)
        if delay is None:
            self.end(self.guarded.status)
        else:
            run.later(delay, self.send)

    def end(self, status: int) -> None:
        run = self.run
        now = run.env.now
        run.recorder.request_rows.append((self.request_id, self.t_start, now, now - self.t_start,
                                          status, self.guarded.attempts, status == _OK))
        if self.on_end is not None:
            self.on_end()


class Attempt:
    """One attempt on the wire. Answered once: by the server, or by the client giving up."""

    __slots__ = ("answered", "call", "deadline", "number", "queue_wait", "server", "status",
                 "t_arrive", "t_send")

    def __init__(self, call: Call, number: int, t_send: float, server: Server) -> None:
        self.call = call
        self.server = server  # the instance it was sent to
        self.number = number
        self.t_send = t_send
        self.deadline = math.inf  # when the client gives up (deadline propagation)
        self.queue_wait = _NAN
        self.answered = False
        self.status = _OK
        self.t_arrive = t_send

    def answer(self, status: int) -> None:
        """The server's answer; it reaches the client after the way back on the wire."""
        half_trip = self.call.run.half_trip
        if half_trip:
            self.call.run.later(half_trip, self.arrive, status)
        else:
            self.settle(status)

    def arrive(self, event: Any) -> None:
        self.settle(event._value)

    def time_out(self) -> None:
        """The client's deadline passed without an answer: it gives up (599)."""
        self.settle(_CLIENT_TIMEOUT)

    def is_answered(self) -> bool:
        return self.answered

    def settle(self, status: int) -> None:
        """The client learns the outcome: the first of an answer or its own timeout counts."""
        if not self.answered:
            self.answered = True
            self.call.attempt_done(self, status)
