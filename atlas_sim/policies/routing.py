"""The routing seam: which server instance an attempt goes to.

A client in front of several instances of a service picks one for every attempt. The rule is
client policy, like retry and hedging: ``ClientPolicy(routing=...)`` holds its config, and the
one driver asks it through ``GuardedCall.route(outstanding)`` in both worlds (the simulated
client, ``atlas_sim.sim.client``, and the live load generator, ``atlas_sim.service.loadgen``).
``outstanding`` is the client's own view of the instances: how many of its attempts each one has
not answered yet, which is all that "least outstanding requests" and "power of two choices"
need (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001; Envoy's
least-request balancer picks the fewer of two at random the same way).

A config (frozen, keyword-only) ``build(rng)``s a ``Router``, the state machine of one client
(a round-robin position, say), drawing any randomness from ``rng``, the ``"routing"`` stream of
``workload.rng_streams``.

``NextInstance`` is the first implementation, the rule Atlas's experiments have used so far:
request ``i`` goes first to instance ``i mod n`` and each retry to the next instance, so a
retry never lands on the instance that just failed it (when there are two or more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["NextInstance", "Router", "RoutingConfig"]


class Router(Protocol):
    """One client's routing state. ``choose`` returns the index (0 .. len(outstanding) - 1) of
    the instance for attempt ``attempt`` (1 for the first) of request ``request`` (0, 1, ...
    in the order the client makes them); ``outstanding[k]`` is the client's attempts in flight
    to instance ``k``."""

    def choose(self, *, request: int, attempt: int, outstanding: Sequence[int]) -> int: ...


class RoutingConfig(Protocol):
    """What ``ClientPolicy.routing`` holds: settings that ``build(rng)`` a fresh ``Router``."""

    def build(self, rng: np.random.Generator | None) -> Router: ...


class _NextInstanceRouter:
    __slots__ = ()

    def choose(self, *, request: int, attempt: int, outstanding: Sequence[int]) -> int:
        return (request + attempt - 1) % len(outstanding)


_NEXT_INSTANCE = _NextInstanceRouter()


@dataclass(frozen=True)
class NextInstance:
    """Request ``i``'s attempt ``k`` (1 for the first) goes to instance ``(i + k - 1) mod n``:
    requests spread round robin by their index and every retry moves on to the next instance.
    Deterministic; draws nothing; reads no outstanding counts."""

    def build(self, rng: np.random.Generator | None = None) -> _NextInstanceRouter:
        return _NEXT_INSTANCE
