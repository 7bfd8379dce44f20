"""Atlas's settings, read from environment variables, and the policies built from them.

The names and defaults are the reference card's (``../shared/ATLAS.md``, Configuration)::

    HTTP_TIMEOUT=30  DATABASE_TIMEOUT=10  REDIS_TIMEOUT=5
    RETRY_MAX_ATTEMPTS=3  RETRY_MULTIPLIER=2  RETRY_MIN_WAIT=1  RETRY_MAX_WAIT=10  RETRY_JITTER=true
    CIRCUIT_BREAKER_FAILURE_THRESHOLD=5  CIRCUIT_BREAKER_RECOVERY_TIMEOUT=60
    LOAD_SHEDDING_MAX_CONCURRENT=1000

plus four the workbook adds, with the same style of name, for knobs the card leaves implicit:
``CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS=1``, ``CIRCUIT_BREAKER_SUCCESS_THRESHOLD=1``,
``RETRY_BUDGET_MAX_TOKENS=10`` and ``RETRY_BUDGET_TOKEN_RATIO=0.1``.

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

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    ConcurrencyLimiter,
    RetryPolicy,
)

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Atlas's configuration, from the environment (or keyword arguments, for experiments).

    A bad value fails at once with a ``pydantic.ValidationError`` (a ``ValueError``) that names
    the environment variable, e.g. ``HTTP_TIMEOUT  Input should be greater than 0``.
    Read-only once made: to change a value, make a new one, e.g. ``Settings(http_timeout=5)``.
    """

    model_config = SettingsConfigDict(populate_by_name=True, frozen=True, extra="forbid")

    http_timeout: float = Field(
        30.0, gt=0, validation_alias="HTTP_TIMEOUT",
        description="seconds a request may take before the server answers 504")
    database_timeout: float = Field(
        10.0, gt=0, validation_alias="DATABASE_TIMEOUT",
        description="seconds per call to the database (the live dependency)")
    redis_timeout: float = Field(5.0, gt=0, validation_alias="REDIS_TIMEOUT",
                                 description="seconds per call to the cache")
    retry_max_attempts: int = Field(3, ge=1, le=100, validation_alias="RETRY_MAX_ATTEMPTS",
                                    description="attempts in all, the first call included")
    retry_multiplier: float = Field(2.0, ge=1, validation_alias="RETRY_MULTIPLIER",
                                    description="backoff growth per retry")
    retry_min_wait: float = Field(1.0, ge=0, validation_alias="RETRY_MIN_WAIT",
                                  description="first backoff ceiling, seconds")
    retry_max_wait: float = Field(10.0, ge=0, validation_alias="RETRY_MAX_WAIT",
                                  description="largest backoff, seconds")
    retry_jitter: bool = Field(True, validation_alias="RETRY_JITTER",
                               description="full jitter if true, none if false")
    circuit_breaker_failure_threshold: int = Field(
        5, ge=1, validation_alias="CIRCUIT_BREAKER_FAILURE_THRESHOLD",
        description="consecutive failures that open the circuit")
    circuit_breaker_recovery_timeout: float = Field(
        60.0, ge=0, validation_alias="CIRCUIT_BREAKER_RECOVERY_TIMEOUT",
        description="seconds open before probing")
    circuit_breaker_half_open_max_calls: int = Field(
        1, ge=1, validation_alias="CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS",
        description="probes in flight while half-open (workbook addition)")
    circuit_breaker_success_threshold: int = Field(
        1, ge=1, validation_alias="CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
        description="probe successes that close the circuit (workbook addition)")
    retry_budget_max_tokens: float = Field(
        10.0, ge=0.001, le=1000, validation_alias="RETRY_BUDGET_MAX_TOKENS",
        description="gRPC retry throttling tokens (workbook addition)")
    retry_budget_token_ratio: float = Field(
        0.1, ge=0.001, validation_alias="RETRY_BUDGET_TOKEN_RATIO",
        description="tokens earned per success (workbook addition)")
    load_shedding_max_concurrent: int = Field(
        1000, ge=1, validation_alias="LOAD_SHEDDING_MAX_CONCURRENT",
        description="requests in progress before the server answers 429")

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

    def limiter(self) -> ConcurrencyLimiter:
        """A fresh ``ConcurrencyLimiter(LOAD_SHEDDING_MAX_CONCURRENT)``."""
        return ConcurrencyLimiter(self.load_shedding_max_concurrent)
