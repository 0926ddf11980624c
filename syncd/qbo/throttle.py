"""Stay under QBO's per-realm limits instead of hitting 429s: a window and a semaphore."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class RealmLimiter:
    """At most `per_minute` requests in any minute and `concurrent` at once, for one realm.

    The defaults sit under QBO's 500/min and 10 at once, leaving room for the admin's
    own tools on the same company.
    """

    def __init__(
        self, per_minute: int = 450, concurrent: int = 8, window: float = 60.0
    ) -> None:
        self.per_minute, self.window = per_minute, window
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
                if len(self._sent) < self.per_minute:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self._sent[0] + self.window - now)
