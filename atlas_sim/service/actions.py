"""The asyncio driver of a guarded call's actions, written once for the live service.

``policies.call``'s ``GuardedCall`` decides and returns typed actions (``Send``, ``Wait``,
``Cancel``, ``Done``); ``drive_actions`` performs them on the running event loop: each copy is a
task, the call's one timer is the ``asyncio.wait`` timeout, and an answer is handed back before
the timer when both are due. Both live hedging drivers are this loop with their own send: the
load generator's hedged requests (``loadgen.driver``) and the service's hedged dependency calls
(``resilience``, ``/api/fanout``). The simulator's drivers are the same loop on SimPy
callbacks (``sim.client``, ``sim.fanout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..policies import CallAction, GuardedCall, Send, Wait

__all__ = ["drive_actions"]

T = TypeVar("T")


async def drive_actions(guarded: GuardedCall, send: Callable[[int], Coroutine[Any, Any, T]],
                        answer: Callable[[int, T], tuple[int, float | None]],
                        copies: dict[asyncio.Task[T], int]) -> None:
    """Drive ``guarded`` (a fresh ``GuardedCall``) by its actions until it is done.

    ``send(k)`` is called at once for each ``Send(k)`` (so a router reads the state of that
    moment) and its coroutine runs as a task, kept in ``copies`` (task -> copy number) while
    out; a finished copy's result goes through ``answer(k, result)``, which returns its
    ``(status, retry_after)`` for ``on_answer``. On return the call is done and ``copies`` holds
    the losers (those ``Cancel`` names, and any that finished in the same step as the winner):
    the caller cancels and records them. Cancelled from outside (a server or drain deadline),
    the call is abandoned (``GuardedCall.abandon``) and the cancellation goes on, with the
    copies still out in ``copies``.

    Raises ``RuntimeError`` if the call waits with nothing out and no timer (a policy bug).
    """
    loop = asyncio.get_running_loop()
    timer: tuple[float, Wait] | None = None  # (when on the loop's clock, the Wait)

    def perform(actions: tuple[CallAction, ...]) -> None:
        nonlocal timer
        for action in actions:
            if isinstance(action, Send):
                copies[loop.create_task(send(action.copy))] = action.copy
            elif isinstance(action, Wait):
                timer = (loop.time() + action.seconds, action)
            # Cancel and Done: the copies still out are the caller's to cancel, once done

    perform(guarded.start())
    try:
        while not guarded.done:
            if not copies and timer is None:
                raise RuntimeError(f"{guarded!r} is waiting for nothing")
            timeout = None if timer is None else max(0.0, timer[0] - loop.time())
            if copies:
                done, _ = await asyncio.wait(copies, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            else:  # only the timer (a wait with no copy out): asyncio.wait takes no empty set
                assert timeout is not None
                await asyncio.sleep(timeout)
                done = set()
            if not done:  # the timer fired
                assert timer is not None
                fired, timer = timer[1], None
                perform(guarded.on_timer(fired))
                continue
            for task in sorted(done, key=copies.__getitem__):
                copy = copies.pop(task)
                status, retry_after = answer(copy, task.result())
                perform(guarded.on_answer(copy, status, retry_after=retry_after))
                if guarded.done:
                    break
    except asyncio.CancelledError:
        guarded.abandon()  # cut off from outside: every copy out fails on the caller's side
        raise
