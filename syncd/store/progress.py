"""How far syncd got with a set of messages: read only, beside a running daemon.

`syncd backfill` asks it which of its messages syncd has applied (the ledger), where each
invoice stands, and how many QBO writes of them are still to be made. The SQLite file is
opened read-only (WAL lets it read while syncd writes); a PostgreSQL store is read
through a connection of its own. Nothing here takes a write lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from syncd.exceptions import StoreError
from syncd.store.database import rows_among
from syncd.store.sql import DATABASE_ERRORS, Sql

_DEFERRED = "deferred"  # a message stored for later is not applied yet


@dataclass(frozen=True, slots=True)
class Seen:
    """What the ledger says of one message."""

    outcome: str
    reason: str


class ProgressReader:
    """Read-only questions about one tenant's messages, invoices and jobs."""

    def __init__(
        self,
        path: Path,
        tenant: str,
        url: str = "",
        password: str | None = None,
    ) -> None:
        """The SQLite file at `path`, or the PostgreSQL database at `url` when given."""
        self._path, self._tenant = path, tenant
        self._url, self._password = url, password
        self._db: Sql | None = None
        self._close: Callable[[], Awaitable[None]] | None = None

    async def __aenter__(self) -> ProgressReader:
        if self._url:
            from syncd.store.postgres import connect

            conn = await connect(self._url, self._password)
            self._db, self._close = conn, conn.close
            return self
        try:
            lite = await aiosqlite.connect(f"file:{self._path}?mode=ro", uri=True)
            await lite.execute("PRAGMA busy_timeout = 5000")
        except DATABASE_ERRORS as exc:
            raise StoreError(f"the store cannot be read: {exc}") from exc
        self._db, self._close = lite, lite.close
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._close is not None:
            await self._close()

    async def seen(self, message_ids: Sequence[str]) -> dict[str, Seen]:
        """The ledger's word on each message syncd has taken (deferred ones are not)."""
        rows = await self._rows(
            "SELECT message_id, outcome, reason FROM messages "
            "WHERE tenant = ? AND message_id IN ({among})",
            [],
            message_ids,
        )
        return {
            str(message_id): Seen(str(outcome), str(reason))
            for message_id, outcome, reason in rows
            if outcome != _DEFERRED
        }

    async def sync_states(self, invoice_ids: Sequence[str]) -> Counter[str]:
        """How many of these invoices stand in each sync state."""
        rows = await self._rows(
            "SELECT sync_state FROM invoices WHERE tenant = ? AND invoice_id IN ({among})",
            [],
            invoice_ids,
        )
        return Counter(str(state) for (state,) in rows)

    async def unfinished_writes(
        self, invoice_ids: Sequence[str], payment_ids: Sequence[str]
    ) -> Counter[str]:
        """QBO writes still to make, by kind: the invoices' queues, and the receipts.

        A payment of an invoice waits in its invoice's queue; a sales receipt (a payment
        of no invoice) is its own queue, found by its payment id.
        """
        status = "status IN ('pending', 'in_flight')"
        by_queue = await self._rows(
            f"SELECT kind FROM jobs WHERE tenant = ? AND {status} AND queue IN ({{among}})",
            [],
            invoice_ids,
        )
        receipts = await self._rows(
            f"SELECT kind FROM jobs WHERE tenant = ? AND {status} "
            "AND kind = 'receipt.push' AND subject IN ({among})",
            [],
            payment_ids,
        )
        return Counter(str(kind) for (kind,) in [*by_queue, *receipts])

    async def _rows(
        self, sql: str, first: list[str], values: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        assert self._db is not None  # noqa: S101 -- used inside `async with` only
        try:
            found = await rows_among(
                self._db, sql, [self._tenant, *first], list(values)
            )
        except DATABASE_ERRORS as exc:
            raise StoreError(f"the store cannot be read: {exc}") from exc
        return list(found)
