"""The contention experiment of the AWS Architecture Blog post "Exponential Backoff and Jitter".

``clients`` clients each want to update one shared record once, with optimistic concurrency
control: read the record's version, then write "if the version is still what I read". When two
clients race, one wins and the other's write is refused (409 Conflict); the loser backs off and
tries again (read, then conditional write). Every message crosses a network whose delay is
``|Normal(10 ms, 2 ms)|``, as in the post's simulator.

The post measures two things per backoff strategy: **work**, the number of write calls the
server had to handle, and **completion time**, when the last client succeeded. Without backoff
the clients keep colliding; plain exponential backoff keeps them colliding *in step* (everyone
who failed together waits the same and comes back together); jitter spreads them out, and full
jitter does the least work.

Its physics differ from the request-path model (no queue, a shared version number), so it is a
small SimPy model of its own; it still returns a ``RunResult`` (one request per client, one
attempt per write call, status 200 or 409), so the usual tables and plots work on it.

It reproduces the post's simulator (``aws-samples/aws-arch-backoff-simulator``,
``src/backoff_simulator.py``) including one detail that moves its numbers: the simulator's
client counts the failed attempt before it backs off (``self.attempt += 1``, then
``backoff(self.attempt)``), so its first wait has the ceiling ``base * 2**1``, not ``base``:
10, 20, 40 ms ... with the post's 5 ms. ``first_exponent=1`` does the same; with
``first_exponent=0`` (the ceilings of ``Backoff`` elsewhere in Atlas, starting at ``base``) full
jitter does about 10% more work at 100 clients (876 write calls instead of 796), equal jitter
about 9% more, and plain exponential backoff finishes about 2 s sooner. Decorrelated jitter
does not use the count (it starts from ``base`` and grows by its own factor), and no backoff
has no wait, so neither depends on it. ``tests/reference/contention_aws.csv`` holds the
simulator's own means, and a test compares these runs with them.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Iterator
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import simpy

from ..policies import Backoff
from ..results import RunResult
from ..validation import check_choice, check_int, check_real
from ..workload import rng_streams

__all__ = ["CONTENTION_STRATEGIES", "ContentionStrategy", "compare_contention", "contention"]

ContentionStrategy = Literal["no_backoff", "none", "equal", "full", "decorrelated"]
#: "no_backoff" retries at once; the others are ``Backoff`` jitter strategies ("none" is plain
#: exponential backoff without jitter).
CONTENTION_STRATEGIES: tuple[str, ...] = get_args(ContentionStrategy)
_CONFLICT = 409


def contention(
    clients: int = 100,
    jitter: ContentionStrategy = "full",
    seed: int = 0,
    *,
    base: float = 0.005,
    cap: float = 2.0,
    network_mean: float = 0.010,
    network_sd: float = 0.002,
    first_exponent: int = 1,
) -> RunResult:
    """Run the experiment once. ``meta`` holds ``work`` (write calls) and ``completion_time``.

    ``base`` and ``cap`` default to the post's 5 ms and 2 s; the backoff doubles per retry. The
    first wait's ceiling is ``base * 2**first_exponent``: 1, as in the post's simulator (see the
    module docstring).
    """
    record = _run(clients, jitter, seed, base=base, cap=cap, network_mean=network_mean,
                  network_sd=network_sd, first_exponent=first_exponent)
    finished = max(record.done.values())
    requests = {
        "request_id": np.arange(clients),
        "t_start": np.zeros(clients),
        "t_end": np.array([record.done[c] for c in range(clients)]),
        "attempts": np.array([record.writes[c] for c in range(clients)]),
        "status": np.full(clients, 200),
        "ok": np.ones(clients, dtype=bool),
    }
    requests["latency"] = requests["t_end"]
    columns = list(zip(*record.calls, strict=True))
    attempts: dict[str, Any] = dict(zip(
        ("request_id", "attempt", "t_start", "t_end", "latency", "status", "queue_wait"),
        columns, strict=True))
    attempts["instance"] = np.zeros(len(record.calls), dtype=np.int64)  # one shared resource
    return RunResult.from_columns(
        requests=requests, attempts=attempts, duration=finished, source="sim",
        meta={"model": "contention", "clients": clients, "jitter": jitter, "seed": seed,
              "work": len(record.calls), "completion_time": finished},
    )


def compare_contention(clients: int = 100, seeds: Iterable[int] = range(10),
                       strategies: Iterable[str] = CONTENTION_STRATEGIES, *,
                       first_exponent: int = 1) -> pd.DataFrame:
    """Mean work and completion time per strategy over several seeds (the post's figures).

    The same runs as ``contention``, without building their tables: only two numbers each.
    """
    seeds = list(seeds)
    rows = []
    for strategy in strategies:
        for seed in seeds:
            record = _run(clients, strategy, seed,  # type: ignore[arg-type]
                          first_exponent=first_exponent)
            rows.append((strategy, seed, len(record.calls), max(record.done.values())))
    table = pd.DataFrame(rows, columns=["strategy", "seed", "work", "completion_time"])
    return (table.groupby("strategy", sort=False)[["work", "completion_time"]].mean()
            .rename_axis("strategy"))


def _run(clients: int, jitter: ContentionStrategy, seed: int, *, base: float = 0.005,
         cap: float = 2.0, network_mean: float = 0.010, network_sd: float = 0.002,
         first_exponent: int = 1) -> _Record:
    check_int("clients", clients, low=1, high=10_000)
    check_choice("jitter", jitter, CONTENTION_STRATEGIES)
    check_real("network_mean", network_mean, low=0)
    check_real("network_sd", network_sd, low=0)
    check_int("first_exponent", first_exponent, low=0, high=10)
    backoff = _backoff(jitter, base, cap, first_exponent)
    streams = rng_streams(seed)
    network = _network(streams["server"], network_mean, network_sd)
    env = simpy.Environment()
    record = _Record()
    for client in range(clients):
        delays = backoff.delays(streams["client"]) if backoff else None
        env.process(_client(env, client, record, network, delays))
    env.run()
    return record


def _backoff(jitter: ContentionStrategy, base: float, cap: float,
             first_exponent: int) -> Backoff | None:
    """The waits of one client: ceilings ``min(cap, base * 2**n)`` for n = ``first_exponent``,
    ``first_exponent + 1``, ... (decorrelated jitter starts from ``base`` whatever the count,
    as in the post's simulator)."""
    if jitter == "no_backoff":
        return None
    if jitter == "decorrelated":
        return Backoff(base=base, cap=cap, jitter=jitter)
    first = Backoff(base=base, cap=cap, jitter="none").ceiling(first_exponent)
    return Backoff(base=first, cap=cap, jitter=jitter)


class _Record:
    """The shared record and what happened to it. Its version changes at each commit, so "is
    the version still what this client read?" is "was there no commit since the read reached
    the server?": the time of the last commit is all the state it needs."""

    def __init__(self) -> None:
        self.last_commit = -math.inf
        self.calls: list[tuple] = []  # one row per write call
        self.writes: dict[int, int] = {}
        self.done: dict[int, float] = {}


def _network(rng: np.random.Generator, mean: float, sd: float) -> Iterator[float]:
    while True:
        yield from np.abs(rng.normal(mean, sd, 4096)).tolist()


def _client(env: simpy.Environment, client: int, record: _Record, network: Iterator[float],
            delays: Iterator[float] | None) -> Generator[simpy.Event, Any, None]:
    """Read the version, write if unchanged; on conflict back off and start over.

    Only the write's arrival at the server needs the event queue (commits must happen in time
    order); the other legs of the trip are sums of network delays: one event per attempt.
    """
    writes, start = 0, 0.0  # start: when this attempt's read leaves the client
    while True:
        read_at = start + next(network)  # the read reaches the server
        sent = read_at + next(network)  # its answer is back: the conditional write leaves
        yield env.timeout(sent + next(network) - env.now)  # the write reaches the server
        writes += 1
        ok = record.last_commit <= read_at  # nobody committed since our read
        if ok:
            record.last_commit = env.now
        answered = env.now + next(network)  # the answer travels back
        record.calls.append((client, writes, sent, answered, answered - sent,
                             200 if ok else _CONFLICT, np.nan))
        if ok:
            record.writes[client] = writes
            record.done[client] = answered
            return
        start = answered + (next(delays) if delays is not None else 0.0)
