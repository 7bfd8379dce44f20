"""Small helpers shared by the test modules."""

from __future__ import annotations


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
