"""The publisher: committed outbound messages → the broker, in order, at least once.

Rows leave the outbox only after their PUBACK. A crash between the two republishes
them; every message carries its own envelope id, so consumers can drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

import structlog

from syncd.models import OutboxRow
from syncd.store import Store

log = structlog.get_logger(__name__)

_BATCH = 500
_IDLE_SECONDS = 1.0


class Link(Protocol):
    """The publishing side of the MQTT link."""

    connected: asyncio.Event

    async def publish_many(self, messages: Sequence[OutboxRow]) -> int:
        """Publish in order at QoS 1; return how many from the start were acked."""


class Publisher:
    """Publishes the outbox whenever woken, or every second as a safety net."""

    def __init__(self, store: Store, link: Link) -> None:
        self._store = store
        self._link = link
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Say that new rows were committed."""
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped; one failed batch never ends the loop."""
        while not self._stopping.is_set():
            await self._link.connected.wait()
            try:
                sent = await self.flush()
            except Exception:
                log.exception("publish_failed")
                sent = 0
            if sent < _BATCH:
                await self._idle()

    async def flush(self) -> int:
        """Publish one batch of pending rows; return how many left the outbox."""
        self._wake.clear()
        rows = await self._store.pending_outbox(_BATCH)
        if not rows:
            return 0
        acked = await self._link.publish_many(rows)
        if acked < len(rows):
            # the rest go again, in order: a retained state must never regress
            log.warning("publish_incomplete", acked=acked, pending=len(rows) - acked)
        done = [row.seq for row in rows[:acked]]
        if done:
            await self._store.outbox_done(done)
        return len(done)

    async def drain(self, seconds: float) -> bool:
        """Publish everything pending, for at most `seconds`; True when empty."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await self._link.connected.wait()
                    if not await self._store.pending_outbox(1):
                        return True
                    await self.flush()
        return False

    def stop(self) -> None:
        """End `run` after the current batch."""
        self._stopping.set()
        self._wake.set()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), _IDLE_SECONDS)
