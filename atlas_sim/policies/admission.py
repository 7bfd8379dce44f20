"""The admission seam: what a server asks before it takes a request, and tells after.

A limiter is told when a request starts (``try_acquire``: admit it, or refuse it with 429) and
when it ends (``release``: how long it took, and whether it was dropped, a timeout or an
error, rather than served). Both the simulated server (``atlas_sim.sim.server``) and the live
``LoadSheddingMiddleware`` drive a limiter through these two calls only, so an adaptive limit
(AIMD, Vegas, Gradient2 in Netflix's concurrency-limits; Envoy's adaptive concurrency filter)
plugs into both worlds by implementing them. The latency and the outcome are what such a limit
learns from: AIMD backs off on a drop, Vegas and Gradient compare the latency with the least
seen (Netflix's ``Limiter.Listener.onSuccess``/``onDropped``/``onIgnore`` carry the same).

A config object (frozen, keyword-only, with ``build()``) is what ``ServerConfig.admission``
holds, so that each server instance, and each run, builds a fresh limiter.

``FixedLimit`` is the first implementation: the reference card's rule, a fixed count
(``LOAD_SHEDDING_MAX_CONCURRENT``), which ignores what it is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..validation import check_int
from .limiter import ConcurrencyLimiter

__all__ = ["AdmissionConfig", "AdmissionLimiter", "FixedLimit"]


@runtime_checkable
class AdmissionLimiter(Protocol):
    """A server's admission limit, told when each request starts and ends.

    ``try_acquire()``: admit one request now (True) or refuse it (False: the server answers
    429). Every admitted request is released exactly once: ``release(latency=seconds from
    admission to the end, dropped=True if it ended in a timeout, a 5xx or was skipped
    unserved)``. ``limit`` is the current limit and ``in_flight`` the requests admitted and not
    released, both counts (what a 429's message and the metrics report).
    """

    @property
    def limit(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    def try_acquire(self) -> bool: ...

    def release(self, latency: float | None = None, dropped: bool = False) -> None: ...


class AdmissionConfig(Protocol):
    """What ``ServerConfig.admission`` holds: settings that ``build()`` a fresh limiter."""

    def build(self) -> AdmissionLimiter: ...


@dataclass(frozen=True, kw_only=True)
class FixedLimit:
    """At most ``max_concurrent`` requests in progress (queued or at work); the next gets 429.

    The reference card's load shedding (``LOAD_SHEDDING_MAX_CONCURRENT``, default 1000):
    ``if concurrent < max: process else: 429``. ``build()`` gives a ``ConcurrencyLimiter``.
    """

    max_concurrent: int

    def __post_init__(self) -> None:
        check_int("max_concurrent", self.max_concurrent, low=1)

    def build(self) -> ConcurrencyLimiter:
        return ConcurrencyLimiter(self.max_concurrent)
