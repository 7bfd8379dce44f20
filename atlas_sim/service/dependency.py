"""A fault-injectable stand-in for a database, living inside the service.

``/api/compose`` calls it the way a real handler calls PostgreSQL: each call takes a random
latency (a ``Distribution``, drawn from the ``"dependency"`` stream of ``rng_streams(seed)``),
and three faults can be switched on while the service runs (``/admin/faults``):

* ``error_rate``: the call fails at once with this probability (a refused connection, a
  constraint violation);
* ``added_latency``: seconds added to every call (a slow disk, a saturated network);
* ``outage``: every call hangs until its caller gives up, which is what a dead database looks
  like from outside: not an error, a silence. Only the caller's timeout ends it.
* ``slow_rate`` and ``slow_latency``: a call is slow with this probability, and then takes at
  least ``slow_latency`` seconds (a garbage-collection pause, a busy disk: the occasional slow
  call that fan-out turns into a slow request, and that hedged requests work around).

Every call draws two coins (error and slow, from generators spawned off the ``"dependency"``
stream: its first and third children) and one latency (from the stream itself), whatever the
faults, exactly as the simulator's dependency does: switching a fault on or off never shifts
the sequence of draws, and a seeded live run sees the same latencies and coin flips as a seeded
simulation.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import numpy as np

from ..faults import FaultField, check_fields, wire_fields
from ..workload import Distribution

__all__ = ["DEPENDENCY_FIELDS", "DependencyError", "Faults", "FaultyDependency"]


class DependencyError(Exception):
    """The dependency answered with an error."""


@dataclass(frozen=True, kw_only=True)
class Faults:
    """The faults switched on in the dependency (all off by default): the fault fields that act
    on the dependency (``faults.FAULT_TABLE``), under their ``/admin/faults`` names and wire
    ranges, checked against the table when this module loads.

    Args:
        error_rate: probability that a call fails at once (0..1).
        added_latency: seconds added to every call (0..3600).
        outage: if true, calls never answer (their caller's timeout ends them).
        slow_rate: probability that a call is slow (0..1).
        slow_latency: seconds a slow call takes at least (0..3600).
    """

    error_rate: float = 0.0
    added_latency: float = 0.0
    outage: bool = False
    slow_rate: float = 0.0
    slow_latency: float = 0.0

    def __post_init__(self) -> None:
        for wire, field in DEPENDENCY_FIELDS.items():
            value = field.check(getattr(self, wire), name=wire, wire=True)
            object.__setattr__(self, wire, value if field.kind == "flag" else float(value))


#: The rows of ``FAULT_TABLE`` that ``Faults`` holds, by wire name: those the service plays
#: that act on the dependency.
DEPENDENCY_FIELDS: dict[str, FaultField] = {
    wire: f for wire, f in wire_fields().items() if f.acts_on == "dependency"}
check_fields(Faults, list(DEPENDENCY_FIELDS), [f.wire_off for f in DEPENDENCY_FIELDS.values()],
             where="(FAULT_TABLE's dependency fields, by wire name and off value)")
if len(dataclasses.fields(Faults)) != len(DEPENDENCY_FIELDS):
    raise TypeError("Faults must declare FAULT_TABLE's dependency fields and nothing else")


class FaultyDependency:
    """The in-process dependency. Used only from the service's event loop."""

    def __init__(self, *, latency: Distribution, rng: np.random.Generator) -> None:
        if not isinstance(latency, Distribution):
            raise ValueError(f"latency must be a Distribution, got {latency!r}")
        self.latency = latency
        self.use_stream(rng)
        self.faults = Faults()
        self.calls = 0

    def use_stream(self, rng: np.random.Generator) -> None:
        """Draw latencies from ``rng``, error coins from its first child and slow-call coins
        from its third from now on (the second is the simulator's, for which requests call
        the dependency at all)."""
        self._draw = self.latency.sampler(rng)
        self._coin, _, self._slow = rng.spawn(3)

    async def call(self) -> float:
        """One call: returns the seconds it took, or raises ``DependencyError``.

        Under an outage it never returns: wrap it in a timeout.
        """
        self.calls += 1
        faults = self.faults
        failed = self._coin.random() < faults.error_rate
        seconds = self._draw() + faults.added_latency
        if self._slow.random() < faults.slow_rate:
            seconds = max(seconds, faults.slow_latency)
        if faults.outage:
            await asyncio.Event().wait()  # a dead database: silence until the caller gives up
        if failed:
            raise DependencyError("dependency error (injected)")
        await asyncio.sleep(seconds)
        return seconds
