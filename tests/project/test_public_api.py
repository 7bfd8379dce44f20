"""The public API is what ``__all__`` says, and every listed name exists (httpx's habit)."""

from __future__ import annotations

import importlib

import pytest

import atlas_sim

PACKAGES = ["atlas_sim", "atlas_sim.policies", "atlas_sim.analysis", "atlas_sim.sim",
            "atlas_sim.service", "atlas_sim.widgets", "atlas_sim.workload", "atlas_sim.results"]

TOP_LEVEL = {
    "JITTER_STRATEGIES", "Backoff", "BreakerConfig", "BreakerState", "BreakerTransition",
    "BudgetConfig", "CacheConfig", "CircuitBreaker", "ClientPolicy", "ConcurrencyLimiter",
    "Dependency", "EventLogConfig",
    "Fault", "FixedLimit", "HedgePolicy", "Load", "RetryBudget", "RetryPolicy",
    "RunResult", "ServerConfig", "Settings", "Status", "StoreConfig",
    "TimelineConfig",
}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_exists(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"


def test_top_level_api_is_exactly_the_documented_one():
    assert set(atlas_sim.__all__) == TOP_LEVEL


def test_policy_modules_export_everything_they_define_publicly():
    policies = importlib.import_module("atlas_sim.policies")
    for sub in ["backoff", "retry", "breaker", "limiter", "status", "admission", "queues",
                "routing", "pool"]:
        module = importlib.import_module(f"atlas_sim.policies.{sub}")
        assert set(module.__all__) <= set(policies.__all__), sub


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        atlas_sim.nope  # noqa: B018
