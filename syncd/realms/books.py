"""A tenant's books: the QBO company its links and invoices' QBO ids belong to.

When the tenant is connected to another company (after a disconnect, or forced), what
syncd remembered of the old one is set aside: `switch` plans it without I/O, and
`open_books` applies it once, in one transaction, at connection and at start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import structlog

from syncd.messages import StateChanged
from syncd.models import ChangeSet, HistoryEntry, Invoice, JobStatus, SyncState
from syncd.store import JobQueue, Realms, decided_afresh

log = structlog.get_logger(__name__)


def switch(
    tenant: str,
    realm_id: str,
    old: str | None,
    since: datetime,
    linked: list[Invoice],
    queued: set[str | None],
    *,
    now: datetime,
) -> ChangeSet:
    """The switch of a tenant's books from `old` to `realm_id`, as one ChangeSet.

    Links are forgotten (the store drops them with the new books); each invoice keeps
    its history (plus a line naming the old company and QBO invoice), and is `pending`
    when a push is queued (it goes to the new company), else `other_company`.
    """
    changes = ChangeSet(books={tenant: (realm_id, since)})
    for invoice in linked:
        was = f"QBO company {old or '(an earlier one)'} as invoice {invoice.qbo_id}"
        if invoice.qbo_doc_number:
            was += f" (#{invoice.qbo_doc_number})"
        _set_aside(invoice, now, queued=invoice.invoice_id in queued)
        if invoice.sync_state is SyncState.OTHER_COMPANY:
            invoice.error = (
                f"synced to {was}; not in company {realm_id} until a "
                "command.sync or a sync status pushes it there"
            )
        changes.invoices[(tenant, invoice.invoice_id)] = invoice
        changes.history.append(
            HistoryEntry(
                tenant=tenant,
                invoice_id=invoice.invoice_id,
                from_status=invoice.status,
                to_status=invoice.status,
                cause=f"qbo company switched to {realm_id}; was {was}",
                event_id=f"connect:{realm_id}",
                at=now,
            )
        )
        changes.outbox.append(StateChanged.of(invoice, now))
    return changes


class Switching(JobQueue, Realms, Protocol):
    """What switching a tenant's books needs of the store."""


async def open_books(
    store: Switching,
    tenant: str,
    realm_id: str,
    connected_at: datetime,
    *,
    now: datetime,
) -> bool:
    """Make sure nothing remembered for another company is used with `realm_id`.

    True when invoices were set aside (their states are in the outbox).
    """

    async def switch_once() -> ChangeSet | None:
        books = await store.books(tenant)
        old, since = books if books else (None, connected_at)
        if old == realm_id:
            return None
        # `[sync] since = "connection"` is the tenant's first connection, to any company
        if old is None and not await store.remembers_references(tenant):
            await store.commit(ChangeSet(books={tenant: (realm_id, since)}))
            return None
        queued = {
            j.invoice_id
            for j in await store.jobs(tenant)
            if j.status is JobStatus.PENDING
        }
        linked = await store.linked_invoices_of(tenant)
        changes = switch(tenant, realm_id, old, since, linked, queued, now=now)
        await store.commit(changes)
        return changes

    # one switch, whoever asks: a second asker's stale write reads the new books
    changes = await decided_afresh(switch_once)
    if changes is None:
        return False
    log.warning(
        "qbo_books_switched",
        tenant=tenant,
        new=realm_id,
        invoices=len(changes.invoices),
    )
    return True


def _set_aside(invoice: Invoice, now: datetime, *, queued: bool) -> None:
    """Forget the invoice's QBO copy in a company the tenant left."""
    invoice.qbo_id = invoice.qbo_sync_token = invoice.qbo_doc_number = None
    invoice.qbo_status = invoice.balance = invoice.error = None
    invoice.pushed_body = None
    invoice.sync_state = SyncState.PENDING if queued else SyncState.OTHER_COMPANY
    invoice.updated_at = now
