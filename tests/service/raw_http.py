"""Raw-socket HTTP on 127.0.0.1, polling, metric and log helpers for the hostile-use tests."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 10 ms until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes the connection (or 5 s pass)."""
    chunks, size = [], 0
    try:
        while size < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and return all the server answers until it closes."""
    with connect(port) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def head_and_body(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode().strip().lower()] = value.decode().strip()
    return headers, body


def sample(app: FastAPI, name: str, **labels: str) -> float:
    """One sample of the app's own registry (0 if it was never recorded)."""
    value = app.state.atlas.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def samples(app: FastAPI, name: str) -> list[tuple[dict[str, str], float]]:
    registry = app.state.atlas.metrics.registry
    return [(s.labels, s.value) for family in registry.collect() for s in family.samples
            if s.name == name]


def requests_counted(app: FastAPI, **labels: str) -> float:
    """Requests counted with these labels (summed over the others)."""
    return sum(value for found, value in samples(app, "atlas_api_http_requests_total")
               if all(found.get(k) == v for k, v in labels.items()))


def settle(app: FastAPI) -> None:
    """Wait until no request is in progress: every request answered so far is counted (the
    client may see its answer a moment before the server counts it)."""
    wait_for(lambda: sum(v for _, v in samples(app, "atlas_api_http_requests_in_progress")) == 0,
             what="requests in progress to finish")


class LogRecords(logging.Handler):
    """Collects WARNING and above from uvicorn's and the service's loggers.

    Attach after ``LiveServer.start()``: uvicorn's Config reconfigures its loggers."""

    NAMES = ("uvicorn.error", "uvicorn", "atlas.service")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogRecords:
        for name in self.NAMES:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.NAMES:
            logging.getLogger(name).removeHandler(self)

    def errors(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.ERROR]

    def tracebacks(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.exc_info or "Traceback" in r.getMessage()]


def add_hostile_routes(app: FastAPI) -> dict[str, Any]:
    """Routes that misbehave on purpose; a gate that holds requests per event loop (so it
    works across restarts of a server around the same app)."""
    gates: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
    probe: dict[str, Any] = {"at_gate": 0, "gates": gates}

    def gate_of_this_loop() -> asyncio.Event:
        loop = asyncio.get_running_loop()
        for old in [k for k in gates if k is not loop and k.is_closed()]:
            del gates[old]
        return gates.setdefault(loop, asyncio.Event())

    @app.get("/test/stream")
    async def stream(pause: float = 0.3, chunks: int = 2) -> StreamingResponse:
        async def body():
            for i in range(chunks):
                yield f"chunk {i}\n".encode() + b"x" * 1000
                await asyncio.sleep(pause)
        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/test/broken-stream")
    async def broken_stream() -> StreamingResponse:
        async def body():
            yield b"first part\n"
            raise RuntimeError("broke after the response started")
        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/test/hold")
    async def hold() -> dict[str, bool]:
        gate = gate_of_this_loop()
        probe["at_gate"] += 1
        try:
            await gate.wait()
        finally:
            probe["at_gate"] -= 1
        return {"ok": True}

    @app.post("/admin/test/open")
    async def open_gate() -> dict[str, int]:
        gate_of_this_loop().set()
        return {"open": 1}

    @app.post("/admin/test/close")
    async def close_gate() -> dict[str, int]:
        gates.pop(asyncio.get_running_loop(), None)
        return {"closed": 1}

    return probe
