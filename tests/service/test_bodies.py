"""Bodies the parser cannot handle (issue 20, item 12): nesting around and far beyond the
recursion limit, huge numbers, huge bodies, bytes that are not UTF-8. Each is a clean 4xx
naming the problem on every route that reads a body, never a 500, never a traceback."""

from __future__ import annotations

import sys

import httpx
import pytest

from atlas_sim.config import Settings
from atlas_sim.service import LiveServer, create_app
from atlas_sim.service.app import (
    MAX_JSON_DEPTH,
    MAX_NUMBER_CHARS,
    InvalidBody,
    parse_json_body,
)
from atlas_sim.service.bodies import _scan_json_depth
from tests.service.raw_http import LogRecords, settle

LIMIT = sys.getrecursionlimit()
#: around the bound, around the interpreter's recursion limit (1000), and far beyond it (the
#: last still under the 64 KiB body limit)
DEPTHS = [MAX_JSON_DEPTH + 1, 100, LIMIT - 50, LIMIT - 1, LIMIT, LIMIT + 1, 5 * LIMIT, 30_000]
ROUTES = [("PUT", "/admin/faults"), ("POST", "/admin/fanout"), ("POST", "/api/orders")]


def nested(shape: str, depth: int) -> bytes:
    """A JSON document whose arrays/objects nest ``depth`` deep, in one of three shapes."""
    if shape == "arrays":
        return b"[" * depth + b"]" * depth
    if shape == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    # inside a field the admin routes know, each array led by a string holding a bracket
    inner = depth - 1
    return b'{"error_rate": ' + b'["]", ' * inner + b"0" + b"]" * inner + b"}"


@pytest.mark.parametrize("shape", ["arrays", "objects", "in a field"])
@pytest.mark.parametrize("depth", [1, 2, MAX_JSON_DEPTH, *DEPTHS])
def test_the_parser_answers_any_nesting_with_a_value_or_invalid_body(shape, depth):
    raw = nested(shape, depth)
    if depth <= MAX_JSON_DEPTH:
        parse_json_body(raw)  # parsed: the admin routes then check the fields
    else:
        with pytest.raises(InvalidBody, match=f"more than {MAX_JSON_DEPTH} deep"):
            parse_json_body(raw)


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = '{"note": "' + "[{" * 500 + '\\"]"}'
    assert parse_json_body(text.encode()) == {"note": "[{" * 500 + '"]'}


@pytest.mark.parametrize(("text", "depth"), [
    ("", 0), ("1", 0), ("[]", 1), ("{}", 1), ('[{"a": [1]}]', 3),
    ('"[[["', 0),  # brackets in a string
    (r'["\"[", [1]]', 2),  # an escaped quote does not end the string
    (r'["\\\\", [1]]', 2),  # an escaped backslash does not escape the quote after it
    (r'"\\\\"[', 1),  # ... so the string ends there and the bracket counts
    (r'["\u005b"]', 1),  # a \u escape of a bracket is no bracket
    ('[' * MAX_JSON_DEPTH + ']' * MAX_JSON_DEPTH, MAX_JSON_DEPTH),  # at the limit
    ('[]' * 100, 1), ('[[]' * 10, 11),  # side by side; unbalanced
])
def test_the_depth_scan_counts_brackets_outside_strings_only(text, depth):
    assert json_depth(text) == depth


def json_depth(text: str) -> int:
    return _scan_json_depth(text, MAX_JSON_DEPTH)[0]


def test_the_depth_scan_stops_just_past_the_limit():
    deepest, steps = _scan_json_depth("[" * 10_000, MAX_JSON_DEPTH)
    assert (deepest, steps) == (MAX_JSON_DEPTH + 1, MAX_JSON_DEPTH + 1)
    assert json_depth('["x", ' * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1


#: Bodies built to make a string-matching regex backtrack: an open string of escaped quotes
#: (the old scan took ~20 s on 64 KiB of it), of escaped backslashes, of brackets.
HOSTILE = {"escaped quotes": ('"', '\\"'), "escaped backslashes": ('"', "\\\\"),
           "brackets in a string": ('"', "[{"), "quotes": ("", '""'),
           "lone backslashes": ("", "\\")}


def hostile(kind: str, size: int) -> str:
    head, unit = HOSTILE[kind]
    return (head + unit * size)[:size]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_the_depth_scan_does_work_linear_in_the_body_length(kind):
    # the work, counted in characters visited, not timed: at most one visit per character
    for size in (1024, 8 * 1024, 64 * 1024):
        text = hostile(kind, size)
        _, steps = _scan_json_depth(text, MAX_JSON_DEPTH)
        assert steps <= len(text) == size


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"error_rate": 1' + b"0" * 5000 + b"}", f"at most {MAX_NUMBER_CHARS}"),
    (b'{"error_rate": 0.' + b"1" * 200 + b"}", f"at most {MAX_NUMBER_CHARS}"),
    (b'{"error_rate": 1e400}', "beyond the range of a double"),
    (b'{"error_rate": -1e400}', "beyond the range of a double"),
    (b'{"error_rate": NaN}', "NaN is not JSON"),
    (b'{"error_rate": Infinity}', "Infinity is not JSON"),
    (b'{"a": 1, "a": 2}', "given twice"),
    (b'{"error_rate": 0.5, "\xff": 1}', "not UTF-8"),
    (b"\xef\xbb", "not UTF-8"),
    (b"{", "not valid JSON"),
])
def test_numbers_and_bytes_the_parser_will_not_read_are_invalid_bodies(raw, message):
    with pytest.raises(InvalidBody, match=message):
        parse_json_body(raw)


def test_a_small_number_in_a_long_spelling_within_the_bound_is_read():
    assert parse_json_body(b'{"x": 1e-400, "y": 0.000000000000000000000000000001}') == {
        "x": 0.0, "y": 1e-30}


# -- over HTTP --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served():
    app = create_app(Settings())
    server = LiveServer(app, name="bodies").start()
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        yield server, app, client
    server.stop()


def send(client: httpx.Client, method: str, path: str, raw: bytes | object,
         **headers: str) -> httpx.Response:
    if path == "/api/orders":
        path += "?service_time=0"
    return client.request(method, path, content=raw,
                          headers={"Content-Type": "application/json",
                                   "X-Request-ID": "body-1", **headers})


def _state_of(client: httpx.Client) -> tuple[object, object, int]:
    return (client.get("/admin/faults").json(), client.get("/admin/fanout").json(),
            client.get("/admin/orders").json()["applied"])


@pytest.mark.live
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_nesting_far_beyond_the_recursion_limit_is_a_422_on_every_route(served, method, path):
    _, app, client = served
    before = _state_of(client)
    with LogRecords() as logs:
        for shape in ("arrays", "objects", "in a field"):
            for depth in DEPTHS:
                raw = nested(shape, depth)
                if len(raw) > 64 * 1024:  # a 413 (tested below): 30000 levels as arrays only
                    continue
                r = send(client, method, path, raw)
                assert r.status_code == 422, (shape, depth, r.text[:300])
                body = r.json()
                assert body["request_id"] == "body-1"
                assert f"more than {MAX_JSON_DEPTH} deep" in body["error"], body["error"]
        settle(app)
    assert logs.errors() == [] and logs.tracebacks() == []
    assert _state_of(client) == before  # nothing applied


@pytest.mark.live
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_nesting_within_the_bound_is_read_and_judged_by_its_fields(served, method, path):
    _, _, client = served
    r = send(client, method, path, nested("arrays", MAX_JSON_DEPTH))
    # admin: a list is not an object of fields; an order's body is the client's own
    assert r.status_code == (200 if path == "/api/orders" else 422), r.text[:300]


@pytest.mark.live
@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(("raw", "message"), [
    (b'{"error_rate": 1' + b"0" * 5000 + b"}", f"at most {MAX_NUMBER_CHARS}"),
    (b'{"error_rate": 1e400}', "beyond the range of a double"),
    (b'{"hedge_delay": ' + b"9" * 4400 + b"}", f"at most {MAX_NUMBER_CHARS}"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"not json", "not valid JSON"),
])
def test_huge_numbers_and_bad_bytes_are_a_422_naming_the_problem(served, method, path, raw,
                                                                  message):
    _, _, client = served
    before = _state_of(client)
    with LogRecords() as logs:
        r = send(client, method, path, raw)
    assert r.status_code == 422, r.text[:300]
    assert message in r.json()["error"] and r.json()["request_id"] == "body-1"
    assert "set_int_max_str_digits" not in r.text  # the interpreter's hint is not the client's
    assert logs.tracebacks() == []
    assert _state_of(client) == before


@pytest.mark.live
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_body_of_escaped_quotes_at_the_size_limit_gets_its_422(served, method, path):
    # before the linear scan this body held the event loop ~20 s and the client (10 s) gave up
    _, _, client = served
    before = _state_of(client)
    raw = hostile("escaped quotes", 64 * 1024).encode()
    assert len(raw) == 64 * 1024  # the limit itself: read, not refused with a 413
    r = send(client, method, path, raw)
    assert r.status_code == 422, r.text[:300]
    assert "Unterminated string" in r.json()["error"] and r.json()["request_id"] == "body-1"
    assert _state_of(client) == before


@pytest.mark.live
@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_a_413_on_every_route(served, method, path, chunked):
    _, _, client = served
    before = _state_of(client)
    raw = b'{"note": "' + b"x" * (64 * 1024) + b'"}'
    r = send(client, method, path, iter([raw]) if chunked else raw)
    assert r.status_code == 413, r.text[:300]
    assert "larger than 65536 bytes" in r.json()["error"] and r.json()["request_id"] == "body-1"
    assert _state_of(client) == before
