"""Reconciliation's own parts that need no QBO: overdue as days pass."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.config import load_config
from syncd.inbound import reconcile
from syncd.inbound.reconcile import Reconciler, missed_by_webhooks
from syncd.messages import PaymentReceived, StateChanged
from syncd.models import ChangeSet, Invoice, SyncState
from syncd.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


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


async def test_the_overdue_pass_marks_a_page_at_a_time_and_only_what_turned(
    tmp_path, monkeypatch
):
    """Issue 14: the pass asks an index, a page per write, never every synced invoice.

    Paid, already overdue, unsynced and not-yet-due invoices are left alone; the CRM's
    due date counts when nothing was written to QBO yet.
    """
    monkeypatch.setattr(reconcile, "OVERDUE_PAGE", 3)
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    now = datetime(2026, 12, 10, tzinfo=UTC)

    def invoice(n: int, due: str, **kw: Any) -> Invoice:
        values: dict[str, Any] = {
            "sync_state": SyncState.SYNCED,
            "qbo_id": str(n),
            "qbo_status": "open",
            **kw,
        }
        return Invoice(
            tenant="acme",
            invoice_id=f"I-{n}",
            status="open",
            version=1,
            data={"due_date": due},
            updated_at=now,
            **values,
        )

    turned = [invoice(n, f"2026-12-0{n}") for n in range(1, 8)]
    left = [
        invoice(11, "2026-12-01", qbo_status="paid"),
        invoice(12, "2026-12-01", qbo_status="overdue"),
        invoice(13, "2026-12-01", sync_state=SyncState.PENDING),
        invoice(14, "2026-12-10"),
        invoice(15, "2026-12-01", qbo_status="partially_paid"),
    ]
    everything = {("acme", i.invoice_id): i for i in [*turned, *left]}
    await store.commit(ChangeSet(invoices=everything))
    none: Any = None
    config = load_config(ROOT / "syncd.toml", {})
    reconciler = Reconciler(config, store, none, none, lambda: now, lambda: None)
    await reconciler._overdue("acme")
    overdue = sorted(
        i.invoice_id for i in await store.invoices("acme") if i.qbo_status == "overdue"
    )
    assert overdue == sorted([*(i.invoice_id for i in turned), "I-12", "I-15"])
    assert len(await store.pending_outbox(100)) == 8
    await store.close()


def test_a_pass_counts_what_webhooks_missed_not_the_states_it_refreshed():
    """A refreshed state is no news; a move, a failure or a payment told is (issue 23).

    When the outbox held rendered topics, states were told apart by their topic; typed
    messages are told apart by their type.
    """
    invoice = Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="open",
        version=1,
        data={},
        updated_at=NOW,
    )
    quiet = ChangeSet(outbox=[StateChanged.of(invoice, NOW)])
    assert missed_by_webhooks(quiet) == 0
    news = ChangeSet(
        outbox=[
            StateChanged.of(invoice, NOW),
            PaymentReceived(tenant="acme", at=NOW, data={}),
        ]
    )
    assert missed_by_webhooks(news) == 1
