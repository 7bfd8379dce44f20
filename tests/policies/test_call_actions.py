"""The guarded call's actions (Send, Wait, Cancel, Done): what each returns, that a stale timer or
a late answer gets nothing, and that a driver of the actions takes exactly the decisions of a
driver of the step-by-step methods (before_attempt, after_attempt, hedge_delay, before_hedge),
leaving the breaker and the budget in the same state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_sim.clocks import ManualClock
from atlas_sim.policies import (
    Backoff,
    BreakerConfig,
    BreakerState,
    BudgetConfig,
    Cancel,
    ClientPolicy,
    Done,
    HedgePolicy,
    RetryPolicy,
    Send,
    Wait,
)

NO_JITTER = Backoff(base=0.1, multiplier=2.0, cap=10.0, jitter="none")


def guard_for(policy: ClientPolicy, clock=None, seed: int = 0):
    return policy.guard(clock=clock or ManualClock(), rng=np.random.default_rng(seed))


# -- what each action method returns ---------------------------------------------------------

def test_a_plain_call_sends_once_and_is_done_with_the_answer():
    call = guard_for(ClientPolicy()).call()
    assert call.start() == (Send(1),)
    assert call.on_answer(1, 503) == (Done(503),)
    assert call.status == 503 and call.attempts == 1


def test_a_retry_is_a_wait_for_the_backoff_then_a_send():
    call = guard_for(ClientPolicy(retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER))).call()
    assert call.start() == (Send(1),)
    (wait,) = call.on_answer(1, 503)
    assert isinstance(wait, Wait) and wait.seconds == pytest.approx(0.1)
    assert call.on_timer(wait) == (Send(2),)
    assert call.on_timer(wait) == ()  # a timer fires once
    (wait,) = call.on_answer(2, 503)
    assert wait.seconds == pytest.approx(0.2)
    assert call.on_timer(wait) == (Send(3),)
    assert call.on_answer(3, 200) == (Done(200),)


def test_a_retry_honours_retry_after_in_its_wait():
    policy = ClientPolicy(retry=RetryPolicy(max_attempts=2, backoff=NO_JITTER,
                                            honor_retry_after=True))
    call = guard_for(policy).call()
    call.start()
    (wait,) = call.on_answer(1, 429, retry_after=2.0)
    assert wait.seconds == 2.0


def test_a_refused_call_is_done_597_and_sends_nothing():
    policy = ClientPolicy(breaker=BreakerConfig(failure_threshold=1, recovery_timeout=60))
    g = guard_for(policy)
    first = g.call()
    first.start()
    first.on_answer(1, 503)  # opens the breaker
    assert g.call().start() == (Done(597),)


def test_a_retry_the_breaker_refuses_when_its_wait_ends_is_done_597():
    policy = ClientPolicy(retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER),
                          breaker=BreakerConfig(failure_threshold=1, recovery_timeout=60))
    call = guard_for(policy).call()
    call.start()
    (wait,) = call.on_answer(1, 503)
    assert call.on_timer(wait) == (Done(597),)


def test_a_hedged_call_sends_a_copy_when_its_timer_fires_and_cancels_the_loser():
    call = guard_for(ClientPolicy(hedge=HedgePolicy(delay=0.05))).call()
    send, wait = call.start()
    assert send == Send(1) and wait.seconds == 0.05
    assert call.on_timer(wait) == (Send(2),)  # max_extra=1: no further timer
    assert call.on_answer(2, 200) == (Cancel((1,)), Done(200))
    assert call.winner == 2
    assert call.on_answer(1, 200) == ()  # the loser's late answer counts for nothing


def test_a_hedged_call_that_answers_first_sends_one_copy_and_its_timer_is_stale():
    call = guard_for(ClientPolicy(hedge=HedgePolicy(delay=0.05))).call()
    _, wait = call.start()
    assert call.on_answer(1, 200) == (Done(200),)
    assert call.on_timer(wait) == ()
    assert call.attempts == 1


def test_a_non_fatal_failure_sends_the_next_copy_at_once_and_the_old_timer_goes_stale():
    call = guard_for(ClientPolicy(hedge=HedgePolicy(delay=0.05, max_extra=2))).call()
    _, first_timer = call.start()
    send, second_timer = call.on_answer(1, 503)
    assert send == Send(2) and second_timer.seconds == 0.05
    assert call.on_timer(first_timer) == ()  # replaced by the later Wait
    assert call.on_timer(second_timer) == (Send(3),)
    assert call.on_answer(3, 404) == (Cancel((2,)), Done(404))  # fatal: ends the call


def test_a_hedge_the_budget_refuses_stops_hedging_and_the_last_failure_ends_596():
    policy = ClientPolicy(hedge=HedgePolicy(delay=0.05), budget=BudgetConfig(max_tokens=4))
    g = guard_for(policy)
    g.budget._milli = 2000  # exactly half: no hedge
    call = g.call()
    _, wait = call.start()
    assert call.on_timer(wait) == ()  # refused; copy 1 is still out
    assert call.on_answer(1, 503) == (Done(596),)


def test_answers_from_attempts_not_in_flight_are_ignored():
    call = guard_for(ClientPolicy(retry=RetryPolicy(max_attempts=3, backoff=NO_JITTER))).call()
    call.start()
    assert call.on_answer(2, 200) == ()  # never sent
    (wait,) = call.on_answer(1, 503)
    assert call.on_answer(1, 200) == ()  # answered already
    assert call.on_timer(wait) == (Send(2),)
    assert call.on_answer(2, 200) == (Done(200),)
    assert call.on_answer(2, 200) == ()


def test_after_abandon_the_call_ignores_what_follows():
    policy = ClientPolicy(hedge=HedgePolicy(delay=0.05), breaker=BreakerConfig(failure_threshold=3))
    g = guard_for(policy)
    call = g.call()
    _, wait = call.start()
    call.on_timer(wait)
    call.abandon()  # both copies out are client timeouts: two breaker failures of three
    assert call.status == 599
    assert call.on_answer(1, 503) == () and call.on_timer(wait) == ()
    assert g.breaker.state is BreakerState.CLOSED  # the late 503 was not a third failure


def test_a_call_starts_once():
    call = guard_for(ClientPolicy()).call()
    call.start()
    with pytest.raises(RuntimeError, match="started already"):
        call.start()


# -- the actions take the step-by-step methods' decisions ------------------------------------

STATUSES = (200, 404, 429, 503, 599)


def _state(g):
    breaker = g.breaker
    budget = g.budget
    return ((breaker.state, breaker.generation, breaker.probes_in_flight, breaker.failure_rate)
            if breaker is not None else None,
            budget.tokens if budget is not None else None)


class StepDriver:
    """The hand-kept-timers driver the module docstring used to describe."""

    def __init__(self, call):
        self.call = call
        self.log: list[tuple] = []
        self.out: list[int] = []
        self.armed: int | None = None  # copies out when the hedge timer was armed
        self.retry_pending = False

    def _send(self):
        call = self.call
        self.out.append(call.attempts)
        self.log.append(("send", call.attempts))
        delay = call.hedge_delay()
        self.armed = None if delay is None else call.attempts
        if delay is not None:
            self.log.append(("wait", delay))

    def _finish(self):
        call = self.call
        if call.done:
            if call.cancelled:
                self.log.append(("cancel", call.cancelled))
            self.log.append(("done", call.status))

    def start(self):
        if self.call.before_attempt():
            self._send()
        else:
            self._finish()

    def timer(self):
        call = self.call
        if self.retry_pending:
            self.retry_pending = False
            if call.before_attempt():
                self._send()
            self._finish()
        elif self.armed is not None:
            sent, self.armed = self.armed, None
            if call.before_hedge(sent):
                self._send()
            self._finish()

    def answer(self, copy, status, retry_after):
        call = self.call
        self.out.remove(copy)
        if call._hedge is None:
            delay = call.after_attempt(status, retry_after=retry_after)
            if delay is not None:
                self.retry_pending = True
                self.log.append(("wait", delay))
        elif (call.after_attempt(status, attempt=copy) == 0.0
              and call.before_hedge(call.attempts)):
            self._send()
        self._finish()


class ActionDriver:
    """The action loop of the module docstring."""

    def __init__(self, call):
        self.call = call
        self.log: list[tuple] = []
        self.out: list[int] = []
        self.wait: Wait | None = None

    def perform(self, actions):
        for action in actions:
            if isinstance(action, Send):
                self.out.append(action.copy)
                self.log.append(("send", action.copy))
            elif isinstance(action, Wait):
                self.wait = action
                self.log.append(("wait", action.seconds))
            elif isinstance(action, Cancel):
                self.log.append(("cancel", action.copies))
            else:
                self.log.append(("done", action.status))

    def start(self):
        self.perform(self.call.start())

    def timer(self):
        if self.wait is not None:
            wait, self.wait = self.wait, None
            self.perform(self.call.on_timer(wait))

    def answer(self, copy, status, retry_after):
        self.out.remove(copy)
        self.perform(self.call.on_answer(copy, status, retry_after=retry_after))


@st.composite
def policies(draw):
    budget = draw(st.none() | st.builds(BudgetConfig, max_tokens=st.integers(2, 6),
                                        token_ratio=st.sampled_from([0.1, 0.5, 1.0])))
    breaker = draw(st.none() | st.builds(BreakerConfig, failure_threshold=st.integers(1, 4),
                                         recovery_timeout=st.sampled_from([0.5, 2.0])))
    if draw(st.booleans()):
        hedge = HedgePolicy(delay=draw(st.sampled_from([0.0, 0.05])),
                            max_extra=draw(st.integers(1, 4)))
        return ClientPolicy(hedge=hedge, budget=budget, breaker=breaker, timeout=1.0)
    retry = draw(st.none() | st.builds(
        RetryPolicy, max_attempts=st.integers(1, 4),
        backoff=st.sampled_from([NO_JITTER, Backoff(base=0.1, jitter="full")]),
        honor_retry_after=st.booleans()))
    return ClientPolicy(retry=retry, budget=budget, breaker=breaker, timeout=1.0)


@settings(max_examples=300, deadline=None)
@given(policy=policies(), data=st.data(), seed=st.integers(0, 3))
def test_the_actions_and_the_step_methods_take_the_same_decisions(policy, data, seed):
    clocks = ManualClock(), ManualClock()
    guards = guard_for(policy, clocks[0], seed), guard_for(policy, clocks[1], seed)
    for _ in range(data.draw(st.integers(1, 6), label="calls")):
        step, act = StepDriver(guards[0].call()), ActionDriver(guards[1].call())
        step.start()
        act.start()
        while not step.call.done:
            assert step.log == act.log and step.out == act.out
            assert not act.call.done
            timer = step.retry_pending or step.armed is not None or act.wait is not None
            events = (["timer"] if timer else []) + [("answer", copy) for copy in step.out]
            event = data.draw(st.sampled_from(events), label="event")
            dt = data.draw(st.sampled_from([0.0, 0.3, 1.0]), label="dt")
            for clock in clocks:
                clock.advance(dt)
            if event == "timer":
                step.timer()
                act.timer()
            else:
                status = data.draw(st.sampled_from(STATUSES), label="status")
                retry_after = data.draw(st.sampled_from([None, 0.5, 3.0]), label="retry_after")
                step.answer(event[1], status, retry_after)
                act.answer(event[1], status, retry_after)
        assert step.log == act.log
        assert act.call.done and act.log[-1] == ("done", act.call.status)
        for attr in ("status", "attempts", "winner", "cancelled"):
            assert getattr(step.call, attr) == getattr(act.call, attr), attr
        assert _state(guards[0]) == _state(guards[1])
