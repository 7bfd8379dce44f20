"""The queue seam: in which order a server's waiting requests are served.

A server with all its workers busy keeps arriving requests in a queue; the discipline decides
which one a freed worker takes next (``pop``), and which one has waited longest (``oldest``,
``pop_oldest``), which is what a server timeout reaps first. The simulated server
(``atlas_sim.sim.server``) and the live work station (``atlas_sim.service.work``) both keep their
waiting requests in one of these, so LIFO, CoDel or a priority order plug into both worlds by
implementing this protocol (as SimPy's ``Store`` and ``PriorityStore`` share one interface).

A config object (frozen, with ``build()``) is what ``ServerConfig.queue`` holds, so each server
instance, and each run, builds an empty queue. ``Fifo`` is the first implementation: first
come, first served, the order of M/M/c and of an ``asyncio.Semaphore``'s waiters.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["Fifo", "FifoQueue", "QueueConfig", "QueueDiscipline"]

T = TypeVar("T")


class QueueDiscipline(Protocol[T]):
    """Waiting requests, in a server's order of service. Pure: no clock, no I/O.

    ``push(item)`` adds an arrival; ``pop()`` removes and returns the next to serve;
    ``oldest()`` returns, and ``pop_oldest()`` removes, the item that has waited longest;
    ``discard(item)`` removes an item that stopped waiting (its request timed out or its
    client left), if it is still there; ``len()`` is how many wait. ``pop``, ``oldest`` and
    ``pop_oldest`` raise ``IndexError`` when the queue is empty.
    """

    def push(self, item: T) -> None: ...

    def pop(self) -> T: ...

    def oldest(self) -> T: ...

    def pop_oldest(self) -> T: ...

    def discard(self, item: T) -> None: ...

    def __len__(self) -> int: ...


class QueueConfig(Protocol):
    """What ``ServerConfig.queue`` holds: settings that ``build()`` an empty queue."""

    def build(self) -> QueueDiscipline: ...


class FifoQueue(deque[T]):
    """First come, first served: ``pop`` and ``pop_oldest`` are the same. A ``deque`` whose
    ``push``, ``pop`` and truth value are the deque's own C methods, since the simulator's
    server calls them once per queued request (a wrapper in Python cost the engine about 5%)."""

    __slots__ = ()

    push = deque.append
    pop = deque.popleft
    pop_oldest = deque.popleft

    def oldest(self) -> T:
        return self[0]

    def discard(self, item: T) -> None:
        """Remove ``item`` if it still waits (linear: only requests that give up pay it)."""
        with contextlib.suppress(ValueError):
            self.remove(item)

    def __repr__(self) -> str:
        return f"FifoQueue({len(self)} waiting)"


@dataclass(frozen=True)
class Fifo:
    """First in, first out: the discipline of M/M/c, and the default."""

    def build(self) -> FifoQueue:
        return FifoQueue()
