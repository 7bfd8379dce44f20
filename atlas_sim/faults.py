"""Faults, spelled once: what can go wrong (``FAULT_TABLE``), a window of it (``Fault``), what
the windows active at one moment do together (``FaultConditions``) and how the live service's
``/admin/faults`` names it (``FaultConditions.wire``).

``FAULT_TABLE`` has one row per fault field: its name on ``Fault`` (and on ``FaultConditions``
and the simulator's ``Conditions``), its kind and range, what it acts on (the server or its
dependency), how overlapping windows combine it, its name on the wire and its value when off.
Everything else reads the table: ``Fault``'s checks and ``describe``, ``FaultConditions.of``,
the simulator's ``Conditions`` (a ``FaultConditions``), ``plan_faults`` and ``FAULTS_OFF`` in
``service/loadgen/timeline.py``, ``FAULT_FIELDS`` and the view, set and clear of
``service/faults.py`` and the dependency stand-in's ``Faults``. ``Fault`` and
``FaultConditions`` also declare the fields as typed dataclass fields (for readers and type
checkers); that they match the table, name for name and default for default, is checked when
this module loads, so a new fault is a row here plus the two declarations, and nothing else
can forget it.

| field | kind | acts on | overlapping windows | wire (``/admin/faults``) | off |
|---|---|---|---|---|---|
| ``capacity`` | fraction (wire: speed factor 0..1000) | server | multiply | ``capacity`` | 1.0 |
| ``added_latency`` | seconds | server | add | (simulation only) | 0.0 |
| ``stall`` | flag | server | any | ``stall`` | False |
| ``dependency_error_rate`` | fraction or None | dependency | largest | ``error_rate`` | None [*] |
| ``dependency_added_latency`` | seconds | dependency | add | ``added_latency`` | 0.0 |
| ``dependency_outage`` | flag | dependency | any | ``outage`` | False |
| ``bad_input_rate`` | fraction | server | largest | ``bad_input_rate`` | 0.0 |
| ``dependency_slow_rate`` | fraction | dependency | largest | ``slow_rate`` | 0.0 |
| ``dependency_slow_latency`` | seconds | dependency | largest | ``slow_latency`` | 0.0 |

A fraction is in [0, 1], seconds in [0, 3600], a flag ``True`` or ``False``. The wire names are
the service's own, shorter where the field is about its dependency (the stand-in's ``Faults``
takes exactly the dependency's wire fields). ``dependency_error_rate`` None means "the
dependency's own rate"; on the wire that is 0.0 (no injected errors).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .validation import check_int, check_real

__all__ = [
    "FAULT_TABLE",
    "WIRE_NAMES",
    "Fault",
    "FaultConditions",
    "FaultField",
    "check_fields",
    "wire_fields",
]

Kind = Literal["fraction", "seconds", "flag"]
Combine = Literal["multiply", "add", "largest", "any"]

#: The range of each number kind (a flag has none).
_RANGES: dict[str, tuple[float, float]] = {"fraction": (0.0, 1.0), "seconds": (0.0, 3600.0)}


@dataclass(frozen=True, kw_only=True)
class FaultField:
    """One fault field: a row of ``FAULT_TABLE``.

    Args:
        name: its name on ``Fault``, ``FaultConditions`` and the simulator's ``Conditions``.
        kind: ``"fraction"`` (a number in [0, 1]), ``"seconds"`` (a number in [0, 3600]) or
            ``"flag"`` (``True`` or ``False``).
        acts_on: ``"server"`` (the instance's work and admission) or ``"dependency"`` (its
            dependency calls; the live stand-in's ``Faults``).
        combine: how overlapping windows combine it: ``"multiply"``, ``"add"``, ``"largest"``
            (None values left out) or ``"any"`` (one window that sets it is enough).
        off: its value when no window sets it (the identity of ``combine``).
        wire: its name on ``/admin/faults``, or None for a field the service cannot play
            (simulation only).
        wire_high: the wire's upper bound where it is wider than ``kind``'s (``capacity``: the
            service takes a speed factor up to 1000), else None.
        optional: None is a value (``dependency_error_rate``: the dependency's own rate).
        says: what a ``Fault`` that sets it does, in a few words (``Fault.describe``), or None
            when another field's words say it.
    """

    name: str
    kind: Kind
    acts_on: Literal["server", "dependency"]
    combine: Combine
    off: Any
    wire: str | None
    wire_high: float | None = None
    optional: bool = False
    says: Callable[[Fault], str] | None = None

    @property
    def low(self) -> float | None:
        return _RANGES[self.kind][0] if self.kind != "flag" else None

    @property
    def high(self) -> float | None:
        return _RANGES[self.kind][1] if self.kind != "flag" else None

    @property
    def wire_off(self) -> Any:
        """Its value on the wire when off (None is not a wire value: 0.0)."""
        return self.to_wire(self.off)

    def to_wire(self, value: Any) -> Any:
        """``value`` as ``/admin/faults`` carries it."""
        return 0.0 if value is None else value

    def wire_spec(self) -> tuple[str, float | None, float | None]:
        """``(kind, low, high)`` of ``/admin/faults``' field table (``service.fields``)."""
        if self.kind == "flag":
            return ("boolean", None, None)
        return ("number", self.low, self.wire_high if self.wire_high is not None else self.high)

    def check(self, value: object, *, name: str | None = None, wire: bool = False) -> Any:
        """``value`` if it is allowed (on the wire: within the wire's range), else a
        ValueError naming ``name`` (default: the field's name) and the range."""
        label = name or self.name
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise ValueError(f"{label} must be True or False, got {value!r}")
            return value
        if value is None and self.optional:
            return None
        low, high = self.wire_spec()[1:] if wire else (self.low, self.high)
        return check_real(label, value, low=low, high=high)

    def combined(self, values: Iterable[Any]) -> Any:
        """The value of overlapping windows that set ``values`` (by ``combine``)."""
        if self.combine == "multiply":
            return math.prod(values)
        if self.combine == "add":
            return sum(values)
        if self.combine == "any":
            return any(values)
        return max((v for v in values if v is not None), default=self.off)


def _slow(f: Fault) -> str:
    return (f"{f.dependency_slow_rate:.1%} of dependency calls slow "
            f"(>= {f.dependency_slow_latency:g}s)")


#: The fault fields, one row each, in ``Fault``'s order (see the module docstring's table).
FAULT_TABLE: tuple[FaultField, ...] = (
    FaultField(name="capacity", kind="fraction", acts_on="server", combine="multiply",
               off=1.0, wire="capacity", wire_high=1000.0,
               says=lambda f: ("server down" if f.capacity == 0
                               else f"capacity x{f.capacity:g}")),
    FaultField(name="added_latency", kind="seconds", acts_on="server", combine="add", off=0.0,
               wire=None, says=lambda f: f"+{f.added_latency:g}s handling"),
    FaultField(name="stall", kind="flag", acts_on="server", combine="any", off=False,
               wire="stall", says=lambda f: "server stalled"),
    FaultField(name="dependency_error_rate", kind="fraction", acts_on="dependency",
               combine="largest", off=None, wire="error_rate", optional=True,
               says=lambda f: f"dependency errors {f.dependency_error_rate:.0%}"),
    FaultField(name="dependency_added_latency", kind="seconds", acts_on="dependency",
               combine="add", off=0.0, wire="added_latency",
               says=lambda f: f"+{f.dependency_added_latency:g}s dependency latency"),
    FaultField(name="dependency_outage", kind="flag", acts_on="dependency", combine="any",
               off=False, wire="outage", says=lambda f: "dependency hangs"),
    FaultField(name="bad_input_rate", kind="fraction", acts_on="server", combine="largest",
               off=0.0, wire="bad_input_rate",
               says=lambda f: f"bad input crashes {f.bad_input_rate:.0%} of requests"),
    FaultField(name="dependency_slow_rate", kind="fraction", acts_on="dependency",
               combine="largest", off=0.0, wire="slow_rate", says=_slow),
    FaultField(name="dependency_slow_latency", kind="seconds", acts_on="dependency",
               combine="largest", off=0.0, wire="slow_latency"),
)



def wire_fields() -> dict[str, FaultField]:
    """The fields the live service plays: ``/admin/faults`` name -> its row of
    ``FAULT_TABLE``, in the table's order."""
    return {f.wire: f for f in FAULT_TABLE if f.wire is not None}


#: The fields of ``/admin/faults``, in ``FAULT_TABLE``'s order.
WIRE_NAMES: tuple[str, ...] = tuple(wire_fields())


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Something going wrong between ``start`` and ``end`` (seconds of the run), in either world:
    ``simulate`` models it and ``run_load`` switches it on in the live service at ``start`` and
    off at ``end`` (through ``/admin/faults``). ``end`` defaults to ``inf``: until the run ends.

    Args:
        capacity: the server's speed as a fraction of normal, in [0, 1]. 0.3 means work takes
            3.3 times as long; 0 means the server is down and answers 503 at once.
        added_latency: seconds added to the handling of every request the server starts
            (a slow disk, a garbage-collection pause), in [0, 3600]. Simulation only.
        stall: the server answers nothing during the window, as in a stop-the-world
            garbage-collection pause: no request starts its work (arrivals and the queue
            wait), work already under way runs on but its answer is held, and when the window
            ends the held answers leave and the queue is served again in arrival order. The
            server's own timeout still answers 504, and shedding still answers 429 at once
            (both sit in front of the work). A server that is down (``capacity`` 0) still
            answers 503 at once.
        dependency_error_rate: probability that a dependency call fails at once (instead of
            the dependency's own rate), in [0, 1].
        dependency_added_latency: seconds added to every dependency call, in [0, 3600].
        dependency_outage: every dependency call hangs until its caller's timeout ends it
            (a dead database looks like silence, not an error).
        bad_input_rate: a software error every server shares, in [0, 1]: the handler crashes
            (500) on a request whose input (``request_inputs``) is below this share, at once,
            on every attempt and every server, because the bug is in the code they all run
            and the input travels with the request (DDIA, "Software Errors": "a software bug
            that causes every instance of an application server to crash when given a
            particular bad input"). Unlike ``dependency_error_rate``, whose every attempt is a
            new coin, a retry cannot help.
        dependency_slow_rate: probability that a dependency call is slow, in [0, 1]: it then
            takes at least ``dependency_slow_latency`` (a garbage-collection pause, a busy
            disk, a noisy neighbour: the "1 in 100 slow calls" of the tail at scale).
        dependency_slow_latency: seconds a slow dependency call takes at least, in [0, 3600].
        instances: which server instances the fault hits, by index (0, 1, ... in the order
            of ``Scenario.server``'s configs or a live cluster's servers: ``run_load``'s
            ``url`` then its ``instances``), as a tuple of distinct integers >= 0; None (the
            default): every instance. A slow or dead instance among healthy ones is
            ``Fault(capacity=..., instances=(1,))``.
        name: a label for the events table.

    Overlapping faults combine by ``FAULT_TABLE``'s rule (``FaultConditions.of``): capacities
    multiply, latencies add, the larger rate wins (and the larger slow latency), any stall or
    outage is one. A request's speed is fixed when its service starts.
    """

    start: float
    end: float = math.inf
    # the fault fields: FAULT_TABLE's names and off values, in its order (checked on import)
    capacity: float = 1.0
    added_latency: float = 0.0
    stall: bool = False
    dependency_error_rate: float | None = None
    dependency_added_latency: float = 0.0
    dependency_outage: bool = False
    bad_input_rate: float = 0.0
    dependency_slow_rate: float = 0.0
    dependency_slow_latency: float = 0.0
    instances: tuple[int, ...] | None = None
    name: str = "fault"

    def __post_init__(self) -> None:
        if self.instances is not None:
            if isinstance(self.instances, (str, bytes)) or not isinstance(self.instances,
                                                                          Sequence):
                raise ValueError(f"instances must be a tuple of instance indices >= 0 or None, "
                                 f"got {self.instances!r}")
            chosen = tuple(check_int(f"instances[{i}]", k, low=0)
                           for i, k in enumerate(self.instances))
            if not chosen or len(set(chosen)) != len(chosen):
                raise ValueError(f"instances must name at least one instance, each once, got "
                                 f"{self.instances!r}")
            object.__setattr__(self, "instances", chosen)
        start = check_real("start", self.start, low=0)
        check_real("end", self.end, low=start, low_open=True, allow_inf=True)
        for field in FAULT_TABLE:
            field.check(getattr(self, field.name))

    def applies_to(self, instance: int) -> bool:
        """Does this fault hit server instance ``instance`` (an index)?"""
        return self.instances is None or instance in self.instances

    def describe(self) -> str:
        """What goes wrong, in a few words (the events table's ``reason``)."""
        parts = [field.says(self) for field in FAULT_TABLE
                 if field.says is not None and getattr(self, field.name) != field.off]
        if self.instances is not None and parts:
            which = ", ".join(str(k) for k in self.instances)
            parts[-1] += f" on instance{'s' if len(self.instances) > 1 else ''} {which}"
        return ", ".join(parts)


@dataclass(frozen=True, kw_only=True)
class FaultConditions:
    """What the faults active at one moment do together, in both worlds: the rule for
    overlapping ``Fault`` windows, written once in ``FAULT_TABLE`` (the simulator applies it at
    every window edge, ``run_load`` sends its ``wire()`` to the service). Capacities multiply,
    latencies add, the largest rate or share wins (and the largest slow latency), any outage or
    stall is one; ``dependency_error_rate`` is None when no window sets one (the dependency's
    own rate). ``FaultConditions.of(())`` is everything off, as is ``FaultConditions()``."""

    # FAULT_TABLE's names and off values, in its order (checked on import)
    capacity: float = 1.0
    added_latency: float = 0.0
    stall: bool = False
    dependency_error_rate: float | None = None
    dependency_added_latency: float = 0.0
    dependency_outage: bool = False
    bad_input_rate: float = 0.0
    dependency_slow_rate: float = 0.0
    dependency_slow_latency: float = 0.0

    @classmethod
    def of(cls, active: Sequence[Fault]) -> FaultConditions:
        """The conditions while the ``Fault`` windows ``active`` (and no others) are open."""
        return cls(**{f.name: f.combined([getattr(a, f.name) for a in active])
                      for f in FAULT_TABLE})

    def wire(self) -> dict[str, Any]:
        """These conditions as ``/admin/faults`` fields (wire name -> value, every field the
        service plays; ``added_latency`` of the server, simulation only, is not among them)."""
        return {f.wire: f.to_wire(getattr(self, f.name)) for f in FAULT_TABLE
                if f.wire is not None}


def check_fields(cls: type, names: Sequence[str], defaults: Sequence[Any] | None = None,
                 *, where: str = "") -> None:
    """Raise ``TypeError`` unless the dataclass ``cls`` declares the fields ``names``, in this
    order (after any others it has), with ``defaults`` if given: how a class that spells the
    fault fields for readers and type checkers is held to ``FAULT_TABLE``."""
    fields = [f for f in dataclasses.fields(cls) if f.name in set(names)]
    declared = [f.name for f in fields]
    if declared != list(names):
        raise TypeError(f"{cls.__name__} must declare {list(names)} in this order "
                        f"{where}, declares {declared}")
    if defaults is not None:
        got = [f.default for f in fields]
        if got != list(defaults):
            raise TypeError(f"{cls.__name__}'s defaults must be {list(defaults)} {where}, "
                            f"got {got}")


_NAMES = [f.name for f in FAULT_TABLE]
_OFF = [f.off for f in FAULT_TABLE]
check_fields(Fault, _NAMES, _OFF, where="(FAULT_TABLE's names and off values)")
check_fields(FaultConditions, _NAMES, _OFF, where="(FAULT_TABLE's names and off values)")
if [f.name for f in dataclasses.fields(FaultConditions)] != _NAMES:
    raise TypeError("FaultConditions must declare FAULT_TABLE's fields and nothing else")
