"""The client: each logical request (``Call``) and its attempts on the wire (``Attempt``),
driven by the client's ``GuardedCall`` on simulated time.

A call sends an attempt to the instance its guarded call routes it to, waits for its answer or
its own timeout, and asks the guarded call what next (retry after a wait, or done); every
decision is the policy's. An attempt is answered once: by the server, after the way back on the
wire, or by the client giving up.

A call drives its ``GuardedCall`` by one of two loops of ``policies.call``, both the policy's
decisions, picked once when it starts:

* one attempt at a time, with the step methods ``before_attempt``/``after_attempt`` (``send``,
  ``attempt_done``): plain and retried calls, every canonical scenario. The cheapest loop, and
  the hot path of the engine, so the hedged loop below costs it one test in ``start``.
* the actions (``start``, ``on_answer``, ``on_timer`` returning ``Send``, ``Wait``, ``Cancel``,
  ``Done``), when the client hedges (``ClientPolicy(hedge=HedgePolicy(...))``;
  ``start_hedged``, ``perform``, ``copy_done``, ``on_timer``): a ``Wait`` is one timer
  (``Run.later``) that calls ``on_timer`` (a stale one is the call's to ignore, so none is
  ever cancelled).
  Each copy is an attempt of its own (a ``Copy``): routed by ``GuardedCall.route`` (with
  ``NextInstance`` a hedge goes to the next instance), counted in the run's ``outstanding``
  while in flight, given the client's timeout (599), and a row in ``attempts``; the request's
  ``attempts`` counts the copies sent. An answer and a timer due at the same instant come in
  the order SimPy scheduled them.

A cancelled copy (another copy won) is cut off at the client: its row ends then, with status
``CANCELLED`` (499, as in the fan-out model, ``sim.fanout``), it leaves ``outstanding`` at once,
and a late answer or timeout of it is ignored; the guarded call counts it nowhere. The server
is not told: the copy stays in its queue or on its worker and is served as wasted work (it
holds a worker, appears in ``meta["server_log"]``, its answer is dropped). That is what the
live service does with a hedged copy its client gave up on: the client closes the connection,
and uvicorn neither cancels the handler nor tells it (``service.tracking``), so the work runs
to its end and the Metrics layer counts the request 499. It is the cost of hedging that Dean
and Barroso's "tied requests" remove, and why copies that queue make hedging worse than the
closed form of ``analysis.tail`` (which assumes that no copy waits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..policies import CallAction, Cancel, GuardedCall, Send, Status, Wait
from .fanout import CANCELLED

if TYPE_CHECKING:
    from .engine import Run
    from .server import Server

__all__ = ["Attempt", "Call", "Copy"]

_OK = int(Status.OK)
_SHED = int(Status.TOO_MANY_REQUESTS)
_CLIENT_TIMEOUT = int(Status.CLIENT_TIMEOUT)
_NAN = math.nan


class Call:
    """One logical request: a driver of ``GuardedCall`` on simulated time (it sends attempts
    and waits; the guarded call decides): one attempt at a time, or hedged copies by the
    call's actions (see the module docstring)."""

    __slots__ = ("copies", "guarded", "on_end", "request_id", "run", "t_start")

    def __init__(self, run: Run, on_end: Callable[[], None] | None = None) -> None:
        self.run = run
        self.on_end = on_end
        self.request_id = run.next_request_id
        run.next_request_id += 1
        self.guarded: GuardedCall = run.client_guard.call(self.request_id)
        self.t_start = run.env._now  # made when it starts (``start``, or the open loop's send)

    def start(self) -> None:
        run = self.run
        if not run.hedged:
            self.send()
        else:
            self.start_hedged()

    def send(self, _value: Any = None) -> None:
        run = self.run
        now = run.env._now
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
            deadline = attempt.deadline = now + run.client_timeout
            deadlines = run.client_deadlines  # deadlines.add(deadline, attempt), inline
            deadlines.pending.append((deadline, attempt))
            if not deadlines.armed:
                deadlines.arm(deadline)
        if run.half_trip:
            run.later(run.half_trip, server.submit, attempt)  # on the wire to the server
        else:
            server.submit(attempt)

    def attempt_done(self, attempt: Attempt, status: int) -> None:
        """Called once per attempt: with the server's answer, or 599 if the client gave up."""
        run = self.run
        now = run.env._now
        outstanding = run.outstanding
        if outstanding is None:  # one instance: the recorder adds its index, 0, at the end
            run.recorder.attempt_rows.append((self.request_id, attempt.number, attempt.t_send,
                                              now, now - attempt.t_send, status,
                                              attempt.queue_wait))
        else:
            index = attempt.server.index
            outstanding[index] -= 1
            run.recorder.attempt_rows.append((self.request_id, attempt.number, attempt.t_send,
                                              now, now - attempt.t_send, status,
                                              attempt.queue_wait, index))
        retry_after = attempt.server.retry_after if status == _SHED else attempt.retry_after
        guarded = self.guarded
        delay = guarded.after_attempt(status, retry_after=retry_after)
        if delay is None:  # done: end(guarded.status), inline (once per request)
            status = guarded.status
            run.recorder.request_rows.append((self.request_id, self.t_start, now,
                                              now - self.t_start, status, guarded.attempts,
                                              status == _OK))
            if self.on_end is not None:
                self.on_end()
        else:
            run.later(delay, self.send)

    # -- the hedged loop: the guarded call's actions ----------------------------------------

    def start_hedged(self) -> None:
        self.copies: dict[int, Copy] = {}  # the copies sent, by number
        self.perform(self.guarded.start())

    def perform(self, actions: tuple[CallAction, ...]) -> None:
        """Do what the guarded call asks, in order (``Done`` always comes last)."""
        for action in actions:
            kind = type(action)
            if kind is Send:
                self.send_copy(action.copy)  # type: ignore[union-attr]
            elif kind is Wait:
                self.run.later(action.seconds, self.on_timer, action)  # type: ignore[union-attr]
            elif kind is Cancel:
                for copy in action.copies:  # type: ignore[union-attr]
                    attempt = self.copies[copy]
                    attempt.answered = True  # the client stops listening: late news ignored
                    self.record_copy(attempt, CANCELLED)
            else:
                self.end(action.status)  # type: ignore[union-attr]

    def send_copy(self, number: int) -> None:
        """Copy ``number``, just admitted, on the wire: what ``send`` does for an attempt (kept
        inline there: the one-attempt loop is the engine's hot path)."""
        run = self.run
        now = run.env._now
        outstanding = run.outstanding
        if outstanding is None:
            server = run.server
        else:
            index = self.guarded.route(outstanding)
            outstanding[index] += 1
            server = run.servers[index]
        attempt = self.copies[number] = Copy(self, number, now, server)
        if run.client_timeout is not None:
            attempt.deadline = now + run.client_timeout
            run.client_deadlines.add(attempt.deadline, attempt)
        if run.half_trip:
            run.later(run.half_trip, server.submit, attempt)
        else:
            server.submit(attempt)

    def on_timer(self, wait: Wait) -> None:
        """The timer of ``wait`` fired: the next copy is due (unless the call moved on)."""
        self.perform(self.guarded.on_timer(wait))

    def copy_done(self, attempt: Copy, status: int) -> None:
        """Called once per copy not cancelled: with the server's answer, or 599."""
        self.record_copy(attempt, status)
        retry_after = attempt.server.retry_after if status == _SHED else attempt.retry_after
        self.perform(self.guarded.on_answer(attempt.number, status, retry_after=retry_after))

    def record_copy(self, attempt: Copy, status: int) -> None:
        """The copy is no longer in flight: its row, one fewer outstanding at its instance."""
        run = self.run
        now = run.env._now
        row = (self.request_id, attempt.number, attempt.t_send, now, now - attempt.t_send,
               status, attempt.queue_wait)
        if run.outstanding is None:  # one instance: as attempt_done records it
            run.recorder.attempt_rows.append(row)
        else:
            run.outstanding[attempt.server.index] -= 1
            run.recorder.attempt_rows.append((*row, attempt.server.index))

    def end(self, status: int) -> None:
        run = self.run
        now = run.env._now
        run.recorder.request_rows.append((self.request_id, self.t_start, now, now - self.t_start,
                                          status, self.guarded.attempts, status == _OK))
        if self.on_end is not None:
            self.on_end()


class Attempt:
    """One attempt on the wire. Answered once: by the server, or by the client giving up.

    ``retry_after``: seconds of the ``Retry-After`` the server sent with an answer other than
    429 (whose ``Retry-After`` is the server's ``retry_after``, always sent), or None: set by
    the handler that answers with one, the pool's 503 (``sim.pool``), as the live service's
    ``pool_unavailable`` sends ``Retry-After`` on its 503. The client honours it as the live
    load generator does (``RetryPolicy(honor_retry_after=True)``: a floor on the backoff); a
    503 without one (the server down, a failed dependency call) carries none, live too."""

    __slots__ = ("answered", "call", "deadline", "number", "queue_wait", "retry_after",
                 "server", "status", "t_arrive", "t_send")

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
        self.retry_after: float | None = None

    def answer(self, status: int) -> None:
        """The server's answer; it reaches the client after the way back on the wire."""
        half_trip = self.call.run.half_trip
        if half_trip:
            self.call.run.later(half_trip, self.settle, status)  # on the wire back
        elif not self.answered:  # settle(status), inline: once per attempt
            self.answered = True
            self.call.attempt_done(self, status)

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


class Copy(Attempt):
    """One copy of a hedged call on the wire (``Call.send_copy``): an attempt whose outcome
    goes to ``Call.copy_done``, unless the copy was cancelled first."""

    __slots__ = ()

    def answer(self, status: int) -> None:
        half_trip = self.call.run.half_trip
        if half_trip:
            self.call.run.later(half_trip, self.settle, status)
        else:
            self.settle(status)

    def settle(self, status: int) -> None:
        if not self.answered:
            self.answered = True
            self.call.copy_done(self, status)
