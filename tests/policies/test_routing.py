"""The routing seam: NextInstance (request i, attempt k -> instance (i + k - 1) mod n), asked
through GuardedCall.route, and ClientPolicy's routing field."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_sim.policies import Backoff, ClientPolicy, NextInstance, RetryPolicy

NO_JITTER = Backoff(base=0.1, jitter="none")


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_next_instance_is_request_plus_attempt_minus_one_mod_n(n):
    router = NextInstance().build(np.random.default_rng(0))
    for request in range(7):
        for attempt in range(1, 5):
            chosen = router.choose(request=request, attempt=attempt, outstanding=[0] * n)
            assert chosen == (request + attempt - 1) % n
    # it reads no outstanding counts and draws nothing
    assert router.choose(request=4, attempt=1, outstanding=[9, 0, 9]) == 1
    assert NextInstance().build(None).choose(request=4, attempt=1, outstanding=[0, 0, 0]) == 1


def test_the_default_routing_is_next_instance():
    assert ClientPolicy().routing == NextInstance()


def _guard(policy):
    return policy.guard(clock=lambda: 0.0, rng=np.random.default_rng(0),
                        routing_rng=np.random.default_rng(1))


def test_with_one_instance_every_attempt_goes_to_instance_zero():
    guard = _guard(ClientPolicy(retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER)))
    for request in range(4):
        call = guard.call(request=request)
        routes = []
        while call.before_attempt():
            routes.append(call.route([0]))
            if call.after_attempt(503) is None:
                break
        assert routes == [0, 0, 0]


def test_with_three_instances_a_retry_goes_to_the_next_one():
    guard = _guard(ClientPolicy(retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER)))
    seen = {}
    for request in range(4):
        call = guard.call(request=request)
        assert call.request == request
        routes = []
        while call.before_attempt():
            routes.append(call.route([0, 0, 0]))
            if call.after_attempt(503) is None:
                break
        seen[request] = routes
    assert seen == {0: [0, 1, 2], 1: [1, 2, 0], 2: [2, 0, 1], 3: [0, 1, 2]}


def test_the_action_driver_routes_each_send_the_same_way():
    guard = _guard(ClientPolicy(retry=RetryPolicy(max_attempts=2, backoff=NO_JITTER)))
    call = guard.call(request=1)
    (send,) = call.start()
    assert send.copy == 1 and call.route([0, 0, 0]) == 1
    (wait,) = call.on_answer(1, 503)
    (send,) = call.on_timer(wait)
    assert send.copy == 2 and call.route([0, 0, 0]) == 2


@pytest.mark.parametrize("bad", [None, "next", 3, NextInstance])
def test_a_routing_that_is_not_a_config_is_refused(bad):
    with pytest.raises(ValueError, match="routing must be a routing config such as "
                                         r"NextInstance\(\)"):
        ClientPolicy(routing=bad)
