"""The durable store: what syncd needs from a database, whichever one fills it.

SQLite (`syncd.store.sqlite`) fills it today; a PostgreSQL implementation for several
replicas fills the same Protocol later. Everything a batch changes arrives as one
ChangeSet and is written in one transaction, so implementations stay small.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from syncd.models import (
    ChangeSet,
    Failure,
    HistoryEntry,
    Invoice,
    LedgerEntry,
    OutboxRow,
)

__all__ = ["Store"]


class Store(Protocol):
    """What the inbox, the publisher and the admin side read and write."""

    write_lock: asyncio.Lock  # held from reading an invoice to committing its change
    problem: (
        str | None
    )  # why the store cannot be used now (for /readyz); None when fine

    async def open(self) -> None:
        """Open the database and run pending migrations."""

    async def close(self) -> None:
        """Finish queued work and close."""

    @property
    def is_open(self) -> bool:
        """Tell whether the store can be used (for /readyz)."""

    async def known_messages(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return which (tenant, message id) pairs the ledger already holds."""

    async def load_invoices(self, tenant: str, ids: list[str]) -> dict[str, Invoice]:
        """Return the stored invoices among `ids` of `tenant`."""

    async def commit(self, changes: ChangeSet) -> None:
        """Write a whole ChangeSet in one transaction.

        Raises StoreError when the database cannot be used (read-only, corrupt, full),
        anything else when this ChangeSet cannot be written.
        """

    async def pending_outbox(self, limit: int) -> list[OutboxRow]:
        """Return the oldest unpublished messages, in order."""

    async def outbox_done(self, seqs: list[int]) -> None:
        """Forget published messages."""

    async def invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """Return one invoice."""

    async def history(self, tenant: str, invoice_id: str) -> list[HistoryEntry]:
        """Return one invoice's moves, oldest first."""

    async def failures(self, tenant: str) -> list[Failure]:
        """Return a tenant's failures, oldest first."""

    async def ledger(self, tenant: str, message_id: str) -> LedgerEntry | None:
        """Return what became of one inbound message."""
