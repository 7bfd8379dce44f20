"""Cluster: N LiveServers from ServerConfigs, instance k built with its own streams, started
and stopped together, leaving nothing behind."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest

from atlas_sim.config import Settings
from atlas_sim.policies import Backoff, ClientPolicy, RetryPolicy
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import Cluster, run_load, running_servers
from atlas_sim.workload import Distribution, Fault, Load
from tests.helpers import refuses_connection

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("atlas-server-")]


def test_a_cluster_starts_its_instances_from_their_configs_and_stops_them_all():
    before = threading.active_count()
    small = ServerConfig(workers=1, service_time=Distribution(mean=0.001))
    big = ServerConfig(workers=4, service_time=Distribution(mean=0.002))
    cluster = Cluster([small, big, small], settings=Settings(), seed=3, name="trio")
    with cluster:
        assert len(cluster) == 3 and cluster.running
        urls = cluster.urls
        assert len(set(urls)) == 3
        for k, url in enumerate(urls):
            assert httpx.get(url + "/health", trust_env=False).status_code == 200
            state = cluster.servers[k].app.state.atlas
            assert state.server is (small, big, small)[k]
            assert (state.instance, state.seed) == (k, 3)
        assert sorted(n for n in running_servers() if n.startswith("trio-")) == [
            "trio-0", "trio-1", "trio-2"]
        ports = [s.port for s in cluster.servers]
        threads = [s.thread for s in cluster.servers]
    assert not any(t.is_alive() for t in threads if t is not None)
    assert threading.active_count() == before and not server_threads()
    assert all(refuses_connection("127.0.0.1", port) for port in ports)
    assert not any(n.startswith("trio-") for n in running_servers())
    cluster.stop()  # twice is harmless
    with pytest.raises(RuntimeError, match="not running"):
        _ = cluster.urls


def test_one_config_times_n_gives_n_instances_each_with_its_own_streams():
    config = ServerConfig(workers=2, service_time=Distribution(mean=0.01))
    with Cluster(config, 3, seed=5, name="same") as cluster:
        draws = [s.app.state.atlas.work._draw() for s in cluster.servers]
    assert len(set(draws)) == 3  # instance streams differ
    again = Cluster(config, 1, seed=5, name="same")  # built, never started
    assert again.servers[0].app.state.atlas.work._draw() == draws[0]


def test_a_failed_start_stops_the_instances_already_started():
    cluster = Cluster(ServerConfig(), 2, name="half")
    cluster.servers[1].health_path = "/missing"
    cluster.servers[1].start_timeout = 0.5
    with pytest.raises(RuntimeError, match="did not answer 200"):
        cluster.start()
    assert not any(s.running for s in cluster.servers) and not server_threads()


def test_a_cluster_started_inside_an_event_loop_stops_cleanly():
    async def cell() -> list[int]:
        with Cluster(ServerConfig(), 2, name="in-loop") as cluster:
            return [httpx.get(u + "/health", trust_env=False).status_code for u in cluster.urls]

    assert asyncio.run(cell()) == [200, 200]
    assert not server_threads()


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((ServerConfig(), 0), {}, "instances must be an integer >= 1"),
    ((ServerConfig(), 17), {}, "instances must be an integer"),
    (([ServerConfig(), ServerConfig()], 3), {}, "instances must be None or 2"),
    (([ServerConfig(), 2],), {}, r"server\[1\] must be a ServerConfig"),
    ((2,), {}, "server must be a ServerConfig or a sequence"),
    ((ServerConfig(),), {"seed": -1}, "seed must be an integer >= 0"),
])
def test_bad_cluster_arguments_are_refused_naming_the_parameter(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Cluster(*args, **kwargs)


def test_a_fault_on_one_instance_of_three_fails_only_the_attempts_sent_there():
    """Fault(capacity=0, instances=(1,)) on a cluster of three: the attempts the instance
    column says went to instance 1 fail (503), all others succeed, and with two attempts
    (NextInstance: a retry goes to the next instance) every request succeeds."""
    config = ServerConfig(workers=2, service_time=Distribution(mean=0.001))
    down = Fault(start=0.0, capacity=0.0, instances=(1,), name="instance 1 down")
    with Cluster(config, 3, seed=2, name="one-down") as cluster:
        url, *others = cluster.urls
        result = run_load(url, instances=others, path="/api/work",
                          load=Load(rate=60.0, requests=45), faults=[down], seed=2,
                          client=ClientPolicy(timeout=5.0, retry=RetryPolicy(
                              max_attempts=2, backoff=Backoff(base=0.001, cap=0.001))),
                          progress=False, server_events=False)
    attempts = result.attempts
    assert attempts["instance"].dtype == np.int64
    expected = (attempts["request_id"] + attempts["attempt"] - 1) % 3  # NextInstance's rule
    assert (attempts["instance"] == expected).all()
    on_one = attempts["instance"] == 1
    assert on_one.sum() == 15 and (attempts.loc[on_one, "status"] == 503).all()
    assert (attempts.loc[~on_one, "status"] == 200).all()
    assert (result.requests["status"] == 200).all()
    assert len(attempts) == 45 + 15  # one retry per request that first met instance 1
