"""Atlas's settings, read from environment variables, and the policies built from them.

The names, defaults and units are the reference card's (``docs/reference-card.md``, "Settings";
``tests/project/test_reference_card.py`` checks the card against this module)::

    HTTP_TIMEOUT=30  DATABASE_TIMEOUT=10  REDIS_TIMEOUT=5
    RETRY_MAX_ATTEMPTS=3  RETRY_MULTIPLIER=2  RETRY_MIN_WAIT=1  RETRY_MAX_WAIT=10  RETRY_JITTER=true
    CIRCUIT_BREAKER_FAILURE_THRESHOLD=5  CIRCUIT_BREAKER_RECOVERY_TIMEOUT=60
    LOAD_SHEDDING_MAX_CONCURRENT=1000

plus six the workbook adds, with the same style of name, for knobs the card leaves implicit:
``CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS=1``, ``CIRCUIT_BREAKER_SUCCESS_THRESHOLD=1``,
``RETRY_BUDGET_MAX_TOKENS=10``, ``RETRY_BUDGET_TOKEN_RATIO=0.1``, and the live server's guard
against idle and slow clients (``LiveServer``): ``HTTP_HEADER_TIMEOUT=5`` and
``HTTP_MAX_CONNECTIONS=1024``.

How the retry variables map onto ``Backoff``
---------------------------------------------
``Backoff(base=RETRY_MIN_WAIT, multiplier=RETRY_MULTIPLIER, cap=RETRY_MAX_WAIT,
jitter="full" if RETRY_JITTER else "none")``: the n-th retry waits up to
``min(RETRY_MAX_WAIT, RETRY_MIN_WAIT * RETRY_MULTIPLIER**n)``, so with the defaults 1 s, 2 s,
4 s, 8 s, 10 s, ... (jittered). ``RETRY_JITTER=true`` picks full jitter, the AWS post's
recommendation.

Three things worth knowing:

* The card's own retry example (100 ms, 200 ms, 400 ms) uses a base of 0.1 s, not the 1 s of
  ``RETRY_MIN_WAIT``; ``Backoff()``'s defaults are that example. The workbook teaches both: the
  short base for interactive experiments, the environment's for the service's own settings.
* The same three names in tenacity's ``wait_exponential(multiplier, min, max)`` mean something
  else: there ``multiplier`` scales ``2**n`` and ``min`` is only a floor, so the first wait would
  be 2 s, not 1 s.
* ``RETRY_MAX_ATTEMPTS`` counts the first call, so the default 3 allows two retries (waits of
  1 s and 2 s); the card's example of three waits corresponds to four attempts.
"""

from __future__ import annotations

import pandas as pd
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    ConcurrencyLimiter,
    FixedLimit,
    PoolConfig,
    RetryPolicy,
)
from .policies.pool import MAX_TIMEOUT as POOL_MAX_TIMEOUT
from .server_config import Dependency, ServerConfig
from .workload import Distribution

__all__ = ["Settings", "unit_of"]


class Settings(BaseSettings):
    """Atlas's configuration, from the environment (or keyword arguments, for experiments).

    A bad value fails at once with a ``pydantic.ValidationError`` (a ``ValueError``) that names
    the environment variable, e.g. ``HTTP_TIMEOUT  Input should be greater than 0``.
    Read-only once made: to change a value, make a new one, e.g. ``Settings(http_timeout=5)``.
    """

    model_config = SettingsConfigDict(populate_by_name=True, frozen=True, extra="forbid")

    http_timeout: float = Field(
        30.0, gt=0, validation_alias="HTTP_TIMEOUT", json_schema_extra={"unit": "s"},
        description="a request's deadline; past it, 504")
    database_timeout: float = Field(
        10.0, gt=0, validation_alias="DATABASE_TIMEOUT", json_schema_extra={"unit": "s"},
        description="one call to the dependency")
    redis_timeout: float = Field(
        5.0, gt=0, validation_alias="REDIS_TIMEOUT", json_schema_extra={"unit": "s"},
        description="one call to the cache (not used by the workbook yet)")
    retry_max_attempts: int = Field(
        3, ge=1, le=100, validation_alias="RETRY_MAX_ATTEMPTS",
        json_schema_extra={"unit": "attempts"}, description="attempts in all, the first included")
    retry_multiplier: float = Field(
        2.0, ge=1, validation_alias="RETRY_MULTIPLIER", json_schema_extra={"unit": "(factor)"},
        description="growth of the backoff ceiling per retry")
    retry_min_wait: float = Field(
        1.0, ge=0, validation_alias="RETRY_MIN_WAIT", json_schema_extra={"unit": "s"},
        description="the first backoff ceiling (the base)")
    retry_max_wait: float = Field(
        10.0, ge=0, validation_alias="RETRY_MAX_WAIT", json_schema_extra={"unit": "s"},
        description="the largest backoff (the cap)")
    retry_jitter: bool = Field(
        True, validation_alias="RETRY_JITTER", json_schema_extra={"unit": "(flag)"},
        description="full jitter if true, none if false")
    circuit_breaker_failure_threshold: int = Field(
        5, ge=1, validation_alias="CIRCUIT_BREAKER_FAILURE_THRESHOLD",
        json_schema_extra={"unit": "failures"},
        description="consecutive failures that open the circuit")
    circuit_breaker_recovery_timeout: float = Field(
        60.0, ge=0, validation_alias="CIRCUIT_BREAKER_RECOVERY_TIMEOUT",
        json_schema_extra={"unit": "s"}, description="time open before probing")
    circuit_breaker_half_open_max_calls: int = Field(
        1, ge=1, validation_alias="CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS",
        json_schema_extra={"unit": "calls"},
        description="probes in flight while half-open (Atlas's addition)")
    circuit_breaker_success_threshold: int = Field(
        1, ge=1, validation_alias="CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
        json_schema_extra={"unit": "calls"},
        description="probe successes that close the circuit (Atlas's addition)")
    retry_budget_max_tokens: float = Field(
        10.0, ge=0.001, le=1000, validation_alias="RETRY_BUDGET_MAX_TOKENS",
        json_schema_extra={"unit": "tokens"}, description="retry budget size (Atlas's addition)")
    retry_budget_token_ratio: float = Field(
        0.1, ge=0.001, validation_alias="RETRY_BUDGET_TOKEN_RATIO",
        json_schema_extra={"unit": "tokens"}, description="earned per success (Atlas's addition)")
    load_shedding_max_concurrent: int = Field(
        1000, ge=1, validation_alias="LOAD_SHEDDING_MAX_CONCURRENT",
        json_schema_extra={"unit": "requests"}, description="in progress before 429")
    http_header_timeout: float = Field(
        5.0, gt=0, le=3600, validation_alias="HTTP_HEADER_TIMEOUT",
        json_schema_extra={"unit": "s"},
        description="time to send a request's line and headers; past it, the connection is "
                    "closed (Atlas's addition)")
    http_max_connections: int = Field(
        1024, ge=1, le=1_000_000, validation_alias="HTTP_MAX_CONNECTIONS",
        json_schema_extra={"unit": "connections"},
        description="open before the one waiting longest for a request is closed (those at "
                    "work never are); the server raises the open-file limit to make room "
                    "(Atlas's addition)")

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if self.retry_max_wait < self.retry_min_wait:
            raise ValueError(
                f"RETRY_MAX_WAIT must be >= RETRY_MIN_WAIT ({self.retry_min_wait:g}), "
                f"got {self.retry_max_wait:g}"
            )
        if self.retry_budget_token_ratio > self.retry_budget_max_tokens:
            raise ValueError(
                f"RETRY_BUDGET_TOKEN_RATIO must be <= RETRY_BUDGET_MAX_TOKENS "
                f"({self.retry_budget_max_tokens:g}), got {self.retry_budget_token_ratio:g}"
            )
        return self

    def environment(self) -> dict[str, object]:
        """The settings under their environment-variable names, e.g. ``{"HTTP_TIMEOUT": 30.0}``."""
        fields = type(self).model_fields
        return {str(fields[name].validation_alias): value
                for name, value in self.model_dump().items()}

    def table(self) -> pd.DataFrame:
        """The settings as the reference card lists them: one row per environment variable,
        with its value here (``:g`` for numbers, ``true``/``false`` for flags), its unit and
        its meaning. Units and meanings live beside the fields above, and nowhere else in
        the code; the card's test compares its table with them."""
        rows = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            shown = str(value).lower() if isinstance(value, bool) else f"{value:g}"
            rows[str(field.validation_alias)] = {"value": shown, "unit": unit_of(name),
                                                 "meaning": field.description}
        return pd.DataFrame(rows).T.rename_axis("variable")

    # -- the policies these settings describe --------------------------------------------

    def backoff(self) -> Backoff:
        """``Backoff(base=RETRY_MIN_WAIT, multiplier=RETRY_MULTIPLIER, cap=RETRY_MAX_WAIT)``."""
        return Backoff(
            base=self.retry_min_wait,
            multiplier=self.retry_multiplier,
            cap=self.retry_max_wait,
            jitter="full" if self.retry_jitter else "none",
        )

    def retry_policy(self) -> RetryPolicy:
        """``RETRY_MAX_ATTEMPTS`` attempts with ``backoff()`` between them."""
        return RetryPolicy(max_attempts=self.retry_max_attempts, backoff=self.backoff())

    def breaker_config(self) -> BreakerConfig:
        """The ``CIRCUIT_BREAKER_*`` settings, consecutive-failure mode."""
        return BreakerConfig(
            failure_threshold=self.circuit_breaker_failure_threshold,
            recovery_timeout=self.circuit_breaker_recovery_timeout,
            half_open_max_calls=self.circuit_breaker_half_open_max_calls,
            success_threshold=self.circuit_breaker_success_threshold,
        )

    def budget_config(self) -> BudgetConfig:
        """The ``RETRY_BUDGET_*`` settings."""
        return BudgetConfig(
            max_tokens=self.retry_budget_max_tokens, token_ratio=self.retry_budget_token_ratio
        )

    def dependency_client(self) -> ClientPolicy:
        """How the service calls its dependency: ``DATABASE_TIMEOUT`` per call, the retry
        policy, the budget and the breaker above."""
        return ClientPolicy(timeout=self.database_timeout, retry=self.retry_policy(),
                            budget=self.budget_config(), breaker=self.breaker_config())

    def server_config(self) -> ServerConfig:
        """The live service's default server (``create_app(settings)`` without ``server=``):
        ``ServerConfig(workers=2, service_time=Distribution(mean=0.02), timeout=HTTP_TIMEOUT,
        admission=FixedLimit(max_concurrent=LOAD_SHEDDING_MAX_CONCURRENT), retry_after=1,
        dependency=Dependency(latency=Distribution(mean=0.005),
        client=dependency_client()), pool=PoolConfig(timeout=DATABASE_TIMEOUT))``: the
        store's connection pool waits ``DATABASE_TIMEOUT`` (at most an hour, the pool's
        limit) for a connection (no store: the
        state stays in the instance's memory, behind that pool)."""
        return ServerConfig(
            workers=2, service_time=Distribution(mean=0.02), timeout=self.http_timeout,
            admission=FixedLimit(max_concurrent=self.load_shedding_max_concurrent),
            retry_after=1,
            dependency=Dependency(latency=Distribution(mean=0.005),
                                  client=self.dependency_client()),
            pool=PoolConfig(timeout=min(self.database_timeout, POOL_MAX_TIMEOUT)))

    def limiter(self) -> ConcurrencyLimiter:
        """A fresh ``ConcurrencyLimiter(LOAD_SHEDDING_MAX_CONCURRENT)``."""
        return ConcurrencyLimiter(self.load_shedding_max_concurrent)


def unit_of(name: str) -> str:
    """The unit of the setting ``name`` (a field name, e.g. ``"http_timeout"``): ``"s"``,
    ``"attempts"``, ... as the reference card states it."""
    field = Settings.model_fields[name]
    extra = field.json_schema_extra
    unit = extra.get("unit") if isinstance(extra, dict) else None
    if not isinstance(unit, str):
        raise ValueError(f"the setting {name} has no unit")
    return unit
