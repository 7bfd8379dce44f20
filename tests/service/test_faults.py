"""``/admin/faults`` speaks ``atlas_sim.faults.FAULT_TABLE``'s wire columns, and ``run_load``
plays a ``Fault(instances=...)`` on the instances it names only."""

from __future__ import annotations

import itertools

import httpx
import pytest

from atlas_sim.config import Settings
from atlas_sim.faults import FAULT_TABLE, WIRE_NAMES, Fault
from atlas_sim.policies import Backoff, ClientPolicy, RetryPolicy
from atlas_sim.service import LiveServer, create_app, run_load
from atlas_sim.service.dependency import DEPENDENCY_FIELDS, Faults
from atlas_sim.service.faults import (
    FAULT_FIELDS,
    SERVER_PLACES,
    apply_faults,
    clear_faults,
    faults_view,
)
from atlas_sim.workload import Load

_names = itertools.count()


def test_the_wire_is_the_tables_wire_columns_and_backwards_compatible():
    # the names /admin/faults has always spoken (issue 21 keeps them)
    assert sorted(WIRE_NAMES) == sorted(["error_rate", "added_latency", "outage", "slow_rate",
                                         "slow_latency", "capacity", "stall", "bad_input_rate"])
    wire = {f.wire: f for f in FAULT_TABLE if f.wire is not None}
    assert list(FAULT_FIELDS) == list(wire)
    assert FAULT_FIELDS["capacity"] == ("number", 0.0, 1000.0)  # a speed factor on the wire
    assert FAULT_FIELDS["stall"] == FAULT_FIELDS["outage"] == ("boolean", None, None)
    assert FAULT_FIELDS["error_rate"] == ("number", 0.0, 1.0)
    assert FAULT_FIELDS["slow_latency"] == ("number", 0.0, 3600.0)
    # every wire field lives in exactly one place: the dependency's Faults or the server
    assert sorted([*DEPENDENCY_FIELDS, *SERVER_PLACES]) == sorted(WIRE_NAMES)
    assert [f.name for f in Faults.__dataclass_fields__.values()] == list(DEPENDENCY_FIELDS)
    assert {w: wire[w].wire_off for w in DEPENDENCY_FIELDS} == vars(Faults())


def test_view_set_and_clear_cover_every_wire_field():
    state = create_app(Settings()).state.atlas
    off = {w: f.wire_off for w, f in ((f.wire, f) for f in FAULT_TABLE) if w is not None}
    assert faults_view(state) == off and list(faults_view(state)) == list(WIRE_NAMES)
    on = {"error_rate": 0.5, "added_latency": 0.1, "outage": True, "slow_rate": 0.2,
          "slow_latency": 0.3, "capacity": 0.5, "stall": True, "bad_input_rate": 0.1}
    assert set(on) == set(WIRE_NAMES)
    assert apply_faults(state, dict(on)) == on == faults_view(state)
    assert apply_faults(state, {"capacity": 0.25}) == {**on, "capacity": 0.25}  # others kept
    clear_faults(state)
    assert faults_view(state) == off


@pytest.mark.live
def test_a_fault_on_one_instance_of_three_touches_that_instance_only():
    servers = [LiveServer(create_app(Settings()), name=f"test-faults-{next(_names)}")
               for _ in range(3)]
    try:
        for server in servers:
            server.start()
        url, *others = (s.url for s in servers)
        retry = RetryPolicy(max_attempts=2, backoff=Backoff(base=0.001, cap=0.001))
        fault = Fault(start=0.0, capacity=0.0, instances=(1,), name="instance 1 down")
        result = run_load(url, instances=others, load=Load(rate=40.0, requests=30),
                          client=ClientPolicy(retry=retry), faults=[fault], seed=3,
                          progress=False)
        answered = [_statuses(s) for s in servers]
        # instance 1 (the first of ``instances``) answered 503 to every attempt it was sent
        # (each request's first attempt goes to request i mod 3), and nothing else; the other
        # two never saw the fault, and each retry went to the next instance and succeeded
        assert answered[1] == {"503": 10}
        assert answered[0] == {"200": 10}
        assert answered[2] == {"200": 20}
        assert (result.requests["status"] == 200).all()
        first = result.attempts[result.attempts["attempt"] == 1]
        assert sorted(first.loc[first["status"] == 503, "request_id"]) == list(range(1, 30, 3))
        reasons = result.events.loc[result.events["kind"] == "fault", "reason"].tolist()
        assert "server down on instance 1" in reasons
        for server in servers:  # the window closed when the run ended, on every instance
            view = httpx.get(server.url + "/admin/faults", trust_env=False).json()
            assert view["capacity"] == 1.0
    finally:
        for server in servers:
            server.stop()


def _statuses(server: LiveServer) -> dict[str, int]:
    """How many ``GET /api/work`` answers ``server`` gave, by status (its own metrics)."""
    registry = server.app.state.atlas.metrics.registry
    counts = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "atlas_api_http_requests_total"
                    and labels.get("endpoint") == "/api/work" and sample.value):
                counts[labels["status"]] = int(sample.value)
    return counts


def test_run_load_refuses_a_fault_on_an_instance_it_does_not_have():
    with pytest.raises(ValueError, match=r"faults\[0\].instances must name instances of this "
                                         r"run, 0 to 1"):
        run_load("http://127.0.0.1:9", instances=["http://127.0.0.1:10"],
                 load=Load(rate=10, requests=2), progress=False,
                 faults=[Fault(start=0.0, capacity=0.5, instances=(2,))])
