"""The live generator's steps without a socket: which instance each attempt goes to, and the
client's count of attempts in flight per instance."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from atlas_sim.policies import Backoff, ClientPolicy, RetryPolicy
from atlas_sim.service.loadgen import driver


def test_each_attempt_is_routed_by_the_rule_and_counted_in_flight_on_its_instance():
    base = "http://127.0.0.1:9"
    job = driver.Job(
        target=base + "/a", instance_targets=(base + "/b", base + "/c"), method="GET",
        headers={}, times=np.zeros(3), seed=0, max_connections=1, drain_timeout=5.0,
        progress=False, warm_up_url=None,
        client=ClientPolicy(retry=RetryPolicy(max_attempts=2,
                                              backoff=Backoff(base=0.001, cap=0.001))))
    seen: list[tuple[float, int, str, int]] = []

    class Recorded(driver.LoadGenerator):  # the exchange stubbed: /a answers 503, others 200
        async def _exchange(self, pool, target, extra):
            rec = driver._IN_FLIGHT.get()
            own = self.outstanding[self.targets.index(target)]
            seen.append((rec.scheduled, rec.attempts, target.rsplit("/", 1)[1], own))
            await asyncio.sleep(0.01)
            return (503 if target.endswith("/a") else 200), math.nan, math.nan, math.nan, None

    async def go() -> tuple[driver.Run, list[int]]:
        generator = Recorded(job)
        return await generator.run(), generator.outstanding

    run, outstanding = asyncio.run(go())
    routes = sorted((attempt, name) for _, attempt, name, _ in seen)
    assert routes == [(1, "a"), (1, "b"), (1, "c"), (2, "b")]  # request 0's retry: the next
    assert all(own >= 1 for *_, own in seen)  # each attempt counted while it is in flight
    assert outstanding == [0, 0, 0]  # and no longer once it has ended
    assert [[row[3] for row in rec.rows] for rec in run.records] == [[503, 200], [200], [200]]
    # each row names its instance (the last field): request 0 went to a then b
    assert [[row[-1] for row in rec.rows] for rec in run.records] == [[0, 1], [1], [2]]


def test_the_client_policys_router_decides_and_sees_the_outstanding_attempts():
    """A test-local router: every attempt to the instance with the fewest in flight (ties:
    the highest index). The driver asks it, not a rule of its own."""
    from dataclasses import dataclass

    asked: list[tuple[int, int, tuple[int, ...]]] = []

    class Fewest:
        def choose(self, *, request, attempt, outstanding):
            asked.append((request, attempt, tuple(outstanding)))
            low = min(outstanding)
            return max(k for k, n in enumerate(outstanding) if n == low)

    @dataclass(frozen=True)
    class FewestConfig:
        def build(self, rng):
            assert isinstance(rng, np.random.Generator)  # the "routing" stream
            return Fewest()

    base = "http://127.0.0.1:9"
    job = driver.Job(
        target=base + "/a", instance_targets=(base + "/b", base + "/c"), method="GET",
        headers={}, times=np.zeros(2), seed=0, max_connections=4, drain_timeout=5.0,
        progress=False, warm_up_url=None, client=ClientPolicy(routing=FewestConfig()))

    class Stub(driver.LoadGenerator):
        async def _exchange(self, pool, target, extra):
            await asyncio.sleep(0.05)
            return 200, math.nan, math.nan, math.nan, None

    async def go() -> driver.Run:
        return await Stub(job).run()

    run = asyncio.run(go())
    assert asked == [(0, 1, (0, 0, 0)), (1, 1, (0, 0, 1))]
    assert [rec.rows[0][-1] for rec in run.records] == [2, 1]
