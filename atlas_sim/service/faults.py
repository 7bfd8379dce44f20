"""The service's faults as ``/admin/faults`` speaks them: the wire fields (``FAULT_FIELDS``),
the view of an app's faults (``faults_view``), and setting (``apply_faults``) or clearing them
(``clear_faults``).

The fields are ``workload.FaultConditions``'s values under the service's own shorter names,
since they are about its dependency (``error_rate``, ``added_latency``, ``outage``,
``slow_rate``, ``slow_latency``: the dependency's ``Faults``), plus the work station's
``capacity`` and ``stall``, and ``bad_input_rate`` (``ServiceState.check_input``).
"""

from __future__ import annotations

from typing import Any

from .dependency import Faults
from .fields import FieldTable
from .state import ServiceState

__all__ = ["FAULT_FIELDS", "apply_faults", "clear_faults", "faults_view"]

#: The fields of ``PUT/POST /admin/faults``: name -> (kind, low, high), checked by
#: ``fields.parse_admin_update`` (a number is a JSON number within [low, high]; a flag is JSON
#: ``true`` or ``false``).
FAULT_FIELDS: FieldTable = {
    "error_rate": ("number", 0, 1),
    "added_latency": ("number", 0, 3600),
    "outage": ("boolean", None, None),
    "capacity": ("number", 0, 1000),
    "bad_input_rate": ("number", 0, 1),
    "slow_rate": ("number", 0, 1),
    "slow_latency": ("number", 0, 3600),
    "stall": ("boolean", None, None),  # the work station answers nothing (``Fault.stall``)
}


def faults_view(state: ServiceState) -> dict[str, Any]:
    """An app's faults, as ``GET /admin/faults`` answers them."""
    f = state.dependency.faults
    return {"error_rate": f.error_rate, "added_latency": f.added_latency,
            "outage": f.outage, "capacity": state.work.capacity,
            "bad_input_rate": state.bad_input_rate,
            "slow_rate": f.slow_rate, "slow_latency": f.slow_latency,
            "stall": state.work.stalled}


def apply_faults(state: ServiceState, changes: dict[str, Any]) -> dict[str, Any]:
    """Set the faults in ``changes`` (checked fields of ``FAULT_FIELDS``), keep the others;
    returns the new view."""
    capacity = changes.pop("capacity", None)
    bad_input_rate = changes.pop("bad_input_rate", None)
    stall = changes.pop("stall", None)
    if changes:
        current = state.dependency.faults
        state.dependency.faults = Faults(
            error_rate=changes.get("error_rate", current.error_rate),
            added_latency=changes.get("added_latency", current.added_latency),
            outage=changes.get("outage", current.outage),
            slow_rate=changes.get("slow_rate", current.slow_rate),
            slow_latency=changes.get("slow_latency", current.slow_latency),
        )
    if capacity is not None:
        state.work.capacity = capacity
    if bad_input_rate is not None:
        state.bad_input_rate = bad_input_rate
    if stall is not None:
        state.work.stalled = stall
    return faults_view(state)


def clear_faults(state: ServiceState) -> None:
    """No faults: dependency faults off, capacity 1, no bad inputs, no stall."""
    state.dependency.faults = Faults()
    state.work.capacity = 1.0
    state.bad_input_rate = 0.0
    state.work.stalled = False
