"""Stay under QBO's per-realm limits instead of hitting 429s: a window and a semaphore."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_SECOND = 1.15


class RealmLimiter:
    """At most `per_minute` requests in any minute and `concurrent` at once, for one realm.

    The defaults sit under QBO's 500/min and 10 at once, leaving room for the admin's
    own tools on the same company. `per_second` (sandbox companies allow 10 a second,
    qbo.md §10) caps any one-second window too.
    """

    def __init__(
        self,
        per_minute: int = 450,
        concurrent: int = 8,
        window: float = 60.0,
        per_second: int | None = None,
    ) -> None:
        self.per_minute, self.window, self.per_second = per_minute, window, per_second
        self._slots = asyncio.Semaphore(concurrent)
        self._sent: deque[float] = deque()
        self._gate = asyncio.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait until a request may go, then hold a concurrency slot for it."""
        async with self._slots:
            await self._admit()
            yield

    async def _admit(self) -> None:
        async with self._gate:
            while True:
                now = time.monotonic()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                wait = 0.0
                if len(self._sent) >= self.per_minute:
                    wait = self._sent[0] + self.window - now
                if self.per_second and len(self._sent) >= self.per_second:
                    # the request `per_second` back must be over a second old, with a
                    # margin: QBO counts arrivals, and requests leave here unevenly
                    wait = max(wait, self._sent[-self.per_second] + _SECOND - now)
                if wait <= 0:
                    self._sent.append(now)
                    return
                await asyncio.sleep(wait)
