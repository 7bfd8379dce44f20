"""A bounded connection pool, as a pure state machine: who gets a connection, who waits, who is
refused, who times out.

The pool in front of the service's database calls (issue "The data system behind the service",
item 3) and the simulator's model of it are this one object, driven on two clocks: the live
store on ``time.monotonic`` (waiting with asyncio), the simulator on SimPy's ``env.now``. It
never sleeps, opens a connection or reads a clock of its own; ``acquire`` and ``release`` return
typed decisions that the driver performs, as ``GuardedCall``'s actions are (``policies.call``).

The rule mirrors ``psycopg_pool`` (psycopg 3's pool, ``AsyncConnectionPool(min_size, max_size,
max_waiting, timeout)``; its documentation, https://psycopg.org/psycopg3/docs/api/pool.html,
and its source, ``psycopg_pool/pool_async.py``: ``getconn``, ``_get_ready_connection``,
``_add_to_pool``, ``WaitingClient``):

========================  ======================================================================
size                      at most ``size`` connections exist, all interchangeable
                          (``max_size``). Here they are all open from the start: ``min_size ==
                          max_size``, as psycopg_pool's pool is when ``max_size`` is not given.
acquire: granted          an idle connection is taken at once, without waiting (psycopg_pool's
                          ``_get_ready_connection`` pops one from its idle deque).
acquire: refused          no connection idle and ``max_waiting`` clients already waiting: the
                          request is refused at once (psycopg_pool raises ``TooManyRequests``
                          when ``max_waiting and len(waiting) >= max_waiting``). ``max_waiting=0``
                          means no bound, as there (its default).
acquire: queued           otherwise the client joins the back of the waiting queue with a deadline
                          ``timeout`` seconds away (psycopg_pool appends a ``WaitingClient`` to
                          its ``_waiting`` deque; ``getconn(timeout=)`` overrides the pool's
                          ``timeout``, default 30 s, as ``acquire(timeout=)`` does here).
release                   a returned connection goes to the oldest client still waiting, first
                          in, first out, else back to the idle set (``_add_to_pool`` pops waiters
                          from the left until one accepts). Its wait is recorded.
timeout                   a waiter not served by its deadline gives up (psycopg_pool raises
                          ``PoolTimeout``, "couldn't get a connection after ... sec") and leaves
                          the queue; a connection released later goes to the next waiter.
cancel                    a waiter that stops waiting for its own reasons (its request was
                          cancelled) leaves the queue and is counted as cancelled, not as a
                          timeout (psycopg_pool: a ``WaitingClient`` whose wait raised any
                          exception never accepts a connection).
========================  ======================================================================

Two differences, both deliberate. psycopg_pool leaves a timed-out waiter in its deque until the
next returned connection skips it, so its ``requests_waiting`` and its ``max_waiting`` test count
such ghosts for a while; here a waiter that timed out or was cancelled leaves the queue at once,
so ``waiting`` is the clients really waiting and ``max_waiting`` bounds them. And a tie (a
release and a deadline at the same instant) goes to whichever the driver tells the pool first,
where psycopg_pool's goes to whichever takes the waiter's lock first.

Out of scope, said plainly: the lifetime of a connection (psycopg_pool's ``max_lifetime``,
``max_idle``), growing from ``min_size`` to ``max_size``, health checks, broken connections and
reconnects (``reconnect_timeout``), closing the pool (``PoolClosed``). Every connection here is
healthy and open for the whole run.

Counts a driver and ``/metrics`` read (psycopg_pool's ``get_stats()`` names in brackets):
``in_use``, ``idle``, ``waiting`` (``requests_waiting``), ``requests`` (``requests_num``),
``queued`` (``requests_queued``), ``acquisitions`` (granted, at once or after a wait),
``timeouts`` and ``refusals`` (together ``requests_errors``), ``cancelled``,
``wait_seconds_total`` (``requests_wait_ms``, in seconds) and the wait of each granted waiter
(``take_wait_times()``).

Not thread-safe: one event loop or one simulation owns a pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from ..validation import check_int, check_real

__all__ = ["ConnectionPool", "Granted", "PoolConfig", "PoolDecision", "Queued", "Refused",
           "TimedOut"]

Clock = Callable[[], float]

#: The longest acquire timeout a config takes, seconds.
MAX_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class Granted:
    """Ticket ``ticket`` holds a connection from now on; it must ``release()`` it once.
    ``waited``: seconds it spent in the queue (0 when granted at once)."""

    ticket: int
    waited: float


@dataclass(frozen=True, slots=True)
class Queued:
    """Ticket ``ticket`` waits: the driver waits until ``release()`` returns ``Granted`` for this
    ticket or until ``deadline`` (clock time), and then calls ``expire(ticket)``; or it calls
    ``cancel(ticket)`` if its caller stops waiting first."""

    ticket: int
    deadline: float


@dataclass(frozen=True, slots=True)
class Refused:
    """Ticket ``ticket`` is refused at once: no connection idle and ``waiting`` (=
    ``max_waiting``) clients already waiting (psycopg_pool's ``TooManyRequests``)."""

    ticket: int
    waiting: int


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Ticket ``ticket`` waited ``waited`` seconds without a connection and left the queue
    (psycopg_pool's ``PoolTimeout``)."""

    ticket: int
    waited: float


#: What ``ConnectionPool.acquire`` decides.
PoolDecision: TypeAlias = Granted | Queued | Refused


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """Settings of a connection pool; ``build(clock)`` makes a fresh one, every connection idle.

    Args:
        size: connections, 1..10000 (psycopg_pool's ``max_size``, here also its ``min_size``).
        max_waiting: the most clients that wait at once, 0..1000000; the next is refused.
            0: no bound (psycopg_pool's ``max_waiting``, whose default is 0).
        timeout: seconds a client waits for a connection before it gives up, > 0 and <= 3600
            (psycopg_pool's ``timeout``, default 30 s; the card's ``DATABASE_TIMEOUT``).

    Defaults are psycopg_pool's (``min_size=4``, ``max_waiting=0``, ``timeout=30.0``). Raises
    ``ValueError`` naming the field and its range.
    """

    size: int = 4
    max_waiting: int = 0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        check_int("size", self.size, low=1, high=10_000)
        check_int("max_waiting", self.max_waiting, low=0, high=1_000_000)
        object.__setattr__(self, "timeout", check_real("timeout", self.timeout, low=0,
                                                       low_open=True, high=MAX_TIMEOUT))

    def build(self, clock: Clock) -> ConnectionPool:
        """A new pool with these settings, all ``size`` connections idle, reading ``clock``."""
        return ConnectionPool(self, clock=clock)


class ConnectionPool:
    """``size`` interchangeable connections, a FIFO queue of waiters with deadlines, and counts
    (see the module docstring for the rule and its psycopg_pool counterparts).

    Use::

        decision = pool.acquire()            # Granted | Queued | Refused
        # Queued: wait for release() to return Granted(ticket) or for decision.deadline,
        #         then pool.expire(ticket) (TimedOut, or None if it was granted meanwhile)
        ...                                  # use the connection
        granted = pool.release()             # Granted(next ticket) to hand it on, or None

    Every ticket ends exactly once: granted (and later released), timed out, cancelled or
    refused. Tickets are numbered 1, 2, ... in the order of ``acquire`` calls.
    """

    __slots__ = ("_clock", "_next_ticket", "_wait_times", "_waiters", "acquisitions",
                 "cancelled", "config", "in_use", "queued", "refusals", "requests",
                 "timeouts", "wait_seconds_total")

    def __init__(self, config: PoolConfig, *, clock: Clock) -> None:
        if not isinstance(config, PoolConfig):
            raise ValueError(f"config must be a PoolConfig, got {config!r}")
        self.config = config
        self._clock = clock
        self._next_ticket = 1
        # ticket -> (arrival time, deadline), oldest first
        self._waiters: OrderedDict[int, tuple[float, float]] = OrderedDict()
        self._wait_times: list[float] = []
        self.in_use = 0
        self.requests = 0
        self.queued = 0
        self.acquisitions = 0
        self.timeouts = 0
        self.refusals = 0
        self.cancelled = 0
        self.wait_seconds_total = 0.0

    @property
    def size(self) -> int:
        """Connections in the pool, ``config.size``."""
        return self.config.size

    @property
    def idle(self) -> int:
        """Connections not in use (0 whenever a client waits)."""
        return self.config.size - self.in_use

    @property
    def waiting(self) -> int:
        """Clients waiting for a connection now."""
        return len(self._waiters)

    def waiters(self) -> tuple[int, ...]:
        """The waiting tickets, oldest first (the order they will be served in)."""
        return tuple(self._waiters)

    def deadline(self, ticket: int) -> float | None:
        """When ``ticket`` gives up (clock time), or None if it is not waiting."""
        entry = self._waiters.get(ticket)
        return None if entry is None else entry[1]

    def acquire(self, timeout: float | None = None) -> PoolDecision:
        """A client asks for a connection: ``Granted`` (idle one taken), ``Queued`` (wait until
        ``deadline``: now + ``timeout``, default ``config.timeout``, > 0 and <= 3600 s, as
        psycopg_pool's ``getconn(timeout=)``) or ``Refused`` (``max_waiting`` already wait)."""
        limit = self.config.timeout if timeout is None else check_real(
            "timeout", timeout, low=0, low_open=True, high=MAX_TIMEOUT)
        ticket = self._next_ticket
        self._next_ticket += 1
        self.requests += 1
        if self.in_use < self.config.size:
            self.in_use += 1
            self.acquisitions += 1
            return Granted(ticket, 0.0)
        max_waiting = self.config.max_waiting
        if max_waiting and len(self._waiters) >= max_waiting:
            self.refusals += 1
            return Refused(ticket, len(self._waiters))
        now = self._clock()
        deadline = now + limit
        self._waiters[ticket] = (now, deadline)
        self.queued += 1
        return Queued(ticket, deadline)

    def release(self) -> Granted | None:
        """A connection comes back: it goes to the oldest waiter (returned as ``Granted``, with
        its wait, which is recorded), or, with none waiting, to the idle set (None). Raises
        ``RuntimeError`` when no connection is in use (a driver's bug)."""
        if self.in_use <= 0:
            raise RuntimeError("release() called with no connection in use")
        if not self._waiters:
            self.in_use -= 1
            return None
        ticket, (arrived, _) = self._waiters.popitem(last=False)
        waited = self._clock() - arrived
        self.acquisitions += 1
        self.wait_seconds_total += waited
        self._wait_times.append(waited)
        return Granted(ticket, waited)

    def expire(self, ticket: int) -> TimedOut | None:
        """The driver's timer for ``ticket`` fired at its deadline: if it still waits, it leaves
        the queue and times out (``TimedOut``, counted); None if it no longer waits (granted or
        cancelled first: a stale timer, ignored). The driver's timer is the deadline, so this
        does not compare clock readings (an asyncio timer may fire a clock tick early)."""
        entry = self._waiters.pop(ticket, None)
        if entry is None:
            return None
        self.timeouts += 1
        return TimedOut(ticket, self._clock() - entry[0])

    def expire_due(self) -> tuple[TimedOut, ...]:
        """Time out every waiter whose deadline is at or before now, oldest first: for a driver
        that checks deadlines when it is woken rather than keeping a timer per waiter."""
        now = self._clock()
        due = [t for t, (_, deadline) in self._waiters.items() if deadline <= now]
        return tuple(out for out in map(self.expire, due) if out is not None)

    def cancel(self, ticket: int) -> bool:
        """A waiter stops waiting for its own reasons: it leaves the queue (counted in
        ``cancelled``; True). False if ``ticket`` is not waiting; a ticket already granted holds
        a connection and must ``release()`` it instead."""
        if self._waiters.pop(ticket, None) is None:
            return False
        self.cancelled += 1
        return True

    def take_wait_times(self) -> list[float]:
        """The waits (seconds) of the waiters granted since the last call, in grant order, and
        forget them (a live driver drains them into its histogram; ``wait_seconds_total`` keeps
        the sum)."""
        waits, self._wait_times = self._wait_times, []
        return waits

    def __repr__(self) -> str:
        return (f"ConnectionPool(size={self.config.size}, in_use={self.in_use}, "
                f"waiting={self.waiting})")
