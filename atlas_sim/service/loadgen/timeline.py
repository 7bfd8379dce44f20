"""The run's timeline on the service's side: timed fault changes sent to ``/admin/faults``, and
the service breaker's transitions read back from ``/admin/breaker``, both on the run's clock."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx

from ...faults import FAULT_TABLE, Fault, FaultConditions
from ...validation import check_int

__all__ = ["FAULTS_OFF", "EventRow", "fault_events", "fetch_server_breaker", "inject_faults",
           "plan_faults", "switch_off"]

#: A row of ``RunResult.events``: time, kind, name, detail, reason.
EventRow = tuple[float, str, str, str, str]


#: Each fault field of ``/admin/faults`` when it is off (``faults.FAULT_TABLE``'s wire columns).
FAULTS_OFF: dict[str, Any] = FaultConditions().wire()


def plan_faults(faults: Sequence[Fault], *, instance: int = 0) -> list[tuple[float,
                                                                             dict[str, Any]]]:
    """The ``/admin/faults`` changes that play ``faults`` (``Fault`` windows) on the live
    service instance ``instance`` (an index: 0 is ``run_load``'s ``url``, 1, 2, ... its
    ``instances``; a fault with ``instances`` set plays only on those it names): at each
    window's start and end, the fields whose combined value changes, combined as the simulator
    combines overlapping faults (``FaultConditions.of``: capacities multiply, latencies add, the
    largest error rate, bad-input share, slow rate and slow latency win, any outage or stall is
    one). Times are seconds of the run; a window that never ends has no change at ``inf``, so
    its fault stays on until the run closes it.

    Raises ValueError for a fault the service cannot play (a field with no wire name in
    ``FAULT_TABLE``: ``added_latency``, the server's handling, is simulation only) or an
    ``instance`` below 0.
    """
    instance = check_int("instance", instance, low=0)
    for i, fault in enumerate(faults):
        if not isinstance(fault, Fault):
            raise ValueError(f"faults[{i}] must be a Fault, got {fault!r}")
        for field in FAULT_TABLE:
            if field.wire is None and getattr(fault, field.name) != field.off:
                raise ValueError(
                    f"faults[{i}].{field.name} must be {field.off!r} for a live run (the "
                    f"service has no switch for it: simulation only; use capacity), got "
                    f"{getattr(fault, field.name)!r}")
    here = [f for f in faults if f.applies_to(instance)]
    edges = sorted({f.start for f in here} | {f.end for f in here})
    state = dict(FAULTS_OFF)
    plan = []
    for t in edges:
        active = [f for f in here if f.start <= t < f.end]
        now = FaultConditions.of(active).wire()  # the simulator's rule for overlapping windows
        changes = {k: v for k, v in now.items() if v != state[k]}
        state = now
        if changes:
            plan.append((t, changes))
    return plan


async def inject_faults(base: str, plan: list[tuple[float, dict[str, Any]]],
                        started: asyncio.Future[float] | None, applied: dict[float, float],
                        *, origin: float | None = None) -> None:
    """Apply each change to ``/admin/faults`` at its time on the run's clock, and note in
    ``applied`` when each planned time really took effect (seconds of the run).

    With ``started`` None, the changes are applied now, at the run's time given by ``origin``
    (its time 0 on ``time.monotonic``), or at 0 before the run has one: a fault at time 0 must
    be in force for the very first request, not race it.
    """
    # The client first: making one loads the TLS settings (tens of milliseconds of CPU), which
    # at time 0 would hold up the generator's first sends on the same event loop.
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        t0 = await started if started is not None else None
        for when, changes in plan:
            if t0 is not None:
                delay = t0 + when - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            response = await client.put(base + "/admin/faults", json=changes)
            if response.status_code != 200:
                raise ValueError(f"the service refused the fault change {changes!r}: "
                                 f"{response.status_code} {response.text[:500]}")
            start = t0 if t0 is not None else origin
            applied[when] = 0.0 if start is None else time.monotonic() - start


def fault_events(faults: Sequence[Fault], applied: dict[float, float]) -> list[EventRow]:
    """The events table's rows for ``faults``, as the simulator writes them (name, ``start``
    with the fault's description, ``end``), at the times the service really switched: a
    window that began or ended with no change to send (another window already had the same
    effect) is put at its planned time."""
    rows = []
    for f in faults:
        rows.append((applied.get(f.start, f.start), "fault", f.name, "start", f.describe()))
        if f.end in applied or f.end < math.inf:
            rows.append((applied.get(f.end, f.end), "fault", f.name, "end", ""))
    return sorted(rows)


async def switch_off(base: str, plan: list[tuple[float, dict[str, Any]]]) -> bool:
    """Switch off every fault field that ``plan`` touches, at once; True if the service said
    yes. Best effort and bounded (5 s): it runs while a run is being interrupted, and the
    service may be gone."""
    fields = {key for _, changes in plan for key in changes}
    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            response = await client.put(base + "/admin/faults",
                                        json={k: FAULTS_OFF[k] for k in sorted(fields)})
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def fetch_server_breaker(
    base: str, t0_monotonic: float, events: list[EventRow]
) -> str:
    """Append the service breaker's transitions to ``events`` on the run's clock.

    Both sides read ``time.monotonic`` on the same machine, so rebasing is a subtraction. A
    transition from before the run that left the breaker not closed is put at time 0.
    """
    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            response = await client.get(base + "/admin/breaker")
        response.raise_for_status()
        transitions = response.json()["transitions"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return f"unavailable: {exc!r}"
    before = None
    for t in transitions:
        when = float(t["time"]) - t0_monotonic
        if when < 0:
            before = t
            continue
        events.append((when, "breaker", "dependency", t["new"], t["reason"]))
    if before is not None and before["new"] != "closed":
        events.append((0.0, "breaker", "dependency", before["new"],
                       f"state at run start ({before['reason']})"))
    return "ok"
