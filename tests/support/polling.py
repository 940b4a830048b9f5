"""Waiting for something in a test: poll with a deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], what: str, timeout: float = 30.0, *, every: float = 0.05
) -> Any:
    """Call `check` (a function or a coroutine function) every `every` seconds until it gives
    something truthy, and return that; after `timeout` seconds, fail saying what never came."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(every)
