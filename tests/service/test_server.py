"""LiveServer: loopback only, starts and stops cleanly, one server per name."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from atlas_sim.service import LiveServer, create_app, leftovers, running_servers, stop_all
from tests.helpers import non_loopback_addresses, refuses_connection

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("atlas-server-")]


def test_the_server_listens_on_loopback_only():
    with LiveServer(create_app(), name="loopback") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(server.url + "/health", trust_env=False).status_code == 200
        for address in non_loopback_addresses():
            assert refuses_connection(address, server.port), f"reachable on {address}"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org", "::"])
def test_a_non_loopback_host_needs_an_explicit_opt_in(host):
    with pytest.raises(ValueError, match="allow_external=True"):
        LiveServer(create_app(), host=host)


def test_a_started_and_stopped_server_leaves_no_thread_and_frees_its_port():
    before = threading.active_count()
    server = LiveServer(create_app(), name="leak-check").start()
    port, thread = server.port, server.thread
    assert thread is not None and thread.daemon and thread.is_alive()
    server.stop()
    assert not thread.is_alive()
    assert threading.active_count() == before and not server_threads()
    assert refuses_connection("127.0.0.1", port)
    assert "leak-check" not in running_servers()
    server.stop()  # twice is harmless


def test_starting_a_name_again_stops_the_previous_server():
    first = LiveServer(create_app(), name="cell").start()
    first_thread, first_port = first.thread, first.port
    second = LiveServer(create_app(), name="cell").start()  # a notebook cell, run again
    try:
        assert not first_thread.is_alive() and not first.running
        assert refuses_connection("127.0.0.1", first_port)
        assert running_servers()["cell"] is second
        assert len(server_threads()) == 1
        assert httpx.get(second.url + "/health", trust_env=False).status_code == 200
    finally:
        second.stop()
    assert not server_threads()


def test_leftovers_names_a_running_server_and_its_thread_until_it_stops():
    server = LiveServer(create_app(), name="leftover").start()
    try:
        found = leftovers()
        assert f"server 'leftover' at {server.url}" in found
        assert "thread 'atlas-server-leftover'" in found
    finally:
        server.stop()
    assert leftovers() == []


def test_stop_all_stops_every_registered_server():
    servers = [LiveServer(create_app(), name=f"all-{i}").start() for i in range(2)]
    stop_all()
    assert not any(s.running for s in servers) and not server_threads()


def test_start_reports_a_server_that_never_answers_health():
    app = create_app()
    server = LiveServer(app, name="no-health", health_path="/missing", start_timeout=0.5)
    with pytest.raises(RuntimeError, match="did not answer 200"):
        server.start()
    assert not server.running and not server_threads()


def test_a_server_can_be_started_from_a_thread_that_runs_an_event_loop():
    # A Jupyter cell runs inside the kernel's event loop: start() must not need that loop.
    async def cell() -> int:
        with LiveServer(create_app(), name="in-loop") as server:
            return httpx.get(server.url + "/health", trust_env=False).status_code

    assert asyncio.run(cell()) == 200
    assert not server_threads()
