"""The live experiments: the in-kernel Atlas service, and its simulated twin.

A notebook's live section starts the service (``start_service``), offers it load with
``run_load``, and compares the result with a simulation of the same setup: ``work_twin`` for
``/api/work`` (an M/M/c queue), ``compose_twin`` for ``/api/compose`` (a dependency behind retry,
budget and breaker). The twins are ``Scenario(server=<the very ServerConfig the live app was
built with>, path=<the route>, load=, client=, faults=, seed=)``: the same objects, nothing
translated, so simulated and live runs see the same arrivals, the same service times and the
same dependency outcomes, and differ only where the real system does. Several instances
(``start_instances``, ``service.Cluster``) are several instances in both worlds, each with its
own workers, queue, limiter and random streams (``rng_streams(seed, instance=k)``).

The pure model leaves out what a real server adds to every request: the HTTP round trip and the
framework's and timer's overheads. ``calibrate`` measures both once, at low load, on the live
service; ``Calibration.apply`` puts them into a scenario under the same names (``round_trip``,
``work_overhead``). A small constant per request matters more than it looks: a queue
amplifies it.

This module is the one place that imports both the simulator and the service: they stay
independent of each other, and meet here and in ``RunResult``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import httpx
import numpy as np
import pandas as pd

from ..analysis.health import LIMITS, client_waits, measurement_health
from ..analysis.retries import RetryTheory, retry_theory
from ..analysis.stats import proportion_interval
from ..config import Settings
from ..policies import Backoff, ClientPolicy, RetryPolicy
from ..results import RunResult
from ..server_config import WORKERS_RENAMED, ServerConfig
from ..service import LiveServer, create_app, leftovers, run_load
from ..sim import Fault, Scenario, simulate
from ..validation import check_int, check_real, refuse_renamed
from ..workload import Distribution, Load

__all__ = [
    "GENERATOR_TOLERANCE",
    "Calibration",
    "LiveRunInterrupted",
    "calibrate",
    "compose_experiment",
    "compose_twin",
    "dependency_latency",
    "fanout_run",
    "generator_note",
    "idempotency_table",
    "interruptible",
    "leftovers",
    "reset",
    "reset_on_interrupt",
    "retry_table",
    "server_config",
    "shared_fault_experiment",
    "shared_fault_table",
    "start_instances",
    "start_service",
    "theory_verdict",
    "transition_table",
    "work_twin",
]

_NO_POLICY = ClientPolicy()
P = ParamSpec("P")
T = TypeVar("T")


# -- interrupts ------------------------------------------------------------------------------

class LiveRunInterrupted(KeyboardInterrupt):
    """A live experiment stopped by ``KeyboardInterrupt`` (Ctrl-C, the kernel's stop button)
    after its services were reset; the message is the line printed then. A
    ``KeyboardInterrupt``, so whatever stops on an interrupt still stops."""


@contextlib.contextmanager
def reset_on_interrupt(*servers: LiveServer, what: str = "the live run") -> Iterator[None]:
    """The one way every live experiment ends when interrupted: reset each of ``servers``
    (``POST /admin/reset``: every fault off, a fresh breaker and budget, random streams
    rewound; ``run_load`` has already switched off the faults it played), print one line that
    says so, and raise ``LiveRunInterrupted`` (a ``KeyboardInterrupt``) with that line.

    Nested (an experiment made of other experiments), only the innermost one resets and
    prints. No ``servers``: the experiment ran on a private server of its own, which its own
    ``with`` block has stopped.
    """
    try:
        yield
    except LiveRunInterrupted:
        raise
    except KeyboardInterrupt:
        done = [reset(server, quiet=True) for server in servers]
        line = f"{what} was interrupted; " + (
            "; ".join(done) if done else "it ran on a server of its own, now stopped")
        print(line, flush=True)
        raise LiveRunInterrupted(line) from None


def interruptible(function: Callable[P, T]) -> Callable[P, T]:
    """Decorate a live experiment whose first argument is its service (a ``LiveServer``) or its
    instances (a sequence of them), or that runs on a server of its own: an interrupt then
    ends it through ``reset_on_interrupt`` with those services."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        bound = signature.bind_partial(*args, **kwargs).arguments
        first = next(iter(bound.values()), None)
        servers = ([first] if isinstance(first, LiveServer) else
                   [s for s in first if isinstance(s, LiveServer)]
                   if isinstance(first, Sequence) and not isinstance(first, str) else [])
        with reset_on_interrupt(*servers, what=f"the live run ({function.__name__})"):
            return function(*args, **kwargs)

    return call


#: Old parameters of ``start_service``, ``calibrate`` and the twins, and what to write now.
_RENAMED = {
    "servers": "server=ServerConfig(workers=...) (calibrate: workers=...)",
    "service_time": "server=ServerConfig(service_time=...)",
    "dependency_latency": "server=ServerConfig(dependency=Dependency(latency=...))",
}


def start_service(name: str, *, settings: Settings | None = None,
                  server: ServerConfig | None = None, seed: int = 0,
                  **renamed: object) -> LiveServer:
    """Start the Atlas service in this kernel on 127.0.0.1 under ``name``, built by
    ``create_app(settings, server=server, seed=seed)`` (``server`` None:
    ``settings.server_config()``); running the cell again stops the previous server of that
    name first. Its config is ``server_config(the returned server)``."""
    if renamed:
        refuse_renamed("start_service", renamed, _RENAMED)
    app = create_app(settings or Settings(), server=server, seed=seed)
    return LiveServer(app, name=name).start()


def server_config(server: ServerConfig | LiveServer | Settings) -> ServerConfig:
    """The ``ServerConfig`` a twin is built from: a config itself; a live server's, the very
    object its app was built with (``app.state.atlas.server``); for ``Settings``, the one
    ``create_app(settings)`` builds (``settings.server_config()``). Raises ``ValueError`` for
    anything else."""
    if isinstance(server, ServerConfig):
        return server
    if isinstance(server, LiveServer):
        config = server.app.state.atlas.server
        assert isinstance(config, ServerConfig)
        return config
    if isinstance(server, Settings):
        return server.server_config()
    raise ValueError(f"server must be a ServerConfig, a LiveServer or Settings, got {server!r}")


@dataclass(frozen=True)
class Calibration:
    """What a real request costs beyond the model's work: measured, not fitted.

    ``round_trip``: median latency of an empty request at low load (client, HTTP, middleware,
    server, back). ``work_overhead``: how much longer than asked the server's work takes under
    load (the event loop wakes a sleeping request late, by about half its timer's millisecond
    and more when busy), from the server's own ``Server-Timing``. Not included: the moment a
    freed slot waits for the next request to wake up (about 0.5 ms on the machines measured),
    so the calibrated model stays a little optimistic.
    """

    round_trip: float
    work_overhead: float

    def __repr__(self) -> str:
        return (f"Calibration(round trip {1e3 * self.round_trip:.2f} ms, "
                f"work overhead {1e3 * self.work_overhead:.2f} ms)")

    def apply(self, scenario: Scenario) -> Scenario:
        """``scenario`` with these costs added: the calibrated model."""
        return scenario.replace(round_trip=self.round_trip, work_overhead=self.work_overhead)


@interruptible
def calibrate(*, workers: int = 2, utilisation: float = 0.6, probe: float = 0.02,
              requests: int = 200, seed: int = 1_000_001, **renamed: object) -> Calibration:
    """Measure what a real request costs beyond the model, on a private server of its own.

    A short-lived service like the experiment's (``settings.server_config()`` with ``workers``
    work slots, 1..10000, on 127.0.0.1) gets two probes: ``requests`` empty requests at a low
    rate (no queueing) for the round trip, and ``requests`` requests of exactly ``probe``
    seconds of work at ``utilisation`` of its slots for the work overhead. Its own server and
    seed: the service under test, its random streams and its breaker are never touched.
    """
    if renamed:
        refuse_renamed("calibrate", renamed, WORKERS_RENAMED)
    check_int("workers", workers, low=1, high=10_000)
    settings = Settings()
    config = dataclasses.replace(settings.server_config(), workers=workers)
    with LiveServer(create_app(settings, server=config), name="atlas-calibration") as server:
        patient = ClientPolicy(timeout=5.0)
        empty = run_load(server.url, load=Load(rate=40.0, requests=requests), client=patient,
                         seed=seed, path="/api/work?service_time=0", progress=False,
                         server_events=False)
        busy = run_load(server.url, load=Load(rate=utilisation * workers / probe,
                                              requests=requests),
                        client=patient, seed=seed + 1, path=f"/api/work?service_time={probe}",
                        progress=False, server_events=False)
    return Calibration(
        round_trip=float(np.median(empty.requests["latency"])),
        work_overhead=max(0.0, float(np.nanmean(busy.meta["server_work"])) - probe))


def work_twin(server: ServerConfig | LiveServer | Settings, *, load: Load, seed: int,
              client: ClientPolicy = _NO_POLICY, faults: Sequence[Fault] = (),
              calibration: Calibration | None = None, instances: int = 1,
              **renamed: object) -> Scenario:
    """The simulation of ``run_load(load=..., client=..., faults=..., path="/api/work")``
    against an app built with ``server`` (its ``ServerConfig``: see ``server_config``):
    ``Scenario(server=server, path="/api/work", ...)``, an M/M/c queue (M/G/c for other
    kinds) with the app's admission limit and server timeout; ``instances`` of it. The
    config, load, client policy and faults are the very objects the live run takes."""
    if renamed:
        refuse_renamed("work_twin", renamed, _RENAMED)
    scenario = Scenario(server=server_config(server), instances=instances, path="/api/work",
                        load=load, client=client, faults=tuple(faults), seed=seed)
    return calibration.apply(scenario) if calibration else scenario


def compose_twin(server: ServerConfig | LiveServer | Settings, *, load: Load, seed: int,
                 client: ClientPolicy = _NO_POLICY, faults: Sequence[Fault] = (),
                 calibration: Calibration | None = None, instances: int = 1,
                 **renamed: object) -> Scenario:
    """The simulation of ``run_load(path="/api/compose", ...)`` against an app built with
    ``server`` (its ``ServerConfig``: see ``server_config``; ``Settings``: the default app's,
    ``create_app(settings)``): ``Scenario(server=server, path="/api/compose", ...)``.

    ``/api/compose`` holds no worker and waits in no queue: it calls the config's dependency
    with the dependency's own client policy (by default the service's: each call bounded by
    ``DATABASE_TIMEOUT``, the service's retry, budget and breaker), under the config's
    admission limit and server timeout. ``load``, ``client`` (the reader's) and ``faults``
    pass through unchanged; ``instances`` of it.
    """
    if renamed:
        refuse_renamed("compose_twin", renamed, _RENAMED)
    scenario = Scenario(server=server_config(server), instances=instances, path="/api/compose",
                        load=load, client=client, faults=tuple(faults), seed=seed)
    if calibration is None:
        return scenario
    # only the round trip: /api/compose holds no work slot, so the work overhead does not apply
    return scenario.replace(round_trip=calibration.round_trip)


def _check_settings(settings: Settings | None, servers: Sequence[LiveServer]) -> None:
    """A ``settings`` given beside live servers must be the ones they were started with."""
    if settings is None:
        return
    for server in servers:
        if server.app.state.atlas.settings != settings:
            raise ValueError(f"settings must be the ones {server.name!r} was started with "
                             "(or None: its own)")


@interruptible
def compose_experiment(server: LiveServer, settings: Settings | None = None, *, load: Load,
                       seed: int,
                       client: ClientPolicy = _NO_POLICY, faults: Sequence[Fault] = (),
                       calibration: Calibration | None = None,
                       progress: bool = True) -> dict[str, RunResult]:
    """One ``/api/compose`` experiment in both worlds: reset the live service (faults off, fresh
    breaker and budget, random streams rewound to its seed), offer it ``load`` with the
    client policy ``client`` and the fault windows ``faults``, and simulate the same objects.
    Returns ``{"simulated": ..., "live": ...}``.

    The twin is ``compose_twin(server_config(server), ...)``: the config the service was built
    with. ``settings``, if given, must be the ones it was started with (ValueError otherwise).
    """
    _check_settings(settings, [server])
    reset(server)
    measured = run_load(server.url, path="/api/compose", load=load, client=client,
                        faults=faults, seed=seed, progress=progress)
    simulated = simulate(compose_twin(server_config(server), load=load, client=client,
                                      faults=faults, seed=seed, calibration=calibration))
    return {"simulated": simulated, "live": measured}


def dependency_latency(server: LiveServer) -> Distribution:
    """The latency of one call to ``server``'s in-process dependency when no fault is on (the
    ``dependency_latency`` it was started with): the fast calls of ``/api/fanout``."""
    latency = server.app.state.atlas.dependency.latency
    assert isinstance(latency, Distribution)
    return latency


@interruptible
def fanout_run(server: LiveServer, *, width: int, load: Load, hedge_delay: float | None = None,
               faults: Sequence[Fault] = (), seed: int = 0, timeout: float = 5.0,
               processes: int = 0, progress: bool = False) -> RunResult:
    """One ``/api/fanout?width=...`` run: reset the service, set its fan-out hedge delay
    (``PUT /admin/fanout``; None: no hedging), offer ``load`` with the fault windows ``faults``
    (``Fault(dependency_slow_rate=..., dependency_slow_latency=...)`` makes calls slow), and
    read back what the service sent: ``meta["fanout"]`` has its counts of ``requests``,
    ``calls``, ``copies``, ``hedges`` and ``cancelled`` copies (``GET /admin/fanout``).

    The client makes one attempt per request, waiting up to ``timeout`` seconds, from this
    process or split over ``processes`` child processes (``run_load``'s ``processes``).
    """
    check_real("timeout", timeout, low=0, low_open=True)
    reset(server)
    base = server.url
    httpx.put(base + "/admin/fanout", json={"hedge_delay": hedge_delay}, trust_env=False,
              timeout=10.0).raise_for_status()
    run = run_load(base, path=f"/api/fanout?width={int(width)}", load=load,
                   client=ClientPolicy(timeout=timeout), faults=faults, seed=seed,
                   processes=processes, progress=progress, server_events=False)
    counts = httpx.get(base + "/admin/fanout", trust_env=False, timeout=10.0).json()
    run.meta["fanout"] = counts
    return run


def reset(server: LiveServer, *, quiet: bool = False) -> str:
    """``POST /admin/reset``: faults off, capacity 1, a fresh breaker and budget, the random
    streams rewound to the service's seed. Returns a one-line account. With ``quiet``, a
    service that does not answer is reported in that line instead of raising (for use while
    an interrupted run is being cleaned up)."""
    try:
        httpx.post(server.url + "/admin/reset", trust_env=False,
                   timeout=10.0).raise_for_status()
    except httpx.HTTPError as exc:
        if not quiet:
            raise
        return f"the service {server.name!r} could not be reset ({exc!r})"
    return (f"the service {server.name!r} was reset: faults off, breaker closed, "
            "random streams rewound")


def retry_table(runs: Mapping[str, RunResult], *, error_rate: float, client: ClientPolicy,
                confidence: float = 0.95) -> pd.DataFrame:
    """Notebook 01's live retry experiment beside theory: per world, the requests that failed
    (%) with their Wilson interval (binomial sampling error: one run is one sample), and the
    attempts per request; theory's for the same client policy (``client``: its retry's
    ``max_attempts`` and its budget; ``analysis.retries.retry_theory``: ``error_rate **
    attempts`` failures and ``1 + p + ... + p**(attempts - 1)`` attempts without a budget or
    with one that stays full, and a budget that empties after its first requests otherwise).

    Where the closed form does not cover the policy (a budget near its balance point, a client
    breaker), the theory row is empty. ``table.attrs["theory"]`` says which case applied, and
    ``table.attrs["theory_covered"]`` whether theory covers the policy (``theory_verdict``
    reads both)."""
    check_real("error_rate", error_rate, low=0, high=1)
    if not isinstance(client, ClientPolicy):
        raise ValueError(f"client must be a ClientPolicy, got {client!r}")
    level = f"{confidence:.0%}"
    attempts = client.retry.max_attempts if client.retry is not None else 1
    sent = max((len(run.requests) for run in runs.values()), default=0)
    theory = retry_theory(error_rate, max_attempts=attempts, budget=client.budget,
                          requests=sent or None)
    if client.breaker is not None:
        theory = RetryTheory(np.nan, np.nan, False, "a client circuit breaker stops attempts "
                             "by the recent failure rate: the closed form does not cover it")
    rows = {}
    for name, run in runs.items():
        failed, n = int((~run.requests["ok"]).sum()), len(run.requests)
        low, high = proportion_interval(failed, n, confidence)
        rows[name] = {"requests": n, "failed": failed, "errors (%)": 100 * failed / n,
                      f"{level} interval, low (%)": 100 * low,
                      f"{level} interval, high (%)": 100 * high,
                      "attempts per request": run.summary()["amplification"]}
    rows["theory"] = {"errors (%)": 100 * theory.failed,
                      "attempts per request": theory.attempts}
    table = pd.DataFrame(rows).T.rename_axis("run").round(2)
    table = table.astype({"requests": "Int64", "failed": "Int64"})
    table.attrs.update(theory=theory.note, theory_covered=theory.covered)
    return table


def theory_verdict(table: pd.DataFrame, run: str = "live") -> str:
    """One sentence: does theory's error rate lie inside ``run``'s interval in ``table``
    (from ``retry_table``)? Outside happens by chance in about one run in twenty. Where theory
    does not cover the table's policy (``table.attrs["theory_covered"]`` False), it says so
    and compares nothing with theory, so that chance is never blamed for a missing model."""
    low_col = next(c for c in table.columns if str(c).endswith("interval, low (%)"))
    high_col = low_col.replace("low", "high")
    note = table.attrs.get("theory", "")
    if not table.attrs.get("theory_covered", True):
        return (f"theory does not cover this policy ({note}); the theory row is empty: "
                f"compare the simulated and {run} runs with each other instead")
    theory = float(table["errors (%)"].to_dict()["theory"])
    row = table.loc[run].to_dict()
    low, high = float(row[low_col]), float(row[high_col])
    level = low_col.split(" ")[0]
    where = "inside" if low <= theory <= high else "outside"
    tail = ("the two agree within sampling error" if where == "inside" else
            "a disagreement that chance alone gives about one run in twenty; run it again "
            "with another seed before suspecting the service")
    said = f"theory's {theory:.2f}%" + (f" ({note})" if note else "")
    return (f"{said} lies {where} the {run} run's {level} interval [{low:.2f}%, {high:.2f}%]: "
            f"{tail}")


@interruptible
def idempotency_table(server: LiveServer, *, requests: int = 20, work: float = 0.1,
                      timeout: float = 0.05, attempts: int = 4,
                      seed: int = 0) -> pd.DataFrame:
    """A retried write, live, without and with ``Idempotency-Key``: ``requests`` orders
    (``POST /api/orders``), each ``work`` seconds of work, sent by a client that gives up
    after ``timeout`` s and tries up to ``attempts`` times (retrying 599 and 409). One row
    per way: requests, requests answered ok, attempts sent, orders the service applied
    (counted once the work of abandoned attempts has finished). The service is reset
    before each."""
    policy = ClientPolicy(timeout=timeout, retry=RetryPolicy(
        max_attempts=attempts, retry_on=frozenset({409, 599}),
        backoff=Backoff(base=timeout, cap=timeout, jitter="none")))
    rows = {}
    for keys in (False, True):
        reset(server)
        run = run_load(server.url, path=f"/api/orders?service_time={work}", method="POST",
                       load=Load(rate=10.0, requests=requests), client=policy, seed=seed,
                       idempotency_keys=keys, progress=False, server_events=False)
        rows["with Idempotency-Key" if keys else "without a key"] = {
            "requests": requests, "answered ok": int(run.requests["ok"].sum()),
            "attempts": len(run.attempts), "orders applied": _settled_orders(server)}
    return pd.DataFrame(rows).T.rename_axis("client")


def _settled_orders(server: LiveServer, *, within: float = 10.0) -> int:
    """``/admin/orders``'s count once it stops changing (abandoned attempts still work)."""
    last, deadline = -1, time.monotonic() + within
    with httpx.Client(base_url=server.url, trust_env=False, timeout=5.0) as client:
        while time.monotonic() < deadline:
            applied = int(client.get("/admin/orders").json()["applied"])
            if applied == last:
                break
            last = applied
            time.sleep(0.3)
    return last


#: ``generator_note``'s limit (seconds) for the p99 of the client's waits when no scale is known.
GENERATOR_TOLERANCE = 0.005


def generator_note(run: RunResult, *, tolerance: float = GENERATOR_TOLERANCE,
                   scale: float | None = None) -> str:
    """Whether the load generator sent its requests on time in a live run, in one sentence.

    An open-loop generator must send each request at its scheduled time. A request can wait
    inside the client before it leaves: for its task to start (the send lag: a busy machine,
    two processes sharing two cores) and then for a connection (a pool of ``max_connections``
    all busy, as with ``max_connections=1`` against a slow route) and for connecting. The
    latencies, timed from the schedule, then include that wait, which is the client's, not the
    service's.

    The verdict is ``analysis.health.measurement_health``'s, on the same figures
    (``analysis.health.client_waits``) and limits, read for the client alone: the generator is
    on schedule when no client figure (send lag mean and p99, client wait p99) is over its
    limit, and behind schedule otherwise, with where the requests waited (``Health.waited``:
    the send lag, else the wait for a free connection, else after they started). So a run this
    calls behind schedule is one ``measurement_health`` at the same ``scale`` calls spoiled.

    Args:
        run: a live ``RunResult`` (``run_load``'s; its ``meta["send_lag"]`` at least).
        scale: the measurement's scale (seconds, > 0), as given to ``measurement_health``:
            the limits are its shares (``analysis.health.LIMITS``).
        tolerance: when no ``scale`` is given, the limit (seconds, > 0; default 5 ms) of the
            p99 of the send lag and of the client wait (the scale is then ``tolerance`` /
            ``LIMITS["client wait p99"]``, and the mean send lag's limit a fifth of
            ``tolerance``). An absolute default, because a note printed beside any live run
            has no scale of its own to judge by: 5 ms is several times an idle machine's
            p99 (1-2 ms) and small beside the tens of milliseconds the notebooks' runs
            measure; pass ``scale`` where the measurement has one.

    Raises ValueError for a run without the send lag (a simulated one), a ``tolerance`` or
    ``scale`` that is not > 0.
    """
    tolerance = check_real("tolerance", tolerance, low=0.0, low_open=True)
    if scale is None:
        scale = tolerance / LIMITS["client wait p99"]
    if not isinstance(run, RunResult) or "send lag" not in (waits := client_waits(run)):
        raise ValueError("generator_note needs a live run (a RunResult with meta['send_lag'])")
    health = measurement_health(run, scale=scale)
    note = f"load generator ({run.meta.get('generator', '?')}): "
    note += _p50_p99("send lag", waits["send lag"])
    if "client wait" in waits:
        note += "; " + _p50_p99("wait before leaving the client", waits["client wait"])
    if not health.behind_schedule:
        return f"{note}, on schedule"
    return f"{note}, behind schedule: {health.waited}"


def _p50_p99(name: str, values: np.ndarray) -> str:
    if not values.size:
        return f"{name}: none measured"
    p50, p99 = np.percentile(values, [50, 99])
    return f"{name} p50 {1e3 * p50:.1f} ms, p99 {1e3 * p99:.1f} ms"


def transition_table(runs: Mapping[str, RunResult], *, name: str = "dependency") -> pd.DataFrame:
    """The breaker ``name``'s transitions in each run, side by side: the new state and when
    (seconds of the run), one row per transition, and how far live is from simulated."""
    columns = {}
    for label, run in runs.items():
        events = run.events[(run.events["kind"] == "breaker") & (run.events["name"] == name)]
        columns[(label, "state")] = events["detail"].reset_index(drop=True)
        columns[(label, "time")] = events["time"].reset_index(drop=True).round(3)
    table = pd.DataFrame(columns)
    if {"simulated", "live"} <= set(runs):
        table[("live - simulated", "seconds")] = (
            table[("live", "time")] - table[("simulated", "time")]).round(3)
    return table.rename_axis("transition")


# -- one fault on every instance, and one per attempt -----------------------------------------

def start_instances(server: LiveServer, count: int = 2) -> list[LiveServer]:
    """Start ``count`` (1..8) more instances of ``server``'s service in this kernel: the same
    settings and ``ServerConfig`` and seed, each on its own port with its own random streams:
    instance ``k`` (``server`` being instance ``i``, the others ``i + 1``, ``i + 2``, ...) is
    ``create_app(..., instance=k)``, drawing ``rng_streams(seed, instance=k)``, as instance
    ``k`` of ``Scenario(server=..., instances=n)`` does (and ``service.Cluster``'s). Named
    ``"<name>-2"``, ``"<name>-3"``, ...: running the cell again replaces them. Returns the new
    instances only; stop each when done."""
    check_int("count", count, low=1, high=8)
    state = server.app.state.atlas
    started: list[LiveServer] = []
    try:
        for j in range(count):
            app = create_app(state.settings, server=state.server, seed=state.seed,
                             instance=state.instance + j + 1)
            started.append(LiveServer(app, name=f"{server.name}-{j + 2}").start())
    except BaseException:
        for other in started:
            other.stop()
        raise
    return started


class _CrashCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += '"unhandled_exception"' in record.getMessage()


@contextlib.contextmanager
def _crash_log() -> Iterator[_CrashCounter]:
    """Count the service's crash log lines (``ErrorHandlingMiddleware``) meanwhile; they go
    nowhere else (a notebook would print each traceback)."""
    log = logging.getLogger("atlas.service")
    counter, propagate = _CrashCounter(), log.propagate
    log.addHandler(counter)
    log.propagate = False
    try:
        yield counter
    finally:
        log.removeHandler(counter)
        log.propagate = propagate


_SHARED_FAULT_LOAD = Load(rate=200.0, duration=1.5)


@interruptible
def shared_fault_experiment(
    instances: Sequence[LiveServer], settings: Settings | None = None, *, seed: int,
    load: Load = _SHARED_FAULT_LOAD, error_rate: float = 0.2, bad_input_rate: float = 0.05,
    attempts: int = 3, progress: bool = False,
) -> dict[str, dict[str, RunResult]]:
    """Two faults, each in both worlds, against a client that retries on the next instance:

    * ``"independent"``: every dependency call fails with probability ``error_rate``, a new
      coin each time (``Fault(dependency_error_rate=...)``), as a flaky disk or link would;
    * ``"shared"``: the handler crashes on the ``bad_input_rate`` share of inputs, on every
      instance (``Fault(bad_input_rate=...)``): the same code with the same bug runs on all.

    ``instances`` (at least two, e.g. ``[server, *start_instances(server)]``, or a
    ``service.Cluster``'s ``servers``) are reset, then get ``load`` on ``/api/compose`` from one
    client (``attempts`` attempts, 10 ms backoff; ``NextInstance()``: attempt ``k`` of request
    ``i`` goes to instance ``(i + k - 1) % n``). The simulated twin is ``compose_twin`` of the
    instances' own configs, one simulated instance per live one, each with its own limiter,
    dependency client (breaker and budget) and streams, as live. ``settings``, if given, must
    be the ones they were started with. Each live run's ``meta["crash_log_lines"]`` counts the
    crashes the instances logged.
    Returns ``{fault: {"simulated": RunResult, "live": RunResult}}``.
    """
    if len(instances) < 2:
        raise ValueError(f"instances must hold at least 2 servers, got {len(instances)}")
    check_real("error_rate", error_rate, low=0, high=1)
    check_real("bad_input_rate", bad_input_rate, low=0, high=1)
    check_int("attempts", attempts, low=1, high=10)
    _check_settings(settings, instances)
    configs = tuple(server_config(instance) for instance in instances)
    client = ClientPolicy(timeout=2.0, retry=RetryPolicy(
        max_attempts=attempts, backoff=Backoff(base=0.01, cap=0.1, jitter="full")))
    faults = {"independent": Fault(start=0.0, dependency_error_rate=error_rate,
                                   name="independent"),
              "shared": Fault(start=0.0, bad_input_rate=bad_input_rate, name="bad input")}
    runs: dict[str, dict[str, RunResult]] = {}
    for kind, fault in faults.items():
        for instance in instances:
            reset(instance)
        with _crash_log() as crashes:
            measured = run_load(instances[0].url, instances=[i.url for i in instances[1:]],
                                path="/api/compose", load=load, client=client, faults=[fault],
                                seed=seed, progress=progress)
        measured.meta["crash_log_lines"] = crashes.count
        simulated = simulate(Scenario(server=configs, path="/api/compose", load=load,
                                      client=client, faults=(fault,), seed=seed))
        runs[kind] = {"simulated": simulated, "live": measured}
    return runs


def shared_fault_table(runs: Mapping[str, Mapping[str, RunResult]], *, error_rate: float,
                       bad_input_rate: float, attempts: int) -> pd.DataFrame:
    """``shared_fault_experiment``'s runs beside theory, a row per fault and world: the share
    of first attempts that failed, of requests that failed after every attempt, attempts per
    request, and the crash log lines (live).

    Theory: an independent fault fails a first attempt with probability p and a request with
    p**k, at 1 + p + ... + p**(k-1) attempts per request; a shared one fails both with
    probability q, at 1 + (k - 1) q attempts per request.
    """
    p, q, k = error_rate, bad_input_rate, attempts
    theory = {"independent": (p, p ** k, sum(p ** j for j in range(k))),
              "shared": (q, q, 1 + (k - 1) * q)}
    rows = {}
    for kind, worlds in runs.items():
        first, failed, per = theory[kind]
        rows[(kind, "theory")] = {"first attempts failed (%)": 100 * first,
                                  "requests failed (%)": 100 * failed,
                                  "attempts per request": per, "crash log lines": "-"}
        for world, run in worlds.items():
            requests, tries = run.requests, run.attempts
            firsts = tries[tries["attempt"] == 1]
            rows[(kind, world)] = {
                "first attempts failed (%)": 100 * float((firsts["status"] != 200).mean()),
                "requests failed (%)": 100 * float((~requests["ok"]).mean()),
                "attempts per request": len(tries) / len(requests),
                "crash log lines": run.meta.get("crash_log_lines", "-")}
    table = pd.DataFrame.from_dict(rows, orient="index").round(2)
    table.index.names = ["fault", "world"]
    return table
