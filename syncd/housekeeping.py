"""Retention: finished records older than `[store] keep_*_days` are deleted, hourly.

A page of each kind per write, so CRM messages are applied between pages; then SQLite
refreshes its planner statistics where the data changed. What is never deleted: invoices
and their transition history (the audit trail), links, connections, unfinished work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from syncd import metrics
from syncd.config import Retention
from syncd.loop import Loop, Said
from syncd.models import Cutoffs
from syncd.replicas import Alone, Ownership
from syncd.store import Pruning

log = structlog.get_logger(__name__)
PAGE = 500  # rows of each kind per write
INTERVAL = 3600.0  # seconds between passes


class Housekeeper:
    """Deletes what retention allows, a page at a time."""

    def __init__(
        self,
        store: Pruning,
        keep: Retention,
        clock: Callable[[], datetime],
        ownership: Ownership | None = None,
    ) -> None:
        self._store, self._keep, self._clock = store, keep, clock
        self._ownership: Ownership = ownership or Alone()  # the leader's chore
        self._loop = Loop(
            self._round,
            interval=INTERVAL,
            said=Said(paused="retention_paused", failed="retention_crashed"),
        )

    def stop(self) -> None:
        """End `run`."""
        self._loop.stop()

    async def run(self) -> None:
        """A pass at start, then every INTERVAL; a failing pass is logged and retried."""
        await self._loop.run()

    async def _round(self) -> int:
        if self._ownership.leads:
            await self.pass_once()
        return 0  # never busy: the next pass is INTERVAL away

    async def pass_once(self) -> dict[str, int]:
        """Delete every finished record past its time; return how many of each kind."""
        now = self._clock()
        cutoffs = Cutoffs(
            ledger=now - timedelta(days=self._keep.ledger_days),
            rejected=now - timedelta(days=self._keep.rejected_days),
            finished=now - timedelta(days=self._keep.finished_days),
        )
        total: dict[str, int] = {}
        while not self._loop.stopping:
            deleted = await self._store.prune(cutoffs, PAGE)
            for kind, count in deleted.items():
                total[kind] = total.get(kind, 0) + count
                metrics.PRUNED.labels(kind).inc(count)
            if max(deleted.values(), default=0) < PAGE:
                break
            await asyncio.sleep(0)  # let waiting writers in
        await self._store.optimize()
        if any(total.values()):
            log.info("retention_pass", **total)
        return total
