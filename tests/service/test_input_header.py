"""``X-Atlas-Input`` (issue 20, item 14): one decimal number in [0, 1) or absent. Anything else
is the client's error, a 400 naming the header and the range, on every route that reads it,
with a bad-input fault on or off; a valid input below ``bad_input_rate`` is still the designed
crash (a 500)."""

from __future__ import annotations

import httpx
import pytest

from atlas_sim.config import Settings
from atlas_sim.service import LiveServer, create_app
from atlas_sim.service.app import parse_input
from atlas_sim.workload import RequestInputs
from tests.service.raw_http import LogRecords, settle

#: every route that reads the header, as (method, path)
ROUTES = [("GET", "/api/work?service_time=0"), ("GET", "/api/compose"),
          ("GET", "/api/fanout?width=1"), ("POST", "/api/orders?service_time=0")]
MALFORMED = ["n/a", "", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1", "1.0", "1e0",
             "1.5", "10", "-0.1", "-1e-9", "-0.5", "0x0.1", "0_5", "0.5.1", "1/2", "½",
             "0." + "1" * 100, "True"]
GOOD = ["0", "0.0", "-0", "0.999999", ".5", "5e-1", "2.5e-01", " 0.3 ", repr(0.1 + 0.2)]


def sendable(values: list[str]) -> list[str]:
    """The values an HTTP client can put in a header (ASCII, no spaces around: HTTP strips
    them anyway)."""
    return [v for v in values if v.isascii() and v == v.strip()]


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_input_is_refused_naming_the_header_and_the_range(value):
    with pytest.raises(ValueError, match=r"X-Atlas-Input must be one decimal number in \[0, 1\)"):
        parse_input([value])


@pytest.mark.parametrize("value", GOOD)
def test_a_number_in_0_to_1_is_read(value):
    assert parse_input([value]) == float(value)


def test_no_header_is_a_good_input_and_two_are_refused():
    assert parse_input([]) is None
    with pytest.raises(ValueError, match="given 2 times"):
        parse_input(["0.1", "0.1"])


def test_the_load_generators_inputs_are_all_accepted():
    inputs = RequestInputs(7)
    assert all(parse_input([repr(inputs[i])]) == inputs[i] for i in range(2000))


@pytest.fixture(scope="module")
def served():
    app = create_app(Settings())
    server = LiveServer(app, name="input-header").start()
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        yield app, client
    server.stop()


@pytest.fixture(params=[0.0, 0.25], ids=["no fault", "bad_input_rate 0.25"])
def fault(request, served):
    _, client = served
    assert client.post("/admin/reset").status_code == 200
    assert client.put("/admin/faults",
                      json={"bad_input_rate": request.param}).status_code == 200
    yield request.param
    client.post("/admin/reset")


@pytest.mark.live
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_malformed_input_is_a_400_on_every_route_fault_on_or_off(served, fault, method, path):
    app, client = served
    with LogRecords() as logs:
        for value in sendable(MALFORMED):
            r = client.request(method, path, headers={"X-Atlas-Input": value,
                                                      "X-Request-ID": "input-1"})
            assert r.status_code == 400, (value, r.status_code, r.text)
            assert "X-Atlas-Input" in r.json()["error"] and "[0, 1)" in r.json()["error"]
            assert r.json()["request_id"] == "input-1"
        two = client.request(method, path, headers=[("X-Atlas-Input", "0.5"),
                                                    ("X-Atlas-Input", "0.5")])
        assert two.status_code == 400 and "given 2 times" in two.json()["error"]
        settle(app)
    assert logs.errors() == []  # the client's error: no crash logged
    assert client.get("/admin/orders").json()["applied"] == 0


@pytest.mark.live
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_valid_input_is_served_or_is_the_designed_crash(served, fault, method, path):
    _, client = served
    for value in sendable(GOOD):
        r = client.request(method, path, headers={"X-Atlas-Input": value})
        crashes = float(value) < fault
        assert r.status_code == (500 if crashes else 200), (value, r.text)
    assert client.request(method, path).status_code == 200  # no header: a good input
