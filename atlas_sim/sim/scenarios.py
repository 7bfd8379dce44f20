"""The workbook's canonical experiments, each a function returning what it runs.

Each function's docstring says what the experiment teaches. Request-path experiments return a
``Scenario`` (run it with ``simulate``, change it with ``.replace``); the two whose physics
differ (optimistic-concurrency contention, fan-out) run their own small model and return a
``RunResult`` directly.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from ..policies import (
    Backoff,
    BreakerConfig,
    BudgetConfig,
    ClientPolicy,
    FixedLimit,
    Jitter,
    RetryPolicy,
)
from ..server_config import WORKERS_RENAMED, ServerConfig
from ..validation import check_choice, check_int, check_real, refuse_renamed
from ..workload import Distribution, Load
from .contention import compare_contention, contention
from .fanout import fanout, slow_request_probability
from .scenario import Dependency, Fault, Scenario

__all__ = [
    "RETRY_STORM_FIXES",
    "compare_contention",
    "contention",
    "dependency_outage",
    "fanout",
    "full_stack",
    "overload_spike",
    "plain_queue",
    "retry_storm",
    "slow_request_probability",
    "thundering_herd",
]


def plain_queue(utilisation: float = 0.8, workers: int = 1, *, service_time_mean: float = 0.05,
                duration: float = 60.0, seed: int = 0, **renamed: Any) -> Scenario:
    """An M/M/c queue (c = ``workers``) at a given utilisation: the baseline every other
    experiment perturbs. (``servers=`` is refused: it is ``workers`` now.)

    Teaches: latency is mostly waiting, and waiting explodes as utilisation nears 1.
    """
    refuse_renamed("plain_queue", renamed, WORKERS_RENAMED)
    check_real("utilisation", utilisation, low=0, high=1, high_open=True)
    check_int("workers", workers, low=1)
    rate = utilisation * workers / service_time_mean
    return Scenario(load=Load(rate=rate, duration=duration),
                    server=ServerConfig(workers=workers,
                                        service_time=Distribution(mean=service_time_mean)),
                    seed=seed)


def thundering_herd(clients: int = 200, jitter: Jitter = "none", outage: float = 2.0, *,
                    seed: int = 0) -> Scenario:
    """Synchronised clients retrying into a server that is down, with and without jitter.

    ``clients`` clients reconnect at the same instant (as after a network partition heals)
    while the server is down for ``outage`` seconds. They retry with exponential backoff
    (100 ms doubling, up to 8 attempts). Without jitter they stay in step: every retry wave
    arrives at once, the server (4 workers, room for 20 requests) sheds most of each wave with
    429, and the shed clients come back together again. With jitter the same retries arrive
    spread out and the server absorbs them.

    Teaches: backoff spaces retries out in time, only jitter spaces *clients* out.
    """
    check_int("clients", clients, low=1, high=100_000)
    check_real("outage", outage, low=0, low_open=True)
    return Scenario(
        load=Load(clients=clients, synchronized=True, think_time=5.0, duration=20.0),
        server=ServerConfig(workers=4, service_time=Distribution(mean=0.02, kind="exponential"),
                            admission=FixedLimit(max_concurrent=20)),
        client=ClientPolicy(retry=RetryPolicy(
            max_attempts=8, backoff=Backoff(base=0.1, cap=5.0, jitter=jitter))),
        faults=(Fault(start=0.0, end=outage, capacity=0.0, name="outage"),),
        seed=seed,
    )


def dependency_outage(breaker: bool = True, *, outage: tuple[float, float] = (10.0, 25.0),
                      share: float = 0.5, seed: int = 0) -> Scenario:
    """A dependency that hangs for a while, with and without a circuit breaker in the handler.

    50 requests/s reach 10 workers; each request does 10 ms of work and half of them (``share``)
    also call a dependency (10 ms, timeout 1 s). During the outage the dependency stops
    answering. Without a breaker every call holds its worker until it times out; 25 such calls a
    second need more workers than there are, so the queue piles up and *every* request,
    including the half that never needed the dependency, waits seconds behind doomed work: many
    get 504 from the server's own timeout (HTTP_TIMEOUT, 3 s here), the rest are served seconds
    late. With a breaker (5 failures open it, probes every 2 s) the calls fail at once with 503,
    workers stay free, the other half is served in milliseconds as usual, and the breaker closes
    soon after the dependency recovers. (Count errors alone and the breaker looks worse: it
    refuses calls that a long wait might have saved. Count answers within an SLO and it wins.)

    Teaches: fail fast; a fault in one dependency must not become a failure of everything.
    """
    start, end = outage
    dep = Dependency(
        latency=Distribution(mean=0.01), share=share,
        client=ClientPolicy(
            timeout=1.0,
            breaker=BreakerConfig(failure_threshold=5, recovery_timeout=2.0) if breaker else None),
    )
    return Scenario(
        load=Load(rate=50.0, duration=40.0),
        server=ServerConfig(workers=10, service_time=Distribution(mean=0.01), timeout=3.0,
                            dependency=dep),
        faults=(Fault(start=start, end=end, dependency_added_latency=30.0,
                      name="dependency hangs"),),
        seed=seed,
    )


def overload_spike(shedding: bool = True, *, spike: float = 2.0, seed: int = 0) -> Scenario:
    """Offered load jumps to ``spike`` times capacity for 10 s, with and without shedding.

    4 workers at 50 ms a request serve 80 requests/s; the normal load is 56/s (70%). From 10 s
    to 20 s it is ``spike`` x 80/s. Without shedding the queue grows by the excess every second,
    every request waits behind it, and the backlog takes long after the spike to drain
    (HTTP_TIMEOUT is 30 s, so requests are served, just uselessly late). With shedding
    (``max_concurrent=20``: 4 in service, 16 queued at most) the excess gets 429 at once and the
    admitted requests keep their normal latency; the system recovers the moment the spike ends.

    Teaches: under overload, refusing work quickly beats accepting all of it and serving it late.
    """
    check_real("spike", spike, low=0)
    return Scenario(
        load=Load(rate=56.0, steps=((10.0, 80.0 * spike), (20.0, 56.0)), duration=60.0),
        server=ServerConfig(workers=4, service_time=Distribution(mean=0.05), timeout=30.0,
                            admission=FixedLimit(max_concurrent=20) if shedding else None),
        seed=seed,
    )


RetryStormFix = Literal["none", "backoff", "budget", "breaker", "shedding", "drop_expired"]
RETRY_STORM_FIXES: tuple[RetryStormFix, ...] = get_args(RetryStormFix)


def retry_storm(fix: RetryStormFix = "none", *, seed: int = 0) -> Scenario:
    """A metastable failure: a short capacity drop leaves the system failing long after.

    Open-loop load at 70% utilisation (5 workers, 100 ms a request, 35 requests/s), clients
    time out after 1 s and retry up to 3 times (4 attempts) with a short jittered backoff; the
    server does not cancel work whose client has given up. From 15 s to 25 s capacity drops to
    30%. Queues grow, waits pass 1 s, clients time out and retry, and every retry is more work:
    with up to four attempts per request the offered work reaches several times capacity, so
    when capacity returns at 25 s the server is still busy with work nobody waits for. The
    system stays down until the load stops (the "metastable" state of Bronson et al.).

    ``fix`` applies one remedy: ``"backoff"`` (waits of 1 s up to 10 s instead of 50 ms: it
    only delays the same amount of work, so it does not help an open-loop system),
    ``"budget"`` (gRPC retry throttling), ``"breaker"`` (a client circuit breaker),
    ``"shedding"`` (``max_concurrent=10``: a short queue, excess refused with a fast 429),
    ``"drop_expired"`` (the server skips work that cannot be done before its client gives up).

    Teaches: what breaks a retry storm is less work, not more patience.
    """
    check_choice("fix", fix, RETRY_STORM_FIXES)
    retry = RetryPolicy(max_attempts=4, backoff=Backoff(base=0.05, cap=1.0, jitter="full"))
    scenario = Scenario(
        load=Load(rate=35.0, duration=60.0),
        server=ServerConfig(workers=5, service_time=Distribution(mean=0.1)),
        client=ClientPolicy(timeout=1.0, retry=retry),
        faults=(Fault(start=15.0, end=25.0, capacity=0.3, name="capacity drop"),),
        seed=seed,
    )
    if fix == "backoff":
        return scenario.replace(
            {"client.retry.backoff": Backoff(base=1.0, cap=10.0, jitter="full")})
    if fix == "budget":
        return scenario.replace({"client.budget": BudgetConfig(max_tokens=10, token_ratio=0.1)})
    if fix == "breaker":
        return scenario.replace(
            {"client.breaker": BreakerConfig(failure_threshold=10, recovery_timeout=2.0)})
    if fix == "shedding":
        return scenario.replace({"server.admission": FixedLimit(max_concurrent=10)})
    if fix == "drop_expired":
        return scenario.replace({"server.drop_expired": True})
    return scenario


def full_stack(requests: int = 10_000, *, seed: int = 0) -> Scenario:
    """Every mechanism at once, about ``requests`` requests: the benchmarks' workload.

    Open-loop load near capacity on 8 workers with lognormal work, shedding above 64 in the
    system, a 0.5 s server timeout inside the clients' 1 s timeout, 4 attempts with full jitter, a
    retry budget and a circuit breaker, and a dependency (called by 60% of requests) with its own
    retry and breaker; a capacity drop and a dependency error burst along the way.
    """
    check_int("requests", requests, low=1)
    rate = 300.0
    duration = requests / rate
    return Scenario(
        load=Load(rate=rate, duration=duration),
        server=ServerConfig(
            workers=8, service_time=Distribution(mean=0.02, kind="lognormal", shape=0.8),
            admission=FixedLimit(max_concurrent=64), timeout=0.5,
            dependency=Dependency(
                latency=Distribution(mean=0.005), error_rate=0.01, share=0.6,
                client=ClientPolicy(
                    timeout=0.1,
                    retry=RetryPolicy(max_attempts=2, backoff=Backoff(base=0.01, cap=0.1)),
                    breaker=BreakerConfig(failure_threshold=5, recovery_timeout=0.5)))),
        client=ClientPolicy(
            timeout=1.0,
            retry=RetryPolicy(max_attempts=4, backoff=Backoff(base=0.02, cap=1.0, jitter="full")),
            budget=BudgetConfig(max_tokens=10, token_ratio=0.1),
            breaker=BreakerConfig(failure_threshold=20, recovery_timeout=1.0)),
        faults=(Fault(start=0.3 * duration, end=0.4 * duration, capacity=0.5,
                      name="capacity drop"),
                Fault(start=0.6 * duration, end=0.7 * duration, dependency_error_rate=0.8,
                      name="dependency errors")),
        seed=seed,
    )
