"""Load shedding: refuse work beyond a fixed number of requests in progress.

A server that accepts everything under overload serves everything late; one that refuses the
excess at once (429) keeps serving the rest on time, and tells clients to back off. The reference
card's rule is ``if concurrent < max: process else: 429``: the request that would make
``max + 1`` is refused, and the limit is a count compared with a count, so there is no rounding
at the boundary.
"""

from __future__ import annotations

from ..validation import check_int

__all__ = ["ConcurrencyLimiter"]


class ConcurrencyLimiter:
    """Admit at most ``max_concurrent`` requests at a time.

    ``try_acquire()`` admits a request (True) or refuses it (False); every admitted request must
    ``release()`` exactly once. Releasing more than was acquired is a bug in the caller and
    raises ``RuntimeError`` rather than silently raising the limit.

    Not thread-safe: one event loop or one simulation owns it.
    """

    __slots__ = ("_in_flight", "max_concurrent")

    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = check_int("max_concurrent", max_concurrent, low=1)
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet released."""
        return self._in_flight

    def try_acquire(self) -> bool:
        """Admit one request if under the limit."""
        if self._in_flight < self.max_concurrent:
            self._in_flight += 1
            return True
        return False

    @property
    def limit(self) -> int:
        """The limit, ``max_concurrent`` (the ``AdmissionLimiter`` protocol's name for it)."""
        return self.max_concurrent

    def release(self, latency: float | None = None, dropped: bool = False) -> None:
        """One admitted request is done (a fixed limit learns nothing from how it went)."""
        if self._in_flight <= 0:
            raise RuntimeError("release() called more often than try_acquire() admitted")
        self._in_flight -= 1

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimiter(max_concurrent={self.max_concurrent}, "
            f"in_flight={self._in_flight})"
        )
