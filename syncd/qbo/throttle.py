"""Stay under QBO's per-realm limits instead of hitting 429s: a window and a semaphore."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

_SECOND = 1.15
# requests made while set only take the minute's room that batches will not need
_SPARE: ContextVar[bool] = ContextVar("spare_requests", default=False)


@contextmanager
def spare() -> Iterator[None]:
    """Requests made inside take only the room the realm's batches leave.

    Writes that could have gone in a batch, sent one by one while the minute's batch
    requests are spent: each batch still to come keeps its place in the minute, so
    these never push a 30-object batch back.
    """
    token = _SPARE.set(True)
    try:
        yield
    finally:
        _SPARE.reset(token)


class RealmLimiter:
    """At most `per_minute` requests in any minute and `concurrent` at once, for one realm.

    The defaults sit under QBO's 500/min, 10 at once and 40 batch requests a minute
    (a batch counts as a request too), leaving room for the admin's own tools on the
    same company. `per_second` (sandbox companies allow 10 a second, qbo.md §10) caps
    any one-second window too. `window` is QBO's minute (shorter on a scaled clock, for
    benchmarks).
    """

    def __init__(
        self,
        per_minute: int = 450,
        concurrent: int = 8,
        window: float = 60.0,
        per_second: int | None = None,
        batches_per_minute: int = 38,
    ) -> None:
        self.per_minute, self.window, self.per_second = per_minute, window, per_second
        self.batches_per_minute = batches_per_minute
        self._slots = asyncio.Semaphore(concurrent)
        self._sent: deque[float] = deque()
        self._batches: deque[float] = deque()
        self._gate = asyncio.Lock()

    @asynccontextmanager
    async def slot(self, batch: bool = False) -> AsyncIterator[None]:
        """Wait until a request (a batch: `batch`) may go, then hold a concurrency slot."""
        async with self._slots:
            await self._admit(batch)
            yield

    def batch_free(self) -> bool:
        """Whether a batch request could go now (the minute's batches are not spent)."""
        self._trim(time.monotonic())
        return len(self._batches) < self.batches_per_minute

    def _trim(self, now: float) -> None:
        for sent in (self._sent, self._batches):
            while sent and sent[0] <= now - self.window:
                sent.popleft()

    async def _admit(self, batch: bool) -> None:
        async with self._gate:
            while True:
                now = time.monotonic()
                self._trim(now)
                wait = 0.0
                room = self.per_minute
                if _SPARE.get() and not batch:
                    owed = max(0, self.batches_per_minute - len(self._batches))
                    room = max(1, room - owed)
                if len(self._sent) >= room:
                    wait = self._sent[len(self._sent) - room] + self.window - now
                if batch and len(self._batches) >= self.batches_per_minute:
                    wait = max(wait, self._batches[0] + self.window - now)
                second = self.window / 60 * _SECOND
                if self.per_second and len(self._sent) >= self.per_second:
                    # the request `per_second` back must be over a second old, with a
                    # margin: QBO counts arrivals, and requests leave here unevenly
                    wait = max(wait, self._sent[-self.per_second] + second - now)
                if wait <= 0:
                    self._sent.append(now)
                    if batch:
                        self._batches.append(now)
                    return
                await asyncio.sleep(wait)
