"""Coordinated omission in closed form: what one stall does to the samples that an open-loop and
a closed-loop load generator record.

The server answers nothing for ``stall`` = T seconds (a stop-the-world pause), then carries on.

* An **open-loop** generator (``wrk2``; Atlas's ``run_load`` with a rate) sends at ``rate`` = λ
  whatever happens and times each request from its scheduled send. A request sent u seconds
  into the stall waits the rest of it, T − u: about λT samples are delayed, their delays spread
  evenly from T down to 0, so of ``samples`` = N the share delayed by more than x is
  λ(T − x) / N.
* A **closed-loop** generator (``wrk``) with c connections sends a connection's next request only
  when the last has been answered. Each connection is stuck on one request for the stall and
  sends nothing else meanwhile: c samples of about T, however long the stall (a little less
  when the connection was thinking as the stall began and sent its request into it). It does
  not measure the requests it did not send, which is coordinated omission: it under-counts the
  stall's samples by λT − c.

A quantile is read at the rank ``analysis.percentiles.exact_percentiles`` uses (numpy's
``closest_observation``, the rank an HDR histogram reads): ``samples_above`` says how many
samples lie above it, and the quantile is the next one down.

After the stall the server works off the requests that piled up while new ones keep coming. In
a fluid approximation (work arrives at a share ρ, the ``utilisation``, of the server's capacity,
so the backlog drains at 1 − ρ of it) a request sent u seconds after the stall began waits
T − (1 − ρ)u, for u from 0 to T / (1 − ρ): the line above stretched by 1 / (1 − ρ). With
ρ = 0 it is the simple form. Every delay is on top of the ``base`` latency a request sees
without a stall.

Sources: G. Tene, "How NOT to Measure Latency" (talk, Strange Loop 2015), and the README of
wrk2 ("a constant throughput, correct latency recording variant of wrk"), which name and
describe coordinated omission; the drain is the deterministic fluid approximation of a queue
(L. Kleinrock, *Queueing Systems*, vol. 2, chapter 2, "Bounds, inequalities and
approximations": the diffusion and fluid approximations); the closed loop's think before the
stall uses the order statistics of exponential draws (A. Rényi, "On the theory of order
statistics", Acta Mathematica Academiae Scientiarum Hungaricae 4, 1953).
"""

from __future__ import annotations

import numpy as np

from ..validation import check_int, check_real
from .percentiles import QUANTILE_METHOD

__all__ = ["closed_loop_percentile", "closed_loop_stalled", "open_loop_percentile",
           "open_loop_stalled", "samples_above", "stalled_share_over"]


def _stall(stall: float) -> float:
    return check_real("stall", stall, low=0)


def _utilisation(utilisation: float) -> float:
    return check_real("utilisation", utilisation, low=0, high=1, high_open=True)


def open_loop_stalled(rate: float, stall: float, *, utilisation: float = 0.0) -> float:
    """Expected samples an open-loop generator records as delayed by a stall: λT / (1 − ρ)
    (λT sent during it, and with ρ > 0 those sent while its backlog drains).

    Args: ``rate`` requests per second (>= 0), ``stall`` seconds (>= 0), ``utilisation`` ρ in
    [0, 1). Returns a count (float: an expectation).
    """
    rate = check_real("rate", rate, low=0)
    return rate * _stall(stall) / (1.0 - _utilisation(utilisation))


def closed_loop_stalled(clients: int) -> int:
    """Samples a closed-loop generator records as delayed by a stall: one per connection
    (``clients`` >= 1), whatever the stall's length (as long as no client thinks through all
    of it)."""
    return check_int("clients", clients, low=1)


def stalled_share_over(x: float | np.ndarray, *, rate: float, stall: float, samples: int,
                       utilisation: float = 0.0) -> float | np.ndarray:
    """Share of an open-loop run's ``samples`` = N whose delay by the stall exceeds ``x``
    seconds: λ(T − x) / ((1 − ρ) N) for 0 <= x <= T, 0 beyond T (and λT / ((1 − ρ) N) for
    x < 0). ``x`` may be an array; the share is capped at 1."""
    rate = check_real("rate", rate, low=0)
    stall = _stall(stall)
    samples = check_int("samples", samples, low=1)
    rho = _utilisation(utilisation)
    over = rate * np.clip(stall - np.asarray(x, dtype=float), 0.0, stall) / ((1 - rho) * samples)
    share = np.minimum(over, 1.0)
    return float(share) if share.ndim == 0 else share


def samples_above(q: float, samples: int) -> int:
    """How many of ``samples`` = N sorted latencies lie above the one reported as their
    ``q``-quantile (0 < q <= 1): N − r, r being the rank (1 to N) that
    ``analysis.percentiles.exact_percentiles`` reads, numpy's ``closest_observation``
    (``round(q N)``, at least 1; the rank an HDR histogram reads). q = 1 is the maximum
    (none above it)."""
    q = check_real("q", q, low=0, high=1, low_open=True)
    samples = check_int("samples", samples, low=1)
    index = int(np.percentile(np.arange(samples), 100 * q, method=QUANTILE_METHOD))
    return samples - 1 - index


def _q_and_samples(q: float, samples: int) -> tuple[float, int]:
    return (check_real("q", q, low=0, high=1, low_open=True),
            check_int("samples", samples, low=1))


def open_loop_percentile(q: float, *, rate: float, stall: float, samples: int,
                         base: float = 0.0, utilisation: float = 0.0) -> float:
    """The ``q``-quantile (0 < q <= 1; 0.99 for p99, 1 for the maximum) of an open-loop run's
    ``samples`` = N latencies through a stall, seconds: ``base`` + max(0, T − (1 − ρ) a / λ),
    with a = ``samples_above(q, N)`` the samples above the quantile's rank (about (1 − q) N).

    The requests sent during the stall and its drain are delayed T, T − (1 − ρ)/λ,
    T − 2(1 − ρ)/λ, ... (the first is sent as the stall begins); the sample of rank r has the
    a = N − r largest above it, so it is the (a + 1)-th largest. This is the inverse of
    ``stalled_share_over`` read at the rank ``exact_percentiles`` uses. ``base`` is the latency
    a request sees without a stall (not the run's median: when half the samples waited for the
    stall, the median is itself delayed). A run of ``duration`` D at rate λ has N = λD, so the
    p99 of a one-second stall in a ten-second run is about 0.9 s.
    """
    q, samples = _q_and_samples(q, samples)
    rate = check_real("rate", rate, low=0, low_open=True)
    stall = _stall(stall)
    rho = _utilisation(utilisation)
    base = check_real("base", base, low=0)
    return base + max(0.0, stall - (1 - rho) * samples_above(q, samples) / rate)


def closed_loop_percentile(q: float, *, clients: int, stall: float, samples: int,
                           base: float = 0.0, think_time: float = 0.0) -> float:
    """The ``q``-quantile (0 < q <= 1; 1 for the maximum) of a closed-loop run's ``samples``
    = N latencies through a stall, seconds.

    Its ``clients`` = c stalled samples sit above every other, so the quantile is one of them
    when fewer than c samples lie above its rank (a = ``samples_above(q, N)`` < c, the rank
    rule of ``exact_percentiles``), and ``base`` otherwise. A connection that thinks
    ``think_time`` = θ on average (exponentially, as ``Load`` draws it) is nearly always
    thinking when the stall begins (θ ≫ the response time); by memorylessness its remaining
    think is again exponential with mean θ, and it sends u into the stall and waits T − u. The
    k-th smallest of c independent exponential draws has mean θ (1/c + 1/(c − 1) + ... +
    1/(c − k + 1)) = θ (H_c − H_(c−k)) (Rényi's representation of exponential order
    statistics; H_n is the n-th harmonic number), so the quantile, the (a + 1)-th largest
    stalled sample, is about ``base`` + T − θ (H_c − H_(c−a−1)). With θ = 0 it is
    ``base`` + T. Valid while θ is well below T (a connection that thinks through the whole
    stall does not see it).
    """
    q, samples = _q_and_samples(q, samples)
    clients = check_int("clients", clients, low=1)
    stall = _stall(stall)
    base = check_real("base", base, low=0)
    think_time = check_real("think_time", think_time, low=0)
    above = samples_above(q, samples)
    if above >= clients:
        return base
    # Rényi: E[k-th smallest of c exponentials] = θ (1/c + ... + 1/(c - k + 1)), k = above + 1
    earliest = think_time * sum(1.0 / (clients - i) for i in range(above + 1))
    return base + max(0.0, stall - earliest)
