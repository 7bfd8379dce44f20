"""Small helpers shared by the test modules."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than 127.x (found without sending anything)."""
    import socket

    found = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(info[4][0])
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect: picks a route, sends nothing
            found.add(s.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not a.startswith("127."))


def refuses_connection(host: str, port: int) -> bool:
    """True if nothing accepts a TCP connection at host:port."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def live_shaped_run(*, send_lag=0.0002, work=0.0205, n: int = 100, loop: str = "open",
                    client_wait=None, pool_wait=None, overrun=None, **meta):
    """A ``RunResult`` shaped like ``run_load``'s: ``n`` requests of one attempt each, with
    the given send lags, the service's reported work, and (when given) the client waits, pool
    waits and the service's reported overrun per attempt (seconds, a number or an array)."""
    import numpy as np

    from atlas_sim.results import RunResult

    def column(value):
        return np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()

    t = np.arange(n) * 0.01
    latency = np.full(n, 0.03)
    lag = column(send_lag)
    recorded = {"loop": loop, "send_lag": lag, "server_work": column(work),
                "generator": "this process", **meta}
    for key, value in (("client_wait", client_wait), ("pool_wait", pool_wait),
                       ("server_overrun", overrun)):
        if value is not None:
            recorded[key] = column(value)
    return RunResult.from_columns(
        requests={"request_id": np.arange(n), "t_start": t, "t_end": t + latency,
                  "latency": latency, "status": np.full(n, 200), "attempts": np.ones(n),
                  "ok": np.ones(n, dtype=bool)},
        attempts={"request_id": np.arange(n), "attempt": np.ones(n), "t_start": t,
                  "t_end": t + latency, "latency": latency, "status": np.full(n, 200),
                  "queue_wait": np.zeros(n), "instance": np.zeros(n, dtype=int)},
        duration=1.0, source="live", meta=recorded)


def recording_progress(endings: list):
    """A ``Progress`` that appends each ``close`` ending it is given to ``endings`` (None when
    the caller let it choose), to monkeypatch over a module's ``Progress``."""
    from atlas_sim.progress import Progress

    class Recorded(Progress):
        def close(self, ending=None):
            endings.append(ending)
            super().close(ending)

    return Recorded


# -- test-local server policies: the seams take any object with these methods -------------


class LifoQueue:
    """Last come, first served; the server timeout still reaps the oldest (a ``QueueDiscipline``
    the package does not ship, to show the seam takes any)."""

    def __init__(self) -> None:
        self.items: deque = deque()

    def push(self, item) -> None:
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    def oldest(self):
        return self.items[0]

    def pop_oldest(self):
        return self.items.popleft()

    def discard(self, item) -> None:
        if item in self.items:
            self.items.remove(item)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Lifo:
    def build(self) -> LifoQueue:
        return LifoQueue()


class RecordingLimiter:
    """An ``AdmissionLimiter`` that admits up to ``limit`` and writes down every release's
    latency and drop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.acquired = 0
        self.released: list[tuple[float | None, bool]] = []

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        self.acquired += 1
        return True

    def release(self, latency: float | None = None, dropped: bool = False) -> None:
        self.in_flight -= 1
        self.released.append((latency, dropped))


@dataclass(frozen=True)
class RecordingLimit:
    """An admission config whose limiters record every call (``built``: one per instance)."""

    max_concurrent: int = 100
    built: list = field(default_factory=list, compare=False, hash=False)

    def build(self) -> RecordingLimiter:
        limiter = RecordingLimiter(self.max_concurrent)
        self.built.append(limiter)
        return limiter
