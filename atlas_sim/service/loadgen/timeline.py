"""The run's timeline on the service's side: timed fault changes sent to ``/admin/faults``, and
the service breaker's transitions read back from ``/admin/breaker``, both on the run's clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ...validation import check_real

__all__ = ["EventRow", "check_faults", "fetch_server_breaker", "inject_faults"]

#: A row of ``RunResult.events``: time, kind, name, detail, reason.
EventRow = tuple[float, str, str, str, str]


def check_faults(faults: Sequence[tuple[float, Mapping[str, Any]]],
                  length: float) -> list[tuple[float, dict[str, Any]]]:
    plan = []
    for i, item in enumerate(faults):
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and isinstance(item[1], Mapping)):
            raise ValueError(f"faults[{i}] must be a (time, {{field: value}}) pair, got {item!r}")
        when = check_real(f"faults[{i}] time", item[0], low=0, high=length)
        plan.append((when, dict(item[1])))
    return sorted(plan, key=lambda p: p[0])


def _fault_events(when: float,
                  changes: Mapping[str, Any]) -> list[EventRow]:
    """One event per changed field: ``start`` when it turns a fault on, ``end`` when off."""
    out = []
    for key, value in changes.items():
        if key == "capacity":
            name, faulty = "server", value != 1
        else:
            name, faulty = "dependency", bool(value)
        out.append((when, "fault", name, "start" if faulty else "end", f"{key}={value}"))
    return out


async def inject_faults(base: str, plan: list[tuple[float, dict[str, Any]]],
                        started: asyncio.Future[float] | None,
                        events: list[EventRow]) -> None:
    """Apply each change to ``/admin/faults`` at its time on the run's clock.

    With ``started`` None, the changes are applied now, before the run (its time 0 is not
    chosen yet), and recorded at time 0: a fault at time 0 must be in force for the very first
    request, not race it.
    """
    t0 = await started if started is not None else None
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        for when, changes in plan:
            if t0 is not None:
                delay = t0 + when - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            response = await client.put(base + "/admin/faults", json=changes)
            if response.status_code != 200:
                raise ValueError(f"the service refused the fault change {changes!r}: "
                                 f"{response.status_code} {response.text[:500]}")
            events.extend(_fault_events(0.0 if t0 is None else time.monotonic() - t0, changes))


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
