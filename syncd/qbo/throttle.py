"""Stay under QBO's per-realm limits instead of hitting 429s: a window and a semaphore."""

from __future__ import annotations

import asyncio
import math
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
        # requests and batches this process may still send before it is granted more
        # (None: no bound): the quota's record in the lease promises no more than that
        self._allowed: list[int] | None = None
        self._granted = asyncio.Event()

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

    def record(self, ahead: float) -> dict[str, list[float] | list[int]]:
        """The minute's requests (wall-clock times), and a grant for `ahead` seconds.

        What the realm's next holder counts as its own (`charge`) if this process stops
        holding it: the requests sent, and as many as may still be sent before the next
        record (twice the quota's pace over `ahead`). Once the record is kept where the
        next holder reads it, `grant` lets this process send them, never more.
        """
        now = time.monotonic()
        self._trim(now)
        wall = time.time() - now
        share = 2 * ahead / self.window
        return {
            "sent": [round(wall + t, 3) for t in self._sent],
            "batches": [round(wall + t, 3) for t in self._batches],
            "ahead": [
                min(self.per_minute, math.ceil(self.per_minute * share)),
                min(
                    self.batches_per_minute, math.ceil(self.batches_per_minute * share)
                ),
            ],
        }

    def grant(self, record: dict[str, list[float] | list[int]]) -> None:
        """From now on, send at most what `record` (kept) says may be sent ahead."""
        self._allowed = [int(n) for n in record["ahead"]]
        self._granted.set()

    def charge(
        self, record: dict[str, list[float] | list[int]], hold: bool = True
    ) -> None:
        """Count another process's requests (its `record`) as if sent here.

        The requests it may have sent after its record (`ahead`) count as sent now:
        later than they were, so this process waits longer than it must, never less.
        Nothing more is sent until a `grant` (unless not `hold`: a record of this same
        process's, whose grant already binds it).
        """
        if hold:
            self._allowed = [0, 0]
        now = time.monotonic()
        wall = time.time() - now
        requests, batches = (int(n) for n in record.get("ahead", [0, 0]))
        for key, sent, extra in (
            ("sent", self._sent, requests),
            ("batches", self._batches, batches),
        ):
            times = [min(now, float(t) - wall) for t in record.get(key, [])]
            merged = sorted([*sent, *times, *([now] * extra)])
            sent.clear()
            sent.extend(merged)
        self._trim(now)

    def _trim(self, now: float) -> None:
        for sent in (self._sent, self._batches):
            while sent and sent[0] <= now - self.window:
                sent.popleft()

    async def _admit(self, batch: bool) -> None:
        async with self._gate:
            while True:
                if self._allowed is not None and (
                    self._allowed[0] <= 0 or (batch and self._allowed[1] <= 0)
                ):
                    # the grant is spent: wait for the next record to grant more
                    self._granted.clear()
                    await self._granted.wait()
                    continue
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
                    if self._allowed is not None:
                        self._allowed[0] -= 1
                        self._allowed[1] -= batch
                    return
                await asyncio.sleep(wait)
