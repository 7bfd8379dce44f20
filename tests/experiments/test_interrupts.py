"""An interrupt (the kernel's stop button: ``_thread.interrupt_main``) in the middle of each kind
of live entry point the notebooks call (issue 20, item 10): one run (``run_load``,
``compose_experiment``), several runs with a progress line of their own (``live_sweep``), two
generators at once (``live_omission``), an experiment made of experiments (``live_tail`` over
``fanout_run``) and a private server (``calibrate``). Each must reset its service, print one
line saying so (once), raise ``KeyboardInterrupt``, end its progress line "interrupted", and
leave nothing for asyncio to complain about ("exception was never retrieved")."""

from __future__ import annotations

import _thread
import gc
import logging
import socket
import threading
import time
from collections.abc import Callable

import httpx
import IPython.display
import pytest

from atlas_sim import Fault, Load, Settings, progress
from atlas_sim.experiments import live, omission, queueing, tail
from atlas_sim.service import run_load, running_servers
from tests.service.raw_http import samples

pytestmark = pytest.mark.live


class Handle:
    def __init__(self, shown: list[str]) -> None:
        self.shown = shown

    def update(self, data, raw=False):
        self.shown.append(data["text/plain"])


@pytest.fixture
def kernel(monkeypatch):
    """Progress lines as a kernel shows them (the last one is what stays in the notebook)."""
    shown: list[str] = []

    def display(data, raw=False, display_id=False):
        shown.append(data["text/plain"])
        return Handle(shown)

    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", display)
    return shown


@pytest.fixture
def asyncio_log(caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    return caplog


def interrupt_when(condition: Callable[[], bool], within: float = 20.0) -> threading.Thread:
    """Interrupt the main thread, as the stop button does, once ``condition`` holds."""
    def watch() -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if condition():
                _thread.interrupt_main()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def api_requests(server) -> float:
    """Requests the service has counted on its ``/api/...`` routes."""
    return sum(value for labels, value in samples(server.app, "atlas_api_http_requests_total")
               if labels.get("endpoint", "").startswith("/api"))


def nothing_left_unretrieved(log) -> None:
    """Every load thread has ended and its objects are collected; asyncio said nothing."""
    deadline = time.monotonic() + 15
    while any(t.name == "atlas-load" and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a load thread is still running"
        time.sleep(0.05)
    gc.collect()
    complaints = [r.getMessage() for r in log.records if "never retrieved" in r.getMessage()
                  or "was destroyed but it is pending" in r.getMessage()]
    assert complaints == []


def reset_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "was interrupted" in line]


@pytest.fixture
def service():
    settings = Settings(retry_max_attempts=1, http_timeout=1.0, database_timeout=0.2)
    server = live.start_service("test-interrupts", settings=settings, seed=1)
    try:
        yield server, settings
    finally:
        server.stop()


def test_an_interrupt_during_the_warm_up_leaves_no_unretrieved_gather(kernel, asyncio_log):
    """A listener that accepts and never answers holds the generator in its warm-up: the
    interrupt lands there, where 48b2dfa left a cancelled gather nobody read."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        watcher = interrupt_when(lambda: len(accepted) >= 1)
        with pytest.raises(KeyboardInterrupt):
            run_load(url, load=Load(rate=10.0, requests=5), server_events=False)
        watcher.join(5)
        nothing_left_unretrieved(asyncio_log)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert kernel[-1].startswith("requests: 0/5 req in ")
    assert kernel[-1].endswith(", interrupted")


def test_an_interrupted_run_load_says_interrupted_and_switches_its_fault_off(
        service, kernel, asyncio_log):
    server, _ = service
    watcher = interrupt_when(lambda: api_requests(server) >= 10)
    with pytest.raises(KeyboardInterrupt):
        run_load(server.url, path="/api/compose", load=Load(rate=20.0, duration=20.0),
                 faults=[Fault(start=0.0, dependency_outage=True)])
    watcher.join(5)
    nothing_left_unretrieved(asyncio_log)
    assert kernel[-1].startswith("requests: ") and kernel[-1].endswith(", interrupted")
    assert httpx.get(server.url + "/admin/faults", trust_env=False).json()["outage"] is False


def test_an_interrupted_compose_experiment_resets_prints_one_line_and_raises(
        service, kernel, asyncio_log, capsys):
    server, settings = service
    watcher = interrupt_when(lambda: api_requests(server) >= 10)
    with pytest.raises(KeyboardInterrupt) as raised:
        live.compose_experiment(server, settings, load=Load(rate=20.0, duration=20.0), seed=1,
                                faults=[Fault(start=0.0, dependency_error_rate=0.5)])
    watcher.join(5)
    nothing_left_unretrieved(asyncio_log)
    lines = reset_lines(capsys.readouterr().out)
    assert lines == [str(raised.value)]
    assert lines[0].startswith("the live run (compose_experiment) was interrupted; the service "
                               "'test-interrupts' was reset: faults off")
    assert kernel[-1].endswith(", interrupted")


def test_an_interrupted_live_sweep_resets_and_its_own_line_says_interrupted(
        service, kernel, asyncio_log, capsys):
    server, _ = service
    watcher = interrupt_when(lambda: api_requests(server) >= 10)
    with pytest.raises(KeyboardInterrupt):
        queueing.live_sweep(server, utilisations=(0.3, 0.5), seconds=10.0)
    watcher.join(5)
    nothing_left_unretrieved(asyncio_log)
    lines = reset_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "the live run (live_sweep) was interrupted" in lines[0]
    assert "'test-interrupts' was reset" in lines[0]
    assert kernel[-1].startswith("live sweep: 0/2 points in ")
    assert kernel[-1].endswith(", interrupted")


def test_two_generators_interrupted_at_once_reset_once(service, asyncio_log, capsys):
    server, _ = service
    watcher = interrupt_when(lambda: api_requests(server) >= 10)
    with pytest.raises(KeyboardInterrupt):
        omission.live_omission(server, duration=10.0, stall=1.0, stall_start=5.0)
    watcher.join(5)
    nothing_left_unretrieved(asyncio_log)
    lines = reset_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "(live_omission) was interrupted" in lines[0]
    assert "was reset" in lines[0]
    assert httpx.get(server.url + "/admin/faults", trust_env=False).json()["stall"] is False


def test_an_experiment_made_of_experiments_prints_its_line_once(service, asyncio_log, capsys):
    server, _ = service
    watcher = interrupt_when(lambda: api_requests(server) >= 10)
    with pytest.raises(KeyboardInterrupt):
        tail.live_tail(server, requests=2000, rate=100.0)
    watcher.join(5)
    nothing_left_unretrieved(asyncio_log)
    lines = reset_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "(fanout_run) was interrupted" in lines[0]  # the innermost
    assert "was reset" in lines[0]


def test_an_interrupted_calibration_stops_its_own_server_and_says_so(asyncio_log, capsys):
    def calibrating() -> bool:
        server = running_servers().get("atlas-calibration")
        return server is not None and server.running and api_requests(server) >= 10

    watcher = interrupt_when(calibrating)
    with pytest.raises(KeyboardInterrupt):
        live.calibrate(workers=2, requests=2000)
    watcher.join(5)
    nothing_left_unretrieved(asyncio_log)
    lines = reset_lines(capsys.readouterr().out)
    assert lines == ["the live run (calibrate) was interrupted; it ran on a server of its own, "
                     "now stopped"]
    assert not [name for name in live.leftovers() if "atlas-calibration" in name]


def test_an_experiment_on_several_instances_resets_each(service, asyncio_log, capsys):
    server, settings = service
    instances = [server, *live.start_instances(server, 2)]
    try:
        watcher = interrupt_when(lambda: api_requests(server) >= 10)
        with pytest.raises(KeyboardInterrupt):
            live.shared_fault_experiment(instances, settings, seed=1,
                                         load=Load(rate=100.0, duration=20.0))
        watcher.join(5)
        nothing_left_unretrieved(asyncio_log)
        faults = [httpx.get(i.url + "/admin/faults", trust_env=False).json() for i in instances]
    finally:
        for instance in instances[1:]:
            instance.stop()
    lines = reset_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "(shared_fault_experiment) was interrupted" in lines[0]
    for name in ("test-interrupts", "test-interrupts-2", "test-interrupts-3"):
        assert f"the service {name!r} was reset" in lines[0]
    assert all(f["error_rate"] == 0 and f["bad_input_rate"] == 0 for f in faults)
