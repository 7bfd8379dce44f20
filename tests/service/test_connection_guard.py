"""Idle and slow-header clients (issue 20, item 18): the header timeout, the connection cap, and
no traceback when the process runs out of file descriptors. The guard subclasses uvicorn's h11
protocol; the first tests fail if the internals it relies on change (``pyproject.toml`` bounds
uvicorn's version for that reason)."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from importlib.metadata import version
from pathlib import Path

import h11
import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from atlas_sim.config import Settings
from atlas_sim.service import LiveServer, create_app
from atlas_sim.service.server import _GuardedH11Protocol
from tests.service.raw_http import LogRecords, connect, head_and_body, status_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT = 0.5  # seconds, for these tests (the default is 5)


# -- the uvicorn internals the guard relies on --------------------------------------------------

def test_uvicorn_is_within_the_version_range_pyproject_allows():
    text = (ROOT / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith('"uvicorn'))
    assert ",<" in line, "uvicorn needs an upper bound: LiveServer subclasses its h11 protocol"
    low, high = line.split(">=")[1].split('"')[0].split(",<")
    installed = tuple(int(p) for p in version("uvicorn").split(".")[:2])
    assert tuple(int(p) for p in low.split(".")[:2]) <= installed
    assert installed < tuple(int(p) for p in high.split(".")[:2])


def test_the_h11_protocol_still_has_what_the_guard_overrides_and_reads():
    for name in ("connection_made", "data_received", "on_response_complete", "connection_lost",
                 "handle_events", "shutdown"):
        assert callable(getattr(H11Protocol, name, None)), name
    assert list(inspect.signature(H11Protocol.__init__).parameters) == [
        "self", "config", "server_state", "app_state", "_loop"]
    # what __init__ and connection_made set up, read by _GuardedH11Protocol
    config = uvicorn.Config(create_app(), http=H11Protocol)
    config.load()
    assert config.http_protocol_class is H11Protocol  # a class is taken as given
    state = uvicorn.server.ServerState()
    protocol = H11Protocol(config, state, {}, _loop=object())  # type: ignore[arg-type]
    assert isinstance(protocol.conn, h11.Connection) and protocol.conn.their_state is h11.IDLE
    assert protocol.connections is state.connections
    assert isinstance(protocol.conn.trailing_data, tuple)
    source = inspect.getsource(H11Protocol)
    assert "self.connections.add(self)" in source  # connection_made joins the set first
    assert "self.conn.start_next_cycle()" in source  # a kept-alive connection goes IDLE again
    # Server.startup(sockets) creates the loop's server with config.backlog
    assert "backlog=config.backlog" in inspect.getsource(uvicorn.Server.startup)


def test_live_server_serves_with_the_guarded_protocol():
    with LiveServer(create_app(), name="guard-class") as server:
        assert server._server is not None
        assert server._server.config.http_protocol_class is _GuardedH11Protocol
        assert httpx.get(server.url + "/health", trust_env=False).status_code == 200


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"header_timeout": 0}, "header_timeout"), ({"header_timeout": float("nan")}, "header_timeout"),
    ({"max_connections": 0}, "max_connections"), ({"max_connections": 1.5}, "max_connections")])
def test_bad_guard_settings_are_refused_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LiveServer(create_app(), **kwargs)


def test_the_guard_defaults_come_from_the_apps_settings():
    app = create_app(Settings(http_header_timeout=2.5, http_max_connections=64))
    server = LiveServer(app)
    assert (server.header_timeout, server.max_connections) == (2.5, 64)
    assert LiveServer(app, header_timeout=1.0).header_timeout == 1.0
    defaults = LiveServer(object())
    assert (defaults.header_timeout, defaults.max_connections) == (5.0, 1024)


# -- live: slow and idle sockets ------------------------------------------------------------

def closed_by_server(sock: socket.socket, limit: float = 10.0) -> bytes:
    """Everything the server sends before it closes ``sock``; fails if it is still open after
    ``limit`` seconds (a bound on the test, far above the header timeout, not a timing)."""
    sock.settimeout(limit)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except TimeoutError:
        raise AssertionError(f"the server kept the socket open for {limit} s") from None
    except ConnectionResetError:
        return b"".join(chunks)


class AllLogs(LogRecords):
    """WARNING and above from uvicorn, the service, and asyncio (which logs failed accepts)."""

    NAMES = (*LogRecords.NAMES, "asyncio")


@pytest.fixture
def guarded():
    app = create_app(Settings(http_header_timeout=HEADER_TIMEOUT, http_max_connections=8))
    server = LiveServer(app, name="guarded").start()
    with AllLogs() as logs:
        yield server, logs
    server.stop()


@pytest.mark.live
def test_idle_and_slow_header_sockets_are_closed_after_the_header_timeout(guarded, capfd):
    server, logs = guarded
    idle = [connect(server.port) for _ in range(3)]
    partial = [connect(server.port) for _ in range(3)]
    for sock in partial:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    try:
        # while they are open, a normal client is served
        assert httpx.get(server.url + "/health", trust_env=False).status_code == 200
        for sock in idle:
            assert closed_by_server(sock) == b""  # never began a request: closed silently
        for sock in partial:
            answer = closed_by_server(sock)
            assert status_of(answer) == 408, answer
            headers, body = head_and_body(answer)
            assert headers["connection"] == "close"
            assert "HTTP_HEADER_TIMEOUT" in json.loads(body)["error"]
    finally:
        for sock in idle + partial:
            sock.close()
    # at least the test's six sockets, three of them answered (each checked above); the
    # test's own httpx connection is under the timer too and may add one if this process
    # pauses for HEADER_TIMEOUT between connecting and sending, so ">=" and not "=="
    counts = server.connections
    assert counts.header_timeouts >= 6 and counts.timeouts_answered >= 3
    assert logs.tracebacks() == [] and logs.errors() == []
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.live
def test_a_header_sent_a_byte_at_a_time_cannot_hold_the_connection(guarded):
    # slowloris: every byte resets uvicorn's keep-alive timer, never the header timeout
    server, _ = guarded
    sock = connect(server.port)
    stop = threading.Event()

    def trickle() -> None:
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 100
        for i in range(len(request)):
            if stop.wait(HEADER_TIMEOUT / 10):
                return
            try:
                sock.sendall(request[i:i + 1])
            except OSError:
                return

    sender = threading.Thread(target=trickle, name="test-trickle")
    sender.start()
    try:
        answer = closed_by_server(sock)
        assert status_of(answer) == 408
    finally:
        stop.set()
        sender.join()
        sock.close()


@pytest.mark.live
def test_a_kept_alive_connection_gets_the_header_timeout_again_for_its_next_request(guarded):
    server, _ = guarded
    with connect(server.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b'"ok"}' not in first:
            first += sock.recv(65536)
        assert status_of(first) == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:")  # never finished
        answer = closed_by_server(sock)
        assert status_of(answer) == 408


@pytest.mark.live
def test_a_body_trickled_after_its_request_was_answered_cannot_hold_the_connection(guarded):
    # /admin/reset answers without reading its body; the rest of the body may then never come
    server, _ = guarded
    with connect(server.port) as sock:
        sock.sendall(b"POST /admin/reset HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        first = b""
        while b"stall" not in first:
            first += sock.recv(65536)
        assert status_of(first) == 200
        for _ in range(100):  # one byte per tenth of the timeout, 10 timeouts at most
            try:
                sock.sendall(b" ")
            except OSError:
                break
            sock.settimeout(HEADER_TIMEOUT / 10)
            try:
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:  # reset: closed too
                break
        else:
            raise AssertionError("the connection stayed open while its body trickled in")
    assert server.connections.header_timeouts == 1


@pytest.mark.live
def test_a_request_that_takes_longer_than_the_header_timeout_is_not_cut(guarded):
    # the timer covers the header only: the answer may take as long as its work
    # (judged by the answers alone: the guard's counts also see any pause of this process)
    server, _ = guarded
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        r = client.get(f"/api/work?service_time={3 * HEADER_TIMEOUT}")
        assert r.status_code == 200, r.text
        # and its connection was not closed meanwhile: the next request reuses it
        connects: list[str] = []
        again = client.get("/health", extensions={"trace": lambda event, _: connects.append(
            event) if event.startswith("connection.connect_tcp") else None})
        assert again.status_code == 200 and connects == []


@pytest.mark.live
def test_beyond_the_connection_cap_the_longest_waiting_is_closed_and_clients_are_served():
    app = create_app(Settings(http_header_timeout=60.0, http_max_connections=4))
    with LiveServer(app, name="capped") as server, AllLogs() as logs:
        assert server.connection_limit == 4
        socks = []
        try:
            for _ in range(12):  # arrival order is waiting order
                socks.append(connect(server.port))
            # each client gets in: the idle ones make room
            with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
                for _ in range(3):
                    assert client.get("/health").status_code == 200
            wait_for(lambda: server.connections.evicted >= 9, what="evictions")
            # the oldest were closed, first come first closed; the newest are still open
            for sock in socks[:8]:
                assert closed_by_server(sock) == b""
            for sock in socks[-2:]:
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)  # still open, nothing sent
        finally:
            for sock in socks:
                sock.close()
        assert server.connections.refused == 0
        assert logs.tracebacks() == []


@pytest.mark.live
def test_when_every_connection_is_busy_a_new_one_is_refused(guarded):
    server, _ = guarded  # cap 8
    app = server.app
    gate: dict[str, object] = {}

    @app.get("/test/hold-guard")
    async def hold() -> dict[str, bool]:
        import asyncio

        event = gate.setdefault("event", asyncio.Event())
        gate["held"] = int(gate.get("held", 0)) + 1  # type: ignore[call-overload]
        await event.wait()  # type: ignore[attr-defined]
        return {"ok": True}

    busy = [connect(server.port) for _ in range(8)]
    try:
        for sock in busy:
            sock.sendall(b"GET /test/hold-guard HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: gate.get("held") == 8, what="eight requests at work")
        extra = connect(server.port)
        assert closed_by_server(extra) == b""
        extra.close()
        assert server.connections.refused == 1
    finally:
        for sock in busy:
            sock.close()


@pytest.mark.live
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_a_flood_of_idle_sockets_locks_nobody_out_and_prints_no_traceback(tmp_path):
    # A server process with 128 open files at most, and 200 idle or half-sent sockets: before
    # the guard, accept() failed, the client below timed out and stderr held ~2000 tracebacks.
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        from atlas_sim.config import Settings
        from atlas_sim.service import LiveServer, create_app
        server = LiveServer(create_app(Settings(http_header_timeout=30)), name="fd").start()
        print(server.port, server.connection_limit, flush=True)
        sys.stdin.readline()
        print(server.connections.evicted, server.connections.accept_failures, flush=True)
        server.stop()
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    socks: list[socket.socket] = []
    try:
        port, limit = (int(x) for x in child.stdout.readline().split())  # type: ignore[union-attr]
        assert 1 <= limit < 128
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(sock)
        r = httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=5)
        assert r.status_code == 200
        out, err = child.communicate("\n", timeout=30)
    finally:
        for sock in socks:
            sock.close()
        if child.poll() is None:
            child.kill()
            child.communicate()
    evicted, _ = (int(x) for x in out.split())
    assert evicted >= 200 - limit
    assert "Traceback" not in err, err[:2000]
