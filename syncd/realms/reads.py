"""QBO reads per company and calendar month: Intuit meters them (qbo.md §10).

Since July 2025 reads, queries and reports count against the app's monthly allowance
(500,000 on the Builder tier, across every company the app serves; past it the app is
blocked). Each read is counted in memory as it is answered and added to the store every
FLUSH_EVERY seconds (a write per read would cost more than the read), so a SIGKILL loses
at most that much of the count. Crossing `[qbo] monthly_reads_budget`'s WARN_AT share is
logged once a month.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

import structlog

from syncd.exceptions import StoreError
from syncd.loop import Loop, Said
from syncd.store import Realms

log = structlog.get_logger(__name__)

FLUSH_EVERY = 10.0  # seconds
WARN_AT = 0.8  # of the monthly budget


def month_of(at: datetime) -> str:
    """The calendar month (UTC) a read counts in: "YYYY-MM"."""
    return at.strftime("%Y-%m")


class ReadsMeter:
    """Counts reads by (realm, month) and keeps them in the store."""

    def __init__(
        self, store: Realms, budget: int, clock: Callable[[], datetime]
    ) -> None:
        self._store, self.budget, self._clock = store, budget, clock
        self._pending: Counter[tuple[str, str]] = Counter()
        self._warned: str | None = None  # the month the budget warning was given for
        self._loop = Loop(
            self._round,
            interval=FLUSH_EVERY,
            said=Said(paused="reads_not_recorded", failed="reads_flush_failed"),
            first_round_at_start=False,
        )

    def count(self, realm: str, at: datetime) -> None:
        """One read answered by QBO."""
        self._pending[(realm, month_of(at))] += 1

    async def flush(self) -> None:
        """Add what was counted to the store; kept for the next flush if it fails."""
        taken, self._pending = self._pending, Counter()
        if not taken:
            return
        try:
            await self._store.add_reads(taken)
        except StoreError:
            self._pending.update(taken)
            raise
        await self._warn_near_budget()

    async def used(self, month: str | None = None) -> dict[str, int]:
        """Reads of each realm in a month (this one by default), unflushed ones too."""
        month = month or month_of(self._clock())
        used = {realm: n for realm, _, n in await self._store.reads(month)}
        for (realm, counted), n in self._pending.items():
            if counted == month:
                used[realm] = used.get(realm, 0) + n
        return used

    def stop(self) -> None:
        """End `run`; the last flush is the daemon's, once every worker has ended."""
        self._loop.stop()

    async def run(self) -> None:
        """Flush every FLUSH_EVERY seconds until stopped."""
        await self._loop.run()

    async def _round(self) -> int:
        await self.flush()
        return 0

    async def _warn_near_budget(self) -> None:
        month = month_of(self._clock())
        if self._warned == month or not self.budget:
            return
        total = sum((await self.used(month)).values())
        if total >= WARN_AT * self.budget:
            self._warned = month
            log.warning(
                "qbo_reads_near_budget",
                month=month,
                reads=total,
                budget=self.budget,
                share=round(total / self.budget, 3),
            )
