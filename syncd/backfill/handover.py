"""`syncd backfill`: publish a history on the normal topics, paced, and follow it to QBO.

Beside a running daemon: the messages go on the tenant's CRM topics (invoices flagged
`backfill`), phase after phase (contacts, invoices, payments: a phase is applied before
the next is sent), never more than WINDOW ahead of what syncd has applied (Mosquitto
queues 1,000 messages per client by default and drops the rest). Progress is read from
the store (read only): the ledger tells what syncd applied, so a backfill run again after
a crash (its own or syncd's) publishes only what is missing; message ids derive from the
content, and the ledger and versions drop repeats. The ETA is computed from QBO's quota.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt

from syncd.backfill.history import History, Message
from syncd.bus.link import tls_context
from syncd.config import Config
from syncd.models import JobKind, Outcome, SyncState
from syncd.store.progress import ProgressReader, Seen

WINDOW = 500  # messages published and not yet applied, at most
POLL = 0.5  # seconds between looks at the store
REPORT_EVERY = 2.0  # seconds between progress lines
STALLED = 60.0  # seconds without progress before saying so
# QBO's quota per realm as syncd's limiter spends it (qbo.md §6): 38 batch requests of
# 30 invoices a minute, and the rest of 450 requests for single writes (payments,
# receipts, customers and items)
INVOICES_PER_MINUTE = 38 * 30
SINGLES_PER_MINUTE = 450 - 38


@dataclass(slots=True)
class Report:
    """Where a backfill ended."""

    handed: int = 0  # messages syncd applied or decided on (of this history)
    total: int = 0
    published: int = 0  # this run (a resumed run publishes only what was missing)
    states: Counter[str] = field(default_factory=Counter)
    writes_left: int = 0
    refused: list[str] = field(default_factory=list)  # "subject: reason"

    @property
    def clean(self) -> bool:
        """Everything applied, nothing refused, no invoice failed, no write left."""
        return (
            self.handed == self.total
            and not self.refused
            and not self.states[SyncState.FAILED]
            and not self.writes_left
        )


def eta_minutes(invoices: int, singles: int) -> float:
    """Minutes QBO's quota needs for this many invoice pushes and single writes."""
    return invoices / INVOICES_PER_MINUTE + singles / SINGLES_PER_MINUTE


class Handover:
    """One backfill of one tenant: publish, pace, follow, report."""

    def __init__(
        self,
        config: Config,
        tenant: str,
        history: History,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config, self._tenant, self._history = config, tenant, history
        self._say, self._clock = say, clock
        self._report = Report(total=len(history.messages))
        self._seen: dict[str, str] = {}  # message id → outcome
        self._last_said, self._last_line = float("-inf"), ""
        self._moved_at = clock()  # when syncd last applied one of ours
        self._too_big: list[str] = []

    async def run(self, *, wait: bool) -> Report:
        """Hand the history over; with `wait`, until its QBO writes are made."""
        config = self._config
        reader_of = ProgressReader(
            config.store_path,
            self._tenant,
            config.store_url,
            config.secrets.get("STORE_PASSWORD"),
        )
        async with reader_of as reader:
            async with self._client() as client:
                for phase, messages in self._history.phases():
                    await self._phase(client, reader, phase, messages)
            if wait:
                await self._until_written(reader)
            await self._look(reader, force=True)
            await self._refusals(reader)
        self._report.refused += self._too_big
        return self._report

    def _client(self) -> aiomqtt.Client:
        c, secrets = self._config.mqtt, self._config.secrets
        return aiomqtt.Client(
            c.host,
            c.port,
            identifier=f"{c.client_id}-backfill-{self._tenant}",
            protocol=aiomqtt.ProtocolVersion.V5,
            username=secrets.get("MQTT_USERNAME"),
            password=secrets.get("MQTT_PASSWORD"),
            tls_context=tls_context(c),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _phase(
        self,
        client: aiomqtt.Client,
        reader: ProgressReader,
        phase: str,
        messages: list[Message],
    ) -> None:
        """Publish what syncd has not applied yet, WINDOW at most ahead; then wait for all."""
        self._note(await reader.seen([m.id for m in messages]))
        todo = [m for m in messages if m.id not in self._seen]
        if messages:
            self._say(
                f"{phase}: {len(messages)} ({len(messages) - len(todo)} applied before)"
            )
        outstanding: list[str] = []
        prefix, now = self._config.mqtt.topic_prefix, _now()
        for message in todo:
            while len(outstanding) >= WINDOW:
                outstanding = await self._catch_up(reader, outstanding)
            payload = message.envelope(self._tenant, now)
            if len(payload) > self._config.mqtt.max_payload_bytes:
                self._too_big.append(
                    f"{message.type} {message.subject}: {len(payload):,} bytes, over "
                    f"[mqtt] max_payload_bytes ({self._config.mqtt.max_payload_bytes:,})"
                )
                continue  # syncd would refuse it without reading its id: never sent
            await client.publish(message.topic(prefix, self._tenant), payload, qos=1)
            self._report.published += 1
            outstanding.append(message.id)
        while outstanding:
            outstanding = await self._catch_up(reader, outstanding)

    async def _catch_up(
        self, reader: ProgressReader, outstanding: list[str]
    ) -> list[str]:
        """Wait a moment; what syncd has applied of the outstanding messages drops out."""
        await asyncio.sleep(POLL)
        self._note(await reader.seen(outstanding))
        await self._look(reader)
        left = [i for i in outstanding if i not in self._seen]
        now = self._clock()
        if len(left) < len(outstanding):
            self._moved_at = now
        elif now - self._moved_at > STALLED:
            self._moved_at = now  # said once a STALLED period
            self._say(
                f"waiting: syncd applied none of {len(left)} messages in {STALLED:.0f} s "
                "(is it running, and connected to the broker?)"
            )
        return left

    async def _until_written(self, reader: ProgressReader) -> None:
        """Return once no QBO write of this history is left, by a count made now.

        `_look` reads only every REPORT_EVERY seconds: its count could predate the
        payments' jobs, and the command ended before they were written.
        """
        while True:
            await self._look(reader)
            if not await self._writes_left(reader):
                return
            await asyncio.sleep(POLL)

    async def _writes_left(self, reader: ProgressReader) -> Counter[str]:
        """The unfinished QBO writes of this history's invoices and payments, by kind."""
        history = self._history
        left = await reader.unfinished_writes(
            [m.subject for m in history.invoices], [m.subject for m in history.payments]
        )
        self._report.writes_left = sum(left.values())
        return left

    def _note(self, seen: dict[str, Seen]) -> None:
        for message_id, entry in seen.items():
            self._seen[message_id] = entry.outcome
        self._report.handed = len(self._seen)

    async def _look(self, reader: ProgressReader, *, force: bool = False) -> None:
        """Read where the invoices and their writes stand; say it every REPORT_EVERY s."""
        now = self._clock()
        if not force and now - self._last_said < REPORT_EVERY:
            return
        self._last_said = now
        invoices = [m.subject for m in self._history.invoices]
        self._report.states = await reader.sync_states(invoices)
        line = self._line(await self._writes_left(reader))
        if line != self._last_line:
            self._say(line)
        self._last_line = line

    def _line(self, left: Counter[str]) -> str:
        report, history = self._report, self._history
        unsent = [m for m in history.messages if m.id not in self._seen]
        pushes = left[JobKind.INVOICE_PUSH] + sum(
            m.type == "invoice.upserted" for m in unsent
        )
        singles = (
            report.writes_left
            - left[JobKind.INVOICE_PUSH]
            + sum(m.type == "payment.recorded" for m in unsent)
        )
        s = report.states
        done = report.handed - report.writes_left if report.total else 0
        return (
            f"{_bar(max(done, 0), report.total)} handed over "
            f"{report.handed:,}/{report.total:,} · invoices: "
            f"{s[SyncState.SYNCED]:,} synced, {s[SyncState.FAILED]:,} failed, "
            f"{s[SyncState.PENDING]:,} pending · {report.writes_left:,} QBO writes "
            f"queued · ETA {_minutes(eta_minutes(pushes, singles))} at QBO's quota"
        )

    async def _refusals(self, reader: ProgressReader) -> None:
        refused = [
            m for m in self._history.messages if self._seen.get(m.id) in _REFUSED
        ]
        seen = await reader.seen([m.id for m in refused])
        self._report.refused = [
            f"{m.type} {m.subject}: {seen[m.id].reason}"
            for m in refused
            if m.id in seen
        ]


_REFUSED = (Outcome.REFUSED, Outcome.REJECTED, Outcome.FAILED)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _minutes(minutes: float) -> str:
    if minutes < 1:
        return f"{round(minutes * 60)} s"
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
