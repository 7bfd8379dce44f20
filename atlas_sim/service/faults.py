"""The service's faults as ``/admin/faults`` speaks them: the wire fields (``FAULT_FIELDS``),
the view of an app's faults (``faults_view``), and setting (``apply_faults``) or clearing them
(``clear_faults``).

The fields, their names, ranges and values when off are ``atlas_sim.faults.FAULT_TABLE``'s
wire columns (``faults.wire_fields``): those that act on the dependency live in the
dependency's ``Faults`` (``error_rate``, ``added_latency``, ``outage``, ``slow_rate``,
``slow_latency``); this module says only where each of the others lives in the service
(``SERVER_PLACES``: the work station's ``capacity`` and ``stalled``, the state's
``bad_input_rate``, ``ServiceState.check_input``), checked against the table when it loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..faults import wire_fields
from .dependency import DEPENDENCY_FIELDS, Faults
from .fields import FieldTable
from .state import ServiceState

__all__ = ["FAULT_FIELDS", "SERVER_PLACES", "apply_faults", "clear_faults", "faults_view"]


def _set_capacity(state: ServiceState, value: Any) -> None:
    state.work.capacity = value


def _set_stall(state: ServiceState, value: Any) -> None:
    state.work.stalled = value


def _set_bad_input_rate(state: ServiceState, value: Any) -> None:
    state.bad_input_rate = value


#: Where each fault that acts on the server lives in a running app: wire name -> (read, set).
SERVER_PLACES: dict[str, tuple[Callable[[ServiceState], Any],
                               Callable[[ServiceState, Any], None]]] = {
    "capacity": (lambda state: state.work.capacity, _set_capacity),
    "stall": (lambda state: state.work.stalled, _set_stall),
    "bad_input_rate": (lambda state: state.bad_input_rate, _set_bad_input_rate),
}

_SERVER_WIRE = [w for w, f in wire_fields().items() if f.acts_on == "server"]
if sorted(SERVER_PLACES) != sorted(_SERVER_WIRE):
    raise TypeError(f"SERVER_PLACES must place FAULT_TABLE's server fields {_SERVER_WIRE}, "
                    f"places {sorted(SERVER_PLACES)}")

#: The fields of ``PUT/POST /admin/faults``: name -> (kind, low, high), checked by
#: ``fields.parse_admin_update`` (a number is a JSON number within [low, high]; a flag is JSON
#: ``true`` or ``false``): ``FAULT_TABLE``'s wire columns.
FAULT_FIELDS: FieldTable = {wire: f.wire_spec() for wire, f in wire_fields().items()}


def faults_view(state: ServiceState) -> dict[str, Any]:
    """An app's faults, as ``GET /admin/faults`` answers them (every field of
    ``FAULT_FIELDS``, in ``FAULT_TABLE``'s order)."""
    dependency = state.dependency.faults
    return {wire: (getattr(dependency, wire) if wire in DEPENDENCY_FIELDS
                   else SERVER_PLACES[wire][0](state))
            for wire in FAULT_FIELDS}


def apply_faults(state: ServiceState, changes: dict[str, Any]) -> dict[str, Any]:
    """Set the faults in ``changes`` (checked fields of ``FAULT_FIELDS``), keep the others;
    returns the new view."""
    dependency = {k: v for k, v in changes.items() if k in DEPENDENCY_FIELDS}
    if dependency:
        state.dependency.faults = dataclasses.replace(state.dependency.faults, **dependency)
    for wire, value in changes.items():
        if wire not in DEPENDENCY_FIELDS:
            SERVER_PLACES[wire][1](state, value)
    return faults_view(state)


def clear_faults(state: ServiceState) -> None:
    """No faults: every field of ``FAULT_FIELDS`` at its value when off (dependency faults
    off, capacity 1, no stall, no bad inputs)."""
    state.dependency.faults = Faults()
    for wire, (_, put) in SERVER_PLACES.items():
        put(state, wire_fields()[wire].wire_off)
