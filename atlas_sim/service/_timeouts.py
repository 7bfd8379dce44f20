"""``run_with_timeout``: cancel an awaitable after a number of seconds.

``asyncio.timeout`` (Python 3.11+) cancels the work inside the current task (no extra task per
request): the work is really cancelled (``CancelledError`` at its next ``await``) and the caller
gets ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["run_with_timeout"]

T = TypeVar("T")


async def run_with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable``; if it takes more than ``seconds``, cancel it and raise TimeoutError."""
    async with asyncio.timeout(seconds):
        return await awaitable
