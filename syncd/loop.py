"""The one background loop every worker runs: a round when woken or on a timer.

A round returns how much it did; a busy round (at least `busy`) is followed by another at
once, else the loop waits to be woken or for `interval` seconds. A round that fails is
said once and the loop goes on: a store that cannot be used as a warning (its health is
reported elsewhere), anything else with its traceback. Stopping ends the loop after the
round in hand. A loop that must never give up (the broker link) paces its rounds with a
`Backoff`; a bounded retry inside one call uses stamina instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from syncd.exceptions import StoreError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Said:
    """How a loop names its failed rounds in the log."""

    paused: str  # the store cannot be used (a warning, no traceback)
    failed: str  # anything else (an error, with its traceback)


class Loop:
    """Runs a round whenever woken (or every `interval` seconds) until stopped."""

    def __init__(
        self,
        round_: Callable[[], Awaitable[int | None]],
        *,
        interval: Callable[[], float] | float,
        said: Said,
        first_round_at_start: bool = True,
        busy: int = 1,
        **bound: str,
    ) -> None:
        self._round = round_
        self._interval = interval
        self._said = said
        self._first_now = first_round_at_start
        self._busy = busy
        self._bound = bound  # logged with each failure (e.g. worker=JobWorker)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """Whether the loop was asked to stop."""
        return self._stopping.is_set()

    def wake(self) -> None:
        """Something to do was committed: a round soon."""
        self._wake.set()

    def stop(self) -> None:
        """End `run` after the round in hand."""
        self._stopping.set()
        self._wake.set()

    async def guarded(self, work: Awaitable[int | None] | None = None) -> int:
        """One round (or `work`); a failure is said, never raised. How much it did."""
        try:
            return await (work if work is not None else self._round()) or 0
        except StoreError as exc:
            log.warning(self._said.paused, reason=str(exc), **self._bound)
        except Exception:
            log.exception(self._said.failed, **self._bound)
        return 0

    async def run(self) -> None:
        """Round after round until stopped."""
        if not self._first_now:
            await self._idle()
        while not self._stopping.is_set():
            done = await self.guarded()
            if done < self._busy and not self._stopping.is_set():
                await self._idle()

    async def until_stopped(self) -> None:
        """Return once the loop is asked to stop."""
        await self._stopping.wait()

    async def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less when stopped; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _idle(self) -> None:
        interval = self._interval() if callable(self._interval) else self._interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), interval)
        self._wake.clear()


class Backoff:
    """Pauses that start at `first`, double up to `cap`, each jittered ±50 %."""

    def __init__(self, first: float, cap: float) -> None:
        self._first, self._cap = first, cap
        self._next = first

    @property
    def backing_off(self) -> bool:
        """Whether a pause was taken since the last `reset`."""
        return self._next > self._first

    def pause(self) -> float:
        """The next pause, in seconds."""
        pause = self._next * random.uniform(0.5, 1.5)  # noqa: S311 -- jitter
        self._next = min(self._next * 2, self._cap)
        return pause

    def reset(self) -> None:
        """It worked: the next pause is the first again."""
        self._next = self._first
