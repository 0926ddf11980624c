"""Reconciliation's own parts that need no QBO: overdue as days pass."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.config import load_config
from syncd.models import ChangeSet, Invoice, SyncState
from syncd.reconcile import Reconciler
from syncd.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent


async def test_open_balances_turn_overdue_when_the_day_comes(tmp_path):
    """A synced open invoice becomes overdue once its due date is behind (no QBO event)."""
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    config = load_config(ROOT / "syncd.toml", {})
    day = {"now": datetime(2026, 12, 1, tzinfo=UTC)}
    invoice = Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="open",
        version=1,
        data={},
        updated_at=day["now"],
        sync_state=SyncState.SYNCED,
        qbo_id="7",
        qbo_status="open",
        balance="10.00",
        pushed_body={"DueDate": "2026-12-05"},
    )
    await store.commit(ChangeSet(invoices={("acme", "I-1"): invoice}))
    none: Any = None
    reconciler = Reconciler(config, store, none, none, lambda: day["now"], lambda: None)
    await reconciler._overdue("acme")
    assert (await store.invoice("acme", "I-1")).qbo_status == "open"  # type: ignore[union-attr]
    day["now"] = datetime(2026, 12, 6, tzinfo=UTC)
    await reconciler._overdue("acme")
    assert (await store.invoice("acme", "I-1")).qbo_status == "overdue"  # type: ignore[union-attr]
    [row] = await store.pending_outbox(10)
    assert json.loads(row.payload)["data"]["qbo_status"] == "overdue"
    await store.close()


async def test_both_sides_changed_is_recorded_as_a_conflict(tmp_path):
    """Conflicts: a QBO edit while a CRM change waits is recorded with both versions."""
    from syncd.inbound import InboundWorker
    from syncd.rulebook import RuleBook
    from syncd.rules import load_rules

    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    invoice = Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="open",
        version=4,
        data={},
        updated_at=now,
        sync_state=SyncState.PENDING,
        qbo_id="7",
        qbo_sync_token="0",
        qbo_status="open",
        balance="10.00",
    )
    await store.commit(ChangeSet(invoices={("acme", "I-1"): invoice}))
    none: Any = None
    rules = RuleBook({"acme": load_rules(ROOT / "rules" / "default.toml")})
    worker = InboundWorker(
        store, none, rules, prefix="syncd", clock=lambda: now, on_commit=lambda: None
    )
    changes = ChangeSet()
    qbo = {
        "Id": "7",
        "SyncToken": "3",
        "TotalAmt": "10.00",
        "Balance": "10.00",
        "DueDate": "2026-12-30",
    }
    await worker._invoice("acme", "7", qbo, changes, ("r", set()))
    [entry] = changes.history
    assert "conflict: CRM version 4 and QBO SyncToken 3" in entry.cause
    assert (entry.from_status, entry.to_status) == ("open", "open")
    synced = ChangeSet()
    invoice.sync_state, invoice.qbo_sync_token = SyncState.SYNCED, "3"
    await store.commit(ChangeSet(invoices={("acme", "I-1"): invoice}))
    await worker._invoice("acme", "7", {**qbo, "SyncToken": "4"}, synced, ("r", set()))
    assert synced.history == []  # nothing waited on the CRM side: no conflict
    await store.close()
