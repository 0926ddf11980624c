"""QBO's per-realm limits: 500 requests a minute, 10 at once, 40 batch requests a minute.

`time_scale` compresses QBO's minute: at 60, one real second is a minute of QBO, so a
benchmark meets the quota in seconds.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from syncd.sandbox import faults


@dataclass
class Limits:
    """The limits in force (configurable for tests and benchmarks)."""

    per_minute: int = 500
    concurrent: int = 10
    per_second: int = 10  # sandbox companies (qbo.md §10); 0: no such limit
    batch_per_minute: int = 40
    batch_items: int = 30
    time_scale: float = 1.0


class Throttle:
    """Counts requests per realm in a sliding minute and in flight."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._second: dict[str, deque[float]] = defaultdict(deque)
        self._batches: dict[str, deque[float]] = defaultdict(deque)
        self._in_flight: dict[str, int] = defaultdict(int)
        # realm → limit → requests refused for it (what a client passed, not faults
        # injected): a client that keeps to QBO's quota has none for "minute", "batches"
        self.refused: dict[str, Counter[str]] = defaultdict(Counter)

    @contextmanager
    def request(self, realm_id: str, batch: bool = False) -> Iterator[None]:
        """Admit one request or raise 429 (code 3001)."""
        now = time.monotonic()
        window = 60.0 / self.limits.time_scale
        recent = _trim(self._recent[realm_id], now - window)
        batches = _trim(self._batches[realm_id], now - window)
        second = _trim(self._second[realm_id], now - window / 60)
        per_second = self.limits.per_second
        passed = {
            "minute": len(recent) >= self.limits.per_minute,
            "second": bool(per_second) and len(second) >= per_second,
            "concurrent": self._in_flight[realm_id] >= self.limits.concurrent,
            "batches": batch and len(batches) >= self.limits.batch_per_minute,
        }
        if any(passed.values()):
            self.refused[realm_id].update(k for k, v in passed.items() if v)
            raise faults.throttled()
        recent.append(now)
        second.append(now)
        if batch:
            batches.append(now)
        self._in_flight[realm_id] += 1
        try:
            yield
        finally:
            self._in_flight[realm_id] -= 1


def _trim(times: deque[float], since: float) -> deque[float]:
    while times and times[0] < since:
        times.popleft()
    return times
