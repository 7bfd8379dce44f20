"""When each request leaves: the simulator's arrival schedule for a seed, cut to a count."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ...validation import check_int, check_real
from ...workload import arrival_times, rng_streams

__all__ = ["Process", "schedule"]

Process = Literal["poisson", "constant"]


def schedule(
    rate: float,
    *,
    duration: float | None = None,
    requests: int | None = None,
    process: Process = "poisson",
    steps: Sequence[tuple[float, float]] = (),
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Send times (seconds from the start) and the length of the offered load.

    With ``duration``: the simulator's schedule for that seed, cut to the first ``requests``
    if more were drawn (the length is then the time of the first request cut off: the window
    that holds exactly ``requests``). With ``requests`` only: the schedule is drawn over a
    window long enough to hold that many, then cut the same way (``steps`` need a duration).
    """
    if duration is None and requests is None:
        raise ValueError("give duration (seconds), requests (a count), or both")
    if requests is not None:
        requests = check_int("requests", requests, low=1)
    if duration is not None:
        times = arrival_times(rate, duration, rng_streams(seed)["arrivals"], process=process,
                              steps=steps)
        length = float(duration)
    else:
        assert requests is not None
        rate = check_real("rate", rate, low=0, low_open=True)
        if steps:
            raise ValueError("steps need a duration: give duration as well as requests")
        length = (requests + 10 * math.sqrt(requests) + 10) / rate
        while True:
            times = arrival_times(rate, length, rng_streams(seed)["arrivals"], process=process)
            if len(times) > requests:
                break
            length *= 2
    if requests is not None and len(times) > requests:
        length = float(times[requests])
        times = times[:requests]
    return times, length
