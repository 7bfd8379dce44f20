"""ServerConfig and Dependency: the one description of a server instance, validated on creation,
with each renamed field refused by a message that says what to write now."""

from __future__ import annotations

import dataclasses

import pytest

from atlas_sim.policies import ClientPolicy, Fifo, FixedLimit, PoolConfig
from atlas_sim.server_config import Dependency, ServerConfig
from atlas_sim.workload import Distribution


def test_the_defaults_are_one_worker_fifo_and_no_limits():
    config = ServerConfig()
    assert (config.workers, config.admission, config.queue, config.timeout,
            config.drop_expired, config.retry_after, config.dependency) == (
        1, None, Fifo(), None, False, 1, None)
    assert config.service_time == Distribution(mean=0.05)
    assert config.capacity == pytest.approx(20.0)
    assert ServerConfig(workers=4, service_time=Distribution(mean=0.0)).capacity == float("inf")


def test_a_config_is_keyword_only_frozen_and_equal_by_value():
    with pytest.raises(TypeError):
        ServerConfig(2)  # type: ignore[misc]
    config = ServerConfig(workers=2, admission=FixedLimit(max_concurrent=10), timeout=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 3  # type: ignore[misc]
    assert config == ServerConfig(workers=2, admission=FixedLimit(max_concurrent=10),
                                  timeout=1.0)
    assert dataclasses.replace(config, workers=3).workers == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"workers": 0}, "workers must be an integer >= 1 and <= 10000"),
     ({"workers": 10_001}, "workers must be an integer >= 1 and <= 10000"),
     ({"workers": 1.5}, "workers must be an integer"),
     ({"service_time": 0.05}, "service_time must be a Distribution"),
     ({"admission": 100}, r"admission must be a config with build\(\), such as "
                          r"FixedLimit\(max_concurrent=100\)"),
     ({"queue": "fifo"}, r"queue must be a config with build\(\), such as Fifo\(\)"),
     ({"timeout": 0}, "timeout must be a number > 0"),
     ({"timeout": -1.0}, "timeout must be a number > 0"),
     ({"drop_expired": 1}, "drop_expired must be True or False"),
     ({"retry_after": -1}, "retry_after must be an integer >= 0 and <= 3600"),
     ({"retry_after": 0.5}, "retry_after must be an integer"),
     ({"dependency": 0.01}, "dependency must be a Dependency or None")],
)
def test_a_bad_server_config_is_refused_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**kwargs)


@pytest.mark.parametrize(
    ("old", "new"),
    [("servers", r"write workers=\.\.\. \(the c of M/M/c\)"),
     ("max_concurrent", r"write admission=FixedLimit\(max_concurrent=\.\.\.\)"),
     ("server_timeout", r"write timeout=\.\.\.")],
)
def test_a_renamed_field_is_refused_with_the_new_spelling(old, new):
    with pytest.raises(ValueError, match=rf"ServerConfig\({old}=\.\.\.\) is no longer a "
                                         rf"parameter: {new}"):
        ServerConfig(**{old: 2})
    with pytest.raises(ValueError, match="is no longer a parameter"):
        dataclasses.replace(ServerConfig(), **{old: 2})


def test_an_unknown_field_is_a_type_error_as_python_says():
    with pytest.raises(TypeError, match="unexpected keyword argument 'wokers'"):
        ServerConfig(wokers=2)  # type: ignore[call-arg]


def test_a_dependency_is_validated_naming_the_field():
    dep = Dependency()
    assert dep.latency == Distribution(mean=0.01) and dep.client == ClientPolicy(timeout=10.0)
    assert (dep.error_rate, dep.share) == (0.0, 1.0)
    assert ServerConfig(dependency=dep).dependency is dep
    for kwargs, message in (({"latency": 0.005}, "latency must be a Distribution"),
                            ({"share": 1.5}, "share must be a number >= 0 and <= 1"),
                            ({"error_rate": -0.1}, "error_rate must be a number >= 0"),
                            ({"client": None}, "client must be a ClientPolicy")):
        with pytest.raises(ValueError, match=message):
            Dependency(**kwargs)


@pytest.mark.parametrize("old", ["latency_mean", "latency_dist", "latency_shape"])
def test_the_dependency_refuses_its_old_latency_fields_naming_the_new_one(old):
    with pytest.raises(ValueError, match=rf"Dependency\({old}=\.\.\.\) is no longer a parameter: "
                                         r"write latency=Distribution"):
        Dependency(**{old: 0.01})


def test_the_pool_is_a_pool_config_or_none():
    assert ServerConfig().pool is None
    pool = PoolConfig(size=2, max_waiting=5, timeout=1.0)
    assert ServerConfig(pool=pool).pool is pool
    with pytest.raises(ValueError, match=r"pool must be a PoolConfig\(size=\.\.\., "
                                         r"max_waiting=\.\.\., timeout=\.\.\.\) or None, got 2"):
        ServerConfig(pool=2)  # type: ignore[arg-type]
