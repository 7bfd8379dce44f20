"""Exponential backoff with the four jitter strategies of the AWS Architecture Blog post
"Exponential Backoff and Jitter" (Marc Brooker, 2015).

Waiting longer after each failure gives a struggling server room to recover; jitter spreads the
waiting clients out so that they do not come back all at once (the thundering herd).

With ``ceiling(n) = min(cap, base * multiplier**n)`` for the n-th retry (n = 0, 1, 2, ...):

========================  ==============================================================
``"none"``                ``ceiling(n)``: every client waits the same, so they stay in step
``"full"``                ``uniform(0, ceiling(n))``: AWS's recommendation; least work
``"equal"``               ``ceiling(n)/2 + uniform(0, ceiling(n)/2)``: never very short
``"decorrelated"``        ``min(cap, uniform(base, previous * 3))``, starting from ``base``
========================  ==============================================================

Decorrelated jitter grows by its own factor of 3, as in the post; it ignores ``multiplier``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from ..validation import check_choice, check_real

__all__ = ["JITTER_STRATEGIES", "Backoff", "Jitter"]

Jitter = Literal["none", "full", "equal", "decorrelated"]
JITTER_STRATEGIES: tuple[str, ...] = get_args(Jitter)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """How long to wait before each retry.

    Args:
        base: the first ceiling, in seconds (>= 0). ``base=0`` means "retry at once".
        multiplier: growth of the ceiling per retry (>= 1; 1 gives a constant ceiling).
        cap: the largest wait, in seconds (>= base).
        jitter: one of ``"none"``, ``"full"``, ``"equal"``, ``"decorrelated"``.

    The defaults (100 ms doubling up to 10 s, full jitter) are the reference card's retry pattern:
    100 ms, 200 ms, 400 ms, ... each randomised.
    """

    base: float = 0.1
    multiplier: float = 2.0
    cap: float = 10.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        base = check_real("base", self.base, low=0)
        multiplier = check_real("multiplier", self.multiplier, low=1)
        cap = check_real("cap", self.cap, low=0)
        if cap < base:
            raise ValueError(f"cap must be a number >= base ({base:g}), got {self.cap!r}")
        check_choice("jitter", self.jitter, JITTER_STRATEGIES)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "multiplier", multiplier)
        object.__setattr__(self, "cap", cap)

    def ceiling(self, n: int) -> float:
        """The un-jittered wait before retry ``n`` (0-based): ``min(cap, base * multiplier**n)``."""
        if n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if self.base == 0:
            return 0.0
        # Stop multiplying once past the cap, so that large n never overflows.
        wait = self.base
        for _ in range(n):
            wait *= self.multiplier
            if wait >= self.cap:
                return self.cap
        return min(self.cap, wait)

    def delays(self, rng: np.random.Generator | None = None) -> Iterator[float]:
        """Yield the successive waits, without end, drawing jitter from ``rng``.

        ``rng`` may be omitted only for ``jitter="none"``. Each retry sequence needs its own
        iterator (decorrelated jitter remembers the previous wait).
        """
        if rng is None and self.jitter != "none":
            raise ValueError(f"rng is required for jitter={self.jitter!r}")
        base, cap, multiplier = self.base, self.cap, self.multiplier
        if self.jitter == "decorrelated":
            assert rng is not None
            sleep = base
            while True:
                sleep = min(cap, rng.uniform(base, sleep * 3.0))
                yield sleep
        ceiling = base
        while True:
            if self.jitter == "none":
                yield ceiling
            elif self.jitter == "full":
                yield rng.uniform(0.0, ceiling)  # type: ignore[union-attr]
            else:  # equal
                half = ceiling / 2.0
                yield half + rng.uniform(0.0, half)  # type: ignore[union-attr]
            ceiling = min(cap, ceiling * multiplier)
