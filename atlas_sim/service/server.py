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

The app's ASGI lifespan runs on the server's loop (``lifespan="auto"``: an app without one is
served all the same): an Atlas app opens its store at startup, so ``start()`` returns with its
connections made (or raises saying why they could not be), and closes it at shutdown, after the
requests in flight have ended, even when the stop is forced.

Idle and slow clients (the "slowloris" attack): uvicorn bounds the wait between requests on a
kept-alive connection (``timeout_keep_alive``) but not the time a client takes to send a
request's line and headers, nor the number of open connections (its ``limit_concurrency``
answers 503 only once a request's headers are in). Enough sockets that never finish their
headers used up the process's open files; then ``accept`` failed, every client was locked out,
and asyncio printed a traceback for each failed ``accept``. Here, on uvicorn's h11 protocol
(``_GuardedH11Protocol``):

* a connection waiting for a request (a new one, or a kept-alive one after its answer) gets
  ``header_timeout`` seconds (``HTTP_HEADER_TIMEOUT``) to send the request line and headers;
  then it is closed, with a JSON 408 if it had begun sending (RFC 9110, section 15.5.9);
* ``start()`` raises the process's soft open-file limit (``RLIMIT_NOFILE``) towards its hard
  limit, as far as the cap below needs (three descriptors a connection: its own, the accept
  backlog's burst, a client's in this process), as many servers do (nginx's
  ``worker_rlimit_nofile``; Go programs since Go 1.19 raise it to the hard limit at start). It
  is never lowered. A notebook kernel often starts with a soft limit of 256 or 1024;
* beyond ``max_connections`` open connections (``HTTP_MAX_CONNECTIONS``, lowered to what the
  open-file room holds, but never below ``LIVE_CONNECTIONS``, what the workbook's live
  experiments open at once, unless ``max_connections`` itself is lower), one more closes the
  connection that has waited longest for a request: one idle between requests on a kept-alive
  connection, or one still sending its headers (or a body trickled after its answer).
  Connections at work on a request are never closed, and a new connection is admitted even
  beyond the cap while the process has file descriptors to spare;
* only when the process is out of descriptors (fewer than ``SPARE_DESCRIPTORS`` free, or an
  ``accept`` failed) is anything more done: the connection waiting longest is closed first, and
  only if none is waiting is the new connection refused (``ConnectionCounts.refused``). So an
  operator's ``/admin/...`` request is never turned away because clients hold idle or slow
  connections;
* an ``accept`` that fails anyway (files used up elsewhere in the process) closes the
  connection waiting longest, and is one warning line per second at most, never a traceback.

This touches uvicorn's internals (``H11Protocol``'s ``conn``, ``handle_events``,
``on_response_complete``), so ``pyproject.toml`` bounds uvicorn's version, and
``tests/service/test_connection_guard.py`` fails if those internals change.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import h11
import httpx
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Settings
from ..validation import check_int, check_real
from .middleware import is_loopback_name

__all__ = ["ConnectionCounts", "LiveServer", "running_servers", "stop_all"]

logger = logging.getLogger("atlas.service")

_registry: dict[str, LiveServer] = {}
_registry_lock = threading.Lock()

#: The message of the cancellation a stopping server sends to requests still in flight.
STOP_MESSAGE = "atlas: server stopping"


@dataclass(eq=False)
class ConnectionCounts:
    """What a server's connection guard did (``LiveServer.connections``): connections closed
    for a header that took longer than ``header_timeout`` (``header_timeouts``, of which
    ``timeouts_answered`` had begun a request and got a 408), waiting connections closed to make
    room (``evicted``), new ones refused because the process was out of file descriptors and no
    connection was waiting (``refused``), and ``accept`` calls that failed for want of open
    files (``accept_failures``)."""

    header_timeouts: int = 0
    timeouts_answered: int = 0
    evicted: int = 0
    refused: int = 0
    accept_failures: int = 0


def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps({"error": f"request header not received within {seconds:g} s "
                                "(HTTP_HEADER_TIMEOUT)", "request_id": None}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


#: Free file descriptors below which the process counts as out of them: kept for the accept
#: backlog's next burst and for the rest of the process.
SPARE_DESCRIPTORS = 32
#: Connections the workbook's live experiments open at once in this process: ``run_load``'s
#: default pool (512) with its warm-up, a closed loop's clients and the fault player's and an
#: operator's connections. The connection cap is never lowered below this.
LIVE_CONNECTIONS = 600


class _ConnectionGuard:
    """One server's header timeout and connection cap (see the module docstring); used only
    on the server's event loop. ``open_files`` is the process's soft ``RLIMIT_NOFILE`` (None:
    unknown); ``room`` counts the descriptors still free (None: unknown)."""

    def __init__(self, header_timeout: float, max_connections: int,
                 open_files: int | None = None,
                 room: Callable[[], int | None] | None = None) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.open_files = open_files
        self.room = _descriptor_room if room is None else room
        self.counts = ConnectionCounts()
        self.answer = _timeout_answer(header_timeout)
        self._last_warning = -math.inf
        self._tickets = itertools.count()
        self._connections: set[Any] = set()  # the server's, once the first one is made

    def ticket(self) -> int:
        """A number that orders connections by when they began waiting for a request."""
        return next(self._tickets)

    def admit(self, new: _GuardedH11Protocol) -> None:
        """Called when ``new`` has joined the server's connections. Beyond the cap, or with the
        process nearly out of descriptors, close the connection waiting longest for a request;
        refuse ``new`` only if none is waiting and descriptors are truly short."""
        connections = self._connections = new.connections
        near_full = self._near_full(new)
        if len(connections) <= self.max_connections and not near_full:
            return
        if self.evict_one(exclude=new):
            return
        # every other connection is at work on a request
        if near_full or self._short_of_descriptors():
            self.counts.refused += 1
            new.close_waiting()

    def evict_one(self, exclude: object = None) -> bool:
        """Close the connection that has waited longest for a request (not ``exclude``);
        False if none is waiting."""
        oldest: _GuardedH11Protocol | None = None
        for c in self._connections:
            if (c is not exclude and isinstance(c, _GuardedH11Protocol)
                    and c.waiting_since is not None and not c.transport.is_closing()
                    and (oldest is None or c.waiting_since < cast(int, oldest.waiting_since))):
                oldest = c
        if oldest is None:
            return False
        self.counts.evicted += 1
        oldest.close_waiting()
        return True

    def _near_full(self, new: _GuardedH11Protocol) -> bool:
        """True if ``new``'s descriptor is among the last ``SPARE_DESCRIPTORS`` the process may
        open. POSIX gives a new descriptor the lowest free number, so every lower one is in use:
        a free check, made on every connection, that never says full wrongly."""
        if self.open_files is None:
            return False
        sock = new.transport.get_extra_info("socket")
        return sock is not None and sock.fileno() >= self.open_files - SPARE_DESCRIPTORS

    def _short_of_descriptors(self) -> bool:
        """Fewer than ``SPARE_DESCRIPTORS`` free (counted: only beyond the cap with no
        connection waiting)."""
        room = self.room()
        return room is not None and room < SPARE_DESCRIPTORS

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: a failed ``accept`` (no file descriptors left) is
        a one-line warning at most once a second; anything else goes to asyncio's own."""
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
            return
        self.counts.accept_failures += 1
        self.evict_one()  # a descriptor for the next accept
        now = loop.time()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            logger.warning("accept failed (%s); the process has no file descriptors left "
                           "(this server's connection limit: %d); new connections wait in "
                           "the backlog", context.get("exception"), self.max_connections)


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a timer on the request line and headers.

    The timer runs while the connection waits for a request (h11's ``their_state`` is
    ``IDLE``: from ``connection_made``, and again after each answer on a kept-alive connection)
    and stops when a request's headers are complete; it also runs while the rest of a body
    arrives after its request was answered without reading it. ``_guard`` is the server's
    ``_ConnectionGuard``, set on the config by ``LiveServer``.
    """

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._guard: _ConnectionGuard = config._atlas_guard  # type: ignore[attr-defined]
        self._header_timer: asyncio.TimerHandle | None = None
        #: the guard's ticket when it began waiting for a request; None while one is at work
        self.waiting_since: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_header()
        self._guard.admit(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_header()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_header()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _waiting(self) -> bool:
        """True while the connection waits on its client with no request at work: for a
        request's line and headers, or for the rest of a body whose request was answered
        without reading it (a client could trickle that body forever)."""
        conn = self.conn
        return (conn.their_state is h11.IDLE
                or (conn.their_state is h11.SEND_BODY and conn.our_state is h11.DONE))

    def _watch_header(self) -> None:
        """Run the timer while waiting for a request's headers, stop it once they are in."""
        if self._waiting() and not self.transport.is_closing():
            if self._header_timer is None:
                self.waiting_since = self._guard.ticket()
                self._header_timer = self.loop.call_later(self._guard.header_timeout,
                                                          self._header_timed_out)
        else:
            self._stop_timer()

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.waiting_since = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._waiting():
            return
        counts = self._guard.counts
        counts.header_timeouts += 1
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            # a request had begun and has no answer yet: tell the client why
            counts.timeouts_answered += 1
            self.transport.write(self._guard.answer)
        self.close_waiting()

    def close_waiting(self) -> None:
        """Close this connection, which has no request at work."""
        self._stop_timer()
        self.transport.close()


def _open_file_limits() -> tuple[int, int] | None:
    """The process's soft and hard ``RLIMIT_NOFILE`` (``RLIM_INFINITY`` as ``sys.maxsize``),
    or None without the ``resource`` module (Windows)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    infinity = resource.RLIM_INFINITY
    return (sys.maxsize if soft == infinity else soft, sys.maxsize if hard == infinity else hard)


def _descriptors_open() -> int | None:
    """Descriptors open in this process, from ``/proc/self/fd`` (Linux) or ``/dev/fd`` (macOS,
    the BSDs); None where neither lists them."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing))
        except OSError:
            continue
    return None


def _descriptor_room() -> int | None:
    """Open files this process may still open (the soft ``RLIMIT_NOFILE`` less those open),
    or None where that cannot be known."""
    limits, used = _open_file_limits(), _descriptors_open()
    if limits is None or used is None or limits[0] == sys.maxsize:
        return None
    return limits[0] - used


def _raise_open_file_limit(wanted: int) -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` to ``wanted`` descriptors, or to the hard limit if that
    is lower; never lower it. Returns the soft limit in force (None: unknown). A refusal (macOS
    refuses more than ``OPEN_MAX`` even under an unlimited hard limit) leaves it as it was."""
    limits = _open_file_limits()
    if limits is None:
        return None
    soft, hard = limits
    target = min(wanted, hard)
    if soft < target:
        import resource

        try:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (target, resource.RLIM_INFINITY if hard == sys.maxsize else hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft


@dataclass(frozen=True)
class _Room:
    """What ``start()`` made of the process's open files: the connection cap, the accept
    backlog, and the soft ``RLIMIT_NOFILE`` (None: unknown)."""

    cap: int
    backlog: int
    open_files: int | None


def _plan_connections(requested: int) -> _Room:
    """Make room for ``requested`` connections and size the cap to the room there is.

    Each connection may take three descriptors: its own, one in a burst of accepts before the
    guard sees them (the backlog), and a client's in this same process (the load generator's).
    So the soft limit is raised (``_raise_open_file_limit``) to the descriptors open now plus
    3 x ``requested`` plus ``SPARE_DESCRIPTORS``, and the cap is a third of the room then free
    (less the spare), but at least ``LIVE_CONNECTIONS`` (or ``requested``, if lower): where the
    hard limit leaves less room than that, the guard's out-of-descriptors rule (close a waiting
    connection, refuse only when none waits) bounds the descriptors instead of the cap.
    """
    used = _descriptors_open()
    if used is None:
        return _Room(requested, min(2048, max(64, requested)), None)
    soft = _raise_open_file_limit(used + 3 * requested + SPARE_DESCRIPTORS)
    if soft is None or soft == sys.maxsize:
        return _Room(requested, min(2048, max(64, requested)), None)
    share = max(1, (soft - used - SPARE_DESCRIPTORS) // 3)
    cap = min(requested, max(LIVE_CONNECTIONS, share))
    if cap > share:
        logger.warning("the open-file limit (%d, raised as far as allowed) leaves room for "
                       "about %d connections; up to %d are admitted, and waiting ones are "
                       "closed when descriptors run short", soft, share, cap)
    # the listen queue and one burst of accepts: bounded like the connections and the room,
    # but at least 64, so that a small cap does not make clients wait for SYN retransmissions
    return _Room(cap, min(2048, max(64, min(cap, share))), soft)


class _Server(uvicorn.Server):
    """uvicorn's server with a quiet, bounded graceful shutdown.

    uvicorn's own logs "Cancel N running task(s), timeout graceful shutdown exceeded" as an
    ERROR, and polls every 0.1 s. Here: stop listening, close idle connections, give requests in
    flight ``timeout_graceful_shutdown`` seconds, then cancel the rest (the app's Timeout layer
    answers them 503) and wait briefly for them to send that answer.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        guard = getattr(self.config, "_atlas_guard", None)
        if guard is not None:
            asyncio.get_running_loop().set_exception_handler(guard.loop_exception)
        await super().startup(sockets)

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
        # The app's lifespan shutdown (an Atlas app closes its store there), even when forced:
        # a store left open would leave its connections and threads behind.
        await self.lifespan.shutdown()


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
        header_timeout: seconds a connection may take to send a request's line and headers
            (> 0); None: the app's ``Settings.http_header_timeout`` (an Atlas app's own
            settings, else ``Settings()``), 5 s by default.
        max_connections: connections open at once (>= 1) beyond which the one waiting longest
            for a request is closed; ``start()`` raises the process's open-file limit to make
            room for them, and lowers the cap to the room there is, but not below
            ``LIVE_CONNECTIONS`` (``connection_limit`` says what was used). None: the
            settings' ``http_max_connections``, 1024 by default.
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
        header_timeout: float | None = None,
        max_connections: int | None = None,
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
        settings = _settings_of(app)
        self.header_timeout = check_real(
            "header_timeout",
            settings.http_header_timeout if header_timeout is None else header_timeout,
            low=0, low_open=True, high=3600)
        self.max_connections = check_int(
            "max_connections",
            settings.http_max_connections if max_connections is None else max_connections,
            low=1)
        #: the connection cap in force (``max_connections``, lowered to the open-file room
        #: but not below ``LIVE_CONNECTIONS``)
        self.connection_limit: int | None = None
        #: the process's soft open-file limit after ``start()`` raised it (None: unknown)
        self.open_file_limit: int | None = None
        #: what the connection guard did, for the last (or current) run
        self.connections = ConnectionCounts()
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
        room = _plan_connections(self.max_connections)
        self.connection_limit, self.open_file_limit = room.cap, room.open_files
        guard = _ConnectionGuard(self.header_timeout, room.cap, room.open_files)
        self.connections = guard.counts
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="auto",  # an Atlas app opens and closes its store in its lifespan
            loop="asyncio",
            http=_GuardedH11Protocol,  # h11 always, with the header timer and the cap
            backlog=room.backlog,  # the listen queue, and one burst of accepts
            # uvicorn annotates whole seconds, but waits with asyncio.wait_for, which takes
            # a float: a stop must not wait a whole second for an idle connection.
            timeout_graceful_shutdown=cast(int, max(0.1, self.stop_timeout / 2)),
        )
        config._atlas_guard = guard  # type: ignore[attr-defined]
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
            # uvicorn exits (SystemExit) when the app's lifespan startup failed: say why
            cause = getattr(getattr(getattr(self.app, "state", None), "atlas", None),
                            "startup_error", None)
            self._error = cause if isinstance(exc, SystemExit) and cause is not None else exc

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


def _settings_of(app: Any) -> Settings:
    """An Atlas app's own settings (``app.state.atlas.settings``), else ``Settings()``."""
    state = getattr(getattr(app, "state", None), "atlas", None)
    settings = getattr(state, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


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
