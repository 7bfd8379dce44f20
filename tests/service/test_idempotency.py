"""Idempotency keys: the header's syntax, the store's rules (replay, 409, 422, expiry), and a
retried live write applied once with keys and once per attempt without."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from atlas_sim import ClientPolicy, Load, RetryPolicy, Settings
from atlas_sim.clocks import ManualClock
from atlas_sim.policies import Backoff
from atlas_sim.service import run_load
from atlas_sim.service.idempotency import (
    Begun,
    IdempotencyStore,
    MemoryIdempotencyStore,
    Stored,
    StoreFull,
    parse_idempotency_key,
    parse_idempotency_keys,
)
from atlas_sim.workload import Distribution
from tests.service.raw_http import wait_for
from tests.service.support import start_server


@pytest.mark.parametrize(("header", "key"), [
    ('"abc-123"', "abc-123"), (' "a b" ', "a b"), (r'"say \"hi\""', 'say "hi"'),
    (r'"back\\slash"', "back\\slash")])
def test_a_key_is_a_structured_field_string(header, key):
    assert parse_idempotency_key(header) == key


@pytest.mark.parametrize(("header", "message"), [
    ("abc", "must be a quoted string"), ('""', "1 to 255 characters"),
    ('"' + "x" * 256 + '"', "1 to 255 characters"), ('"tab\there"', "a character"),
    (r'"bad\escape"', "bad escape")])
def test_a_bad_key_is_refused_saying_why(header, message):
    with pytest.raises(ValueError, match=message):
        parse_idempotency_key(header)


def test_the_store_replays_completed_writes_and_refuses_the_rest():
    clock = ManualClock()
    store = MemoryIdempotencyStore(retention=10.0, capacity=3, clock=clock)
    k = new(store.begin_now("k", "f"))
    assert store.begin_now("k", "f") == "in progress"  # 409
    assert store.begin_now("k", "other") == "mismatch"  # 422
    done = Stored("f", 200, b'{"order": 1}', "application/json")
    store.complete_now(k, done)
    assert store.begin_now("k", "f") == done  # replayed, not applied again
    failed = new(store.begin_now("failed", "f"))
    store.complete_now(failed, Stored("f", 503, b"", "application/json"))
    failed = new(store.begin_now("failed", "f"))  # a failed write may be tried again
    store.abandon_now(failed)
    new(store.begin_now("failed", "f"))
    assert len(store) == 2
    clock.advance(10.0)
    assert len(store) == 1  # "k" expired; "failed" is still in flight


def new(verdict: object) -> Begun:
    """``verdict``, which must say the request is new (the store now holds its key)."""
    assert isinstance(verdict, Begun), verdict
    return verdict


@pytest.mark.live
@pytest.mark.parametrize("keys", [False, True])
def test_a_retried_write_is_applied_once_with_keys_and_per_attempt_without(keys):
    # Each order takes 0.1 s of work; the client gives up after 0.05 s and retries. Without
    # keys every attempt places an order; with them the first attempt's order is the only
    # one, and the retries get 409 (still in progress) and then its answer, replayed.
    server, _ = start_server(Settings(), workers=8,
                             service_time=Distribution(mean=0.1, kind="constant"))
    try:
        policy = ClientPolicy(timeout=0.05, retry=RetryPolicy(
            max_attempts=6, retry_on=frozenset({409, 599}),
            backoff=Backoff(base=0.05, cap=0.05, jitter="none")))
        result = run_load(server.url, path="/api/orders", method="POST",
                          load=Load(rate=10.0, requests=8), client=policy,
                          idempotency_keys=keys, progress=False, server_events=False)
        applied = _settled_orders(server.url)
    finally:
        server.stop()
    attempts = len(result.attempts)
    if keys:
        assert applied == 8 and result.requests["ok"].all()
        assert (result.attempts["status"] == 409).any()
    else:
        assert applied == attempts and attempts == 8 * 6  # every attempt was an order
        assert not result.requests["ok"].any()


def _settled_orders(url: str) -> int:
    """Orders applied once the work of abandoned attempts has finished (bounded: 5 s)."""
    last, deadline = -1, time.monotonic() + 5.0
    while time.monotonic() < deadline:
        applied = httpx.get(url + "/admin/orders", trust_env=False).json()["applied"]
        if applied == last:
            return applied
        last = applied
        time.sleep(0.3)
    return last


@pytest.mark.live
def test_the_service_answers_400_409_422_and_replays_over_http():
    server, _ = start_server(Settings(), workers=2,
                             service_time=Distribution(mean=0.2, kind="constant"))
    store = server.app.state.atlas.store.keys  # the memory store's keys, read without a loop
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=5.0) as client:
            bad = client.post("/api/orders", headers={"Idempotency-Key": "unquoted"})
            assert bad.status_code == 400 and "quoted string" in bad.json()["error"]
            assert bad.json()["request_id"]
            # the first request is held at work by a stall until the test lifts it (no timing):
            # its client gives up, the server keeps working on it
            assert client.put("/admin/faults", json={"stall": True}).status_code == 200
            with httpx.Client(base_url=server.url, trust_env=False, timeout=0.05) as hasty, \
                    pytest.raises(httpx.TimeoutException):
                hasty.post("/api/orders", headers={"Idempotency-Key": '"k1"'})
            wait_for(lambda: len(store) == 1, what="the first order in flight")
            assert client.post("/api/orders", headers={"Idempotency-Key": '"k1"'},
                               ).status_code == 409  # the first is still at work
            other = client.post("/api/orders", json={"different": True},
                                headers={"Idempotency-Key": '"k1"'})
            assert other.status_code == 422
            assert client.put("/admin/faults", json={"stall": False}).status_code == 200
            wait_for(lambda: client.get("/admin/orders").json()["applied"] == 1,
                     what="the first order applied")
            first = client.post("/api/orders", headers={"Idempotency-Key": '"k1"'})
            again = client.post("/api/orders", headers={"Idempotency-Key": '"k1"'})
            assert first.status_code == again.status_code == 200
            assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
            assert client.get("/admin/orders").json() == {"applied": 1, "keys": 1}
    finally:
        server.stop()


# -- issue 20, item 13: a key lives as long as its request and its promised retention --------

def test_a_key_in_flight_is_never_forgotten_however_long_its_request_takes():
    clock = ManualClock()
    store = MemoryIdempotencyStore(retention=1.0, capacity=10, clock=clock)
    new(store.begin_now("slow", "f"))
    clock.advance(100.0)  # a hundred retentions later, still at work
    for i in range(30):  # and many other keys came and went meanwhile
        other = new(store.begin_now(f"other-{i}", "f"))
        store.complete_now(other, Stored("f", 200, b"{}", "application/json"))
        clock.advance(0.5)
    assert store.begin_now("slow", "f") == "in progress"  # a retry gets 409, not a new order


def test_an_answer_is_kept_for_its_retention_counted_from_the_answer():
    clock = ManualClock()
    store = MemoryIdempotencyStore(retention=10.0, capacity=10, clock=clock)
    k = new(store.begin_now("k", "f"))
    clock.advance(9.0)  # the request took 9 s
    done = Stored("f", 200, b"{}", "application/json")
    store.complete_now(k, done)
    clock.advance(9.999)
    assert store.begin_now("k", "f") == done  # 19 s after it was first seen, still promised
    clock.advance(0.001)
    new(store.begin_now("k", "f"))  # retention over


def test_a_full_store_refuses_new_keys_and_forgets_no_promised_one():
    clock = ManualClock()
    store = MemoryIdempotencyStore(retention=10.0, capacity=2, clock=clock)
    a = new(store.begin_now("a", "f"))
    new(store.begin_now("b", "f"))
    assert store.begin_now("c", "f") == StoreFull(capacity=2, retry_after=None)  # both at work
    assert store.begin_now("a", "f") == store.begin_now("b", "f") == "in progress"
    done = Stored("f", 200, b"{}", "application/json")
    store.complete_now(a, done)
    clock.advance(4.0)
    assert store.begin_now("c", "f") == StoreFull(capacity=2, retry_after=6.0)  # "a" is kept
    assert store.begin_now("a", "f") == done and store.begin_now("b", "f") == "in progress"
    clock.advance(6.0)  # "a"'s retention is over: room for one
    new(store.begin_now("c", "f"))
    assert len(store) == 2


def test_the_store_is_a_small_async_protocol_a_database_can_implement():
    store = MemoryIdempotencyStore(retention=5.0, capacity=4)
    assert isinstance(store, IdempotencyStore)
    assert (store.capacity, store.retention) == (4, 5.0)

    async def use() -> tuple[object, ...]:
        first = new(await store.begin("k", "f"))
        await store.complete(first, Stored("f", 201, b"{}", "application/json"))
        kept = await store.count()
        await store.abandon(new(await store.begin("gone", "f")))
        after_abandon = await store.count()
        await store.clear()
        return first.key, kept, after_abandon, await store.count()

    assert asyncio.run(use()) == ("k", 1, 1, 0)


@pytest.mark.parametrize("ending", ["complete", "abandon"])
def test_a_request_begun_before_a_reset_cannot_end_the_new_request_with_its_key(ending):
    # /admin/reset clears the store while a request is at work; a new request then begins the
    # same key. When the old one ends, the new one must still hold its key: a repeat gets 409,
    # not the old answer (complete) and not a second application (abandon).
    store = MemoryIdempotencyStore(retention=10.0, capacity=10, clock=ManualClock())
    old = new(store.begin_now("k", "f"))
    asyncio.run(store.clear())
    current = new(store.begin_now("k", "f"))
    if ending == "complete":
        store.complete_now(old, Stored("f", 200, b'{"order": 1}', "application/json"))
    else:
        store.abandon_now(old)
    assert store.begin_now("k", "f") == "in progress" and len(store) == 1
    done = Stored("f", 200, b'{"order": 2}', "application/json")
    store.complete_now(current, done)
    assert store.begin_now("k", "f") == done  # the new request's own answer is kept


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"retention": 0}, "retention"), ({"capacity": 0}, "capacity"),
    ({"capacity": 2.5}, "capacity")])
def test_the_store_refuses_bad_limits_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MemoryIdempotencyStore(**kwargs)


@pytest.mark.parametrize(("headers", "message"), [
    ([], None), (['"a"'], None), (['"a"', '"a"'], "given 2 times"),
    (['"a", "b"'], "not a list"), (['"a" "b"'], "not a list")])
def test_the_header_is_one_item_never_two_fields_or_a_list(headers, message):
    if message is None:
        assert parse_idempotency_keys(headers) == (headers[0].strip('"') if headers else None)
    else:
        with pytest.raises(ValueError, match=message):
            parse_idempotency_keys(headers)


@pytest.fixture(scope="module")
def orders_server():
    server, _ = start_server(Settings(), workers=4)
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as client:
        yield server, client
    server.stop()


@pytest.fixture
def orders(orders_server):
    server, client = orders_server
    assert client.post("/admin/reset").status_code == 200
    yield server, client
    server.app.state.atlas.idempotency = MemoryIdempotencyStore()
    client.post("/admin/reset")


def _applied(client: httpx.Client) -> int:
    return client.get("/admin/orders").json()["applied"]


@pytest.mark.live
def test_a_retry_after_the_retention_of_a_request_still_at_work_is_not_applied_twice(orders):
    server, client = orders
    store = server.app.state.atlas.idempotency = MemoryIdempotencyStore(retention=0.05)
    key = {"Idempotency-Key": '"long-one"'}
    assert client.put("/admin/faults", json={"stall": True}).status_code == 200
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/api/orders?service_time=0", headers=key)
        wait_for(lambda: len(store) == 1, what="the first order in flight")
        time.sleep(0.1)  # twice the retention, while the first is held by the stall
        retry = client.post("/api/orders?service_time=0", headers=key)
        assert retry.status_code == 409, retry.text
        assert client.put("/admin/faults", json={"stall": False}).status_code == 200
        assert first.result().status_code == 200
    again = client.post("/api/orders?service_time=0", headers=key)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert _applied(client) == 1


@pytest.mark.live
def test_a_full_store_answers_503_with_retry_after_and_its_capacity(orders):
    server, client = orders
    clock = ManualClock()  # the store's clock, moved by the test alone
    server.app.state.atlas.idempotency = MemoryIdempotencyStore(retention=30.0, capacity=2,
                                                                clock=clock)
    for key in ('"one"', '"two"'):
        assert client.post("/api/orders?service_time=0",
                           headers={"Idempotency-Key": key}).status_code == 200
    clock.advance(12.5)  # "one" expires 17.5 s from now: wait 18 whole seconds
    full = client.post("/api/orders?service_time=0", headers={"Idempotency-Key": '"three"',
                                                               "X-Request-ID": "full-1"})
    assert full.status_code == 503, full.text
    assert full.headers["Retry-After"] == "18" and full.json()["retry_after"] == 18
    body = full.json()
    assert body["request_id"] == "full-1" and body["capacity"] == 2
    assert "full" in body["error"] and "2 keys" in body["error"]
    # the promised keys still replay, and nothing more was applied
    replay = client.post("/api/orders?service_time=0", headers={"Idempotency-Key": '"one"'})
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert _applied(client) == 2
    # a write without a key is not the store's business
    assert client.post("/api/orders?service_time=0").status_code == 200


@pytest.mark.live
def test_the_query_string_is_part_of_the_request_a_key_names(orders):
    _, client = orders
    key = {"Idempotency-Key": '"q"'}
    assert client.post("/api/orders?service_time=0", headers=key).status_code == 200
    other = client.post("/api/orders?service_time=0.001", headers=key)
    assert other.status_code == 422 and "different request" in other.json()["error"]
    assert _applied(client) == 1


@pytest.mark.live
@pytest.mark.parametrize("values", [['"a"', '"b"'], ['"a"', '"a"'], ['"a", "b"']])
def test_two_keys_or_a_list_of_keys_is_a_400_and_applies_nothing(orders, values):
    _, client = orders
    headers = [("Idempotency-Key", v) for v in values] + [("X-Request-ID", "two-keys")]
    r = client.post("/api/orders?service_time=0", headers=headers)
    assert r.status_code == 400, r.text
    assert "Idempotency-Key" in r.json()["error"] and r.json()["request_id"] == "two-keys"
    assert _applied(client) == 0


@pytest.mark.live
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("origin", ["http://evil.example", "null", None])
def test_a_cross_site_simple_post_places_no_order(orders, content_type, origin):
    _, client = orders
    headers = {"Content-Type": content_type, "Idempotency-Key": '"csrf"'}
    if origin is not None:
        headers["Origin"] = origin
    r = client.post("/api/orders?service_time=0", content=b'{"item": 1}', headers=headers)
    assert r.status_code == (403 if origin is not None else 415), r.text
    assert r.json()["request_id"]
    assert _applied(client) == 0


@pytest.mark.live
def test_orders_from_the_service_itself_and_from_clients_without_origin_still_work(orders):
    server, client = orders
    assert client.post("/api/orders?service_time=0").status_code == 200  # the load generator
    assert client.post("/api/orders?service_time=0", json={"item": 1}).status_code == 200
    same_origin = client.post("/api/orders?service_time=0", json={"item": 2},
                              headers={"Origin": server.url})
    assert same_origin.status_code == 200, same_origin.text
    assert client.post("/api/orders?service_time=0", json={"item": 3},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    assert _applied(client) == 3
