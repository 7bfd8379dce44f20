"""The real programs Atlas starts itself: PostgreSQL, Redis and the Atlas service in a child
process, each on 127.0.0.1, a free port and a temporary directory of its own; and promtool's
check of a ``/metrics`` page.

Each program is found where Debian installs it (``find_program``): PostgreSQL's under
``/usr/lib/postgresql/<version>/bin``, the highest version first (Debian's ``postgresql``
package does not put them on the PATH; ``/usr/bin/pg_isready`` and friends are
``postgresql-common``'s wrappers, and a machine may have links elsewhere that a fresh one
lacks), everything else on the PATH. A missing one raises ``ProgramMissing``, which names the
Debian package and its ``apt install`` line.

They share the shape of ``server.LiveServer``:

* ``start()`` picks a free port on 127.0.0.1 (bind port 0, close, hand the number to the
  program: another process may take it in between, so a start whose program says "Address
  already in use" is tried again on a new port, up to ``PORT_ATTEMPTS`` times), makes a
  temporary directory, starts the program in a session of its own, and returns once it answers
  (PostgreSQL: ``pg_isready``; Redis: ``PING``; the service: ``GET /health``), within
  ``start_timeout`` seconds. A program that exits first, or never answers, raises
  ``ProgramFailed`` with the last lines of its log.
* ``stop()`` sends the program's orderly stop signal (PostgreSQL: SIGINT, its "fast shutdown";
  the others: SIGTERM), waits up to ``stop_timeout`` seconds, then SIGKILLs the whole process
  group; the process is reaped (no zombie) and the temporary directory removed. ``kill()``
  SIGKILLs at once: a crash. Both are safe to call twice.
* Programs are registered by ``name``: starting one under a name that is running stops that one
  first, so running a notebook cell twice leaves one program, not two. ``running_programs()``
  lists them; ``stop_programs()`` stops them all and runs at interpreter exit. A program is
  stopped only through its PID (never by a name search), so nothing else on the machine is
  touched; a kernel killed outright cannot run ``atexit``, and then PostgreSQL and Redis stay
  until stopped by hand (the service child notices its parent is gone and stops itself).

PostgreSQL's ``initdb`` refuses to run as root, and so does ``postgres``. As root, both run as
the ``postgres`` user (which Debian's package creates), switched to in the child before exec
(``subprocess.Popen(user=, group=, extra_groups=[])``), so ``pid`` is the postmaster's own; its
directory is made under ``tempfile.gettempdir()`` (``/tmp``: pytest's temporary directories are
private to root) and given to that user, mode 0700. The server trusts every connection (it
listens on 127.0.0.1 only; PostgreSQL docs, "The pg_hba.conf File", ``trust``), runs with
``fsync=off`` (a test server: it survives the service's crash, not the machine's), and its
socket is in its own directory (``-k``), never ``/var/run/postgresql``.

Sources: PostgreSQL docs, "Server Applications: initdb, postgres" and "Shutting Down the
Server" (SIGTERM smart, SIGINT fast, SIGQUIT immediate); Redis docs, "Redis configuration"
(``redis-server --port ... --save ""``) and "Signal handling" (SIGTERM: an orderly shutdown);
Prometheus docs, "promtool" (``promtool check metrics`` reads the page on stdin and lints it).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import inspect
import os
import pickle
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, ClassVar

import httpx

from ..config import Settings
from ..server_config import ServerConfig
from ..validation import check_int, check_real
from .app import create_app

__all__ = [
    "PORT_ATTEMPTS",
    "POSTGRES_BIN_GLOB",
    "PostgresServer",
    "ProgramFailed",
    "ProgramMissing",
    "RedisServer",
    "ServiceProcess",
    "check_metrics",
    "find_program",
    "running_programs",
    "stop_programs",
]

#: Where Debian's ``postgresql-<version>`` packages put PostgreSQL's programs.
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: Starts tried on fresh ports when the program finds its port taken meanwhile.
PORT_ATTEMPTS = 5
#: Lines of a program's log quoted in a ``ProgramFailed``.
LOG_TAIL_LINES = 30
#: The unprivileged user PostgreSQL runs as when Atlas runs as root (Debian's package makes it).
POSTGRES_USER = "postgres"

_registry: dict[str, _Program] = {}
_registry_lock = threading.Lock()


class ProgramMissing(RuntimeError):
    """A program Atlas needs is not installed: ``program`` is its name, ``package`` the Debian
    package that has it; the message says how to install it."""

    def __init__(self, program: str, package: str, *, looked: str = "the PATH") -> None:
        self.program = program
        self.package = package
        super().__init__(
            f"{program} not found (looked in {looked}): it comes with Debian's {package} "
            f"package; install it with `apt install {package}` (as root, or with sudo)")


class ProgramFailed(RuntimeError):
    """A program did not start: it exited, or did not answer in time. ``log`` holds the last
    lines of its output (also in the message)."""

    def __init__(self, message: str, *, log: str = "") -> None:
        self.log = log
        super().__init__(f"{message}; the last lines of its log:\n{log}" if log else message)


def _version_key(directory: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``; ``9.6`` -> ``(9, 6)``; not a number: ``()``."""
    version = Path(directory).parent.name
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        return ()
    return tuple(int(part) for part in version.split("."))


def _postgres_bin_dirs() -> list[str]:
    """PostgreSQL's program directories, the highest version first."""
    return sorted(glob.glob(POSTGRES_BIN_GLOB), key=_version_key, reverse=True)


def find_program(name: str, *, package: str) -> str:
    """The absolute path of program ``name``, which Debian's ``package`` installs.

    PostgreSQL's programs (``package="postgresql"``) are looked for first in
    ``POSTGRES_BIN_GLOB`` (``/usr/lib/postgresql/*/bin``, the highest version first), then on
    the PATH; everything else on the PATH. Raises ``ProgramMissing`` (naming the package and its
    ``apt install`` line) when it is nowhere, ``ValueError`` for a name that is not a bare
    program name.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a program name without '/', got {name!r}")
    if not isinstance(package, str) or not package:
        raise ValueError(f"package must be a Debian package name, got {package!r}")
    looked = []
    if package == "postgresql":
        for directory in _postgres_bin_dirs():
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        looked.append(POSTGRES_BIN_GLOB)
    found = shutil.which(name)
    if found is not None:
        return os.path.abspath(found)
    looked.append("the PATH")
    raise ProgramMissing(name, package, looked=" and ".join(looked))


def _free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at this instant (the OS's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _AddressInUse(Exception):
    """The program found its port taken (another process bound it after we picked it)."""


class _Program:
    """One program in a child process of its own (see the module docstring): the start, the
    readiness wait, the stop by PID and the registry. Subclasses say what to run and when it
    answers."""

    #: what the program is called in messages
    kind: ClassVar[str] = "program"
    #: the signal of an orderly stop
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, *, name: str, start_timeout: float, stop_timeout: float) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.start_timeout = check_real("start_timeout", start_timeout, low=0, low_open=True,
                                        high=600)
        self.stop_timeout = check_real("stop_timeout", stop_timeout, low=0, high=600)
        #: the port it listens on (None before start and after stop)
        self.port: int | None = None
        #: its temporary directory (None before start and after stop)
        self.directory: Path | None = None
        #: the last lines of its log when it last stopped (for a look after a crash)
        self.last_log = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    # -- what subclasses say -------------------------------------------------------------

    def _prepare(self) -> None:
        """Run once per start, before the first launch (PostgreSQL: ``initdb``)."""

    def _choose_port(self) -> int | None:
        """The port to hand the program (None: it picks its own and says which)."""
        return _free_port()

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _child_options(self) -> dict[str, Any]:
        """Extra ``Popen`` arguments (PostgreSQL as root: ``user``, ``group``)."""
        return {}

    def _answers(self) -> bool:
        """One readiness probe: True once the program serves."""
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The program's process ID while it is started (None before start and after stop)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """True while the program's process lives (checked without reaping it)."""
        return self._alive()

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _require_port(self) -> int:
        if self.port is None or self._process is None:
            raise RuntimeError(f"{self.kind} {self.name!r} is not running: start() it first")
        return self.port

    def _alive(self) -> bool:
        process = self._process
        if process is None or process.returncode is not None:
            return False
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by someone else
            return False
        return info is None

    def _exit_status(self) -> str:
        process = self._process
        if process is None:
            return "not started"
        if process.returncode is not None:
            code = process.returncode
            return f"status {code}" if code >= 0 else f"signal {-code}"
        with contextlib.suppress(ChildProcessError):
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None:
                if info.si_code == os.CLD_EXITED:
                    return f"status {info.si_status}"
                return f"signal {info.si_status}"
        return "unknown status"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the program's output (its log file), '' without one."""
        if self.directory is None:
            return self.last_log
        try:
            text = (self.directory / "program.log").read_bytes().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _log_since_launch(self) -> str:
        if self.directory is None:
            return ""
        try:
            with open(self.directory / "program.log", "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    # -- start and stop ------------------------------------------------------------------

    def _directory_base(self) -> str:
        return tempfile.gettempdir()

    def _own_directory(self, directory: Path) -> None:
        """Give the directory to the user the program runs as (PostgreSQL as root)."""

    def start(self) -> _Program:
        """Start the program and return once it answers; raise ``ProgramFailed`` saying why
        not (its log's last lines), ``ProgramMissing`` if it is not installed. Starting one
        under a running name stops that one first; a running program is returned as is."""
        if self.running:
            return self
        self.stop()  # a program that died on its own: reap it, remove its directory
        with _registry_lock:
            previous = _registry.get(self.name)
        if previous is not None and previous is not self:
            previous.stop()
        try:
            self.directory = Path(tempfile.mkdtemp(prefix=f"atlas-{self.kind.lower()}-",
                                                   dir=self._directory_base()))
            self._log = open(self.directory / "program.log", "ab")  # noqa: SIM115 - closed in stop
            self._own_directory(self.directory)
            self._prepare()
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self.port = self._choose_port()
                self._launch()
                try:
                    self._wait_until_answering()
                    break
                except _AddressInUse:
                    self._halt(signal.SIGKILL, grace=0)
                    if attempt == PORT_ATTEMPTS:
                        raise ProgramFailed(
                            f"{self.kind} {self.name!r}: every one of {PORT_ATTEMPTS} free "
                            "ports was taken before it could bind it",
                            log=self.log_tail()) from None
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def _launch(self) -> None:
        assert self._log is not None and self.directory is not None
        self._log.flush()
        self._log_offset = self._log.tell()
        self._process = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self.directory, start_new_session=True,
            **self._child_options())
        with _registry_lock:
            _registry[self.name] = self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self._alive():
                if "address already in use" in self._log_since_launch().lower():
                    raise _AddressInUse
                raise ProgramFailed(
                    f"{self.kind} {self.name!r} exited ({self._exit_status()}) before it "
                    "answered", log=self.log_tail())
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise ProgramFailed(
                    f"{self.kind} {self.name!r} did not answer within {self.start_timeout:g} s",
                    log=self.log_tail())
            time.sleep(0.05)

    def _halt(self, sig: signal.Signals, *, grace: float) -> None:
        """Send ``sig`` to the program, wait up to ``grace`` seconds for it to exit, then
        SIGKILL its process group (whatever it left, e.g. PostgreSQL's backends) while its PID
        is still ours (not yet reaped, so no other process can have it), and reap it."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            if self._alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)
                deadline = time.monotonic() + grace
                while self._alive() and time.monotonic() < deadline:
                    time.sleep(0.01)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._process = None

    def stop(self, *, grace: float | None = None) -> None:
        """An orderly stop (``stop_signal``; SIGKILL after ``grace`` seconds, default
        ``stop_timeout``): the process reaped, its directory removed, its name unregistered.
        Safe to call twice, or on a program that never started."""
        self._halt(self.stop_signal, grace=self.stop_timeout if grace is None else grace)
        self._clean_up()

    def kill(self) -> None:
        """SIGKILL the program and everything it started, at once: a crash (nothing is
        flushed, no client is told). Then reaped and cleaned up as ``stop()`` does."""
        self._halt(signal.SIGKILL, grace=0)
        self._clean_up()

    def _clean_up(self) -> None:
        if self.directory is not None:
            self.last_log = self.log_tail()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self.port = None
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"{type(self).__name__}(name={self.name!r}, {where})"


# -- PostgreSQL ----------------------------------------------------------------------------

_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _searchable_by_all(path: Path) -> bool:
    """True if every directory from ``path`` up to ``/`` lets any user pass (o+x)."""
    try:
        return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))
    except OSError:
        return False


class PostgresServer(_Program):
    """A PostgreSQL server of Atlas's own: ``initdb`` into a temporary directory, then
    ``postgres -D <dir>/data -p PORT -c listen_addresses=127.0.0.1 -k <dir> -c fsync=off``
    (see the module docstring: as root it runs as the ``postgres`` user).

    Args:
        name: registry key; starting a server under a running name stops that one first.
        start_timeout: seconds ``initdb`` and then the start may each take (> 0).
        stop_timeout: seconds the fast shutdown (SIGINT) may take before SIGKILL.

    ``url`` is ``postgresql://postgres@127.0.0.1:PORT/postgres`` (user ``postgres``, no
    password); ``create_database(name)`` makes another database and returns its URL.
    Raises ``ProgramMissing`` (package postgresql) when PostgreSQL is not installed,
    ``ProgramFailed`` when it does not start.
    """

    kind = "PostgreSQL"
    stop_signal = signal.SIGINT  # PostgreSQL's fast shutdown

    def __init__(self, *, name: str = "atlas-postgres", start_timeout: float = 30.0,
                 stop_timeout: float = 10.0) -> None:
        super().__init__(name=name, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self._bin = ""

    def _program(self, name: str) -> str:
        """PostgreSQL's program ``name``, from the directory ``postgres`` was found in."""
        sibling = os.path.join(self._bin, name)
        if self._bin and os.access(sibling, os.X_OK):
            return sibling
        return find_program(name, package="postgresql")

    def _account(self) -> pwd.struct_passwd | None:
        """The user PostgreSQL runs as: None (this process's own) unless this is root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            raise ProgramFailed(
                f"PostgreSQL refuses to run as root and there is no {POSTGRES_USER!r} user to "
                "run it as: Debian's postgresql package creates it (apt install postgresql), "
                f"or run as another user") from None

    def _directory_base(self) -> str:
        base = tempfile.gettempdir()
        if self._account() is None or _searchable_by_all(Path(base)):
            return base
        for fallback in ("/tmp", "/var/tmp"):
            if _searchable_by_all(Path(fallback)):
                return fallback
        raise ProgramFailed(f"no temporary directory the {POSTGRES_USER!r} user can reach "
                            f"({base} is private): set TMPDIR to one")

    def _own_directory(self, directory: Path) -> None:
        account = self._account()
        directory.chmod(0o700)
        if account is not None:
            os.chown(directory, account.pw_uid, account.pw_gid)
            assert self._log is not None
            os.fchown(self._log.fileno(), account.pw_uid, account.pw_gid)

    def _child_options(self) -> dict[str, Any]:
        account = self._account()
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        if account is None:
            return {"env": env}
        env.update(HOME=str(self.directory), USER=account.pw_name, LOGNAME=account.pw_name)
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [],
                "env": env}

    @property
    def data_directory(self) -> Path:
        """The cluster's data directory (``PGDATA``), inside the temporary directory."""
        if self.directory is None:
            raise RuntimeError(f"PostgreSQL {self.name!r} is not running: start() it first")
        return self.directory / "data"

    def _prepare(self) -> None:
        self._bin = os.path.dirname(find_program("postgres", package="postgresql"))
        initdb = self._program("initdb")
        for needed in ("pg_isready", "psql"):
            self._program(needed)
        assert self._log is not None and self.directory is not None
        self._log.flush()
        try:
            done = subprocess.run(
                [initdb, "-D", str(self.data_directory), "-U", "postgres", "-E", "UTF8",
                 "--locale=C", "--auth=trust", "--no-sync", "--no-instructions"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                cwd=self.directory, timeout=self.start_timeout, check=False,
                **self._child_options())
        except subprocess.TimeoutExpired:
            raise ProgramFailed(f"initdb did not finish within {self.start_timeout:g} s",
                                log=self.log_tail()) from None
        if done.returncode != 0:
            raise ProgramFailed(f"initdb failed (status {done.returncode})",
                                log=self.log_tail())

    def _command(self) -> list[str]:
        assert self.directory is not None
        return [self._program("postgres"), "-D", str(self.data_directory), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-k", str(self.directory),
                "-c", "fsync=off"]

    def _answers(self) -> bool:
        try:
            done = subprocess.run(
                [self._program("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres", "-d", "postgres", "-t", "1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=5, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self._require_port()}/{name}"

    def sql(self, command: str, *, database: str = "postgres") -> str:
        """Run SQL with ``psql`` (``-X -A -t``: unaligned, tuples only) and return what it
        printed; ``RuntimeError`` with psql's message if it fails. For set-up and checks, not
        for the service's own work."""
        port = self._require_port()
        try:
            done = subprocess.run(
                [self._program("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                 "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database,
                 "-c", command],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
                env={**os.environ, "PGCONNECT_TIMEOUT": "5", "PGAPPNAME": "atlas"})
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"psql did not finish within 30 s: {command!r}") from None
        if done.returncode != 0:
            raise RuntimeError(f"psql failed on {command!r}: "
                               f"{done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode()

    @staticmethod
    def _check_name(name: object) -> str:
        if not isinstance(name, str) or not _DATABASE_NAME.fullmatch(name) or name in (
                "postgres", "template0", "template1"):
            raise ValueError(
                "name must be a new database's name: 1 to 63 of a-z, 0-9 and _, not starting "
                f"with a digit, not postgres, template0 or template1; got {name!r}")
        return name

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (a-z, 0-9, _; 1..63 characters) and return its
        URL. ``ValueError`` for another name; ``RuntimeError`` if it exists."""
        self._check_name(name)
        self.sql(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, closing its connections first
        (``DROP DATABASE ... WITH (FORCE)``, PostgreSQL 13 and later)."""
        self._check_name(name)
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- Redis -----------------------------------------------------------------------------------

def _resp_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command to Redis on 127.0.0.1 (RESP, the Redis serialization protocol) and
    return its one-line reply (``+PONG``, ``+OK``, ``:3``, ``-ERR ...``); enough for the set-up
    commands here, not a client."""
    request = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


class RedisServer(_Program):
    """A Redis server of Atlas's own: ``redis-server --port PORT --bind 127.0.0.1 --save ""
    --appendonly no --dir <tmp> --daemonize no`` (nothing written to disk: a cache).

    Args:
        name: registry key; starting a server under a running name stops that one first.
        start_timeout: seconds until it must answer ``PING`` (> 0).
        stop_timeout: seconds its orderly shutdown (SIGTERM) may take before SIGKILL.

    ``url`` is ``redis://127.0.0.1:PORT/0``. Raises ``ProgramMissing`` (package redis-server)
    when Redis is not installed, ``ProgramFailed`` when it does not start.
    """

    kind = "Redis"

    def __init__(self, *, name: str = "atlas-redis", start_timeout: float = 20.0,
                 stop_timeout: float = 10.0) -> None:
        super().__init__(name=name, start_timeout=start_timeout, stop_timeout=stop_timeout)

    def _command(self) -> list[str]:
        assert self.directory is not None
        return [find_program("redis-server", package="redis-server"),
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no",
                "--protected-mode", "yes"]

    def _answers(self) -> bool:
        return self.ping()

    def ping(self, *, timeout: float = 0.5) -> bool:
        """True if the server answers ``PING`` with ``PONG`` within ``timeout`` seconds."""
        try:
            return _resp_command(self._require_port(), "PING", timeout=timeout) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        """Empty every database (``FLUSHALL``); ``RuntimeError`` if Redis refuses."""
        reply = _resp_command(self._require_port(), "FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"Redis FLUSHALL answered {reply!r}")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self._require_port()}/0"


# -- the Atlas service in a child process ----------------------------------------------------

def _takes_store_url() -> bool:
    return "store_url" in inspect.signature(create_app).parameters


class ServiceProcess(_Program):
    """The Atlas service (``create_app``) served by a ``LiveServer`` in a child process:
    ``python -m atlas_sim.service._serve <spec>``, its config pickled into the temporary
    directory; the child binds 127.0.0.1 port 0 and writes the port to a file. Unlike a
    ``LiveServer`` in this process, it can be killed (``kill()``: SIGKILL, a crash mid-load)
    and started again on the same store.

    Args:
        server: the instance's ``ServerConfig``, as ``create_app(server=...)`` takes it.
        seed: the seed of its random streams (>= 0).
        instance: its index in a cluster (0..1000): ``rng_streams(seed, instance=k)``.
        settings: its ``Settings`` (None: ``Settings()``, read from the environment, which the
            child inherits).
        store_url: the store it keeps state in, passed as ``create_app(store_url=...)``;
            ``ValueError`` if this ``create_app`` takes no such keyword.
        name: registry key (default ``atlas-service-<instance>``).
        start_timeout: seconds until ``/health`` must answer 200 (> 0).
        stop_timeout: seconds its orderly stop (SIGTERM: the ``LiveServer`` stops, requests in
            flight finish or get a 503) may take before SIGKILL.

    ``url`` is ``http://127.0.0.1:PORT``; ``pid`` the child's process ID.
    """

    kind = "service"

    def __init__(self, server: ServerConfig | None = None, *, seed: int = 0, instance: int = 0,
                 settings: Settings | None = None, store_url: str | None = None,
                 name: str | None = None, start_timeout: float = 30.0,
                 stop_timeout: float = 10.0) -> None:
        if server is not None and not isinstance(server, ServerConfig):
            raise ValueError(f"server must be a ServerConfig or None, got {server!r}")
        if settings is not None and not isinstance(settings, Settings):
            raise ValueError(f"settings must be a Settings or None, got {settings!r}")
        if store_url is not None:
            if not isinstance(store_url, str) or not store_url:
                raise ValueError(f"store_url must be a non-empty string or None, got "
                                 f"{store_url!r}")
            if not _takes_store_url():
                raise ValueError("store_url: this create_app takes no store_url keyword (the "
                                 "store is not wired into the service yet); leave it None")
        self.server = server
        self.seed = check_int("seed", seed, low=0)
        self.instance = check_int("instance", instance, low=0, high=1000)
        self.settings = settings
        self.store_url = store_url
        super().__init__(name=f"atlas-service-{self.instance}" if name is None else name,
                         start_timeout=start_timeout, stop_timeout=stop_timeout)

    def _choose_port(self) -> int | None:
        return None  # the child binds port 0 itself: no race

    def _prepare(self) -> None:
        assert self.directory is not None
        options: dict[str, Any] = {"server": self.server, "seed": self.seed,
                                   "instance": self.instance}
        if self.store_url is not None:
            options["store_url"] = self.store_url
        spec = {"settings": self.settings, "options": options, "name": self.name,
                "port_file": str(self.directory / "port"), "parent": os.getpid(),
                "stop_timeout": self.stop_timeout}
        (self.directory / "spec.pickle").write_bytes(pickle.dumps(spec))

    def _command(self) -> list[str]:
        assert self.directory is not None
        return [sys.executable, "-m", "atlas_sim.service._serve",
                str(self.directory / "spec.pickle")]

    def _child_options(self) -> dict[str, Any]:
        # the child imports this very atlas_sim (a worktree, an uninstalled checkout)
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        return {"env": {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""),
                        "PYTHONUNBUFFERED": "1"}}

    def _answers(self) -> bool:
        assert self.directory is not None
        if self.port is None:
            try:
                self.port = int((self.directory / "port").read_text())
            except (OSError, ValueError):
                return False
        try:
            response = httpx.get(f"{self.url}/health", timeout=2.0, trust_env=False)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running service."""
        return f"http://127.0.0.1:{self._require_port()}"


# -- promtool --------------------------------------------------------------------------------

def check_metrics(text: str) -> list[str]:
    """Lint a Prometheus text exposition (a ``/metrics`` page) with ``promtool check metrics``
    (Debian's ``prometheus`` package): its complaints, one per line (parse errors and lint
    warnings such as a counter without ``_total``), or ``[]`` when it accepts the page.

    Raises ``ProgramMissing`` without promtool, ``ValueError`` if ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be the metrics page as a string, got {type(text).__name__}")
    promtool = find_program("promtool", package="prometheus")
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=60, check=False)
    if done.returncode == 0:
        return []
    output = (done.stdout + done.stderr).decode(errors="replace")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines or [f"promtool check metrics exited with status {done.returncode}"]


# -- the registry ----------------------------------------------------------------------------

def running_programs() -> dict[str, _Program]:
    """The registered programs (started and not stopped), by name."""
    with _registry_lock:
        return dict(_registry)


def stop_programs() -> None:
    """Stop every registered program (also run at interpreter exit)."""
    for program in running_programs().values():
        with contextlib.suppress(Exception):
            program.stop()


atexit.register(stop_programs)
