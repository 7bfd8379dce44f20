"""The real programs Atlas starts itself (``atlas_sim.service.programs``): PostgreSQL, Redis and
the service in a child process each start, answer and stop leaving no process, port, thread or
directory; a name runs one program; a missing program names its Debian package; promtool lints a
metrics page; and the test plumbing (``tests/programs.py``, the root conftest's ``--no-skips``)
fails under CI and skips elsewhere."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _pytest.outcomes import Failed, Skipped

from atlas_sim.server_config import ServerConfig
from atlas_sim.service import (
    PostgresServer,
    ProgramFailed,
    ProgramMissing,
    RedisServer,
    ServiceProcess,
    check_metrics,
    find_program,
    running_programs,
    stop_programs,
)
from atlas_sim.service import programs as programs_module
from atlas_sim.service.programs import _resp_command
from tests.programs import SKIP_PREFIX, missing_package, require_program

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parents[2]


# -- helpers -----------------------------------------------------------------------------------

def gone(pid: int) -> bool:
    """True if no process has ``pid`` (a zombie is not gone: someone must still reap it)."""
    try:
        Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return False


def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def needs(kind: str) -> None:
    if kind == "postgres":
        for program in ("postgres", "initdb", "pg_isready", "psql"):
            require_program(program, "postgresql")
    elif kind == "redis":
        require_program("redis-server", "redis-server")


def make(kind: str, name: str):
    needs(kind)
    return {"postgres": PostgresServer, "redis": RedisServer,
            "service": ServiceProcess}[kind](name=name)


def answers(program) -> bool:
    """A real exchange with the program: a SQL query, a Redis PING, the service's /health."""
    if isinstance(program, PostgresServer):
        return program.sql("SELECT 41 + 1").strip() == "42"
    if isinstance(program, RedisServer):
        return _resp_command(program.port, "PING") == b"+PONG"
    return httpx.get(program.url + "/health", trust_env=False).status_code == 200


KINDS = ["postgres", "redis", "service"]


# -- start, answer, stop -----------------------------------------------------------------------

@pytest.mark.live
@pytest.mark.parametrize("kind", KINDS)
def test_each_program_starts_answers_and_stops_leaving_nothing_behind(kind):
    threads = threading.active_count()
    for _ in range(2):  # twice: nothing accumulates
        program = make(kind, f"test-{kind}")
        with program:
            assert program.running and answers(program)
            pid, port, directory = program.pid, program.port, program.directory
            assert pid is not None and port is not None and directory is not None
            assert directory.is_dir()
            assert running_programs()[f"test-{kind}"] is program
        assert not program.running and program.pid is None and program.port is None
        assert gone(pid), f"{kind} process {pid} is still there"
        assert port_is_free(port)
        assert not directory.exists()
        assert f"test-{kind}" not in running_programs()
    assert threading.active_count() == threads
    program.stop()  # twice is harmless


@pytest.mark.live
@pytest.mark.parametrize("kind", KINDS)
def test_starting_under_a_running_name_stops_the_old_one(kind):
    first = make(kind, f"test-twice-{kind}").start()
    second = make(kind, f"test-twice-{kind}")
    try:
        old_pid, old_directory = first.pid, first.directory
        second.start()
        assert not first.running and gone(old_pid) and not old_directory.exists()
        assert second.running and answers(second)
        assert running_programs()[f"test-twice-{kind}"] is second
    finally:
        second.stop()
        first.stop()


@pytest.mark.live
def test_postgres_pid_is_the_postmasters_and_its_files_belong_to_the_user_it_runs_as():
    with make("postgres", "test-owner") as server:
        command = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert Path(command[0].decode()).name == "postgres"
        assert server.pid == int((server.data_directory / "postmaster.pid")
                                 .read_text().splitlines()[0])
        expected = (pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid())
        owners = {path.stat().st_uid for path in [server.directory,
                                                   *server.directory.rglob("*")]}
        assert owners == {expected}
        assert Path(f"/proc/{server.pid}").stat().st_uid == expected
        assert server.directory.stat().st_mode & 0o777 == 0o700
        assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"


@pytest.mark.live
def test_postgres_creates_and_drops_databases(postgres_server):
    url = postgres_server.create_database("test_programs_db")
    try:
        assert url == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/test_programs_db"
        assert postgres_server.sql("SELECT current_database()",
                                   database="test_programs_db").strip() == "test_programs_db"
        with pytest.raises(RuntimeError, match="already exists"):
            postgres_server.create_database("test_programs_db")
    finally:
        postgres_server.drop_database("test_programs_db")
    assert postgres_server.sql(
        "SELECT count(*) FROM pg_database WHERE datname = 'test_programs_db'").strip() == "0"


@pytest.mark.parametrize("name", ["Upper", "1abc", "a-b", "", "postgres", "template1", "x" * 64,
                                  "a; DROP DATABASE postgres", None])
def test_a_database_name_outside_the_safe_set_is_refused(name):
    with pytest.raises(ValueError, match="name must be"):
        PostgresServer(name="never-started").create_database(name)


@pytest.mark.live
def test_the_fixtures_give_an_empty_database_and_a_flushed_redis(postgres_url, redis_url,
                                                                 postgres_server):
    name = postgres_url.rsplit("/", 1)[1]
    assert name not in ("postgres", "template0", "template1")
    assert postgres_server.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                               database=name).strip() == "0"
    port = int(redis_url.split(":")[2].split("/")[0])
    assert _resp_command(port, "DBSIZE") == b":0"


@pytest.mark.live
def test_redis_flushall_empties_it(redis_server):
    assert _resp_command(redis_server.port, "SET", "k", "v") == b"+OK"
    assert _resp_command(redis_server.port, "DBSIZE") == b":1"
    redis_server.flushall()
    assert _resp_command(redis_server.port, "DBSIZE") == b":0"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


# -- the service in a child process ------------------------------------------------------------

@pytest.mark.live
def test_a_killed_service_leaves_no_zombie_no_port_and_no_directory():
    service = ServiceProcess(ServerConfig(workers=1), seed=3, instance=2,
                             name="test-kill").start()
    pid, port, directory = service.pid, service.port, service.directory
    assert httpx.get(service.url + "/health", trust_env=False).status_code == 200
    service.kill()
    assert gone(pid)  # reaped: not even a zombie
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert port_is_free(port) and not directory.exists() and not service.running
    assert "test-kill" not in running_programs()


@pytest.mark.live
def test_the_service_child_serves_the_config_seed_and_instance_it_was_given():
    config = ServerConfig(workers=3)
    with ServiceProcess(config, seed=5, instance=1) as service:
        assert service.name == "atlas-service-1"
        ok = httpx.post(service.url + "/api/orders", json={"item": "x"}, trust_env=False)
        assert ok.status_code < 500
        page = httpx.get(service.url + "/metrics", trust_env=False).text
    assert "atlas" in page or "http" in page


@pytest.mark.live
def test_promtool_accepts_the_services_metrics_page():
    require_program("promtool", "prometheus")
    with ServiceProcess(name="test-metrics") as service:
        httpx.get(service.url + "/api/work", trust_env=False)
        page = httpx.get(service.url + "/metrics", trust_env=False).text
    assert check_metrics(page) == []


@pytest.mark.live
def test_an_orphaned_service_child_stops_itself_and_removes_its_directory():
    script = textwrap.dedent("""
        import os
        from atlas_sim.service import ServiceProcess
        service = ServiceProcess(name="orphan").start()
        print(service.pid, service.directory, flush=True)
        os._exit(0)  # no atexit: the child is orphaned
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    pid_text, directory = done.stdout.decode().split()
    pid = int(pid_text)

    def stopped() -> bool:  # gone, or a zombie waiting for the reaper it was given to
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"

    assert wait_until(stopped, 15)
    assert wait_until(lambda: not Path(directory).exists(), 5)


@pytest.mark.live
def test_programs_left_running_are_stopped_at_interpreter_exit():
    require_program("redis-server", "redis-server")
    script = textwrap.dedent("""
        from atlas_sim.service import RedisServer
        server = RedisServer(name="left").start()
        print(server.pid, server.directory, flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    pid_text, directory = done.stdout.decode().split()
    assert gone(int(pid_text)) and not Path(directory).exists()


@pytest.mark.live
def test_stop_programs_stops_every_registered_one():
    require_program("redis-server", "redis-server")
    servers = [RedisServer(name=f"test-all-{k}").start() for k in range(2)]
    pids = [s.pid for s in servers]
    stop_programs()
    assert all(gone(pid) for pid in pids)
    assert not any(name.startswith("test-all-") for name in running_programs())


def test_store_url_is_passed_only_to_a_create_app_that_takes_it(monkeypatch):
    def without(settings=None, *, server=None, seed=0, instance=0):
        raise AssertionError("not called here")

    def with_store(settings=None, *, server=None, seed=0, instance=0, store_url=None):
        raise AssertionError("not called here")

    monkeypatch.setattr(programs_module, "create_app", without)
    with pytest.raises(ValueError, match="store_url"):
        ServiceProcess(store_url="sqlite:///tmp/x.db")
    ServiceProcess()  # no store_url: fine
    monkeypatch.setattr(programs_module, "create_app", with_store)
    assert ServiceProcess(store_url="sqlite:///tmp/x.db").store_url == "sqlite:///tmp/x.db"


@pytest.mark.parametrize("kwargs, parameter", [
    ({"server": "big"}, "server"), ({"seed": -1}, "seed"), ({"instance": 1001}, "instance"),
    ({"settings": {}}, "settings"), ({"name": ""}, "name"), ({"start_timeout": 0},
                                                             "start_timeout"),
    ({"stop_timeout": -1}, "stop_timeout"), ({"store_url": ""}, "store_url"),
])
def test_bad_arguments_are_value_errors_naming_the_parameter(kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        ServiceProcess(**kwargs)


# -- failures at start -------------------------------------------------------------------------

def atlas_dirs(kind: str) -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"atlas-{kind}-*")}


@pytest.mark.live
def test_a_program_that_exits_at_start_raises_with_its_log_and_leaves_nothing():
    class Exits(RedisServer):
        def _command(self):
            return [sys.executable, "-c", "print('boom: bad config', flush=True); "
                                          "raise SystemExit(3)"]

    before = atlas_dirs("redis")
    program = Exits(name="test-exits")
    with pytest.raises(ProgramFailed, match=r"(?s)exited \(status 3\).*boom: bad config"):
        program.start()
    assert program.pid is None and program.directory is None
    assert atlas_dirs("redis") == before and "test-exits" not in running_programs()


@pytest.mark.live
def test_a_program_that_never_answers_times_out_and_is_killed():
    launched: list[int] = []

    class Silent(RedisServer):
        def _command(self):
            return [sys.executable, "-c", "print('listening soon', flush=True); "
                                          "import time; time.sleep(60)"]

        def _launch(self):
            super()._launch()
            launched.append(self.pid)

    program = Silent(name="test-silent", start_timeout=0.5, stop_timeout=0.5)
    with pytest.raises(ProgramFailed, match=r"(?s)did not answer within 0.5 s.*listening soon"):
        program.start()
    assert launched and gone(launched[0])


@pytest.mark.live
def test_a_port_taken_between_pick_and_bind_is_retried_on_another(monkeypatch):
    require_program("redis-server", "redis-server")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    picks = iter([port])
    real = programs_module._free_port
    monkeypatch.setattr(programs_module, "_free_port", lambda: next(picks, None) or real())
    try:
        with RedisServer(name="test-race") as server:
            assert server.port != port and server.ping()
    finally:
        taken.close()


@pytest.mark.live
def test_a_port_always_taken_gives_up_after_port_attempts(monkeypatch):
    require_program("redis-server", "redis-server")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setattr(programs_module, "_free_port", lambda: port)
    monkeypatch.setattr(programs_module, "PORT_ATTEMPTS", 2)
    try:
        with pytest.raises(ProgramFailed, match="every one of 2 free ports was taken"):
            RedisServer(name="test-race-lost").start()
    finally:
        taken.close()


# -- finding programs --------------------------------------------------------------------------

def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_postgres_programs_come_from_the_highest_version_directory(tmp_path, monkeypatch):
    for version in ("9.6", "15", "10"):
        executable(tmp_path / version / "bin" / "initdb")
    executable(tmp_path / "10" / "bin" / "psql")
    executable(tmp_path / "path" / "initdb")  # a link on PATH loses to Debian's directory
    monkeypatch.setattr(programs_module, "POSTGRES_BIN_GLOB", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert find_program("initdb", package="postgresql") == str(tmp_path / "15/bin/initdb")
    assert find_program("psql", package="postgresql") == str(tmp_path / "10/bin/psql")


def test_postgres_programs_fall_back_to_the_path_and_others_come_from_it(tmp_path, monkeypatch):
    executable(tmp_path / "path" / "initdb")
    executable(tmp_path / "path" / "redis-server")
    monkeypatch.setattr(programs_module, "POSTGRES_BIN_GLOB", str(tmp_path / "none/*/bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert find_program("initdb", package="postgresql") == str(tmp_path / "path/initdb")
    assert find_program("redis-server", package="redis-server") == str(
        tmp_path / "path/redis-server")


def test_a_missing_program_names_its_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(programs_module, "POSTGRES_BIN_GLOB", str(tmp_path / "*/bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProgramMissing, match=r"apt install postgresql") as missing:
        find_program("initdb", package="postgresql")
    assert (missing.value.program, missing.value.package) == ("initdb", "postgresql")
    assert str(tmp_path) in str(missing.value)  # where it looked
    with pytest.raises(ProgramMissing, match="apt install prometheus") as missing:
        check_metrics("")
    assert missing.value.package == "prometheus"


@pytest.mark.parametrize("kind, package", [("postgres", "postgresql"),
                                           ("redis", "redis-server")])
def test_starting_a_missing_program_raises_program_missing_and_leaves_nothing(
        tmp_path, monkeypatch, kind, package):
    monkeypatch.setattr(programs_module, "POSTGRES_BIN_GLOB", str(tmp_path / "*/bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    before = atlas_dirs(kind)
    server = PostgresServer(name="test-missing") if kind == "postgres" else RedisServer(
        name="test-missing")
    with pytest.raises(ProgramMissing, match=f"apt install {package}") as missing:
        server.start()
    assert missing.value.package == package
    assert server.directory is None and atlas_dirs(kind) == before


@pytest.mark.parametrize("name", ["", "bin/sh", None])
def test_find_program_refuses_a_path(name):
    with pytest.raises(ValueError, match="name must be"):
        find_program(name, package="x")


# -- promtool ----------------------------------------------------------------------------------

@pytest.mark.live
def test_promtool_accepts_a_good_page_and_reports_a_bad_one():
    require_program("promtool", "prometheus")
    good = "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 3\n"
    assert check_metrics(good) == []
    complaints = check_metrics("# HELP jobs Jobs done.\n# TYPE jobs counter\njobs 3\n")
    assert len(complaints) == 1 and "_total" in complaints[0]
    assert any("parsing error" in line for line in check_metrics("not a metric line {\n"))
    with pytest.raises(ValueError, match="text"):
        check_metrics(b"jobs_total 3\n")  # type: ignore[arg-type]


# -- the test plumbing -------------------------------------------------------------------------

def test_require_program_returns_the_path_of_a_program_that_is_there():
    assert require_program("sh", "dash") == find_program("sh", package="dash")


def test_require_program_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match=r"CI=true and needs Debian's atlas-fake \(apt install "
                                     r"atlas-fake\)"):
        require_program("atlas-no-such-program", "atlas-fake")


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_require_program_skips_elsewhere_naming_the_package(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(Skipped) as skipped:
        require_program("atlas-no-such-program", "atlas-fake")
    assert str(skipped.value).startswith(f"{SKIP_PREFIX}atlas-fake (apt install atlas-fake)")
    assert missing_package(f"Skipped: {skipped.value}") == "atlas-fake"
    assert missing_package("Skipped: browser tests need Chromium") is None


HOOKED_TESTS = """
import pytest
from tests.programs import require_program

def test_needs_a_missing_program():
    require_program("atlas-no-such-program", "atlas-fake")

def test_skips_for_another_reason():
    pytest.skip("not today")

def test_passes():
    pass
"""


@pytest.fixture
def hooked(pytester):
    """A pytest run with the root conftest (its --no-skips hook) over HOOKED_TESTS."""
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_hooked=HOOKED_TESTS)
    return pytester


def test_no_skips_lets_a_missing_package_through_outside_ci_and_says_what_to_install(
        hooked, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = hooked.runpytest("--no-skips", "-rs")
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*1 test skipped for want of Debian packages*"
                                 "sudo apt-get install -y atlas-fake*"])


def test_no_skips_fails_a_missing_package_under_ci(hooked, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = hooked.runpytest("--no-skips")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*CI=true and needs Debian's atlas-fake*"])
