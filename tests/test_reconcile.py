"""Reconciliation's own parts that need no QBO: overdue as days pass."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.config import load_config
from syncd.inbound.reconcile import Reconciler
from syncd.models import ChangeSet, Invoice, SyncState
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
