"""Idle and slow-header clients (issue 20, item 18): the header timeout, the connection cap, and
no traceback when the process runs out of file descriptors. The guard subclasses uvicorn's h11
protocol; the first tests fail if the internals it relies on change (``pyproject.toml`` bounds
uvicorn's version for that reason)."""

from __future__ import annotations

import asyncio
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
from atlas_sim.service.server import LIVE_CONNECTIONS, _GuardedH11Protocol, _raise_open_file_limit
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


def hold_route(app) -> dict[str, object]:
    """Add ``/test/hold-guard``, whose requests wait until ``POST /admin/test/release-hold``
    (the event is made on the server's loop by the first of them); ``gate["held"]`` counts
    them."""
    gate: dict[str, object] = {}

    def event() -> asyncio.Event:
        return gate.setdefault("event", asyncio.Event())  # type: ignore[return-value]

    @app.get("/test/hold-guard")
    async def hold() -> dict[str, bool]:
        gate["held"] = int(gate.get("held", 0)) + 1  # type: ignore[call-overload]
        await event().wait()
        return {"ok": True}

    @app.post("/admin/test/release-hold")
    async def release() -> dict[str, bool]:
        event().set()
        return {"ok": True}

    return gate


def release_held(server: LiveServer) -> None:
    assert httpx.post(server.url + "/admin/test/release-hold", trust_env=False,
                      timeout=5).status_code == 200


def hold_connections(server: LiveServer, gate: dict[str, object], n: int) -> list[socket.socket]:
    """``n`` connections, each at work on a held request (one at a time: none waits)."""
    busy = []
    for i in range(n):
        busy.append(connect(server.port))
        busy[-1].sendall(b"GET /test/hold-guard HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda i=i: gate.get("held") == i + 1, what=f"{i + 1} requests at work")
    return busy


def answer_of(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


@pytest.mark.live
def test_beyond_the_cap_with_every_connection_at_work_new_ones_are_still_served():
    # the cap closes waiting connections; it never turns away a client while the process has
    # descriptors: here six requests are at work on a server capped at 4, and an operator's
    # request, a normal one and more idle sockets than the cap all arrive
    app = create_app(Settings(http_header_timeout=60.0, http_max_connections=4))
    gate = hold_route(app)
    with LiveServer(app, name="capped-busy") as server:
        busy = hold_connections(server, gate, 6)
        idle = [connect(server.port) for _ in range(6)]
        try:
            with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as client:
                r = client.put("/admin/faults", json={"error_rate": 0.0})
                assert r.status_code == 200, r.text
                assert client.get("/health").status_code == 200
                assert client.get("/api/work?service_time=0").status_code == 200
            assert server.connections.refused == 0
            assert server.connections.evicted >= 1  # idle sockets made room, none at work
        finally:
            release_held(server)
            for sock in idle:
                sock.close()
        for sock in busy:
            with sock:
                assert status_of(answer_of(sock)) == 200  # every held request was answered


@pytest.mark.live
def test_out_of_descriptors_a_waiting_connection_is_closed_first_then_a_new_one_refused():
    app = create_app(Settings(http_header_timeout=60.0, http_max_connections=8))
    gate = hold_route(app)
    with LiveServer(app, name="out-of-files") as server:
        out_of_descriptors(server, gate)


def out_of_descriptors(server: LiveServer, gate: dict[str, object]) -> None:
    guard = server._server.config._atlas_guard  # type: ignore[union-attr]
    busy = hold_connections(server, gate, 2)
    idle = connect(server.port)
    try:
        wait_for(lambda: len(server._server.server_state.connections) == 3,  # type: ignore
                 what="the idle connection accepted")
        guard.open_files = 0  # the process now counts as out of descriptors
        operator = connect(server.port)  # the idle one is closed for it, it is not refused
        assert closed_by_server(idle) == b""
        operator.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(answer_of(operator)) == 200
        assert (server.connections.evicted, server.connections.refused) == (1, 0)
        operator.close()
        wait_for(lambda: len(server._server.server_state.connections) == 2,  # type: ignore
                 what="the operator's connection closed")
        extra = connect(server.port)  # nothing waits: now the new one is refused
        assert closed_by_server(extra) == b""
        extra.close()
        assert server.connections.refused == 1
    finally:
        guard.open_files = None
        release_held(server)
        for sock in busy:
            sock.close()
        idle.close()


SERVE_WITH_FEW_FILES = """
    import resource, sys
    soft, hard = 128, int(sys.argv[1]) if sys.argv[1] != "same" else 128
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    from atlas_sim.config import Settings
    from atlas_sim.service import LiveServer, create_app
    server = LiveServer(create_app(Settings(http_header_timeout=30)), name="fd").start()
    print(server.port, server.connection_limit, server.open_file_limit, flush=True)
    sys.stdin.readline()
    c = server.connections
    print(c.evicted, c.refused, c.accept_failures, flush=True)
    server.stop()
"""


def flood(tmp_path: Path, hard: str) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """A server process with a soft open-file limit of 128 (hard: ``hard``, or "same"),
    flooded with 200 idle or half-sent sockets while a client asks for /health; returns what
    it printed at start (port, cap, soft limit) and at the end (evicted, refused, accept
    failures), and its stderr."""
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(SERVE_WITH_FEW_FILES))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script), hard], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    socks: list[socket.socket] = []
    try:
        started = tuple(int(x) for x in child.stdout.readline().split())  # type: ignore[union-attr]
        port = started[0]
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
    return started, tuple(int(x) for x in out.split()), err


LINUX_FDS = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                               reason="needs /proc/self/fd (Linux)")


@pytest.mark.live
@LINUX_FDS
def test_a_flood_of_idle_sockets_locks_nobody_out_and_prints_no_traceback(tmp_path):
    # 128 open files at most, hard limit too, and 200 idle or half-sent sockets: before the
    # guard, accept() failed, the client timed out and stderr held ~2000 tracebacks. The cap
    # stays at the live experiments' floor; running out of descriptors closes idle ones.
    (_, limit, soft), (evicted, refused, _), err = flood(tmp_path, "same")
    assert soft == 128 and limit == LIVE_CONNECTIONS
    assert evicted >= 200 - soft and refused == 0
    assert "Traceback" not in err, err[:2000]


@pytest.mark.live
@LINUX_FDS
def test_the_server_raises_a_low_soft_open_file_limit_and_keeps_its_cap(tmp_path):
    # a soft limit of 128 under a higher hard one (a kernel started with a low soft limit):
    # start() raises it, so the default cap (1024) holds and the 200 sockets fit
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit here is {hard}")
    (_, limit, soft), (evicted, refused, failures), err = flood(tmp_path, str(hard))
    assert limit == 1024 and 3 * 1024 <= soft <= hard
    assert (evicted, refused, failures) == (0, 0, 0)
    assert "Traceback" not in err, err[:2000]


def test_the_open_file_limit_is_raised_never_lowered():
    import resource

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert _raise_open_file_limit(1) == before[0]  # asked for less: left as it is
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before
