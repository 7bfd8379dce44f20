"""The service's middleware stack and routes, over real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atlas_sim.config import Settings
from atlas_sim.policies import ClientPolicy, FixedLimit
from atlas_sim.server_config import Dependency, ServerConfig
from atlas_sim.service import BUCKETS, UNMATCHED, create_app
from atlas_sim.service.request_id import is_valid_request_id, new_request_id
from atlas_sim.workload import Distribution
from tests.service.support import start_server

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1

KNOWN_TEMPLATES = {"/health", "/metrics", "/api/work", "/api/compose", "/admin/faults",
                   "/admin/breaker", "/admin/reset", "/test/boom", "/test/slow", "/test/gate",
                   "/admin/test/release"}


@pytest.fixture(scope="module")
def served():
    settings = Settings(http_timeout=0.3, load_shedding_max_concurrent=3)
    server, probe = start_server(settings, max_body_bytes=1024)
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        yield server, probe, client
    server.stop()


def metric_samples(client: httpx.Client) -> list:
    text = client.get("/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def count(client, name, **labels) -> float:
    return sum(s.value for s in metric_samples(client)
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


# -- request IDs ---------------------------------------------------------------------------

def test_a_valid_request_id_is_kept_and_returned(served):
    _, _, client = served
    r = client.get("/health", headers={"X-Request-ID": "abc-123_X.y"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123_X.y"


@pytest.mark.parametrize("bad", ["has space", "a" * 129, "semi;colon", "é"])
def test_an_unsafe_request_id_is_replaced(served, bad):
    _, _, client = served
    r = client.get("/health", headers={"X-Request-ID": bad.encode("utf-8")})
    rid = r.headers["x-request-id"]
    assert rid != bad and is_valid_request_id(rid)


def test_a_missing_request_id_is_created_fresh_each_time(served):
    _, _, client = served
    ids = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(is_valid_request_id(i) for i in ids)


def test_fresh_request_ids_differ_across_processes():
    import subprocess
    import sys

    code = "from atlas_sim.service.request_id import new_request_id; print(new_request_id())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    mine = new_request_id()
    assert is_valid_request_id(other) and other.split("-")[0] != mine.split("-")[0]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/work?service_time=0", 200),
    ("GET", "/no/such/path", 404),
    ("POST", "/api/work", 405),
    ("GET", "/api/work?service_time=abc", 422),
    ("GET", "/test/boom", 500),
])
def test_every_answer_carries_the_request_id_header_and_errors_have_it_in_the_body(
        served, method, path, status):
    _, _, client = served
    r = client.request(method, path, headers={"X-Request-ID": "trace-1"})
    assert r.status_code == status
    assert r.headers["x-request-id"] == "trace-1"
    if status >= 400:
        body = r.json()
        assert body["request_id"] == "trace-1" and isinstance(body["error"], str)


# -- errors ----------------------------------------------------------------------------------

def test_an_unhandled_exception_is_a_500_without_details_and_one_json_log_line(served, caplog):
    _, _, client = served
    with caplog.at_level(logging.ERROR, logger="atlas.service"):
        r = client.get("/test/boom", headers={"X-Request-ID": "boom-1"})
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error", "request_id": "boom-1"}
    assert "secret" not in r.text and "Traceback" not in r.text
    lines = [rec for rec in caplog.records if rec.name == "atlas.service"]
    assert len(lines) == 1
    logged = json.loads(lines[0].getMessage())
    assert logged["request_id"] == "boom-1" and logged["exception"] == "RuntimeError"
    assert "\n" not in lines[0].getMessage()


# -- timeout ---------------------------------------------------------------------------------

def test_a_slow_request_gets_504_and_its_work_really_stops(served):
    _, probe, client = served
    r = client.get("/test/slow", headers={"X-Request-ID": "slow-1"})
    assert r.status_code == 504
    assert r.json()["request_id"] == "slow-1" and r.headers["x-request-id"] == "slow-1"
    assert probe.slow_cancelled.wait(5), "the handler was not cancelled"
    steps = probe.steps
    assert 0 < steps < 1000
    time.sleep(0.1)  # ten steps' worth: a handler still running would have moved on
    assert probe.steps == steps and not probe.slow_finished
    assert count(client, "atlas_api_http_requests_total", endpoint="/test/slow",
                 status="504") == 1


# -- load shedding ---------------------------------------------------------------------------

def test_one_request_over_the_limit_is_shed_with_429_and_retry_after(served):
    server, probe, client = served
    assert server.app.state.atlas.limiter.limit == 3
    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(httpx.get, server.url + "/test/gate", timeout=10, trust_env=False)
                for _ in range(3)]
        deadline = time.monotonic() + 5
        while probe.at_gate < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert probe.at_gate == 3  # all three are truly in flight
        shed = client.get("/test/gate", headers={"X-Request-ID": "shed-1"})
        health = client.get("/health")  # exempt: an operator can still look
        assert client.post("/admin/test/release").status_code == 200
        statuses = [f.result().status_code for f in held]
    assert statuses == [200, 200, 200]
    assert shed.status_code == 429 and int(shed.headers["retry-after"]) >= 0
    assert shed.json()["request_id"] == "shed-1" and shed.headers["x-request-id"] == "shed-1"
    assert health.status_code == 200
    assert probe.at_gate == 3  # the shed request never reached the handler
    assert count(client, "atlas_api_http_requests_total", endpoint="/test/gate",
                 status="429") == 1


# -- metrics ---------------------------------------------------------------------------------

def test_metrics_have_the_cards_names_labels_and_buckets(served):
    _, _, client = served
    client.get("/api/work?service_time=0")
    client.get("/no/such/thing")
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    expected = {
        "atlas_api_http_requests": ("counter", {"method", "endpoint", "status"}),
        "atlas_api_http_errors": ("counter", {"method", "endpoint", "status_code"}),
        "atlas_api_http_5xx_errors": ("counter", {"method", "endpoint"}),
        "atlas_api_http_4xx_errors": ("counter", {"method", "endpoint"}),
        "atlas_api_http_request_duration_seconds": ("histogram", {"method", "endpoint"}),
    }
    for name, (kind, labels) in expected.items():
        assert families[name].type == kind, name
        samples = [s for s in families[name].samples if not s.name.endswith("_created")]
        assert samples, name
        for s in samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    buckets = {float(s.labels["le"]) for s in families["atlas_api_http_request_duration_seconds"]
               .samples if s.name.endswith("_bucket")}
    assert buckets == {*BUCKETS, float("inf")}
    assert count(client, "atlas_api_http_requests_total", endpoint="/api/work",
                 method="GET", status="200") >= 1
    assert count(client, "atlas_api_http_4xx_errors_total", endpoint=UNMATCHED) >= 1
    assert count(client, "atlas_api_http_errors_total", endpoint=UNMATCHED,
                 status_code="404") >= 1


def test_a_thousand_unknown_paths_add_at_most_one_endpoint_label(served):
    _, _, client = served
    for i in range(1000):
        assert client.get(f"/unknown/{i}").status_code == 404
    endpoints = {s.labels["endpoint"] for s in metric_samples(client) if "endpoint" in s.labels}
    assert endpoints - KNOWN_TEMPLATES == {UNMATCHED}


def test_two_apps_in_one_process_keep_separate_metrics():
    a, _ = start_server()
    b, _ = start_server()
    try:
        with httpx.Client(base_url=a.url, trust_env=False) as ca, \
                httpx.Client(base_url=b.url, trust_env=False) as cb:
            for _ in range(3):
                ca.get("/health")
            on_a = count(ca, "atlas_api_http_requests_total", endpoint="/health")
            on_b = count(cb, "atlas_api_http_requests_total", endpoint="/health")
    finally:
        a.stop()
        b.stop()
    assert on_a == on_b + 3  # each also answered start()'s own /health check


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("GET", "/api/work?service_time=abc", {}, 422),
    ("GET", "/api/work?service_time=-1", {}, 422),
    ("GET", "/api/work?service_time=nan", {}, 422),
    ("PUT", "/admin/faults", {"content": b"not json"}, 422),
    ("PUT", "/admin/faults", {"json": [1, 2]}, 422),
    ("PUT", "/admin/faults", {"json": {"error_rate": 2}}, 422),
    ("PUT", "/admin/faults", {"json": {"error_rate": "high"}}, 422),
    ("POST", "/admin/faults", {"json": {"outage": "yes"}}, 422),
    ("POST", "/admin/faults", {"json": {"capacity": -1}}, 422),
    ("POST", "/admin/faults", {"json": {"colour": "red"}}, 422),
    ("PUT", "/admin/faults", {"content": b"{" + b" " * 2000 + b"}"}, 413),
    ("PUT", "/admin/faults", {"content": iter([b"{", b" " * 2000, b"}"])}, 413),  # chunked
    ("DELETE", "/admin/faults", {}, 405),
])
def test_malformed_input_is_a_4xx_json_error_never_a_500(served, method, path, kwargs, status):
    _, _, client = served
    # Content-Type is JSON throughout: these bodies must fail for what they hold.
    r = client.request(method, path, **kwargs,
                       headers={"X-Request-ID": "bad-1", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["request_id"] == "bad-1" and body["error"]
    assert client.get("/admin/faults").json()["error_rate"] == 0.0  # nothing changed


def test_faults_and_capacity_can_be_set_and_read_back(served):
    _, _, client = served
    try:
        r = client.put("/admin/faults", json={"added_latency": 0.5, "capacity": 0.5})
        assert r.status_code == 200
        assert client.get("/admin/faults").json() == {
            "error_rate": 0.0, "added_latency": 0.5, "outage": False, "capacity": 0.5,
            "bad_input_rate": 0.0, "slow_rate": 0.0, "slow_latency": 0.0, "stall": False}
        client.post("/admin/faults", json={"capacity": 0})
        down = client.get("/api/work")
        assert down.status_code == 503 and down.json()["request_id"]
    finally:
        client.post("/admin/reset")
    assert client.get("/api/work?service_time=0").status_code == 200


def test_a_bad_input_crashes_every_route_that_does_work_and_is_logged_once(served, caplog):
    _, _, client = served
    try:
        assert client.put("/admin/faults", json={"bad_input_rate": 0.25}).status_code == 200
        assert client.get("/admin/faults").json()["bad_input_rate"] == 0.25
        with caplog.at_level(logging.ERROR, logger="atlas.service"):
            for route, method in (("/api/work?service_time=0", "GET"),
                                  ("/api/compose", "GET"),
                                  ("/api/orders?service_time=0", "POST")):
                bad = client.request(method, route, headers={"X-Atlas-Input": "0.2",
                                                             "X-Request-ID": "bad-input-1"})
                assert bad.status_code == 500, (route, bad.text)
                assert bad.json() == {"error": "internal server error",
                                      "request_id": "bad-input-1"}  # no traceback leaks
                good = client.request(method, route, headers={"X-Atlas-Input": "0.25"})
                assert good.status_code == 200, (route, good.text)
                # no input is a good input; one that cannot be read is the client's error
                assert client.request(method, route).status_code == 200
                assert client.request(method, route,
                                      headers={"X-Atlas-Input": "n/a"}).status_code == 400
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "atlas.service"]
        assert [(line["exception"], line["path"]) for line in lines] == [
            ("BadInput", "/api/work"), ("BadInput", "/api/compose"), ("BadInput", "/api/orders")]
    finally:
        client.post("/admin/reset")
    assert client.get("/admin/faults").json()["bad_input_rate"] == 0.0
    assert client.get("/api/work?service_time=0",
                      headers={"X-Atlas-Input": "0.0"}).status_code == 200


@pytest.mark.parametrize("value", [1.5, -0.1, "0.1", True])
def test_a_bad_input_rate_outside_0_to_1_is_refused(served, value):
    _, _, client = served
    r = client.put("/admin/faults", json={"bad_input_rate": value})
    assert r.status_code == 422 and "bad_input_rate" in r.text, r.text
    assert client.get("/admin/faults").json()["bad_input_rate"] == 0.0


def test_a_stall_holds_work_until_it_is_lifted_and_reset_lifts_it(served):
    server, _, client = served
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as other, \
            ThreadPoolExecutor(2) as pool:
        try:
            assert client.put("/admin/faults", json={"stall": True}).json()["stall"] is True
            held = [pool.submit(other.get, "/api/work?service_time=0")]
            work = server.app.state.atlas.work
            deadline = time.monotonic() + 5
            while work.waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.005)  # until it waits at the door
            time.sleep(0.1)
            assert work.waiting == 1 and not held[0].done()  # no answer while stalled ...
            assert client.get("/health").status_code == 200  # ... but the operator's routes
            assert client.put("/admin/faults", json={"stall": False}).json()["stall"] is False
            answer = held[0].result(timeout=5)
            assert answer.status_code == 200
            queued = float(answer.headers["server-timing"].split(",")[0].split("=")[1])
            assert queued >= 100  # ms held at the door count as queueing
            client.put("/admin/faults", json={"stall": True})
            held.append(pool.submit(other.get, "/api/work?service_time=0"))
            time.sleep(0.05)
        finally:
            client.post("/admin/reset")
        assert held[1].result(timeout=5).status_code == 200  # the reset lifted it
        assert client.get("/admin/faults").json()["stall"] is False


def test_work_reports_its_queue_and_work_time_in_server_timing(served):
    _, _, client = served
    r = client.get("/api/work?service_time=0.001")
    parts = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
    assert set(parts) == {"queue", "work"} and float(parts["work"]) >= 1.0


# -- create_app's arguments ------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"instance": -1}, "instance must be an integer >= 0"),
    ({"server": 2}, "server must be an atlas_sim.ServerConfig"),
    ({"server": ServerConfig(dependency=Dependency(error_rate=0.1))},
     r"dependency.error_rate must be 0 live.*Fault\(dependency_error_rate"),
    ({"max_body_bytes": 0}, "max_body_bytes must be an integer >= 1"),
])
def test_create_app_rejects_bad_knobs_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_app(Settings(), **kwargs)


@pytest.mark.parametrize(("old", "new"), [
    ("servers", r"server=ServerConfig\(workers=...\)"),
    ("service_time", r"server=ServerConfig\(service_time=...\)"),
    ("dependency_latency", r"server=ServerConfig\(dependency=Dependency\(latency=...\)\)"),
    ("retry_after", r"server=ServerConfig\(retry_after=...\)"),
])
def test_create_app_refuses_its_old_parameters_naming_the_new_spelling(old, new):
    with pytest.raises(ValueError, match=rf"create_app\({old}=...\) is no longer a parameter: "
                                         rf"write {new}"):
        create_app(Settings(), **{old: 2})


def test_the_app_keeps_the_server_config_it_was_built_from_and_its_defaults_are_the_settings():
    settings = Settings(http_timeout=7, load_shedding_max_concurrent=9)
    config = ServerConfig(workers=3, service_time=Distribution(mean=0.01), timeout=4.0,
                          admission=FixedLimit(max_concurrent=5), retry_after=2)
    state = create_app(settings, server=config).state.atlas
    assert state.server is config and state.work.workers == 3 and state.limiter.limit == 5
    default = create_app(settings).state.atlas
    assert default.server == settings.server_config()
    assert (default.server.workers, default.server.timeout, default.limiter.limit) == (2, 7, 9)
    assert create_app(settings, server=ServerConfig()).state.atlas.limiter is None


def test_service_times_are_drawn_in_order_from_the_seeded_service_stream():
    from atlas_sim.workload import rng_streams

    dist = Distribution(mean=0.001)
    server, _ = start_server(workers=1, service_time=dist, seed=7)
    try:
        with httpx.Client(base_url=server.url, trust_env=False) as client:
            works = [client.get("/api/work").json()["work"] for _ in range(5)]
    finally:
        server.stop()
    expected = dist.sample(rng_streams(7)["service"], 5)
    # Each sleep lasts at least its draw; ordering follows the draws.
    assert all(w >= e for w, e in zip(works, expected, strict=True))


def test_the_teaching_stack_built_on_base_http_middleware_serves_the_same_contract():
    from fastapi import FastAPI

    from atlas_sim.service import LiveServer
    from atlas_sim.service.teaching import add_base_http_middleware_stack

    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    add_base_http_middleware_stack(app)
    with LiveServer(app, name="teaching", health_path=None) as server:
        r = httpx.get(server.url + "/hello", headers={"X-Request-ID": "t-1"}, trust_env=False)
    assert r.status_code == 200 and r.headers["x-request-id"] == "t-1"
    assert count_in(app.state.metrics.registry, "/hello") == 1


def count_in(registry, endpoint: str) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "atlas_api_http_requests_total"
               and s.labels.get("endpoint") == endpoint)


def test_reset_rewinds_the_random_streams_so_a_run_repeats_its_draws():
    server, _ = start_server(Settings(), seed=5)
    station = server.app.state.atlas.work
    drawn: list[float] = []  # the service times the station draws, in order (not timed)
    use_stream = station.use_stream

    def spy_on(rng):
        use_stream(rng)
        draw = station._draw

        def spy() -> float:
            drawn.append(draw())
            return drawn[-1]

        station._draw = spy

    station.use_stream = spy_on  # type: ignore[method-assign]
    server.app.state.atlas.rewind()  # from the seed, as a fresh service: now spied on
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            for _ in range(10):
                assert client.get("/api/work").status_code == 200
            client.post("/admin/reset")
            for _ in range(5):
                assert client.get("/api/work").status_code == 200
    finally:
        server.stop()
    assert len(drawn) == 15
    assert drawn[5:10] != drawn[:5]  # the stream moves on
    assert drawn[10:] == drawn[:5]  # after the reset, the very same draws


@pytest.mark.live
def test_a_dependency_without_retry_budget_or_breaker_runs_live_as_in_the_simulator():
    # ServerConfig(dependency=Dependency()): the default dependency client is a timeout alone,
    # which the simulator's handler takes; the live caller takes it too (no 500, no refusal)
    from atlas_sim.service import LiveServer

    config = ServerConfig(dependency=Dependency(latency=Distribution(mean=0.002)))
    with LiveServer(create_app(server=config), name="plain-dependency") as server:
        compose = httpx.get(f"{server.url}/api/compose", timeout=5.0)
        breaker = httpx.get(f"{server.url}/admin/breaker", timeout=5.0).json()
    assert compose.status_code == 200 and compose.json()["breaker"] is None
    assert breaker["state"] is None and breaker["budget_tokens"] is None
    with pytest.raises(ValueError, match="with a timeout"):
        create_app(server=ServerConfig(dependency=Dependency(client=ClientPolicy())))


def test_counts_read_at_scrape_time_give_the_cards_series():
    # ServiceMetrics keeps plain cells and derives the error counters when collected
    from prometheus_client import generate_latest

    from atlas_sim.service.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    for status, seconds in [(200, 0.003), (404, 0.3), (404, 0.005), (429, 0.01), (503, 12.0)]:
        metrics.record("GET", "/x", status, seconds)
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(family: str, sample: str, **labels: str) -> float:
        return next(s.value for s in families[family].samples
                    if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("atlas_api_http_requests", "atlas_api_http_requests_total", status="404") == 2
    assert value("atlas_api_http_errors", "atlas_api_http_errors_total", status_code="429") == 1
    assert value("atlas_api_http_4xx_errors", "atlas_api_http_4xx_errors_total") == 3
    assert value("atlas_api_http_5xx_errors", "atlas_api_http_5xx_errors_total") == 1
    duration = "atlas_api_http_request_duration_seconds"
    assert value(duration, duration + "_bucket", le="0.005") == 2  # le: seconds <= bound
    assert value(duration, duration + "_bucket", le="10.0") == 4
    assert value(duration, duration + "_bucket", le="+Inf") == 5
    assert value(duration, duration + "_count") == 5
    assert abs(value(duration, duration + "_sum") - 12.318) < 1e-9
    for created in ("requests", "errors", "4xx_errors", "5xx_errors",
                    "request_duration_seconds"):  # as prometheus_client's own Counter shows
        assert f'atlas_api_http_{created}_created{{endpoint="/x",method="GET"' in text


def test_created_series_go_when_prometheus_client_is_told_to_drop_them(monkeypatch):
    # prometheus_client.disable_created_metrics() (or PROMETHEUS_DISABLE_CREATED_SERIES=true)
    # drops _created from its own Counter and Histogram; the scrape-time metrics follow it
    from prometheus_client import Counter, generate_latest
    from prometheus_client import metrics as prometheus_metrics

    from atlas_sim.service.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    metrics.record("GET", "/x", 500, 0.01)
    Counter("own", "prometheus_client's own", registry=metrics.registry).inc()
    assert "_created" in generate_latest(metrics.registry).decode()
    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text and "atlas_api_http_5xx_errors_total" in text


def test_fastapis_own_telemetry_is_off_unless_opentelemetry_is_set_up(monkeypatch):
    from atlas_sim.service import create_app

    app = create_app()
    if hasattr(app, "_telemetry"):  # FastAPI >= 0.165 has a native OpenTelemetry hook
        assert not app._telemetry["tracing"] and not app._telemetry["metrics"]
        monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
        assert create_app()._telemetry["tracing"]
