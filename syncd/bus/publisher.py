"""The publisher: committed outbound messages → the broker, in order, at least once.

Rows leave the outbox only after their PUBACK. A crash between the two republishes
them; every message carries its own envelope id, so consumers can drop the repeat.

A row the broker will not take never blocks the rows behind it: one whose topic a broker
would refuse, one whose PUBACK refuses it, and one in flight each of the last
`STRIKES` times the broker dropped the connection are parked: taken out of the outbox
and kept as a failure (operation `publish`) for the admin, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import structlog

from syncd import metrics
from syncd.bus.link import Published
from syncd.bus.topics import topic_problem
from syncd.clock import Clock
from syncd.exceptions import StoreError
from syncd.loop import Loop, Said
from syncd.models import ChangeSet, Failure, OutboxRow
from syncd.replicas import Alone, Ownership
from syncd.store import Outbox

log = structlog.get_logger(__name__)

_BATCH = 500
_IDLE_SECONDS = 1.0
STRIKES = 5  # a broker restart mid-batch is one; a poison row drops us every time


class Link(Protocol):
    """The publishing side of the MQTT link."""

    connected: asyncio.Event

    async def publish_many(self, messages: Sequence[OutboxRow]) -> Published:
        """Publish in order at QoS 1; say how many from the start were answered."""


class Publisher:
    """Publishes the outbox whenever woken, or every second as a safety net."""

    def __init__(
        self,
        store: Outbox,
        link: Link,
        prefix: str,
        clock: Clock,
        ownership: Ownership | None = None,
    ) -> None:
        self._store, self._clock = store, clock
        # one publisher among replicas (the leader): rows go out in one order, so a
        # retained state never goes backwards
        self._ownership: Ownership = ownership or Alone()
        self._link = link
        self._prefix = prefix
        self._strikes: tuple[int, int] = (0, 0)  # (seq, times the link fell with it)
        self._loop = Loop(
            self._round,
            interval=_IDLE_SECONDS,
            said=Said(paused="publish_paused", failed="publish_failed"),
            busy=_BATCH,  # a full batch: more may wait, publish again at once
        )

    def wake(self) -> None:
        """Say that new rows were committed."""
        self._loop.wake()

    async def run(self) -> None:
        """Publish until stopped; one failed batch never ends the loop."""
        await self._loop.run()

    async def _round(self) -> int:
        await self._connected_or_stopping()
        if self._loop.stopping or not self._ownership.leads:
            return 0
        return await self.flush()

    async def _connected_or_stopping(self) -> None:
        """Wait for the broker, or for the stop.

        A broker that refuses syncd (a wrong password, an unknown CA) must not keep it
        from stopping when asked.
        """
        if self._link.connected.is_set():
            return
        waits = {
            asyncio.ensure_future(self._link.connected.wait()),
            asyncio.ensure_future(self._loop.until_stopped()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def flush(self) -> int:
        """Publish one batch of pending rows; return how many left the outbox."""
        rows = await self._store.pending_outbox(_BATCH)
        if not rows:
            return 0
        parked = {r.seq: p for r in rows if (p := topic_problem(r.topic)) is not None}
        sendable = [r for r in rows if r.seq not in parked]
        result = Published(0, {}, lost=False)
        if sendable:
            result = await self._link.publish_many(sendable)
        parked.update((sendable[n].seq, why) for n, why in result.refused.items())
        if result.acked < len(sendable):
            # the rest go again, in order: a retained state must never regress
            log.warning(
                "publish_incomplete",
                acked=result.acked,
                pending=len(sendable) - result.acked,
            )
            suspect = sendable[result.acked]
            if result.lost and self._strike(suspect):
                parked[suspect.seq] = (
                    f"the broker dropped the connection each of the last {STRIKES} "
                    "times this message was sent"
                )
        done = [r.seq for r in sendable[: result.acked] if r.seq not in parked]
        await self._finish(rows, done, parked)
        metrics.published(
            (r.topic for r in sendable[: result.acked] if r.seq not in parked),
            self._prefix,
        )
        return len(done) + len(parked)

    def _strike(self, row: OutboxRow) -> bool:
        """Count a lost connection against the first unanswered row; True: park it."""
        seq, count = self._strikes
        count = count + 1 if seq == row.seq else 1
        self._strikes = (row.seq, count)
        return count >= STRIKES

    async def _finish(
        self, rows: list[OutboxRow], done: list[int], parked: dict[int, str]
    ) -> None:
        if not parked:
            if done:
                await self._store.outbox_done(done)
            return
        now = self._clock()
        changes = ChangeSet(outbox_done=[*done, *parked])
        for row in rows:
            if row.seq in parked:
                log.error(
                    "publish_parked", topic=repr(row.topic), reason=parked[row.seq]
                )
                changes.failures.append(self._failure(row, parked[row.seq], now))
        await self._store.commit(changes)

    def _failure(self, row: OutboxRow, reason: str, now: datetime) -> Failure:
        tenant = row.topic.removeprefix(self._prefix + "/").split("/", 1)[0]
        return Failure(
            tenant=tenant,
            invoice_id=None,
            operation="publish",
            code="broker_refused",
            message=f"not published to {row.topic!r}: {reason}",
            event_id=None,
            at=now,
        )

    async def drain(self, seconds: float) -> bool:
        """Publish everything pending, for at most `seconds`; True when empty.

        Not the leader: nothing to do (the leader publishes what this replica wrote).
        """
        if not self._ownership.leads:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await self._link.connected.wait()
                    try:
                        if not await self._store.pending_outbox(1):
                            return True
                        await self.flush()
                    except StoreError as exc:  # the rows stay for the next start
                        log.warning("drain_stopped", reason=str(exc))
                        return False
        return False

    def stop(self) -> None:
        """End `run` after the current batch."""
        self._loop.stop()
