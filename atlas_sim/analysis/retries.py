"""Retries against independent transient faults, in closed form, with or without a retry budget.

Each attempt fails independently with probability ``p``; a client makes up to ``a`` attempts.

* No budget: a request fails only if every attempt fails, ``p^a``, and makes
  ``1 + p + ... + p^(a-1) = (1 - p^a) / (1 - p)`` attempts on average (each attempt after the
  first is sent only if all before it failed).
* A retry budget, gRPC's retry throttling (gRFC A6, "gRPC Retry Design": ``max_tokens`` M,
  ``token_ratio`` r; ``policies.RetryBudget``): the tokens start at M, each failed attempt costs
  1, each success earns r, and a retry is allowed only while more than M/2 are left. Since every
  attempt's outcome is an independent coin, the tokens are a random walk over attempts with
  drift ``d = r (1 - p) - p`` per attempt, whatever the retries do: retries change how many
  attempts there are, not the sign of the drift. So the budget has two regimes, split at
  ``p = r / (1 + r)`` (the balance point the notebook derives):

  - ``d > 0``: the tokens stay at the top; the budget never binds, and the answer is the one
    without a budget;
  - ``d < 0``: the tokens fall by ``|d|`` per attempt, ``|d| A`` per request with every retry
    allowed, so after about ``n0 = (M / 2) / (|d| A)`` requests they reach M/2 and retries stop
    for good (the walk drifts on down to 0). Of ``N`` requests, ``n0`` fail with ``p^a`` and
    make ``A`` attempts, the rest fail with ``p`` and make one attempt (the fluid limit: the
    randomness of ``n0`` moves the failure count by about ``(p - p^a)`` per request of ``n0``'s
    spread, a few, far less than the binomial noise of a run).

  Near the balance point the walk wanders between the two for long stretches and neither answer
  holds: ``retry_theory`` then says it does not cover the policy (``covered`` False). The
  criterion: a reflected walk with drift ``d`` and step variance ``s^2 = p (1 - p) (1 + r)^2``
  settles within ``s^2 / (2 |d|)`` tokens of its wall (its stationary distribution is
  exponential with that mean: the diffusion approximation, e.g. S. M. Ross, "Introduction to
  Probability Models", on the gambler's ruin with drift); the theory is used when M/2 is at
  least five of those (``exp(-5)``, under 1%, of the time on the wrong side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..policies import BudgetConfig
from ..validation import check_int, check_real

__all__ = ["RetryTheory", "retry_theory"]

#: How many of the walk's own widths (``s^2 / (2 |d|)`` tokens) M/2 must span for the budget's
#: regime to be settled (see the module docstring).
SETTLED_WIDTHS = 5.0


@dataclass(frozen=True)
class RetryTheory:
    """What theory says of a retry policy against independent faults.

    ``failed``: the share of requests that fail (0..1), NaN when not ``covered``.
    ``attempts``: attempts per request, NaN when not ``covered``. ``covered``: whether the
    closed form applies to this policy. ``note``: one sentence on which case applied.
    """

    failed: float
    attempts: float
    covered: bool
    note: str


def retry_theory(error_rate: float, *, max_attempts: int, budget: BudgetConfig | None = None,
                 requests: int | None = None) -> RetryTheory:
    """The failure share and attempts per request of ``max_attempts`` attempts against
    independent faults of probability ``error_rate``, under ``budget`` (see the module
    docstring for the formulas and where they hold).

    Args:
        error_rate: the chance that one attempt fails, 0..1.
        max_attempts: attempts per request, first included, 1..100.
        budget: a retry budget's settings (None: no budget).
        requests: how many requests the run sends, >= 1; needed with a budget that drains
            (it lets the first few requests retry), ignored otherwise. None: the long run.
    """
    p = check_real("error_rate", error_rate, low=0, high=1)
    a = check_int("max_attempts", max_attempts, low=1, high=100)
    if requests is not None:
        requests = check_int("requests", requests, low=1)
    attempts = float(a) if p == 1 else (1 - p**a) / (1 - p)
    if budget is None or a == 1 or p == 0:
        return RetryTheory(p**a, attempts, True, "independent faults, every retry allowed")
    m, r = budget.max_tokens, budget.token_ratio
    drift = r * (1 - p) - p
    spread = p * (1 - p) * (1 + r) ** 2
    balance = r / (1 + r)
    if drift == 0 or (m / 2) * 2 * abs(drift) / spread < SETTLED_WIDTHS:
        return RetryTheory(math.nan, math.nan, False,
                           f"the failure share {p:g} is too close to the budget's balance point "
                           f"r / (1 + r) = {balance:.3g} for its {m:g} tokens: the budget "
                           "neither stays full nor stays empty, and the closed form does not "
                           "cover it")
    if drift > 0:
        return RetryTheory(p**a, attempts, True,
                           f"the budget stays full (failures {p:g} below its balance point "
                           f"{balance:.3g}): every retry allowed")
    if requests is None:
        return RetryTheory(p, 1.0, True,
                           f"the budget empties (failures {p:g} above its balance point "
                           f"{balance:.3g}): in the long run no retries")
    early = min(float(requests), (m / 2) / (abs(drift) * attempts))
    failed = (early * p**a + (requests - early) * p) / requests
    per_request = (early * attempts + (requests - early)) / requests
    return RetryTheory(failed, per_request, True,
                       f"the budget empties (failures {p:g} above its balance point "
                       f"{balance:.3g}): about the first {early:.0f} requests retry, then "
                       "none")
