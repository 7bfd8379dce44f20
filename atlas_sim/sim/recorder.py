"""What a simulated run writes down, as rows while it runs, and the ``RunResult`` they make.

A run on ``/api/orders`` also has ``meta["pool"]``, one row per connection-pool acquire
(``pool_table``): what the pool's waits and timeouts are read from (``experiments.datasystem``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import simpy

from ..policies import BreakerTransition
from ..results import RunResult
from .scenario import Scenario

__all__ = ["POOL_COLUMNS", "Recorder", "pool_table"]


class Recorder:
    """The run's tables as lists of rows: the actors append to them (a tuple per request,
    attempt, event or completed piece of work), and ``result`` turns them into a
    ``RunResult`` once the run is over."""

    __slots__ = ("attempt_rows", "env", "event_rows", "pool_rows", "request_rows",
                 "server_rows")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.request_rows: list[tuple] = []
        self.attempt_rows: list[tuple] = []
        self.event_rows: list[tuple] = []
        self.server_rows: list[tuple] = []  # work the server completed, waited for or not
        self.pool_rows: list[tuple] = []  # each pool acquire on /api/orders (sim.pool)

    def plan(self, scenario: Scenario) -> None:
        """The events known in advance: each fault's window and each step of the load."""
        for f in scenario.faults:
            self.event_rows.append((f.start, "fault", f.name, "start", f.describe()))
            if f.end < math.inf:  # a fault without an end lasts until the run is over
                self.event_rows.append((f.end, "fault", f.name, "end", ""))
        for t, rate in scenario.load.steps:
            self.event_rows.append((t, "load", "rate", f"{rate:g}", "load step"))

    def breaker(self, name: str) -> Callable[[BreakerTransition], None]:
        """A breaker listener that writes breaker ``name``'s transitions to the events table."""

        def record(t: BreakerTransition) -> None:
            self.event_rows.append((t.time, "breaker", name, t.new.value, t.reason))

        return record

    def completion(self, request_id: int, attempt: int, instance: int) -> None:
        """Server instance ``instance`` finished an attempt's work (whether or not its client
        still waits)."""
        self.server_rows.append((request_id, attempt, self.env.now, instance))

    def result(self, scenario: Scenario, duration: float) -> RunResult:
        requests = _columns(self.request_rows, 7)
        order = np.argsort(requests[0], kind="stable")
        meta = {"scenario": scenario, "seed": scenario.seed,
                "loop": "open" if scenario.load.open_loop else "closed",
                "server_log": pd.DataFrame(self.server_rows,
                                           columns=["request_id", "attempt", "time",
                                                    "instance"])}
        if scenario.path == "/api/orders":
            meta["pool"] = pool_table(self.pool_rows)
        attempts = _columns(self.attempt_rows, 8)
        if len(attempts) == 7:  # one instance: its rows leave out the index, which is 0
            attempts.append(np.zeros(len(attempts[0]), dtype=np.int64))
        by_time = np.lexsort((attempts[1], attempts[0], attempts[2]))
        return RunResult.from_columns(
            requests={name: col[order] for name, col in zip(
                ("request_id", "t_start", "t_end", "latency", "status", "attempts", "ok"),
                requests, strict=True)},
            attempts={name: col[by_time] for name, col in zip(
                ("request_id", "attempt", "t_start", "t_end", "latency", "status", "queue_wait",
                 "instance"),
                attempts, strict=True)},
            events=self.event_rows,
            duration=duration,
            source="sim",
            meta=meta,
        )


#: The columns of ``meta["pool"]`` (see ``sim.pool``).
POOL_COLUMNS = ("request_id", "attempt", "instance", "time", "wait", "outcome")


def pool_table(rows: list[tuple]) -> pd.DataFrame:
    """``meta["pool"]``: one row per acquire, in the order each ended (``POOL_COLUMNS``):
    ``time`` when it was asked and ``wait`` (seconds), ``outcome`` ``"granted"``,
    ``"timeout"``, ``"refused"`` or ``"cancelled"``."""
    table = pd.DataFrame(rows, columns=list(POOL_COLUMNS))
    return table.astype({"request_id": "int64", "attempt": "int64", "instance": "int64",
                         "time": "float64", "wait": "float64", "outcome": "object"})


def _columns(rows: list[tuple], width: int) -> list[np.ndarray]:
    """The rows' columns as arrays: ``width`` of them for no rows, else as many as a row has."""
    if not rows:
        return [np.empty(0) for _ in range(width)]
    return [np.asarray(col) for col in zip(*rows, strict=True)]
