"""QBO → CRM decisions, pure: QBO's objects and what syncd knows → one ChangeSet."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.engine.machine import InvoiceMachine
from syncd.engine.qbo_events import classify
from syncd.inbound.news import QboChanges
from syncd.inbound.plan import Known, Scope, invoice_ids, news_keys, plan
from syncd.models import ChangeSet, Invoice, SyncState
from syncd.rules.model import ReviewRules
from tests.test_inbox import RULES

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SCOPE = Scope(tenant="acme", realm="9130", now=NOW)


def _synced(status: str = "open", **kw: Any) -> Invoice:
    values: dict[str, Any] = {
        "tenant": "acme",
        "invoice_id": "I-1",
        "status": status,
        "version": 4,
        "data": {"total": "100.00"},
        "updated_at": NOW,
        "sync_state": SyncState.SYNCED,
        "qbo_id": "7",
        "qbo_sync_token": "0",
        "qbo_status": "open",
        "balance": "100.00",
    }
    return Invoice(**{**values, **kw})


def _qbo(version: str = "1", balance: str = "100.00", **kw: Any) -> dict[str, Any]:
    return {
        "Id": "7",
        "SyncToken": version,
        "TotalAmt": Decimal("100.00"),
        "Balance": Decimal(balance),
        "DueDate": "2026-12-30",
        "CustomerRef": {"value": "58", "name": "Acme Ltd"},
        **kw,
    }


def _known(*invoices: Invoice, fresh: set[str] | None = None, **kw: Any) -> Known:
    return Known(
        invoices={str(i.qbo_id): i for i in invoices},
        deals=kw.get("deals", {}),
        customers=kw.get("customers", set()),
        fresh=fresh if fresh is not None else set(),
        removing=kw.get("removing", set()),
        paying=kw.get("paying", {}),
        unpaying=kw.get("unpaying", set()),
    )


async def _plan(
    found: QboChanges, known: Known, rules=RULES, scope: Scope = SCOPE
) -> ChangeSet:
    changes = ChangeSet()
    await plan(found, known, InvoiceMachine(rules), scope, changes)
    return changes


def _topics(changes: ChangeSet) -> list[str]:
    return [o.subtopic() for o in changes.outbox]


def _data(changes: ChangeSet, suffix: str) -> list[dict[str, Any]]:
    return [o.data for o in changes.outbox if o.subtopic().endswith(suffix)]


async def test_a_payment_in_qbo_moves_the_crm_status_as_the_rules_say():
    """RO6, OD10: paid in full in QBO → `payment_created` → "paid", published."""
    found = QboChanges(invoices={"7": _qbo(balance="0.00")})
    changes = await _plan(found, _known(_synced()))
    [moved] = changes.invoices.values()
    assert (moved.status, moved.qbo_status, moved.balance) == ("paid", "paid", "0.00")
    [entry] = changes.history
    assert (entry.from_status, entry.to_status, entry.cause) == (
        "open",
        "paid",
        "qbo payment_created",
    )
    assert _data(changes, "out/invoice/set_status") == [
        {
            "invoice_id": "I-1",
            "from": "open",
            "to": "paid",
            "reason": "QBO: payment_created",
        }
    ]


async def test_syncds_own_write_coming_back_moves_nothing():
    """A webhook for the SyncToken syncd wrote is not bounced to the CRM."""
    found = QboChanges(invoices={"7": _qbo(version="0")})
    changes = await _plan(found, _known(_synced()))
    assert changes.history == [] and changes.failures == []
    assert _topics(changes) == ["sync/invoice/I-1"]  # the state message only


async def test_a_move_the_rules_refuse_is_a_failure_naming_the_rule():
    """RO7, DC4: a QBO void of a draft is refused by the moves; the failure says why."""
    found = QboChanges(
        invoices={"7": _qbo(TotalAmt=0, Balance=0, PrivateNote="Voided")}
    )
    changes = await _plan(found, _known(_synced(status="draft")))
    [failure] = changes.failures
    assert (failure.operation, failure.code) == ("qbo_event", "move_refused")
    assert "[qbo_events] invoice_voided" in failure.message
    assert [i.status for i in changes.invoices.values()] == ["draft"]
    assert "out/sync/failed" in _topics(changes)


async def test_both_sides_changed_is_recorded_as_a_conflict():
    """Conflicts: a QBO edit while a CRM change waits is recorded with both versions."""
    pending = _synced(sync_state=SyncState.PENDING)
    changes = await _plan(
        QboChanges(invoices={"7": _qbo(version="3")}), _known(pending)
    )
    [entry] = changes.history
    assert "conflict: CRM version 4 and QBO SyncToken 3" in entry.cause
    assert (entry.from_status, entry.to_status) == ("open", "open")
    quiet = await _plan(
        QboChanges(invoices={"7": _qbo(version="4")}), _known(_synced())
    )
    assert quiet.history == []  # nothing waited on the CRM side: no conflict


async def test_an_invoice_made_in_qbo_is_reported_once_and_listed_on_request():
    """HS3, HS4, PD8: imported once, with its deal; a refresh lists it again."""
    made = {**_qbo(), "Id": "9", "DocNumber": "1042"}
    found = QboChanges(invoices={"9": made})
    fresh = set(news_keys(found))
    first = await _plan(found, _known(fresh=fresh, deals={"9": "D-5"}))
    [imported] = _data(first, "out/invoice/imported")
    assert (imported["qbo_id"], imported["deal_id"]) == ("9", "D-5")
    assert first.inbound_events == [("9130", "invoice-imported:9")]
    assert _data(await _plan(found, _known()), "out/invoice/imported") == []
    listed = await _plan(found, _known(), scope=replace(SCOPE, listing=True))
    assert len(_data(listed, "out/invoice/imported")) == 1
    ours = QboChanges(invoices={"9": {**made, "PrivateNote": "syncd:acme:I-9"}})
    assert _data(await _plan(ours, _known(fresh=fresh)), "out/invoice/imported") == []


async def test_payments_received_in_qbo_are_told_once_and_syncds_own_not_at_all():
    """OD10, HS5, HL2: a QBO payment on a synced invoice; review on a first payment."""
    line = {"Amount": "40.00", "LinkedTxn": [{"TxnId": "7", "TxnType": "Invoice"}]}
    payment = {
        "Id": "P9",
        "TotalAmt": "40.00",
        "TxnDate": "2026-12-01",
        "CustomerRef": {"value": "58"},
        "Line": [line],
    }
    found = QboChanges(invoices={"7": _qbo(balance="60.00")}, payments=[payment])
    rules = replace(RULES, reviews=ReviewRules(on_first_payment=True))
    fresh = set(news_keys(found))
    changes = await _plan(found, _known(_synced(), fresh=fresh), rules=rules)
    [received] = _data(changes, "out/payment/received")
    assert (received["invoice_id"], received["amount"], received["status"]) == (
        "I-1",
        "40.00",
        "received",
    )
    assert len(_data(changes, "out/review/requested")) == 1
    again = await _plan(found, _known(_synced()), rules=rules)
    assert _data(again, "out/payment/received") == []
    assert _data(again, "out/review/requested") == []
    ours = QboChanges(payments=[{**payment, "PrivateNote": "syncd:acme:payment:P-1"}])
    assert _data(await _plan(ours, _known(_synced(), fresh=fresh)), "received") == []


async def test_customers_made_in_qbo_are_told_unless_syncd_made_them():
    """PD8: a customer new in QBO → `out/contact/created`; syncd's own are not news."""
    found = QboChanges(customers=[{"Id": "58", "DisplayName": "New Co"}])
    fresh = set(news_keys(found))
    assert len(_data(await _plan(found, _known(fresh=fresh)), "contact/created")) == 1
    linked = _known(fresh=fresh, customers={"58"})
    assert _data(await _plan(found, linked), "contact/created") == []


async def test_a_deletion_in_qbo_maps_to_invoice_deleted():
    """PD7: a QBO delete of a synced invoice → `invoice_deleted` → "deleted"? refused.

    The default moves allow no move from open to deleted: a failure says so, and QBO's
    view (deleted) is kept on the state message.
    """
    changes = await _plan(QboChanges(deleted={"7"}), _known(_synced()))
    [inv] = changes.invoices.values()
    assert inv.qbo_status == "deleted"
    [failure] = changes.failures
    assert "invoice_deleted" in failure.message


async def test_syncds_own_deletion_coming_back_before_its_record_is_no_move():
    """PD7: a delete or void of syncd's own, not yet recorded, is no move.

    syncd deleted the QBO copy and died before recording it (a SIGKILL in the chaos
    run); the deletion's webhook then found the invoice still open and failed it as a
    refused move.
    """
    changes = await _plan(
        QboChanges(deleted={"7"}), _known(_synced(), removing={"I-1"})
    )
    [inv] = changes.invoices.values()
    assert (inv.status, inv.qbo_status) == ("open", "deleted")
    assert changes.failures == [] and changes.history == []


async def test_a_qbo_view_read_before_syncds_recorded_change_is_not_taken():
    """PD7, RO6: an older QBO read never replaces a newer view syncd recorded.

    Found by the long chaos run (~2 in 900 CRM deletions): a webhook read the QBO copy
    while it was still open, syncd's delete job then recorded "deleted", and the old
    read put "open" back; the deletion's own webhook was then refused as a move.
    """
    deleted = _synced(qbo_status="deleted")
    changes = await _plan(
        QboChanges(invoices={"7": _qbo(version="3")}), _known(deleted)
    )
    assert changes.invoices == {} and changes.outbox == []
    after = await _plan(QboChanges(deleted={"7"}), _known(deleted))
    assert after.failures == [] and after.history == []
    edited = _synced(qbo_sync_token="5")
    older = _qbo(version="4", balance="0.00")
    assert (
        await _plan(QboChanges(invoices={"7": older}), _known(edited))
    ).history == []
    newer = await _plan(
        QboChanges(invoices={"7": {**older, "SyncToken": "6"}}), _known(edited)
    )
    assert [(h.from_status, h.to_status) for h in newer.history] == [("open", "paid")]


def test_a_balance_back_with_the_total_kept_is_a_payment_removed():
    """Issue 26's long chaos run: a payment made and deleted by hand before syncd read it.

    The Payment's own events found nothing to read; the invoice's balance came back
    with its total unchanged: a payment (or credit) removed, not an edit.
    """
    paid = _synced("paid", balance="0.00", qbo_status="paid")
    back = _qbo(version="3", balance="100.00")
    assert classify(paid, back, NOW) == "payment_removed"
    partly = _qbo(version="3", balance="40.00")
    assert classify(paid, partly, NOW) == "payment_created_partial"
    raised = _qbo(version="3", balance="120.00", TotalAmt=Decimal("120.00"))
    assert classify(paid, raised, NOW) == "invoice_updated"  # an edit in QBO
    assert classify(_synced(), _qbo(version="3"), NOW) == "invoice_updated"


async def test_syncds_own_payment_removal_under_way_is_no_qbo_event():
    """Issue 26's 10-minute chaos run: reads around syncd's own removal moved nothing.

    The CRM deleted its payment and said open; reads from before the removal (still
    paid) and after it (balance back) must move the CRM neither way.
    """
    for status in ("open", "paid"):
        paid = _synced(status, balance="0.00", qbo_status="paid", qbo_sync_token="2+")
        own = _known(paid, unpaying={"I-1"})
        for read in (_qbo(version="2", balance="0.00"), _qbo(version="3")):
            changes = await _plan(QboChanges(invoices={"7": read}), own)
            assert changes.history == [] and changes.failures == []
    # the same balance back with no removal of syncd's under way: a payment removed
    someone = _known(_synced("paid", balance="0.00", qbo_status="paid"))
    changes = await _plan(QboChanges(invoices={"7": _qbo(version="3")}), someone)
    assert [(h.from_status, h.to_status) for h in changes.history] == [("paid", "open")]


async def test_a_read_from_before_syncds_own_payment_is_older_than_its_floor():
    """Issue 26's long chaos run: a read from before syncd's payment came back after.

    The payment left the invoice's SyncToken unknown; the older read (balance back up)
    was taken, and the next read (paid) moved the CRM to paid after it had said open.
    Syncd now knows a floor ("3+": at least 3) and an older read is known as older.
    """
    paid = _synced(qbo_sync_token="3+", balance="0.00", qbo_status="paid")
    older = _qbo(version="2", balance="100.00")
    changes = await _plan(QboChanges(invoices={"7": older}), _known(paid))
    assert changes.invoices == {} and changes.outbox == []
    echo = await _plan(
        QboChanges(invoices={"7": _qbo(version="3", balance="0.00")}), _known(paid)
    )
    assert echo.history == [] and echo.failures == []
    [kept] = echo.invoices.values()
    assert kept.qbo_sync_token == "3"  # known exactly again


async def test_syncds_own_payments_under_way_are_no_qbo_event():
    """RO6: the balance syncd's own CRM payments will leave is what QBO is compared with.

    Found by the long chaos run: the webhook of syncd's first of two CRM payments came
    back before its job was recorded and moved the CRM's paid invoice back to partially
    paid. A payment made by hand besides still shows.
    """
    inv = _synced("paid", balance="100.00")
    own = _known(inv, paying={"I-1": Decimal("100.00")})
    changes = await _plan(
        QboChanges(invoices={"7": _qbo(Balance="50.00", SyncToken="2")}), own
    )
    assert changes.history == [] and changes.failures == []
    inv = _synced("open", balance="100.00")
    own = _known(inv, paying={"I-1": Decimal("50.00")})
    changes = await _plan(
        QboChanges(invoices={"7": _qbo(Balance="40.00", SyncToken="2")}), own
    )
    assert [(h.from_status, h.to_status) for h in changes.history] == [
        ("open", "partially_paid")
    ]


def test_every_invoice_a_change_names_is_loaded():
    """One query loads the changed, the deleted and the paid invoices alike."""
    line = {"LinkedTxn": [{"TxnId": "8", "TxnType": "Invoice"}]}
    found = QboChanges(
        invoices={"7": _qbo()}, deleted={"6"}, payments=[{"Id": "P", "Line": [line]}]
    )
    assert invoice_ids(found) == {"6", "7", "8"}


@given(
    total=st.decimals(min_value=1, max_value=10**6, places=2),
    paid=st.decimals(min_value=0, max_value=10**6, places=2),
)
def test_balance_moves_classify_as_payments(total, paid):
    """RO6: a balance below the known one is a payment (full or partial), else an edit."""
    balance = max(total - paid, Decimal(0))
    inv = _synced(balance=str(total))
    event = classify(inv, _qbo(TotalAmt=total, Balance=balance), NOW)
    if balance == 0:
        assert event == "payment_created"
    elif balance < total:
        assert event == "payment_created_partial"
    else:
        assert event == "invoice_updated"


@pytest.mark.parametrize("known", ["voided", "deleted"])
def test_news_already_known_is_not_news_again(known):
    """A void or delete QBO tells twice (webhook and CDC) is one event."""
    inv = _synced(qbo_status=known)
    obj = (
        None
        if known == "deleted"
        else _qbo(TotalAmt=0, Balance=0, PrivateNote="Voided")
    )
    assert classify(inv, obj, NOW) is None


async def test_a_payment_under_a_raised_total_is_still_a_payment():
    """RO6: QBO's balance went up (a CRM edit raised the total) yet a payment came in.

    Found by the long chaos run with batches: syncd's update raising the total was
    written on top of a payment made by hand, and its record was lost to a SIGKILL;
    reconciliation then saw one object, balance 489.12 above the 400.00 syncd knew, took
    it for an edit (a conflict) and the CRM never heard of the payment.
    """
    known = _synced(balance="400.00", qbo_sync_token="0")
    raised = _qbo(version="2", balance="489.12", TotalAmt=Decimal("652.16"))
    changes = await _plan(QboChanges(invoices={"7": raised}), _known(known))
    assert [(h.from_status, h.to_status) for h in changes.history] == [
        ("open", "partially_paid")
    ]
    edited = await _plan(
        QboChanges(
            invoices={
                "7": _qbo(version="2", balance="652.16", TotalAmt=Decimal("652.16"))
            }
        ),
        _known(known),
    )
    assert edited.history == []  # a raised total alone is no payment
