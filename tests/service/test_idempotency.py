"""Idempotency keys: the header's syntax, the store's rules (replay, 409, 422, expiry), and a
retried live write applied once with keys and once per attempt without."""

from __future__ import annotations

import time

import httpx
import pytest

from atlas_sim import ClientPolicy, Load, RetryPolicy, Settings
from atlas_sim.clocks import ManualClock
from atlas_sim.policies import Backoff
from atlas_sim.service import run_load
from atlas_sim.service.idempotency import IdempotencyStore, Stored, parse_idempotency_key
from atlas_sim.workload import Distribution
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
    store = IdempotencyStore(ttl=10.0, max_keys=2, clock=clock)
    assert store.begin("k", "f") == "new"
    assert store.begin("k", "f") == "in progress"  # 409
    assert store.begin("k", "other") == "mismatch"  # 422
    done = Stored("f", 200, b'{"order": 1}', "application/json")
    store.complete("k", done)
    assert store.begin("k", "f") == done  # replayed, not applied again
    store.begin("failed", "f")
    store.complete("failed", Stored("f", 503, b"", "application/json"))
    assert store.begin("failed", "f") == "new"  # a failed write may be tried again
    store.abandon("failed")
    assert store.begin("failed", "f") == "new"
    store.begin("third", "f")  # max_keys=2: the oldest key is forgotten
    assert len(store) == 2 and store.begin("k", "f") == "new"
    clock.advance(10.0)
    assert len(store) == 0  # expired


@pytest.mark.live
@pytest.mark.parametrize("keys", [False, True])
def test_a_retried_write_is_applied_once_with_keys_and_per_attempt_without(keys):
    # Each order takes 0.1 s of work; the client gives up after 0.05 s and retries. Without
    # keys every attempt places an order; with them the first attempt's order is the only
    # one, and the retries get 409 (still in progress) and then its answer, replayed.
    server, _ = start_server(Settings(), servers=8,
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
    server, _ = start_server(Settings(), servers=2,
                             service_time=Distribution(mean=0.2, kind="constant"))
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=5.0) as client:
            bad = client.post("/api/orders", headers={"Idempotency-Key": "unquoted"})
            assert bad.status_code == 400 and "quoted string" in bad.json()["error"]
            assert bad.json()["request_id"]
            with httpx.Client(base_url=server.url, trust_env=False, timeout=0.05) as hasty, \
                    pytest.raises(httpx.TimeoutException):
                hasty.post("/api/orders", headers={"Idempotency-Key": '"k1"'})
            assert client.post("/api/orders", headers={"Idempotency-Key": '"k1"'},
                               ).status_code == 409  # the first is still at work
            other = client.post("/api/orders", content=b"different",
                                headers={"Idempotency-Key": '"k1"'})
            assert other.status_code == 422
            time.sleep(0.3)
            first = client.post("/api/orders", headers={"Idempotency-Key": '"k1"'})
            again = client.post("/api/orders", headers={"Idempotency-Key": '"k1"'})
            assert first.status_code == again.status_code == 200
            assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
            assert client.get("/admin/orders").json() == {"applied": 1, "keys": 1}
    finally:
        server.stop()
