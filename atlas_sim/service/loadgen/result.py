"""The generator's records turned into the shared ``RunResult`` tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...results import RunResult
from .driver import Request
from .timeline import EventRow

__all__ = ["to_result"]


def to_result(records: list[Request], events: list[EventRow],
            length: float,
            meta: dict[str, Any]) -> RunResult:
    n = len(records)
    t_start = np.array([r.scheduled for r in records], dtype=float)
    t_end = np.array([r.end for r in records], dtype=float)
    status = np.array([int(r.status) for r in records], dtype=np.int64)
    rows = [(i, *row) for i, r in enumerate(records) for row in r.rows]
    a = np.array([row[:5] for row in rows], dtype=float).reshape(-1, 5)
    # the server's own account of each attempt's work (Server-Timing), in attempts' row order
    meta["server_work"] = np.array([row[6] for row in rows], dtype=float)
    # and the client's: how long each attempt waited before it left the client (run.py)
    meta["client_wait"] = np.array([row[7] for row in rows], dtype=float)
    meta["pool_wait"] = np.array([row[8] for row in rows], dtype=float)  # the part at the pool
    # the server's own account of how far its timers overran (Server-Timing: overrun; only
    # /api/fanout reports it), NaN where it did not
    meta["server_overrun"] = np.array([row[9] for row in rows], dtype=float)
    return RunResult.from_columns(
        requests={
            "request_id": np.arange(n),
            "t_start": t_start,
            "t_end": t_end,
            "latency": t_end - t_start,
            "status": status,
            "attempts": np.array([r.attempts for r in records], dtype=np.int64),
            "ok": (status >= 200) & (status < 300),
        },
        attempts={
            "request_id": a[:, 0].astype(np.int64),
            "attempt": a[:, 1].astype(np.int64),
            "t_start": a[:, 2],
            "t_end": a[:, 3],
            "latency": a[:, 3] - a[:, 2],
            "status": a[:, 4].astype(np.int64),
            "queue_wait": np.array([row[5] for row in rows], dtype=float),
            # the instance each attempt was sent to (0 with one instance)
            "instance": np.array([row[10] for row in rows], dtype=np.int64),
        },
        events=events,
        duration=length,
        source="live",
        meta=meta,
    )
