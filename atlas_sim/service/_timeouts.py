"""``run_with_timeout``: cancel an awaitable after a number of seconds, on Python 3.10 and up.

On 3.11+ ``asyncio.timeout`` cancels the work inside the current task (no extra task per
request); 3.10 falls back to ``asyncio.wait_for``. Either way the work is really cancelled
(``CancelledError`` at its next ``await``) and the caller gets ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["run_with_timeout"]

T = TypeVar("T")


async def run_with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable``; if it takes more than ``seconds``, cancel it and raise TimeoutError."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    try:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError as exc:  # pragma: no cover - Python 3.10
        raise TimeoutError from exc
