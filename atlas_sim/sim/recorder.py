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
from ..results import ATTEMPT_COLUMNS, REQUEST_COLUMNS, RunResult
from .scenario import Scenario

__all__ = ["POOL_COLUMNS", "Recorder", "planned_events", "pool_table", "run_result"]


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
        """The events known in advance (``planned_events``)."""
        self.event_rows.extend(planned_events(scenario))

    def breaker(self, name: str) -> Callable[[BreakerTransition], None]:
        """A breaker listener that writes breaker ``name``'s transitions to the events table."""

        def record(t: BreakerTransition) -> None:
            self.event_rows.append((t.time, "breaker", name, t.new.value, t.reason))

        return record

    def completion(self, request_id: int, attempt: int, instance: int) -> None:
        """Server instance ``instance`` finished an attempt's work (whether or not its client
        still waits)."""
        self.server_rows.append((request_id, attempt, self.env._now, instance))

    def result(self, scenario: Scenario, duration: float) -> RunResult:
        requests = _columns(self.request_rows, _REQUEST_ROW)
        order = np.argsort(requests["request_id"], kind="stable")
        if len(self.attempt_rows) and len(self.attempt_rows[0]) == 7:
            attempts = _columns(self.attempt_rows, _ATTEMPT_ROW_ONE)  # one instance: index 0
        else:
            attempts = _columns(self.attempt_rows, _ATTEMPT_ROW)
        by_time = np.lexsort((attempts["attempt"], attempts["request_id"], attempts["t_start"]))
        fields = attempts.dtype.names or ()
        pool = pool_table(self.pool_rows) if scenario.path == "/api/orders" else None
        return run_result(
            scenario, duration,
            requests={name: requests[name][order] for name in REQUEST_COLUMNS},
            attempts={name: (attempts[name][by_time] if name in fields
                             else np.zeros(len(by_time), dtype=np.int64))
                      for name in ATTEMPT_COLUMNS},
            events=self.event_rows,
            server_log=_columns(self.server_rows, _SERVER_ROW),
            pool=pool,
        )


def planned_events(scenario: Scenario) -> list[tuple]:
    """The event rows known before a run starts: each fault's window and each step of the
    load."""
    rows: list[tuple] = []
    for f in scenario.faults:
        rows.append((f.start, "fault", f.name, "start", f.describe()))
        if f.end < math.inf:  # a fault without an end lasts until the run is over
            rows.append((f.end, "fault", f.name, "end", ""))
    for t, rate in scenario.load.steps:
        rows.append((t, "load", "rate", f"{rate:g}", "load step"))
    return rows


def run_result(scenario: Scenario, duration: float, *, requests: dict[str, np.ndarray],
               attempts: dict[str, np.ndarray], events: list[tuple],
               server_log: np.ndarray | dict[str, np.ndarray],
               pool: pd.DataFrame | None = None) -> RunResult:
    """The ``RunResult`` of a simulated run from its columns (``REQUEST_COLUMNS`` and
    ``ATTEMPT_COLUMNS``, each in the tables' order), its event rows, the server log's columns
    (``request_id, attempt, time, instance``, in the order the work ended) and, on
    ``/api/orders``, the pool table: what the event engine and the fast path
    (``sim.fastpath``) both hand back."""
    meta: dict[str, object] = {
        "scenario": scenario, "seed": scenario.seed,
        "loop": "open" if scenario.load.open_loop else "closed",
        "server_log": pd.DataFrame({name: np.asarray(server_log[name], dtype=_SERVER_ROW[name])
                                    for name in ("request_id", "attempt", "time", "instance")}),
    }
    if pool is not None:
        meta["pool"] = pool
    return RunResult.from_columns(requests=requests, attempts=attempts, events=events,
                                  duration=duration, source="sim", meta=meta)


#: The columns of ``meta["pool"]`` (see ``sim.pool``).
POOL_COLUMNS = ("request_id", "attempt", "instance", "time", "wait", "outcome")


def pool_table(rows: list[tuple]) -> pd.DataFrame:
    """``meta["pool"]``: one row per acquire, in the order each ended (``POOL_COLUMNS``):
    ``time`` when it was asked and ``wait`` (seconds), ``outcome`` ``"granted"``,
    ``"timeout"``, ``"refused"`` or ``"cancelled"``."""
    table = pd.DataFrame(rows, columns=list(POOL_COLUMNS))
    return table.astype({"request_id": "int64", "attempt": "int64", "instance": "int64",
                         "time": "float64", "wait": "float64", "outcome": "object"})


# The rows the actors append, as numpy record types: ``np.fromiter`` turns a list of tuples into
# one record array in a single pass (the columns are then views), far faster than transposing
# the rows in Python and converting each column.
_REQUEST_ROW = np.dtype([("request_id", "i8"), ("t_start", "f8"), ("t_end", "f8"),
                         ("latency", "f8"), ("status", "i8"), ("attempts", "i8"), ("ok", "?")])
_ATTEMPT_ROW = np.dtype([("request_id", "i8"), ("attempt", "i8"), ("t_start", "f8"),
                         ("t_end", "f8"), ("latency", "f8"), ("status", "i8"),
                         ("queue_wait", "f8"), ("instance", "i8")])
_ATTEMPT_ROW_ONE = np.dtype(_ATTEMPT_ROW.descr[:-1])  # one instance: rows leave out the index
_SERVER_ROW = np.dtype([("request_id", "i8"), ("attempt", "i8"), ("time", "f8"),
                        ("instance", "i8")])


def _columns(rows: list[tuple], dtype: np.dtype) -> np.ndarray:
    """The rows as one record array of ``dtype`` (a column is ``array[name]``)."""
    return np.fromiter(rows, dtype=dtype, count=len(rows))
