"""LiveServer lifecycles (issue 12): one app per server, an orderly stop with requests in
flight, and nothing left behind after overload bursts and restarts."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atlas_sim.config import Settings
from atlas_sim.service import LiveServer, create_app, running_servers
from tests.helpers import refuses_connection
from tests.service.raw_http import (
    LogRecords,
    add_hostile_routes,
    connect,
    read_until_closed,
    requests_counted,
    samples,
    status_of,
    wait_for,
)
from tests.service.support import server_config

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("atlas-server-")]


def get(url: str, rid: str | None = None) -> httpx.Response:
    headers = {"X-Request-ID": rid} if rid else {}
    return httpx.get(url, headers=headers, timeout=10, trust_env=False)


def total_in_progress(app) -> float:
    return sum(v for _, v in samples(app, "atlas_api_http_requests_in_progress"))


# -- 4. one app, one server ------------------------------------------------------------------

def test_an_app_already_served_is_refused_by_a_second_server_with_a_clear_error():
    app = create_app(Settings(http_timeout=0.5),
                     server=server_config(Settings(http_timeout=0.5), workers=1))
    add_hostile_routes(app)
    first = LiveServer(app, name="one-app-a").start()
    try:
        second = LiveServer(app, name="one-app-b")
        with pytest.raises(RuntimeError, match=r"already served by LiveServer 'one-app-a' at "
                                                r"http://127\.0\.0\.1:\d+; stop that one first"):
            second.start()
        assert not second.running and "one-app-b" not in running_servers()
        assert len(server_threads()) == 1
        # the first server still keeps its own HTTP_TIMEOUT (its sweeper was not taken over)
        assert get(first.url + "/test/hold").status_code == 504
    finally:
        first.stop()
    with LiveServer(app, name="one-app-b") as again:  # once stopped, the app may move
        assert get(again.url + "/health").status_code == 200
    assert not server_threads()


def test_the_same_app_under_the_same_name_replaces_its_server():
    app = create_app(Settings())
    first = LiveServer(app, name="one-app-cell").start()
    second = LiveServer(app, name="one-app-cell").start()  # a notebook cell, run again
    try:
        assert not first.running and running_servers()["one-app-cell"] is second
        assert get(second.url + "/health").status_code == 200
    finally:
        second.stop()
    assert not server_threads()


def test_an_app_wrapped_the_same_way_twice_is_still_one_app():
    app = create_app(Settings())
    with LiveServer(app, name="one-app-c"):
        for name in ("one-app-d", "one-app-e"):
            with pytest.raises(RuntimeError, match="already served"):
                LiveServer(app, name=name).start()
        assert len(server_threads()) == 1


# -- 5. stop() with requests in flight -------------------------------------------------------

def test_stop_answers_each_request_in_flight_a_json_503_with_its_request_id_no_traceback():
    app = create_app(Settings())
    probe = add_hostile_routes(app)
    server = LiveServer(app, name="stop-in-flight").start()
    url = server.url
    upload = connect(server.port)  # a body that is still coming when the server stops
    try:
        with LogRecords() as logs, ThreadPoolExecutor(5) as pool:
            held = {
                "stop-hold": pool.submit(get, url + "/test/hold", "stop-hold"),
                "stop-work-1": pool.submit(get, url + "/api/work?service_time=30", "stop-work-1"),
                "stop-work-2": pool.submit(get, url + "/api/work?service_time=30", "stop-work-2"),
                "stop-queued": pool.submit(get, url + "/api/work?service_time=30", "stop-queued"),
            }
            upload.sendall(b"PUT /admin/faults HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"X-Request-ID: stop-upload\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100\r\n\r\n{\"error_")
            quick = pool.submit(get, url + "/test/stream?pause=0.1&chunks=2", "stop-quick")
            wait_for(lambda: total_in_progress(app) == 6 and probe["at_gate"] == 1
                     and app.state.atlas.work.waiting == 1, what="six requests in flight")
            server.stop()
            answers = {rid: future.result() for rid, future in held.items()}
            uploaded = read_until_closed(upload)
            quick_answer = quick.result()
    finally:
        upload.close()
    for rid, r in answers.items():
        assert r.status_code == 503, (rid, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["request_id"] == rid and r.headers["x-request-id"] == rid
        assert "stopping" in r.json()["error"]
    assert status_of(uploaded) == 503 and b'"request_id": "stop-upload"' in uploaded
    assert quick_answer.status_code == 200  # it could finish within the grace period
    assert requests_counted(app, status="503") == 5
    assert requests_counted(app, endpoint="/api/work", status="503") == 3
    assert requests_counted(app, status="499") == requests_counted(app, status="500") == 0
    assert total_in_progress(app) == 0 and app.state.atlas.limiter.in_flight == 0
    assert not logs.tracebacks() and not logs.errors(), [r.getMessage() for r in logs.records]
    assert app.state.atlas.dependency.faults.error_rate == 0.0
    assert not server_threads()


def test_stop_with_nothing_in_flight_logs_nothing():
    app = create_app(Settings())
    server = LiveServer(app, name="stop-idle").start()
    with LogRecords() as logs:
        server.stop()
    assert logs.records == []


# -- bursts and restarts leave nothing behind ------------------------------------------------

LIMIT = 4


def _overload_burst(server: LiveServer, app, probe) -> None:
    """LIMIT requests held, 3 shed, two clients that leave, then a stop with LIMIT in flight."""
    work = app.state.atlas.work
    counted = requests_counted(app, endpoint="/api/work")
    left = requests_counted(app, endpoint="/api/work", status="499")
    with connect(server.port) as sock:  # leaves while its work runs
        sock.sendall(b"GET /api/work?service_time=0.2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: work.busy == 1, what="the work in flight")
    wait_for(lambda: requests_counted(app, endpoint="/api/work") == counted + 1,
             what="the work to be counted")
    assert requests_counted(app, endpoint="/api/work", status="499") == left + 1, samples(
        app, "atlas_api_http_requests_total")
    with ThreadPoolExecutor(LIMIT + 3) as pool:
        held = [pool.submit(get, server.url + "/test/hold") for _ in range(LIMIT)]
        wait_for(lambda: probe["at_gate"] == LIMIT, what="the limit to be reached")
        shed = [pool.submit(get, server.url + "/test/hold") for _ in range(3)]
        assert [f.result().status_code for f in shed] == [429] * 3
        with connect(server.port) as sock:  # leaves mid-body
            sock.sendall(b"PUT /admin/faults HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 9\r\n\r\n{")
        server.stop()
        assert [f.result().status_code for f in held] == [503] * LIMIT


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_five_overload_bursts_and_fifty_restarts_leave_no_request_thread_fd_or_port():
    app = create_app(Settings(load_shedding_max_concurrent=LIMIT))
    probe = add_hostile_routes(app)
    with LiveServer(app, name="leak-warm-up") as server:  # lazily made things exist first
        get(server.url + "/health")
    threads = {t.ident for t in threading.enumerate()}
    fds = _open_fds()
    ports = []
    for cycle in range(50):
        server = LiveServer(app, name="leak").start()
        ports.append(server.port)
        if cycle % 10 == 0:
            _overload_burst(server, app, probe)  # stops the server itself
        else:
            assert get(server.url + "/api/work?service_time=0").status_code == 200
            server.stop()
    assert total_in_progress(app) == 0
    assert app.state.atlas.limiter.in_flight == 0
    assert requests_counted(app, endpoint="/test/hold", status="429") == 15
    assert requests_counted(app, endpoint="/test/hold", status="503") == 5 * LIMIT
    assert requests_counted(app, endpoint="/api/work", status="499") == 5

    # Served once more: the gauge reads 0 everywhere but the scrape itself, and the limiter
    # admits its full limit (and not one more).
    with LiveServer(app, name="leak") as server:
        text = get(server.url + "/metrics").text
        gauge = {s.labels["endpoint"]: s.value for f in text_string_to_metric_families(text)
                 for s in f.samples if s.name == "atlas_api_http_requests_in_progress"}
        assert gauge.pop("/metrics") == 1 and set(gauge.values()) == {0.0}
        with ThreadPoolExecutor(LIMIT) as pool:
            held = [pool.submit(get, server.url + "/test/hold") for _ in range(LIMIT)]
            wait_for(lambda: probe["at_gate"] == LIMIT, what="the full limit admitted")
            assert get(server.url + "/test/hold").status_code == 429
            assert httpx.post(server.url + "/admin/test/open", trust_env=False).status_code == 200
            assert [f.result().status_code for f in held] == [200] * LIMIT
    assert total_in_progress(app) == 0 and app.state.atlas.limiter.in_flight == 0

    assert not server_threads() and {t.ident for t in threading.enumerate()} == threads
    assert _open_fds() == fds
    assert all(refuses_connection("127.0.0.1", port) for port in ports)
