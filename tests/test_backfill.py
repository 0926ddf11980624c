"""Issue 14, backfill: history the CRM hands over (`data.backfill`) is copied, never mailed.

Driven through the inbox with a real SQLite store: which jobs a flagged snapshot queues,
a replay of a snapshot syncd already kept out (HL8), and the flag outliving later edits.
"""

from __future__ import annotations

import pytest

from syncd.models import ChangeSet, JobKind, JobStatus, Outcome, SyncState
from tests.crm import invoice
from tests.test_inbox import published, raw, upsert


def backfilled(invoice_id: str, version: int, status: str, mid: str | None = None):
    data = invoice(invoice_id, version, status, created_at="2024-03-01", backfill=True)
    return raw("acme", "invoice.upserted", data, mid)


async def _run_out(store) -> None:
    jobs = await store.jobs("acme")
    for job in jobs:
        job.status = JobStatus.DONE
    await store.commit(ChangeSet(jobs=jobs))


async def _kinds(store, invoice_id: str) -> list[str]:
    return [j.kind for j in await store.jobs("acme") if j.invoice_id == invoice_id]


@pytest.mark.parametrize(
    "status", ["open", "sent", "partially_paid", "paid", "overdue"]
)
async def test_history_past_draft_is_copied_and_never_mailed(inbox, store, status):
    """Sent or paid in the CRM's past: one push, no send (customers are not e-mailed again)."""
    await inbox.handle([backfilled("H-1", 4, status, mid="bf-1")])
    assert await _kinds(store, "H-1") == [JobKind.INVOICE_PUSH]
    stored = await store.invoice("acme", "H-1")
    assert stored is not None and stored.sync_state == SyncState.PENDING
    entry = await store.ledger("acme", "bf-1")
    assert entry is not None and entry.outcome == Outcome.APPLIED
    assert "backfill: copy queued" in (entry.reason or "")


@pytest.mark.parametrize("status", ["draft", "voided", "deleted"])
async def test_drafts_and_dead_invoices_stay_out(inbox, store, status):
    """A draft, or an invoice voided or deleted before the connection, makes no QBO call."""
    await inbox.handle([backfilled("H-2", 3, status, mid="bf-2")])
    assert await _kinds(store, "H-2") == []
    entry = await store.ledger("acme", "bf-2")
    assert entry is not None and "kept out of QBO" in (entry.reason or "")


async def test_a_snapshot_kept_out_before_is_taken_once_when_handed_over(inbox, store):
    """Syncd heard of the invoice live (kept out, HL8); the backfill's same version counts.

    Handed over a second time (a backfill run again after a crash, new message ids), the
    same version is ignored: one push in all.
    """
    live = invoice("H-3", 5, "sent", created_at="2024-03-01")
    await inbox.handle([raw("acme", "invoice.upserted", live, "live-1")])
    await _run_out(store)  # its jobs ran: kept out, nothing written (HL8)
    before = await _kinds(store, "H-3")
    await inbox.handle([backfilled("H-3", 5, "sent", mid="bf-3")])
    after = await _kinds(store, "H-3")
    assert len(after) == len(before) + 1 and after[-1] == JobKind.INVOICE_PUSH
    changes = await inbox.handle([backfilled("H-3", 5, "sent", mid="bf-3-again")])
    assert await _kinds(store, "H-3") == after
    entry = await store.ledger("acme", "bf-3-again")
    assert entry is not None and entry.outcome == Outcome.IGNORED
    assert published(changes, "sync/invoice/H-3") == []


async def test_an_older_snapshot_handed_over_is_still_stale(inbox, store):
    """The backfill never rolls an invoice back: a lower version is ignored as ever."""
    await inbox.handle([upsert("H-4", 7, "open")])
    await inbox.handle([backfilled("H-4", 6, "paid", mid="bf-4")])
    stored = await store.invoice("acme", "H-4")
    assert stored is not None and (stored.status, stored.version) == ("open", 7)
    entry = await store.ledger("acme", "bf-4")
    assert entry is not None and entry.outcome == Outcome.IGNORED


async def test_a_later_edit_keeps_the_invoice_handed_over(inbox, store):
    """A draft handed over, then opened live (no flag): it still counts in (HL8) and syncs."""
    await inbox.handle([backfilled("H-5", 1, "draft")])
    opened = invoice("H-5", 2, "open", created_at="2024-03-01")
    await inbox.handle([raw("acme", "invoice.upserted", opened)])
    stored = await store.invoice("acme", "H-5")
    assert stored is not None and stored.data.get("backfill") is True
    assert await _kinds(store, "H-5") == [JobKind.INVOICE_PUSH]


async def test_a_flag_that_is_not_a_boolean_is_refused(inbox, store):
    """`backfill` is true or false; anything else is refused with the reason."""
    data = invoice("H-6", 1, "open", backfill="yes")
    changes = await inbox.handle([raw("acme", "invoice.upserted", data)])
    [refusal] = published(changes, "out/input/rejected")
    assert ".backfill must be true or false" in refusal["data"]["reason"]
    assert await store.invoice("acme", "H-6") is None
