"""The live service's work: ``workers`` slots with a queue in front (an M/M/c queue, live).

Each request waits for a free slot in the order of the server's queue discipline
(``ServerConfig.queue``, ``policies.queues``: FIFO by default, in arrival order), then holds it
for a service time drawn from a ``Distribution``, divided by the current capacity factor (1.0
normal, 0.5 half speed, 0 down). Service times are drawn from the ``"service"`` stream of
``rng_streams(seed)`` in the order slots are acquired, which is how the simulator draws them (in
order of service start, from the same named stream): a seeded live run and a seeded simulated
run see the same service times, so whatever differs between them is the real world's doing.

A stall (``stalled = True``, the live side of ``Fault.stall``) answers nothing until it is
lifted, as a stop-the-world pause does: arriving requests wait at the door, and a request whose
work ends keeps its slot and waits before it answers. Lifted, the door opens (in arrival order,
behind the requests already waiting for a slot) and the held answers leave, as the simulator's
server does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from ..policies import Fifo, QueueConfig, QueueDiscipline
from ..validation import check_config, check_int, check_real
from ..workload import Distribution

__all__ = ["ServerDown", "Waiter", "WorkReceipt", "WorkStation"]


class ServerDown(Exception):
    """Raised by ``WorkStation.serve`` when the capacity factor is 0 (the server is down)."""


@dataclass(frozen=True)
class WorkReceipt:
    """What one request cost: seconds waiting for a slot, and seconds of work in it."""

    queue: float
    work: float

    def server_timing(self) -> str:
        """The ``Server-Timing`` header value, e.g. ``queue;dur=1.250, work;dur=20.031`` (ms)."""
        return f"queue;dur={self.queue * 1e3:.3f}, work;dur={self.work * 1e3:.3f}"


class Waiter:
    """A request waiting for a work slot, as the queue discipline holds it: its ``ticket`` (a
    future, set when a slot is handed to it) and ``t_arrive`` (``time.perf_counter()`` when it
    began to wait), which a discipline that orders or drops by waiting time (CoDel) reads, as
    the simulator's disciplines read an attempt's ``t_arrive``."""

    __slots__ = ("t_arrive", "ticket")

    def __init__(self, ticket: asyncio.Future[None], t_arrive: float) -> None:
        self.ticket = ticket
        self.t_arrive = t_arrive


class WorkStation:
    """``workers`` concurrent work slots, a queue in front, service times from ``service_time``.

    The requests waiting for a slot are ``Waiter``s kept in a ``QueueDiscipline`` built from
    ``queue`` (default ``Fifo()``: the order of an ``asyncio.Semaphore``'s waiters); a freed
    slot goes to the queue's ``pop()``, handed over directly, so no later arrival can take it
    first. A waiter cancelled while it waits (the ``TimeoutMiddleware``'s server timeout, a
    client gone) takes no slot: it leaves the queue (``discard``), so a queue under sustained
    timeouts holds only the living; one cancelled after it was handed a slot passes the slot
    on.

    Used only from the service's own event loop (not thread-safe). If the app is served again
    on a new event loop (a server restarted around the same app), the slots follow it.
    """

    def __init__(self, *, workers: int, service_time: Distribution,
                 rng: np.random.Generator, queue: QueueConfig | None = None) -> None:
        self.workers = check_int("workers", workers, low=1, high=10_000)
        if not isinstance(service_time, Distribution):
            raise ValueError(f"service_time must be a Distribution, got {service_time!r}")
        self.service_time = service_time
        self.queue_config: QueueConfig = Fifo() if queue is None else queue
        check_config("queue", self.queue_config, "a config with build(), such as Fifo()")
        self.use_stream(rng)
        self._capacity = 1.0
        self._resume: asyncio.Event | None = None  # set while stalled; set() lifts the stall
        self._free = self.workers
        self._waiters: QueueDiscipline[Waiter] = self.queue_config.build()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.busy = 0
        self.waiting = 0

    def use_stream(self, rng: np.random.Generator) -> None:
        """Draw service times from ``rng`` from now on (a fresh stream: rewind to the seed)."""
        self._draw = self.service_time.sampler(rng)

    @property
    def capacity(self) -> float:
        """Speed factor: service times are divided by it; 0 means the server is down."""
        return self._capacity

    @capacity.setter
    def capacity(self, value: float) -> None:
        self._capacity = check_real("capacity", value, low=0, high=1000)

    @property
    def stalled(self) -> bool:
        """True while the station answers nothing (see the module docstring)."""
        return self._resume is not None

    @stalled.setter
    def stalled(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"stalled must be True or False, got {value!r}")
        if value and self._resume is None:
            self._resume = asyncio.Event()
        elif not value and self._resume is not None:
            self._resume.set()  # wakes every held request, in the order it began to wait
            self._resume = None

    async def _stall_over(self) -> None:
        resume = self._resume
        if resume is not None:
            await resume.wait()

    def _on_this_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or served again on a new loop: fresh slots
            self._loop, self._free = loop, self.workers
            self._waiters = self.queue_config.build()
        return loop

    async def _acquire(self) -> None:
        """Take a free slot, or wait in the queue until one is handed over."""
        loop = self._on_this_loop()
        if self._free > 0:  # then no one waits: a freed slot goes to a waiter if there is one
            self._free -= 1
            return
        ticket: asyncio.Future[None] = loop.create_future()
        waiter = Waiter(ticket, time.perf_counter())
        self._waiters.push(waiter)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():  # handed a slot, then cancelled
                self._release()
            else:
                ticket.cancel()  # it waits no more: out of the queue (and skipped if popped)
                self._waiters.discard(waiter)
            raise

    def _release(self) -> None:
        """Hand the slot to the next live waiter in the queue's order, or free it."""
        waiters = self._waiters
        while len(waiters):
            ticket = waiters.pop().ticket
            if not ticket.done():
                ticket.set_result(None)
                return
        self._free += 1

    async def serve(self, fixed: float | None = None) -> WorkReceipt:
        """Wait for a slot, work, release it. ``fixed`` replaces the drawn service time (the
        draw is still made, so later requests keep their place in the stream).

        Raises ``ServerDown`` at once when capacity is 0, before queueing or after (if the
        capacity dropped to 0 while this request waited). While ``stalled``, waits at the door
        before queueing, and after its work before answering (its time at the door counts as
        queueing, its time held after the work as neither).
        """
        if self._capacity == 0:
            raise ServerDown
        arrived = time.perf_counter()
        self.waiting += 1
        try:
            if self._resume is not None:
                await self._stall_over()
            await self._acquire()
        finally:
            self.waiting -= 1
        try:
            if self._resume is not None:  # a slot freed during a stall: still no work starts
                await self._stall_over()
            acquired = time.perf_counter()
            drawn = self._draw()  # in order of slot acquisition: no await since _acquire()
            capacity = self._capacity
            if capacity == 0:
                raise ServerDown
            seconds = (drawn if fixed is None else fixed) / capacity
            self.busy += 1
            try:
                await asyncio.sleep(seconds)
            finally:
                self.busy -= 1
            receipt = WorkReceipt(queue=acquired - arrived, work=time.perf_counter() - acquired)
            if self._resume is not None:
                await self._stall_over()  # the answer waits, and the slot with it
            return receipt
        finally:
            self._release()
