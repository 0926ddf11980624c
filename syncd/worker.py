"""The loop the QBO workers share: woken by commits, never ended by one bad iteration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from syncd.connections import Connections
from syncd.engine.rulebook import RuleBook
from syncd.exceptions import StoreError
from syncd.store import Store

log = structlog.get_logger(__name__)


class LoopWorker:
    """Runs `run_once` whenever woken (or every `idle` seconds) until stopped."""

    idle = 1.0

    def __init__(
        self,
        store: Store,
        connections: Connections,
        rulebook: RuleBook,
        *,
        prefix: str,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None],
    ) -> None:
        self._store, self._connections, self._rulebook = store, connections, rulebook
        self._prefix, self._clock, self._on_commit = prefix, clock, on_commit
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Something to do was committed."""
        self._wake.set()

    def stop(self) -> None:
        """End `run` after the current iteration."""
        self._stopping.set()
        self._wake.set()

    async def guarded(self, work: Awaitable[int | None]) -> int:
        """`work`'s result (0 for none); a failure is logged, never raised."""
        try:
            return await work or 0
        except (
            StoreError
        ) as exc:  # the store's problem, said once per try, no traceback
            log.warning("worker_paused", worker=type(self).__name__, reason=str(exc))
        except Exception:
            log.exception("worker_iteration_failed", worker=type(self).__name__)
        return 0

    async def run_once(self) -> int:
        """Do what is due now; return how much was done."""
        raise NotImplementedError

    async def run(self) -> None:
        """Iterate until stopped; an iteration that fails is logged and tried again."""
        while not self._stopping.is_set():
            done = await self.guarded(self.run_once())
            if not done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle)
                self._wake.clear()
