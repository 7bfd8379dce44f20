"""``LiveServer``: serve an ASGI app on 127.0.0.1 from a background thread of this process.

Made for Jupyter: the kernel's own event loop is never touched (no ``asyncio.run`` or
``nest_asyncio`` in the caller's thread, no task on the kernel's loop, where interrupts and
blocking clients would break it). uvicorn runs its ``Server.run`` in a daemon thread with an
event loop of its own. The socket is bound here, on port 0 so the OS picks a free port, and
handed to uvicorn, so ``url`` is known before the first request.

Servers are registered by ``name``: starting one under a name that is already serving stops the
old one first, so running a notebook cell twice leaves no second thread, port or server behind.
``stop_all()`` stops every one, and runs at interpreter exit.

One app, one server: an app keeps per-event-loop state (the Timeout layer's sweeper, the work
slots), so serving the same app object from two servers at once would let each loop reset the
other's. Starting a server for an app that another running server (under another name) serves
raises ``RuntimeError`` naming that server.

Stopping: new connections are refused at once, idle ones closed; requests in flight get up to
half of ``stop_timeout`` to finish, then are cancelled, and each one that had not started its
answer gets a JSON 503 with its request ID (counted as 503 in the metrics), logged by nobody:
an orderly stop is not an error.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import socket
import threading
import time
from typing import Any, cast

import httpx
import uvicorn

from ..validation import check_int, check_real
from .middleware import is_loopback_name

__all__ = ["LiveServer", "running_servers", "stop_all"]

_registry: dict[str, LiveServer] = {}
_registry_lock = threading.Lock()

#: The message of the cancellation a stopping server sends to requests still in flight.
STOP_MESSAGE = "atlas: server stopping"


class _Server(uvicorn.Server):
    """uvicorn's server with a quiet, bounded graceful shutdown.

    uvicorn's own logs "Cancel N running task(s), timeout graceful shutdown exceeded" as an
    ERROR, and polls every 0.1 s. Here: stop listening, close idle connections, give requests in
    flight ``timeout_graceful_shutdown`` seconds, then cancel the rest (the app's Timeout layer
    answers them 503) and wait briefly for them to send that answer.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 0.0)
        tasks = self.server_state.tasks
        while tasks and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(0.01)
        pending = list(tasks)
        for task in pending:
            task.cancel(msg=STOP_MESSAGE)
        if pending:
            await asyncio.wait(pending, timeout=1.0)


class LiveServer:
    """An ASGI app served by uvicorn in a daemon thread, on ``host`` (loopback by default).

    Use as a context manager, or ``start()`` / ``stop()``::

        with LiveServer(create_app()) as server:
            httpx.get(server.url + "/health")

    Args:
        app: the ASGI app.
        name: registry key; starting a server under a running name stops that one first.
        host: address to bind; anything but loopback needs ``allow_external=True``.
        port: 0 (the default) lets the OS pick a free port.
        allow_external: permit a non-loopback ``host`` (the service has no authentication).
        start_timeout: seconds ``start()`` waits for ``health_path`` to answer 200.
        stop_timeout: seconds ``stop()`` allows for a graceful shutdown before forcing it;
            requests in flight get half of it to finish, then a JSON 503 (see above).
        health_path: path polled by ``start()``; None waits only for uvicorn to say started.
    """

    def __init__(
        self,
        app: Any,
        *,
        name: str = "atlas",
        host: str = "127.0.0.1",
        port: int = 0,
        allow_external: bool = False,
        start_timeout: float = 10.0,
        stop_timeout: float = 1.0,
        health_path: str | None = "/health",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not is_loopback_name(host) and allow_external is not True:
            raise ValueError(
                f"host must be a loopback address such as '127.0.0.1', got {host!r}; "
                "pass allow_external=True to serve beyond this machine (no authentication!)"
            )
        self.app = app
        self.name = name
        self.host = host
        self.port = check_int("port", port, low=0, high=65535)
        self.start_timeout = check_real("start_timeout", start_timeout, low=0, low_open=True)
        self.stop_timeout = check_real("stop_timeout", stop_timeout, low=0.2)
        self.health_path = health_path
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._socket is None:
            raise RuntimeError(
                f"LiveServer {self.name!r} is not running: start it again (server.start(), or "
                "run the cell that started it)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread serving the app (None before start and after stop)."""
        return self._thread

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> LiveServer:
        """Serve the app; return once it answers (or raise ``RuntimeError`` saying why not)."""
        if self.running:
            return self
        with _registry_lock:
            previous = _registry.get(self.name)
        if previous is not None and previous is not self:
            previous.stop()
        with _registry_lock:
            other = next((s for s in _registry.values()
                          if s is not self and s.app is self.app and s.running), None)
        if other is not None:
            raise RuntimeError(
                f"this app is already served by LiveServer {other.name!r} at {other.url}; "
                f"stop that one first (one app, one server), or build a new app with "
                f"create_app() for a second server")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are
        # TCP, and without it every answer written in two parts waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            loop="asyncio",
            # uvicorn annotates whole seconds, but waits with asyncio.wait_for, which takes
            # a float: a stop must not wait a whole second for an idle connection.
            timeout_graceful_shutdown=cast(int, max(0.1, self.stop_timeout / 2)),
        )
        server = _Server(config)
        self._server, self._error = server, None
        self._thread = threading.Thread(
            target=self._serve, args=(server, sock), name=f"atlas-server-{self.name}", daemon=True
        )
        self._thread.start()
        with _registry_lock:
            _registry[self.name] = self
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported by start(); never kill the interpreter
            self._error = exc

    def _wait_until_serving(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"LiveServer {self.name!r} failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"LiveServer {self.name!r} did not start within {self.start_timeout:g} s")
            time.sleep(0.005)
        if self.health_path is None:
            return
        last: object = None
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() <= deadline:
                try:
                    response = client.get(self.url + self.health_path)
                    if response.status_code == 200:
                        return
                    last = f"status {response.status_code}"
                except httpx.TransportError as exc:
                    last = exc
                time.sleep(0.01)
        raise RuntimeError(
            f"LiveServer {self.name!r}: {self.health_path} did not answer 200 within "
            f"{self.start_timeout:g} s (last: {last!r})"
        )

    def stop(self) -> None:
        """Stop serving and join the thread: graceful first, forced after ``stop_timeout``.

        Safe to call twice, or on a server that never started.
        """
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(self.stop_timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True  # stop waiting for connections and tasks
                thread.join(self.stop_timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]
        if thread is not None and thread.is_alive():
            raise RuntimeError(f"LiveServer {self.name!r}: the server thread did not stop")

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._socket is not None else "stopped"
        return f"LiveServer(name={self.name!r}, {where})"


def running_servers() -> dict[str, LiveServer]:
    """The registered servers, by name."""
    with _registry_lock:
        return dict(_registry)


def leftovers() -> list[str]:
    """What Atlas still runs in this process: registered servers and live ``atlas-*`` threads
    (server threads and load-generator threads). Empty after every server has been stopped:
    a notebook's last cell shows it, so a reader can see that nothing leaked."""
    found = [f"server {name!r} at {server.url}" for name, server in running_servers().items()
             if server.running]
    found += [f"thread {thread.name!r}" for thread in threading.enumerate()
              if thread.name.startswith("atlas-") and thread.is_alive()]
    return found


def stop_all() -> None:
    """Stop every registered server (also run at interpreter exit)."""
    for server in running_servers().values():
        with contextlib.suppress(RuntimeError):
            server.stop()


atexit.register(stop_all)
