"""Wait for a condition, not for a time: the one polling helper the tests share.

A fixed sleep either waits too long (every run pays it) or too short (a slow machine
fails); `eventually` asks again every `every` seconds and returns as soon as the answer
comes, failing with the last answer after `timeout`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any], *, timeout: float = 15, every: float = 0.05
) -> Any:
    """`check()` once it is truthy (it may be async, or raise AssertionError meanwhile)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s; last: {last!r}")
        await asyncio.sleep(every)


def until(check: Callable[[], Any], *, timeout: float = 15, every: float = 0.05) -> Any:
    """`eventually` for code that is not async (process start-up, sync tests).

    Only AssertionError and OSError (a port not open yet) count as "not yet"; anything
    else (a process that died) ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except (AssertionError, OSError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s; last: {last!r}")
        time.sleep(every)
