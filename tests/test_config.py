"""Settings from the environment: names, defaults, validation, and the policies they build."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atlas_sim import Backoff, Settings
from atlas_sim.policies import BreakerConfig, ConcurrencyLimiter

# The reference card's Configuration table (../shared/ATLAS.md): variable -> default.
CARD = {
    "HTTP_TIMEOUT": 30,
    "DATABASE_TIMEOUT": 10,
    "REDIS_TIMEOUT": 5,
    "RETRY_MAX_ATTEMPTS": 3,
    "RETRY_MULTIPLIER": 2,
    "RETRY_MIN_WAIT": 1,
    "RETRY_MAX_WAIT": 10,
    "RETRY_JITTER": True,
    "CIRCUIT_BREAKER_FAILURE_THRESHOLD": 5,
    "CIRCUIT_BREAKER_RECOVERY_TIMEOUT": 60,
    "LOAD_SHEDDING_MAX_CONCURRENT": 1000,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in [*CARD, "RETRY_BUDGET_MAX_TOKENS", "RETRY_BUDGET_TOKEN_RATIO",
                 "CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", "CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
                 "HTTP_HEADER_TIMEOUT", "HTTP_MAX_CONNECTIONS"]:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_reference_cards():
    settings = Settings()
    for variable, default in CARD.items():
        assert getattr(settings, variable.lower()) == default, variable


def test_environment_variables_override_the_defaults(monkeypatch):
    monkeypatch.setenv("HTTP_TIMEOUT", "2.5")
    monkeypatch.setenv("RETRY_JITTER", "false")
    monkeypatch.setenv("load_shedding_max_concurrent", "7")  # names are case-insensitive
    settings = Settings()
    assert settings.http_timeout == 2.5
    assert settings.retry_jitter is False
    assert settings.load_shedding_max_concurrent == 7


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HTTP_TIMEOUT", "-1", "greater than 0"),
        ("RETRY_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("RETRY_JITTER", "maybe", "valid boolean"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "many", "valid integer"),
        ("LOAD_SHEDDING_MAX_CONCURRENT", "0", "greater than or equal to 1"),
        ("HTTP_HEADER_TIMEOUT", "0", "greater than 0"),
        ("HTTP_MAX_CONNECTIONS", "0", "greater than or equal to 1"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as err:
        Settings()
    text = str(err.value)
    assert variable in text and message in text
    assert isinstance(err.value, ValueError)


def test_max_wait_below_min_wait_is_refused(monkeypatch):
    monkeypatch.setenv("RETRY_MIN_WAIT", "5")
    monkeypatch.setenv("RETRY_MAX_WAIT", "2")
    with pytest.raises(ValueError, match=r"RETRY_MAX_WAIT must be >= RETRY_MIN_WAIT \(5\), got 2"):
        Settings()


def test_settings_are_read_only():
    with pytest.raises(ValidationError):
        Settings().http_timeout = 1  # type: ignore[misc]


def test_retry_variables_map_onto_backoff():
    settings = Settings(retry_min_wait=0.5, retry_multiplier=3, retry_max_wait=20,
                        retry_jitter=False)
    assert settings.backoff() == Backoff(base=0.5, multiplier=3, cap=20, jitter="none")
    assert Settings().backoff().jitter == "full"
    policy = Settings().retry_policy()
    assert policy.max_attempts == 3 and policy.backoff == Settings().backoff()
    # With the environment's defaults the un-jittered waits are 1 s, 2 s, 4 s, ...; the card's
    # example (100, 200, 400 ms) is Backoff()'s default base instead.
    assert [Settings().backoff().ceiling(n) for n in range(3)] == [1, 2, 4]
    assert [Backoff().ceiling(n) for n in range(3)] == pytest.approx([0.1, 0.2, 0.4])


def test_factories_build_the_other_policies():
    settings = Settings(circuit_breaker_failure_threshold=2, circuit_breaker_recovery_timeout=7,
                        load_shedding_max_concurrent=3, retry_budget_max_tokens=4)
    assert settings.breaker_config() == BreakerConfig(failure_threshold=2, recovery_timeout=7)
    limiter = settings.limiter()
    assert isinstance(limiter, ConcurrencyLimiter) and limiter.max_concurrent == 3
    assert settings.budget_config().build().tokens == 4


def test_environment_lists_every_variable_under_its_own_name():
    env = Settings().environment()
    assert {k: env[k] for k in CARD} == CARD
    assert env["RETRY_BUDGET_TOKEN_RATIO"] == 0.1


def test_the_server_config_is_the_live_services_defaults_from_these_settings():
    from atlas_sim.policies import FixedLimit, PoolConfig
    from atlas_sim.server_config import Dependency, ServerConfig
    from atlas_sim.workload import Distribution

    settings = Settings(http_timeout=7, load_shedding_max_concurrent=9, database_timeout=0.5)
    config = settings.server_config()
    assert config == ServerConfig(
        workers=2, service_time=Distribution(mean=0.02), timeout=7.0,
        admission=FixedLimit(max_concurrent=9), retry_after=1,
        dependency=Dependency(latency=Distribution(mean=0.005),
                              client=settings.dependency_client()),
        pool=PoolConfig(timeout=0.5))
    assert config.dependency.client.timeout == 0.5
