"""How far syncd got with a set of messages: read only, beside a running daemon.

`syncd backfill` asks it which of its messages syncd has applied (the ledger), where each
invoice stands, and how many QBO writes of them are still to be made. The SQLite file is
opened read-only (WAL lets it read while syncd writes); nothing here takes a write lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

_CHUNK = 500  # ids per query (SQLite's bound-parameter limit is far above)
_UNFINISHED = ("pending", "in_flight")
_DEFERRED = "deferred"  # a message stored for later is not applied yet


@dataclass(frozen=True, slots=True)
class Seen:
    """What the ledger says of one message."""

    outcome: str
    reason: str


class ProgressReader:
    """Read-only questions about one tenant's messages, invoices and jobs."""

    def __init__(self, path: Path, tenant: str) -> None:
        self._path, self._tenant = path, tenant
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> ProgressReader:
        uri = f"file:{self._path}?mode=ro"
        self._db = await aiosqlite.connect(uri, uri=True)
        await self._db.execute("PRAGMA busy_timeout = 5000")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            await self._db.close()

    async def seen(self, message_ids: Sequence[str]) -> dict[str, Seen]:
        """The ledger's word on each message syncd has taken (deferred ones are not)."""
        found: dict[str, Seen] = {}
        for chunk in _chunks(message_ids):
            rows = await self._rows(
                "SELECT message_id, outcome, reason FROM messages "
                f"WHERE tenant = ? AND message_id IN ({_marks(chunk)})",
                chunk,
            )
            for message_id, outcome, reason in rows:
                if outcome != _DEFERRED:
                    found[str(message_id)] = Seen(str(outcome), str(reason))
        return found

    async def sync_states(self, invoice_ids: Sequence[str]) -> Counter[str]:
        """How many of these invoices stand in each sync state."""
        states: Counter[str] = Counter()
        for chunk in _chunks(invoice_ids):
            rows = await self._rows(
                "SELECT sync_state, count(*) FROM invoices "
                f"WHERE tenant = ? AND invoice_id IN ({_marks(chunk)}) GROUP BY 1",
                chunk,
            )
            states.update({str(state): int(n) for state, n in rows})
        return states

    async def unfinished_writes(
        self, invoice_ids: Sequence[str], payment_ids: Sequence[str]
    ) -> Counter[str]:
        """QBO writes still to make, by kind: the invoices' queues, and the receipts.

        A payment of an invoice waits in its invoice's queue; a sales receipt (a payment
        of no invoice) is its own queue, found by its payment id.
        """
        kinds: Counter[str] = Counter()
        status = f"status IN ({_marks(_UNFINISHED)})"
        asks = (("queue", invoice_ids, ""), ("subject", payment_ids, "receipt.push"))
        for column, ids, only in asks:
            for chunk in _chunks(ids):
                rows = await self._rows(
                    f"SELECT kind, count(*) FROM jobs WHERE tenant = ? AND {status} "
                    f"AND (? = '' OR kind = ?) AND {column} IN ({_marks(chunk)}) "
                    "GROUP BY kind",
                    [*_UNFINISHED, only, only, *chunk],
                )
                kinds.update({str(kind): int(n) for kind, n in rows})
        return kinds

    async def _rows(self, sql: str, args: Sequence[str]) -> list[tuple[Any, ...]]:
        assert self._db is not None  # noqa: S101 -- used inside `async with` only
        async with self._db.execute(sql, (self._tenant, *args)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))
